//! Airbyte's catalogue on `sluice up`: a low-code manifest run by Airbyte's
//! own declarative runner (`airbyte-cdk` from PyPI) against a small REST
//! API served on 127.0.0.1 (paginated, incremental, an API key), the
//! registry format imported into definitions, and schema changes between
//! syncs handled by each `nonBreakingSchemaUpdatesBehavior`.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::platform::Platform;
use support::{fixture, Scratch};

use support::test_api::{manifest, source_config, TestApi, KEY};

const SYNC: Duration = Duration::from_secs(240);

/// A workspace with the test API's manifest published as its own definition.
fn manifest_definition(p: &Platform, workspace: &str) -> Value {
    p.post(&format!("/workspaces/{workspace}/definitions/declarative_sources"), json!({"name": "Test API", "manifest": manifest()}))
}

fn create_source(p: &Platform, workspace: &str, definition_id: &str, config: Value) -> String {
    let body = json!({"name": "test api", "workspaceId": workspace, "definitionId": definition_id, "configuration": config});
    p.post("/sources", body)["sourceId"].as_str().unwrap().to_owned()
}

fn jsonl_destination(p: &Platform, workspace: &str, out: &std::path::Path) -> String {
    p.actor("destination", workspace, "sluice-jsonl", json!({"destination_path": out.display().to_string()}))
}

fn ids(lines: &[Value]) -> Vec<i64> {
    let mut ids: Vec<i64> = lines.iter().map(|l| l["_airbyte_data"]["id"].as_i64().unwrap()).collect();
    ids.sort();
    ids
}

/// From the job's creation to the earliest record's extraction.
fn first_record_after(job: &Value, lines: &[Value]) -> String {
    let started: jiff::Timestamp = job["startTime"].as_str().unwrap().parse().unwrap();
    let extracted = |l: &Value| -> jiff::Timestamp {
        match &l["_airbyte_extracted_at"] {
            Value::Number(ms) => jiff::Timestamp::from_millisecond(ms.as_i64().unwrap()).unwrap(),
            Value::String(text) => text.parse().unwrap(),
            other => panic!("no _airbyte_extracted_at: {other}"),
        }
    };
    let first = lines.iter().map(extracted).min().unwrap();
    format!("{:.2}s", first.duration_since(started).as_secs_f64())
}

fn stream_names(p: &Platform, connection: &str) -> Vec<String> {
    let c = p.get(&format!("/connections/{connection}"));
    c["configurations"]["streams"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_manifest_connector_discovers_syncs_incrementally_and_never_shows_its_key() {
    let scratch = Scratch::new();
    let api = TestApi::start(&scratch);
    let p = Platform::start(&scratch.path("data"), &[]);
    let workspace = p.workspace("low-code");

    // Published through the API as a custom definition, its spec is the manifest's.
    let definition = manifest_definition(&p, &workspace);
    assert_eq!(definition["version"], 1);
    let id = definition["id"].as_str().unwrap().to_owned();
    let listed = p.get(&format!("/workspaces/{workspace}/definitions/declarative_sources"));
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    let as_source_definition = p.get(&format!("/workspaces/{workspace}/definitions/sources/{id}"));
    assert_eq!(as_source_definition["runtime"], "manifest");

    // A config the manifest's spec refuses names the field.
    let bad = json!({"name": "x", "workspaceId": workspace, "definitionId": id, "configuration": {"base_url": api.url}});
    let (status, problem) = p.call("POST", "/sources", Some(&bad), Some(&p.token));
    assert_eq!(status, 400, "{problem}");
    assert!(problem.to_string().contains("api_key"), "{problem}");

    let source = create_source(&p, &workspace, &id, source_config(&api));
    assert_eq!(p.get(&format!("/sources/{source}"))["configuration"]["api_key"], "**********");
    let check = p.post(&format!("/sources/{source}/check"), json!({}));
    assert_eq!(check["status"], "SUCCEEDED", "{check}");
    let discovered = p.get(&format!("/streams?sourceId={source}"));
    let streams: Vec<&str> = discovered.as_array().unwrap().iter().map(|s| s["streamName"].as_str().unwrap()).collect();
    assert_eq!(streams, ["items", "users"], "{discovered}");

    let out = scratch.path("out");
    let destination = jsonl_destination(&p, &workspace, &out);
    let connection = p.post("/connections", json!({"sourceId": source, "destinationId": destination, "configurations": {"streams": [
        {"name": "items", "syncMode": "incremental_deduped_history"},
        {"name": "users", "syncMode": "full_refresh_overwrite"}
    ]}}))["connectionId"].as_str().unwrap().to_owned();
    let first = p.wait_job(p.sync(&connection), SYNC);
    assert_eq!(first["status"], "succeeded", "{first}\n{}", p.log());
    assert_eq!(ids(&scratch.read_lines("out/items.jsonl")), (1..=7).collect::<Vec<_>>(), "every page read");
    assert_eq!(ids(&scratch.read_lines("out/users.jsonl")), (1..=5).collect::<Vec<_>>(), "cursor pagination");
    eprintln!("manifest connector: first record {} after POST /jobs", first_record_after(&first, &scratch.read_lines("out/items.jsonl")));

    // Three new items: the next sync reads from the saved cursor (inclusive,
    // so item 7 comes again) and the deduplicated stream keeps each id once.
    api.admin("add_items?n=3");
    let second = p.wait_job(p.sync(&connection), SYNC);
    assert_eq!(second["status"], "succeeded", "{second}\n{}", p.log());
    let attempts = p.get(&format!("/jobs/{}/attempts", second["jobId"]));
    let items_read = attempts["attempts"][0]["streams"].as_array().unwrap().iter().find(|s| s["name"] == "items").cloned().unwrap();
    assert_eq!(items_read["recordsEmitted"], 4, "from the cursor on: {attempts}");
    assert_eq!(ids(&scratch.read_lines("out/items.jsonl")), (1..=10).collect::<Vec<_>>(), "no duplicates");
    let state = p.get(&format!("/connections/{connection}/state"))["states"].clone();
    assert!(state.to_string().contains("2024-01-10"), "{state}");

    // The key went to the API on every request and nowhere else.
    assert!(api.log().contains("key=ok") && !api.log().contains(KEY));
    for job in [&first, &second] {
        let log = p.get(&format!("/jobs/{}/attempts/0/logs", job["jobId"]))["text"].as_str().unwrap().to_owned();
        assert!(!log.contains(KEY), "the attempt log shows the key");
    }
    assert!(!p.log().contains(KEY), "sluice up's log shows the key");
    for path in [format!("/sources/{source}"), format!("/connections/{connection}"), format!("/jobs/{}", second["jobId"])] {
        assert!(!p.get(&path).to_string().contains(KEY), "{path} shows the key");
    }

    // A new manifest is a new version of the definition.
    let mut changed = manifest();
    changed["description"] = json!("second version");
    let updated = p.ok("PUT", &format!("/workspaces/{workspace}/definitions/declarative_sources/{id}"), Some(json!({"manifest": changed})));
    assert_eq!(updated["version"], 2);
    let (status, _) = p.call("DELETE", &format!("/workspaces/{workspace}/definitions/declarative_sources/{id}"), None, Some(&p.token));
    assert_eq!(status, 409, "a definition in use stays");
}

#[test]
fn custom_python_components_run_only_where_the_operator_allows_them() {
    let scratch = Scratch::new();
    let api = TestApi::start(&scratch);
    // Connector Builder's way: the generic runner, the manifest in the config.
    let mut config = source_config(&api);
    config["__injected_declarative_manifest"] = manifest();
    config["__injected_components_py"] = json!("def noop():\n    return None\n");
    config["sourceType"] = json!("declarative-manifest");

    let p = Platform::start(&scratch.path("data"), &[]);
    let workspace = p.workspace("careful");
    let source = p.post("/sources", json!({"name": "builder", "workspaceId": workspace, "configuration": config}))["sourceId"].as_str().unwrap().to_owned();
    let stored = p.get(&format!("/sources/{source}"));
    assert_eq!(stored["configuration"]["api_key"], "**********", "the injected manifest's spec marks it secret: {stored}");
    let (status, problem) = p.call("POST", &format!("/sources/{source}/check"), Some(&json!({})), Some(&p.token));
    let text = format!("{status} {problem}");
    assert!(text.contains("custom Python code") && text.contains("--enable-unsafe-code"), "{text}");
    drop(p);

    let p = Platform::start(&scratch.path("data2"), &["--enable-unsafe-code"]);
    let workspace = p.workspace("trusting");
    let source = p.post("/sources", json!({"name": "builder", "workspaceId": workspace, "configuration": config}))["sourceId"].as_str().unwrap().to_owned();
    let check = p.post(&format!("/sources/{source}/check"), json!({}));
    assert_eq!(check["status"], "SUCCEEDED", "the runner ran the components, checksummed by the platform: {check}");
}

fn registry(tag: &str, breaking: Value) -> Value {
    json!({
        "sources": [
            {"sourceDefinitionId": "7e3a9d2c-41b5-4c1e-9a0f-5b8d2e6c1f01", "name": "Test API", "dockerRepository": "airbyte/source-test-api",
             "dockerImageTag": tag, "language": "manifest-only", "tags": ["language:manifest-only", "cdk:low-code"],
             "remoteRegistries": {"pypi": {"enabled": false, "packageName": "airbyte-source-test-api"}}, "supportLevel": "community",
             "releases": {"breakingChanges": breaking}, "spec": {"connectionSpecification": {"type": "object"}}},
            {"sourceDefinitionId": "1f0c2b7e-8d3a-4e59-b6c4-2a7d9e0f3b12", "name": "Faker (from the registry)", "dockerRepository": "airbyte/source-faker",
             "dockerImageTag": "7.2.1", "language": "python", "remoteRegistries": {"pypi": {"enabled": true, "packageName": "airbyte-source-faker"}},
             "supportLevel": "certified"},
            {"sourceDefinitionId": "3c5e7a9b-1d2f-4a6b-8c0d-4e6f8a0b2c13", "name": "Datagen", "dockerRepository": "airbyte/source-datagen",
             "dockerImageTag": "0.1.4", "language": "java",
             "connectorIPCOptions": {"dataChannel": {"version": "0.0.2", "supportedSerialization": ["JSONL", "PROTOBUF"], "supportedTransport": ["SOCKET", "STDIO"]}}}
        ]
    })
}

#[test]
fn a_registry_import_yields_manifest_pypi_and_image_definitions_and_says_what_breaks() {
    let scratch = Scratch::new();
    let api = TestApi::start(&scratch);
    let p = Platform::start(&scratch.path("data"), &[]);
    let workspace = p.workspace("catalogue");
    let file = scratch.json("registry.json", &registry("0.1.0", json!({})));
    std::fs::write(scratch.path("manifest.yaml"), std::fs::read(fixture("manifest/manifest.yaml")).unwrap()).unwrap();
    let credentials = p.data.join("credentials.json");
    let import = |file: &std::path::Path| {
        let out = support::sluice()
            .args(["definitions", "import"])
            .arg(file)
            .args(["--manifest", &format!("source-test-api={}", scratch.path("manifest.yaml").display()), "-o", "json", "--credentials"])
            .arg(&credentials)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let report = import(&file);
    let runtimes: Vec<(&str, &str)> =
        report["definitions"].as_array().unwrap().iter().map(|d| (d["action"].as_str().unwrap(), d["runtime"].as_str().unwrap())).collect();
    assert_eq!(runtimes, [("created", "manifest"), ("created", "pypi:airbyte-source-faker==7.2.1"), ("created", "image:airbyte/source-datagen:0.1.4")]);
    let definitions = p.get(&format!("/workspaces/{workspace}/definitions/sources"))["data"].clone();
    let datagen = definitions.as_array().unwrap().iter().find(|d| d["name"] == "Datagen").cloned().unwrap();
    assert!(datagen["connectorIPCOptions"]["dataChannel"].is_object(), "{datagen}");
    assert_eq!(import(&file)["definitions"][0]["action"], "unchanged");

    // The manifest-only one runs its manifest, with no Docker.
    let source = p.actor("source", &workspace, "test-api", source_config(&api));
    let out = scratch.path("out");
    let destination = jsonl_destination(&p, &workspace, &out);
    let connection = p.post("/connections", json!({"sourceId": source, "destinationId": destination, "configurations": {"streams": [{"name": "users", "syncMode": "full_refresh_overwrite"}]}}))["connectionId"].as_str().unwrap().to_owned();
    let job = p.wait_job(p.sync(&connection), SYNC);
    assert_eq!(job["status"], "succeeded", "{job}\n{}", p.log());
    assert_eq!(scratch.read_lines("out/users.jsonl").len(), 5);

    // The PyPI one runs from its package. Its type key is the built-in
    // faker's too: by type alone the request is ambiguous, and says so.
    let (status, ambiguous) = p.call("POST", "/sources", Some(&json!({"name": "f", "workspaceId": workspace, "configuration": {"sourceType": "faker", "count": 1}})), Some(&p.token));
    assert_eq!(status, 400);
    assert!(ambiguous.to_string().contains("2 definitions are called `faker`"), "{ambiguous}");
    let faker = p.post("/sources", json!({"name": "faker", "workspaceId": workspace, "definitionId": "1f0c2b7e-8d3a-4e59-b6c4-2a7d9e0f3b12", "configuration": {"count": 7}}))["sourceId"].as_str().unwrap().to_owned();
    let connection = p.post("/connections", json!({"sourceId": faker, "destinationId": destination, "configurations": {"streams": [{"name": "users", "syncMode": "full_refresh_overwrite"}]}}))["connectionId"].as_str().unwrap().to_owned();
    let job = p.wait_job(p.sync(&connection), SYNC);
    assert_eq!(job["status"], "succeeded", "{job}\n{}", p.log());
    assert_eq!(scratch.read_lines("out/users.jsonl").len(), 7);

    // A newer version that the registry marks breaking says so.
    let newer = scratch.json("registry2.json", &registry("0.2.0", json!({"0.2.0": {"message": "items are keyed by sku", "upgradeDeadline": "2027-01-31"}})));
    let report = import(&newer);
    assert_eq!(report["definitions"][0]["action"], "updated");
    assert_eq!(report["definitions"][0]["previousVersion"], "0.1.0");
    assert_eq!(report["definitions"][0]["breakingChanges"][0]["message"], "items are keyed by sku");
    // And so does going back, by the version route.
    let (status, refused) = p.call("POST", "/definitions/7e3a9d2c-41b5-4c1e-9a0f-5b8d2e6c1f01/version", Some(&json!({"version": "0.1.0"})), Some(&p.token));
    assert_eq!(status, 400, "a manifest-only version needs its manifest: {refused}");
    let back = p.post("/definitions/7e3a9d2c-41b5-4c1e-9a0f-5b8d2e6c1f01/version", json!({"version": "0.1.0", "manifest": manifest()}));
    assert_eq!(back["breakingChanges"][0]["version"], "0.2.0", "{back}");

    // A registry with a bad entry imports nothing and names the entry.
    let mut bad = registry("0.3.0", json!({}));
    bad["sources"][1]["dockerImageTag"] = json!(null);
    let (status, problem) = p.call("POST", "/definitions/import", Some(&bad), Some(&p.token));
    assert_eq!(status, 400);
    assert!(problem.to_string().contains("sources[1].dockerImageTag"), "{problem}");
}

/// A connection on the test API syncing `items` (incremental, deduped) and
/// `users`, with `behavior`, on a platform that checks the schema before
/// every sync; the server then gains a column and a stream.
struct Scenario {
    scratch: Scratch,
    api: TestApi,
    p: Platform,
    connection: String,
    hooks: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

fn scenario(behavior: &str) -> Scenario {
    let scratch = Scratch::new();
    let api = TestApi::start(&scratch);
    let p = Platform::start(&scratch.path("data"), &["--schema-refresh-secs", "0"]);
    let (url, hooks) = support::webhook_receiver();
    let workspace = p.post("/workspaces", json!({"name": behavior, "notificationUrls": [url]}))["workspaceId"].as_str().unwrap().to_owned();
    let definition = manifest_definition(&p, &workspace);
    let source = create_source(&p, &workspace, definition["id"].as_str().unwrap(), source_config(&api));
    let destination = jsonl_destination(&p, &workspace, &scratch.path("out"));
    let connection = p.post("/connections", json!({"sourceId": source, "destinationId": destination,
        "nonBreakingSchemaUpdatesBehavior": behavior,
        "configurations": {"streams": [
            {"name": "items", "syncMode": "incremental_deduped_history"},
            {"name": "users", "syncMode": "full_refresh_overwrite"}
        ]}}))["connectionId"].as_str().unwrap().to_owned();
    let first = p.wait_job(p.sync(&connection), SYNC);
    assert_eq!(first["status"], "succeeded", "{first}\n{}", p.log());
    assert_eq!(p.get(&format!("/connections/{connection}"))["schemaChange"], "no_change");
    api.admin("add_field");
    api.admin("add_stream");
    api.admin("add_items?n=1");
    Scenario { scratch, api, p, connection, hooks }
}

impl Scenario {
    fn sync(&self) -> Value {
        self.p.wait_job(self.p.sync(&self.connection), SYNC)
    }
    fn connection(&self) -> Value {
        self.p.get(&format!("/connections/{}", self.connection))
    }
    fn transforms(&self) -> Vec<String> {
        let schema = self.p.get(&format!("/connections/{}/schema", self.connection));
        schema["catalogDiff"]["transforms"].as_array().unwrap().iter().map(|t| format!("{} {}", t["transformType"].as_str().unwrap(), t["streamDescriptor"]["name"].as_str().unwrap())).collect()
    }
    /// Drops the cursor field: breaking for the incremental stream.
    fn breaks(&self) {
        self.api.admin("drop_cursor");
        let job = self.sync();
        assert_eq!(job["status"], "cancelled", "{job}");
        let c = self.connection();
        assert_eq!((c["status"].as_str(), c["schemaChange"].as_str()), (Some("inactive"), Some("breaking")), "{c}");
        let log = self.p.get(&format!("/jobs/{}/attempts/0/logs", job["jobId"]))["text"].as_str().unwrap().to_owned();
        assert!(log.contains("updated_at"), "the log says why: {log}");
        support::wait_until("connection.disabled reaches the webhook", || {
            self.hooks.lock().unwrap().iter().any(|e| e["event"] == "connection.disabled" && e["reason"].as_str().unwrap_or("").contains("breaking") && e["reason"].as_str().unwrap_or("").contains("updated_at"))
        });
        let (status, problem) = self.p.call("PATCH", &format!("/connections/{}", self.connection), Some(&json!({"status": "active"})), Some(&self.p.token));
        assert_eq!(status, 409, "not enabled again before the change is reviewed: {problem}");
    }
}

#[test]
fn ignore_leaves_the_connection_as_it_was_and_reports_the_change() {
    let s = scenario("ignore");
    let job = s.sync();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(s.connection()["schemaChange"], "non_breaking");
    assert_eq!(stream_names(&s.p, &s.connection), ["items", "users"]);
    assert_eq!(s.transforms(), ["add_stream orders", "update_stream items"]);
    let cli = support::sluice().args(["connections", "schema", &s.connection, "--credentials"]).arg(s.p.data.join("credentials.json")).output().unwrap();
    let shown = String::from_utf8_lossy(&cli.stdout);
    assert!(shown.contains("schemaChange: non_breaking") && shown.contains("add_stream orders") && shown.contains("  add_field color"), "{shown}");
    assert!(!s.scratch.path("out/orders.jsonl").exists());
    s.breaks();
}

#[test]
fn disable_connection_stops_on_any_change() {
    let s = scenario("disable_connection");
    let job = s.sync();
    assert_eq!(job["status"], "cancelled", "{job}");
    let c = s.connection();
    assert_eq!((c["status"].as_str(), c["schemaChange"].as_str()), (Some("inactive"), Some("non_breaking")), "{c}");
    support::wait_until("connection.disabled reaches the webhook", || s.hooks.lock().unwrap().iter().any(|e| e["event"] == "connection.disabled"));
    // Reviewed by setting the streams again, it runs on the new schema.
    s.p.ok("PATCH", &format!("/connections/{}", s.connection), Some(json!({"status": "active", "configurations": {"streams": [
        {"name": "items", "syncMode": "incremental_deduped_history"}, {"name": "users", "syncMode": "full_refresh_overwrite"}]}})));
    assert_eq!(s.sync()["status"], "succeeded");
    assert_eq!(s.connection()["schemaChange"], "no_change");
}

#[test]
fn propagate_columns_brings_new_columns_but_not_new_streams() {
    let s = scenario("propagate_columns");
    let job = s.sync();
    assert_eq!(job["status"], "succeeded", "{job}\n{}", s.p.log());
    assert_eq!(s.connection()["schemaChange"], "no_change");
    assert_eq!(stream_names(&s.p, &s.connection), ["items", "users"]);
    let items = s.scratch.read_lines("out/items.jsonl");
    assert!(items.iter().any(|i| i["_airbyte_data"]["color"].is_string()), "the new column arrives");
    assert!(!s.scratch.path("out/orders.jsonl").exists());
    s.breaks();
}

#[test]
fn propagate_fully_adds_new_streams_with_their_default_modes() {
    let s = scenario("propagate_fully");
    let job = s.sync();
    assert_eq!(job["status"], "succeeded", "{job}\n{}", s.p.log());
    let c = s.connection();
    let orders = c["configurations"]["streams"].as_array().unwrap().iter().find(|st| st["name"] == "orders").cloned();
    assert_eq!(orders.map(|o| o["syncMode"].clone()), Some(json!("full_refresh_overwrite")), "{c}");
    assert_eq!(ids(&s.scratch.read_lines("out/orders.jsonl")), [1, 2, 3]);
    assert!(s.scratch.read_lines("out/items.jsonl").iter().any(|i| i["_airbyte_data"]["color"].is_string()));
    s.breaks();
}
