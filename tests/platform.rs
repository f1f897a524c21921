//! The platform end to end: `sluice up` driven over HTTP only, as a user
//! or Airbyte's tools would, with real connectors.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::platform::Platform;
use support::{fixture, Scratch};

/// A custom source definition running the scripted test source.
fn scripted_definition(p: &Platform, workspace: &str) {
    p.post(&format!("/workspaces/{workspace}/definitions/sources"), json!({"name": "Scripted", "runtime": fixture("scripted_source.py"), "typeKey": "scripted"}));
}

fn jsonl_destination(p: &Platform, workspace: &str, out: &std::path::Path) -> String {
    p.actor("destination", workspace, "sluice-jsonl", json!({"destination_path": out.display().to_string()}))
}

fn connection(p: &Platform, source: &str, destination: &str, streams: Value) -> String {
    let body = p.post("/connections", json!({"sourceId": source, "destinationId": destination, "configurations": {"streams": streams}}));
    body["connectionId"].as_str().unwrap().to_owned()
}

fn state_of(p: &Platform, connection: &str) -> Value {
    p.get(&format!("/connections/{connection}/state"))["states"].clone()
}

#[test]
fn pypi_faker_to_jsonl_over_http_then_incremental_then_cron() {
    let scratch = Scratch::new();
    let p = Platform::start(&scratch.path("data"), &[]);
    let workspace = p.workspace("e2e");
    // Airbyte's SDK shape: no definitionId, the type inside the configuration.
    let source = p.actor("source", &workspace, "faker", json!({"count": 120, "seed": 7, "records_per_slice": 50, "always_updated": false}));
    let out = scratch.path("out");
    let destination = jsonl_destination(&p, &workspace, &out);

    let streams = p.get(&format!("/streams?sourceId={source}&destinationId={destination}"));
    let names: Vec<&str> = streams.as_array().unwrap().iter().map(|s| s["streamName"].as_str().unwrap()).collect();
    assert!(names.contains(&"users") && names.contains(&"purchases"), "{streams}");

    let connection = connection(&p, &source, &destination, json!([
        {"name": "users", "syncMode": "incremental_append"},
        {"name": "purchases", "syncMode": "incremental_append"}
    ]));
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(180));
    assert_eq!(job["status"], "succeeded", "{job}\n{}", p.log());
    assert!(job["rowsSynced"].as_u64().unwrap() >= 120, "{job}");
    let users = scratch.read_lines("out/users.jsonl");
    assert_eq!(users.len(), 120);
    let mut ids: Vec<i64> = users.iter().map(|u| u["_airbyte_data"]["id"].as_i64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 120, "each user exactly once");

    // The committed state is what the destination echoed: a second sync resumes from it.
    let state = state_of(&p, &connection);
    let streams_in_state: Vec<&str> = state.as_array().unwrap().iter().map(|s| s["stream"]["stream_descriptor"]["name"].as_str().unwrap()).collect();
    assert!(streams_in_state.contains(&"users"), "{state}");
    let purchases_before = scratch.read_lines("out/purchases.jsonl").len();
    let second = p.wait_job(p.sync(&connection), Duration::from_secs(180));
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(second["rowsSynced"], 0, "nothing new to sync: {second}");
    assert_eq!(scratch.read_lines("out/users.jsonl").len(), 120, "no duplicate rows");
    assert_eq!(scratch.read_lines("out/purchases.jsonl").len(), purchases_before);
    let attempts = p.get(&format!("/jobs/{}/attempts", second["jobId"]));
    assert_eq!(attempts["attempts"][0]["status"], "succeeded");

    // A cron schedule starts jobs by itself.
    p.ok("PATCH", &format!("/connections/{connection}"), Some(json!({"schedule": {"scheduleType": "cron", "cronExpression": "*/5 * * * * ?"}})));
    p.wait_for("a scheduled job", Duration::from_secs(30), |p| {
        let jobs = p.get(&format!("/jobs?connectionId={connection}&limit=100"));
        jobs["data"].as_array().unwrap().len() > 2
    });
    p.ok("PATCH", &format!("/connections/{connection}"), Some(json!({"schedule": {"scheduleType": "manual"}})));
}

/// A workspace with the scripted source (and its secret) and a JSON-lines destination.
fn scripted_connection(p: &Platform, scratch: &Scratch, config: Value, mode: &str) -> String {
    let workspace = p.workspace("scripted");
    scripted_definition(p, &workspace);
    let source = p.actor("source", &workspace, "scripted", config);
    let destination = jsonl_destination(p, &workspace, &scratch.path("out"));
    connection(p, &source, &destination, json!([{"name": "items", "syncMode": mode}]))
}

/// The orchestrator processes `sluice up` started: (pid, workload id, credential).
fn orchestrators(platform_pid: u32) -> Vec<(i32, String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let parent = status.lines().find_map(|l| l.strip_prefix("PPid:")).map(|p| p.trim().to_owned());
        if parent != Some(platform_pid.to_string()) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let Some(at) = args.iter().position(|a| a == "--workload-id") else { continue };
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let token = environ
            .split(|&b| b == 0)
            .find_map(|v| String::from_utf8_lossy(v).strip_prefix("SLUICE_WORKLOAD_TOKEN=").map(str::to_owned))
            .unwrap_or_default();
        found.push((pid, args[at + 1].clone(), token));
    }
    found
}

/// The ids of the scripted source's `items` in the destination's file, sorted.
fn item_ids(scratch: &Scratch) -> Vec<i64> {
    let mut ids: Vec<i64> = scratch.read_lines("out/items.jsonl").iter().map(|r| r["_airbyte_data"]["id"].as_i64().unwrap()).collect();
    ids.sort();
    ids
}

fn committed_cursor(p: &Platform, connection: &str) -> i64 {
    let states = state_of(p, connection);
    states.as_array().and_then(|s| s.first()).map(|s| s["stream"]["stream_state"]["cursor"].as_i64().unwrap()).unwrap_or(0)
}

#[test]
fn one_job_at_a_time_cancel_keeps_state_and_credentials_open_only_their_workload() {
    let scratch = Scratch::new();
    let p = Platform::start(&scratch.path("data"), &[]);
    let connection = scripted_connection(&p, &scratch, json!({"records": 400, "state_every": 10, "delay_secs": 0.02}), "incremental_append");

    // Two requests at once: one job starts, the other is told which job runs.
    let (a, b) = std::thread::scope(|s| {
        let request = || p.call("POST", "/jobs", Some(&json!({"connectionId": connection, "jobType": "sync"})), Some(&p.token));
        let a = s.spawn(request);
        let b = s.spawn(request);
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let (started, refused) = if a.0 == 200 { (a.1, b.1) } else { (b.1, a.1) };
    let job = started["jobId"].as_i64().unwrap();
    assert!(refused["detail"].as_str().unwrap().contains(&format!("job {job}")), "{refused}");
    let jobs = p.get(&format!("/jobs?connectionId={connection}"));
    assert_eq!(jobs["data"].as_array().unwrap().len(), 1);

    // Some state is committed while it runs.
    p.wait_for("a committed state", Duration::from_secs(60), |p| committed_cursor(p, &connection) >= 30);

    // The task's credential opens its own workload and no other.
    let tasks = orchestrators(p.pid());
    let (_, workload, credential) = tasks.first().expect("a running orchestrator").clone();
    let internal = format!("http://127.0.0.1:{}/api/internal/v1/workloads", p.port);
    assert_eq!(p.call("GET", &format!("{internal}/{workload}"), None, Some(&credential)).0, 200);
    let other = workload.replace("_0_sync", "_1_sync");
    let (status, body) = p.call("GET", &format!("{internal}/{other}"), None, Some(&credential));
    assert_eq!(status, 401, "{body}");
    assert_eq!(p.call("GET", &format!("{internal}/{workload}"), None, Some(&p.token)).0, 401, "an API token is not a workload credential");
    assert_eq!(p.call("GET", &format!("{internal}/{workload}"), None, None).0, 401);

    // Cancel: the job ends cancelled and the committed state stays.
    let cancelled = p.ok("DELETE", &format!("/jobs/{job}"), None);
    assert_eq!(cancelled["status"], "cancelled");
    let job_after = p.wait_job(job, Duration::from_secs(30));
    assert_eq!(job_after["status"], "cancelled");
    p.wait_for("the task to stop", Duration::from_secs(30), |p| orchestrators(p.pid()).is_empty());
    let kept = committed_cursor(&p, &connection);
    assert!((30..400).contains(&kept), "state after cancel: {kept}");
    let rows = scratch.read_lines("out/items.jsonl").len() as i64;
    assert!(rows >= kept, "every committed record is in the destination: {rows} rows, cursor {kept}");

    // The next sync resumes after the committed cursor and finishes the rest.
    let next = p.wait_job(p.sync(&connection), Duration::from_secs(60));
    assert_eq!(next["status"], "succeeded", "{next}");
    assert_eq!(committed_cursor(&p, &connection), kept + 400);
}

#[test]
fn kill_9_mid_sync_then_restart_finishes_without_loss_or_duplicates() {
    let scratch = Scratch::new();
    let mut p = Platform::start(&scratch.path("data"), &[]);
    let connection = scripted_connection(&p, &scratch, json!({"records": 300, "state_every": 10, "delay_secs": 0.01}), "incremental_deduped_history");
    let job = p.sync(&connection);
    p.wait_for("a committed state", Duration::from_secs(60), |p| committed_cursor(p, &connection) >= 50);
    let before = committed_cursor(&p, &connection);
    p.kill();
    p.restart();
    let resumed_from = committed_cursor(&p, &connection);
    assert!(resumed_from >= before, "no committed state lost");
    let done = p.wait_job(job, Duration::from_secs(120));
    assert_eq!(done["status"], "succeeded", "{done}\n{}", p.log());
    let attempts = p.get(&format!("/jobs/{job}/attempts"));
    assert_eq!(attempts["attempts"].as_array().unwrap().len(), 2, "{attempts}");
    assert_eq!(attempts["attempts"][0]["status"], "failed");
    // The scripted source emits `records` more after the state it is given.
    let last = resumed_from + 300;
    assert_eq!(committed_cursor(&p, &connection), last);
    assert_eq!(item_ids(&scratch), (1..=last).collect::<Vec<_>>(), "each record once in the dedup stream");
}

#[test]
fn a_task_whose_heartbeats_stop_is_failed_by_the_monitor_and_retried() {
    let scratch = Scratch::new();
    let p = Platform::start(&scratch.path("data"), &["--heartbeat-timeout-secs", "3", "--monitor-secs", "1"]);
    let connection = scripted_connection(&p, &scratch, json!({"records": 200, "state_every": 10, "delay_secs": 0.02}), "incremental_append");
    let job = p.sync(&connection);
    p.wait_for("a running task", Duration::from_secs(60), |p| !orchestrators(p.pid()).is_empty());
    let (frozen, first_workload, _) = orchestrators(p.pid())[0].clone();
    unsafe { libc::kill(-frozen, libc::SIGSTOP) };
    p.wait_for("a second attempt", Duration::from_secs(30), |p| {
        p.get(&format!("/jobs/{job}/attempts"))["attempts"].as_array().unwrap().len() == 2
    });
    unsafe { libc::kill(-frozen, libc::SIGCONT) };
    let attempts = p.get(&format!("/jobs/{job}/attempts"));
    let failure = attempts["attempts"][0]["failure"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(failure.contains(&first_workload) && failure.contains("heartbeat"), "{attempts}");
    let done = p.wait_job(job, Duration::from_secs(60));
    assert_eq!(done["status"], "succeeded", "{done}\n{}", p.log());
    assert_eq!(committed_cursor(&p, &connection), 200);
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_source_secret_is_in_no_response_log_or_database_row() {
    let scratch = Scratch::new();
    let data = scratch.path("data");
    let p = Platform::start(&data, &[]);
    const SECRET: &str = "sk-live-7f3a9c1e5d";
    let workspace = p.workspace("secrets");
    scripted_definition(&p, &workspace);
    let source = p.actor("source", &workspace, "scripted", json!({"records": 20, "api_key": SECRET}));
    let destination = jsonl_destination(&p, &workspace, &scratch.path("out"));
    let mut responses = vec![p.get(&format!("/sources/{source}")), p.get(&format!("/sources?workspaceIds={workspace}"))];
    assert_eq!(responses[0]["configuration"]["api_key"], "**********");
    let connection = connection(&p, &source, &destination, json!([{"name": "items", "syncMode": "incremental_append"}]));
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(60));
    assert_eq!(job["status"], "succeeded");
    // Sending the mask back keeps the secret; the source still works.
    responses.push(p.ok("PATCH", &format!("/sources/{source}"), Some(json!({"name": "renamed", "configuration": {"api_key": "**********", "records": 5}}))));
    let again = p.wait_job(p.sync(&connection), Duration::from_secs(60));
    assert_eq!(again["status"], "succeeded", "{again}");
    responses.push(p.get(&format!("/jobs/{}/attempts", again["jobId"])));
    responses.push(p.get(&format!("/jobs/{}/attempts/0/logs", again["jobId"])));
    for response in &responses {
        assert!(!response.to_string().contains(SECRET), "a response leaked the secret: {response}");
    }
    let secrets_dir = data.join("secrets");
    let mut in_secrets = false;
    for file in files_under(&data).into_iter().chain([data.with_extension("log")]) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        if file.starts_with(&secrets_dir) {
            in_secrets |= contains(&bytes, SECRET);
        } else {
            assert!(!contains(&bytes, SECRET), "{} holds the secret", file.display());
        }
    }
    assert!(in_secrets, "the secret is kept in the secrets store");
}

#[test]
fn tokens_are_required_valid_and_unexpired() {
    let scratch = Scratch::new();
    let p = Platform::start(&scratch.path("data"), &["--token-ttl-secs", "2"]);
    let (status, body) = p.call("GET", "/workspaces", None, None);
    assert_eq!(status, 401, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("Bearer"), "{body}");
    let (status, _) = p.call("GET", "/workspaces", None, Some("sl1.someone.99999999999.00ff"));
    assert_eq!(status, 401);
    assert_eq!(p.call("GET", "/workspaces", None, Some(&p.token)).0, 200);
    assert_eq!(p.call("GET", "/health", None, None).0, 200, "health needs no token");
    let (status, body) = p.call("POST", "/applications/token", Some(&json!({"client_id": "nobody", "client_secret": "x"})), None);
    assert_eq!(status, 401, "{body}");
    std::thread::sleep(Duration::from_millis(2500));
    let (status, body) = p.call("GET", "/workspaces", None, Some(&p.token));
    assert_eq!(status, 401);
    assert!(body["detail"].as_str().unwrap().contains("expired"), "{body}");
}

#[test]
fn bad_input_gets_a_problem_naming_the_field() {
    let scratch = Scratch::new();
    // A small body limit, so that the oversized body below fits in the socket's buffer and the
    // client reads the 413 instead of a reset.
    let p = Platform::start(&scratch.path("data"), &["--max-body-bytes", "4096", "--docker-socket", "/nonexistent/docker.sock"]);
    let workspace = p.workspace("bad input");
    let field = |(status, body): (u16, Value)| -> (u16, String) {
        (status, body["errors"][0]["field"].as_str().unwrap_or_else(|| panic!("no field in {body}")).to_owned())
    };
    let post = |path: &str, body: Value| p.call("POST", path, Some(&body), Some(&p.token));

    // Malformed JSON.
    let agent = support::platform::agent();
    let mut r = agent
        .post(&format!("{}/workspaces", p.base))
        .header("authorization", &format!("Bearer {}", p.token))
        .header("content-type", "application/json")
        .send("{\"name\": ")
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.headers().get("content-type").unwrap(), "application/problem+json");
    let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["errors"][0]["field"], "body", "{body}");

    // An oversized body.
    let (status, body) = post("/workspaces", json!({"name": "x".repeat(8 * 1024)}));
    assert_eq!(status, 413, "{body}");

    // A missing field, a wrong type.
    assert_eq!(field(post("/workspaces", json!({}))), (400, "body".into()));
    assert_eq!(field(post("/workspaces", json!({"name": 5}))), (400, "name".into()));

    // An unknown definition, and a config that fails the connector's spec.
    let unknown = post("/sources", json!({"name": "s", "workspaceId": workspace, "configuration": {"sourceType": "no-such-thing"}}));
    assert_eq!(field(unknown), (400, "configuration.sourceType".into()));
    let invalid = post("/sources", json!({"name": "s", "workspaceId": workspace, "configuration": {"sourceType": "sluice-faker", "count": -3}}));
    assert_eq!(field(invalid), (400, "configuration/count".into()));

    // An invalid cron expression.
    let source = p.actor("source", &workspace, "sluice-faker", json!({"count": 5}));
    let destination = p.actor("destination", &workspace, "dev-null", json!({}));
    let bad_cron = post("/connections", json!({"sourceId": source, "destinationId": destination, "schedule": {"scheduleType": "cron", "cronExpression": "every day"}}));
    assert_eq!(field(bad_cron), (400, "schedule.cronExpression".into()));
    let bad_stream = post("/connections", json!({"sourceId": source, "destinationId": destination, "configurations": {"streams": [{"name": "nope", "syncMode": "full_refresh_append"}]}}));
    assert_eq!(field(bad_stream), (400, "configurations.streams[0].name".into()));

    // A connector that exists only as an image, with no Docker daemon: a 422 saying so.
    p.post(&format!("/workspaces/{workspace}/definitions/sources"), json!({"name": "PokeAPI", "dockerRepository": "airbyte/source-pokeapi", "dockerImageTag": "0.3.0", "typeKey": "pokeapi"}));
    let (status, body) = post("/sources", json!({"name": "s", "workspaceId": workspace, "configuration": {"sourceType": "pokeapi"}}));
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("the Docker engine at /nonexistent/docker.sock does not answer"), "{body}");

    // Unknown ids and job ids that are not numbers.
    assert_eq!(p.call("GET", "/sources/00000000-0000-0000-0000-000000000000", None, Some(&p.token)).0, 404);
    assert_eq!(field(p.call("GET", "/jobs/abc", None, Some(&p.token))), (400, "jobId".into()));
    assert_eq!(field(p.call("GET", "/workspaces?limit=1000", None, Some(&p.token))), (400, "limit".into()));
}

#[test]
fn airbytes_python_sdk_works_against_the_api_with_client_credentials() {
    let cache = sluice_connectors::Cache { root: support::cache_dir() };
    let venv = cache.python_env("airbyte-api", Some("1.0.1"), &mut |_| {}).expect("airbyte-api installs from PyPI");
    let scratch = Scratch::new();
    let data = scratch.path("data");
    let p = Platform::start(&data, &[]);
    let credentials: Value = serde_json::from_str(&std::fs::read_to_string(data.join("credentials.json")).unwrap()).unwrap();
    let output = std::process::Command::new(venv.join("bin/python"))
        .arg(fixture("sdk_client.py"))
        .arg(&p.base)
        .arg(credentials["client_id"].as_str().unwrap())
        .arg(credentials["client_secret"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(output.status.success(), "the SDK client failed:\n{}\n--- sluice up log:\n{}", String::from_utf8_lossy(&output.stderr), p.log());
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    let jobs = seen["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    // Newest first, two per page, every job once.
    let pages: Vec<Vec<i64>> = serde_json::from_value(seen["pages"].clone()).unwrap();
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1], "{seen}");
    let mut listed: Vec<i64> = pages.concat();
    listed.sort();
    let mut started: Vec<i64> = jobs.iter().map(|j| j.as_i64().unwrap()).collect();
    started.sort();
    assert_eq!(listed, started);
    assert_eq!(p.get(&format!("/sources/{}", seen["source"].as_str().unwrap()))["sourceType"], "faker");
}

#[test]
fn reset_drops_state_and_data_and_refresh_starts_a_new_generation() {
    let scratch = Scratch::new();
    let p = Platform::start(&scratch.path("data"), &[]);
    let connection = scripted_connection(&p, &scratch, json!({"records": 20, "state_every": 5}), "incremental_append");
    assert_eq!(p.wait_job(p.sync(&connection), Duration::from_secs(60))["status"], "succeeded");
    assert_eq!(committed_cursor(&p, &connection), 20);
    assert_eq!(scratch.read_lines("out/items.jsonl").len(), 20);

    let reset = p.post("/jobs", json!({"connectionId": connection, "jobType": "reset"}));
    assert_eq!(reset["jobType"], "reset");
    assert_eq!(p.wait_job(reset["jobId"].as_i64().unwrap(), Duration::from_secs(60))["status"], "succeeded");
    assert_eq!(state_of(&p, &connection), json!([]), "a reset drops the state");
    assert_eq!(scratch.read_lines("out/items.jsonl").len(), 0, "and the data");

    // The next sync starts from scratch.
    assert_eq!(p.wait_job(p.sync(&connection), Duration::from_secs(60))["status"], "succeeded");
    assert_eq!(committed_cursor(&p, &connection), 20);

    // A refresh re-reads everything under a new generation.
    let refresh = p.post("/jobs", json!({"connectionId": connection, "jobType": "refresh"}));
    assert_eq!(p.wait_job(refresh["jobId"].as_i64().unwrap(), Duration::from_secs(60))["status"], "succeeded");
    assert_eq!(committed_cursor(&p, &connection), 20, "read again from the start");
}

#[test]
fn job_events_reach_the_workspaces_webhooks_with_retries() {
    let scratch = Scratch::new();
    let p = Platform::start(&scratch.path("data"), &[]);
    let (url, received) = support::webhook_receiver();
    let workspace = p.post("/workspaces", json!({"name": "hooked", "notificationUrls": [url]}))["workspaceId"].as_str().unwrap().to_owned();
    let source = p.actor("source", &workspace, "sluice-faker", json!({"count": 10}));
    let destination = p.actor("destination", &workspace, "dev-null", json!({}));
    let connection = connection(&p, &source, &destination, json!([{"name": "users", "syncMode": "full_refresh_overwrite"}]));
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(60));
    assert_eq!(job["status"], "succeeded");
    p.wait_for("both events", Duration::from_secs(20), |_| received.lock().unwrap().len() >= 2);
    let events = received.lock().unwrap().clone();
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert!(names.contains(&"job.started") && names.contains(&"job.succeeded"), "{events:?}");
    let done = events.iter().find(|e| e["event"] == "job.succeeded").unwrap();
    assert_eq!(done["jobId"], job["jobId"]);
    assert_eq!(done["rowsSynced"], 10);
}

/// Schemathesis (PyPI) generates requests from the served OpenAPI document,
/// valid and not, against a platform with one of everything: no request may
/// get a 5xx, and every response must match the document.
#[test]
fn schemathesis_finds_no_server_error_and_no_response_off_the_document() {
    let cache = sluice_connectors::Cache { root: support::cache_dir() };
    let venv = cache.python_env("schemathesis", Some("4.32.5"), &mut |_| {}).expect("schemathesis installs from PyPI");
    let scratch = Scratch::new();
    let p = Platform::start(&scratch.path("data"), &[]);
    let workspace = p.workspace("fuzzed");
    let source = p.actor("source", &workspace, "sluice-faker", json!({"count": 5}));
    let destination = p.actor("destination", &workspace, "dev-null", json!({}));
    let connection = connection(&p, &source, &destination, json!([{"name": "users", "syncMode": "full_refresh_overwrite"}]));
    assert_eq!(p.wait_job(p.sync(&connection), Duration::from_secs(60))["status"], "succeeded");

    let output = std::process::Command::new(venv.join("bin/st"))
        .current_dir(scratch.path("."))
        .args(["--config-file", &fixture("schemathesis.toml"), "run"])
        .arg(format!("{}/openapi.json", p.base))
        .args(["--url", &p.base, "-H", &format!("Authorization: Bearer {}", p.token)])
        .args(["--max-examples", "20", "--request-timeout", "60", "--seed", "1"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "schemathesis found problems:\n{report}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(report.contains("passed"), "{report}");
}

fn attempt_log(p: &Platform, job: &Value) -> String {
    p.get(&format!("/jobs/{}/attempts/0/logs", job["jobId"]))["text"].as_str().unwrap().to_owned()
}

/// Socket mode chosen by the platform: our reference definitions declare
/// `connectorIPCOptions.dataChannel`, so their syncs go source -> destination
/// over sockets with the bookkeeper; a connection can force legacy mode or
/// set the socket count, and resets always run in legacy mode.
#[test]
fn reference_connectors_sync_in_socket_mode_unless_the_connection_or_the_job_says_otherwise() {
    let scratch = Scratch::new();
    let p = Platform::start(&scratch.path("data"), &[]);
    let workspace = p.workspace("sockets");
    let definition = p.get(&format!("/workspaces/{workspace}/definitions/sources"))["data"]
        .as_array().unwrap().iter().find(|d| d["sourceType"] == "sluice-faker").cloned().unwrap();
    assert_eq!(definition["connectorIPCOptions"]["dataChannel"]["supportedTransport"], json!(["SOCKET", "STDIO"]));
    let source = p.actor("source", &workspace, "sluice-faker", json!({"count": 400, "seed": 2, "records_per_slice": 30}));
    let out = scratch.path("out");
    let destination = jsonl_destination(&p, &workspace, &out);
    let connection = connection(&p, &source, &destination, json!([{"name": "users", "syncMode": "incremental_append"}]));

    let job = p.wait_job(p.sync(&connection), Duration::from_secs(60));
    assert_eq!(job["status"], "succeeded", "{job}");
    let log = attempt_log(&p, &job);
    // One CPU per connector by default: Airbyte's rule gives two sockets.
    assert!(log.contains("data channel: SOCKET PROTOBUF over 2 sockets (both connectors support SOCKET with PROTOBUF)"), "{log}");
    assert!(log.contains("socket mode: records go from source to destination in PROTOBUF over 2 sockets"), "{log}");
    let details = p.get(&format!("/jobs/{}/attempts", job["jobId"]))["attempts"][0]["dataChannel"].clone();
    assert_eq!(details, json!({"medium": "SOCKET", "format": "PROTOBUF", "socketCount": 2, "reason": "both connectors support SOCKET with PROTOBUF"}));
    let mut ids: Vec<i64> = scratch.read_lines("out/users.jsonl").iter().map(|u| u["_airbyte_data"]["id"].as_i64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, (1..=400).collect::<Vec<_>>(), "each user exactly once");
    assert_eq!(job["rowsSynced"], 400);

    // The connection's own setting: more sockets, then legacy mode.
    let bad = p.call("PATCH", &format!("/connections/{connection}"), Some(&json!({"dataChannel": {"socketCount": 0}})), Some(&p.token));
    assert_eq!(bad.0, 400, "{}", bad.1);
    assert!(bad.1.to_string().contains("dataChannel.socketCount"), "{}", bad.1);
    let patched = p.ok("PATCH", &format!("/connections/{connection}"), Some(json!({"dataChannel": {"socketCount": 4}})));
    assert_eq!(patched["dataChannel"], json!({"mode": "auto", "socketCount": 4}));
    p.ok("PATCH", &format!("/sources/{source}"), Some(json!({"configuration": {"count": 500, "seed": 2, "records_per_slice": 30}})));
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(60));
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(attempt_log(&p, &job).contains("data channel: SOCKET PROTOBUF over 4 sockets"));
    assert_eq!(job["rowsSynced"], 100, "resumed from the committed state");

    p.ok("PATCH", &format!("/connections/{connection}"), Some(json!({"dataChannel": {"mode": "stdio"}})));
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(60));
    assert_eq!(job["status"], "succeeded", "{job}");
    let log = attempt_log(&p, &job);
    assert!(log.contains("data channel: STDIO (the connection's dataChannel.mode is stdio)") && log.contains("legacy mode"), "{log}");
    assert_eq!(p.get(&format!("/jobs/{}/attempts", job["jobId"]))["attempts"][0]["dataChannel"]["medium"], "STDIO");

    p.ok("PATCH", &format!("/connections/{connection}"), Some(json!({"dataChannel": {"mode": "auto"}})));
    let reset = p.post("/jobs", json!({"connectionId": connection, "jobType": "reset"}));
    let job = p.wait_job(reset["jobId"].as_i64().unwrap(), Duration::from_secs(60));
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(attempt_log(&p, &job).contains("data channel: STDIO (reset and clear jobs run in legacy mode)"));
}

/// `--max-running-jobs 2`: six syncs asked for at once run two at a time,
/// the others waiting as pending jobs and starting oldest first as slots
/// free; none fails for want of one, none is lost.
#[test]
fn under_a_limit_on_running_jobs_more_jobs_wait_their_turn_and_all_succeed() {
    let scratch = Scratch::new();
    let p = Platform::start(&scratch.path("data"), &["--max-running-jobs", "2"]);
    let workspace = p.workspace("limited");
    let source = p.actor("source", &workspace, "sluice-faker", json!({"count": 500, "records_per_slice": 100, "slice_pause_ms": 150}));
    let destination = p.actor("destination", &workspace, "dev-null", json!({}));
    let streams = json!([{"name": "users", "syncMode": "full_refresh_overwrite"}]);
    let connections: Vec<String> = (0..6).map(|_| connection(&p, &source, &destination, streams.clone())).collect();
    let asked: Vec<Value> = connections.iter().map(|c| p.post("/jobs", json!({"connectionId": c, "jobType": "sync"}))).collect();
    assert!(asked.iter().all(|j| j["status"] == "pending"), "under a limit a job waits for the scheduler: {asked:?}");

    let (mut most, deadline) = (0, Instant::now() + Duration::from_secs(180));
    let jobs = loop {
        let running = p.get("/jobs?status=running&limit=100")["data"].as_array().unwrap().len();
        most = most.max(running);
        let jobs: Vec<Value> = asked.iter().map(|j| p.get(&format!("/jobs/{}", j["jobId"]))).collect();
        if jobs.iter().all(|j| !["pending", "running", "incomplete"].contains(&j["status"].as_str().unwrap())) {
            break jobs;
        }
        assert!(Instant::now() < deadline, "jobs still unfinished: {jobs:?}\n{}", p.log());
        std::thread::sleep(Duration::from_millis(40));
    };
    assert!(jobs.iter().all(|j| j["status"] == "succeeded" && j["rowsSynced"] == 500), "{jobs:?}");
    assert_eq!(most, 2, "two jobs ran at once at most, and the limit was reached");
    // Oldest first: each job's attempt started no earlier than the one asked before it.
    let started: Vec<String> = asked.iter().map(|j| p.get(&format!("/jobs/{}/attempts", j["jobId"]))["attempts"][0]["startedAt"].as_str().unwrap().to_owned()).collect();
    let parsed: Vec<jiff::Timestamp> = started.iter().map(|t| t.parse().unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] <= w[1]), "started in the order asked: {started:?}");
}

/// `sluice load`'s short forms, as the long ones run (README): reads and
/// writes at a fixed rate with no error, then twelve syncs at once under
/// `--max-running-jobs 4`, all succeeding with every row.
#[test]
fn sluice_load_sends_a_bounded_load_and_syncs_many_connections_at_once() {
    let scratch = Scratch::new();
    let p = Platform::start(&scratch.path("data"), &["--max-running-jobs", "4"]);
    let workspace = p.workspace("loaded");
    let source = p.actor("source", &workspace, "sluice-faker", json!({"count": 50}));
    let destination = p.actor("destination", &workspace, "dev-null", json!({}));
    for _ in 0..3 {
        connection(&p, &source, &destination, json!([{"name": "users", "syncMode": "full_refresh_overwrite"}]));
    }
    let credentials = scratch.path("data/credentials.json");
    let load = |args: &[&str]| {
        let output = support::sluice()
            .arg("load")
            .args(["--credentials", credentials.to_str().unwrap(), "--api-url", &p.base, "-o", "json", "--server-pid", &p.pid().to_string()])
            .args(args)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        assert!(output.status.success(), "{report:#}\n{}\n{}", String::from_utf8_lossy(&output.stderr), p.log());
        report
    };
    let report = load(&["--rate", "300", "--seconds", "2", "--writes", "0.05", "--workers", "8"]);
    assert_eq!((report["sent"].as_u64(), report["errors"].as_u64(), report["unsent"].as_u64()), (Some(600), Some(0), Some(0)), "{report:#}");
    assert_eq!(report["writes"], 30, "one request in twenty is a POST /jobs: {report:#}");
    assert!(report["latencyMs"]["p99"].as_f64().unwrap() > 0.0 && report["serverMemory"]["rssMiB"].as_u64().unwrap() > 0, "{report:#}");

    let report = load(&["--syncs", "12", "--records", "300"]);
    assert_eq!((report["succeeded"].as_u64(), report["rows"].as_u64()), (Some(12), Some(3600)), "{report:#}");
    assert!(report["mostRunningAtOnce"].as_u64().unwrap() <= 4, "the limit holds: {report:#}");
}

/// A tmpfs of the test's own at `path` (this needs root, as the test
/// command runs), unmounted when dropped.
struct Disk(std::path::PathBuf);

impl Disk {
    fn tmpfs(path: &std::path::Path, size: &str) -> Disk {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path).status().unwrap();
        assert!(status.success(), "mounting a tmpfs at {} needs root", path.display());
        Disk(path.to_owned())
    }

    fn remount(&self, how: &str) {
        let status = std::process::Command::new("mount").args(["-o", &format!("remount,{how}")]).arg(&self.0).status().unwrap();
        assert!(status.success(), "remount {how}");
    }

    /// Writes a file until the disk has no room left.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// SQLite's own check of the database file.
fn integrity(db: &std::path::Path) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('pragma integrity_check').fetchone()[0])"])
        .arg(db)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The machine's limits: a data directory whose disk fills up, whose
/// database another process locks, that a second `sluice up` asks for, or
/// that is read-only at start. Each is said plainly (what, and what to do),
/// nothing is corrupted, and work goes on once the cause is gone.
#[test]
fn a_full_locked_or_read_only_data_directory_is_said_plainly_and_work_resumes() {
    let scratch = Scratch::new();
    let data = scratch.path("data");
    let disk = Disk::tmpfs(&data, "24m");
    let mut p = Platform::start(&data, &[]);
    let workspace = p.workspace("limits");
    let source = p.actor("source", &workspace, "sluice-faker", json!({"count": 500}));
    let destination = jsonl_destination(&p, &workspace, &scratch.path("out"));
    let connection = connection(&p, &source, &destination, json!([{"name": "users", "syncMode": "incremental_append"}]));
    let refused = |p: &Platform, path: &str, body: Value| {
        let (status, answer) = p.call("POST", path, Some(&body), Some(&p.token));
        assert_eq!(status, 503, "{path}: {answer}");
        answer["detail"].as_str().unwrap_or_default().to_owned()
    };

    // The disk fills up.
    let filler = disk.fill();
    let said = refused(&p, "/workspaces", json!({"name": "no room"}));
    assert!(said.contains("the disk of the data directory is full"), "{said}");
    let said = refused(&p, "/jobs", json!({"connectionId": connection, "jobType": "sync"}));
    assert!(said.contains("full"), "{said}");
    std::fs::remove_file(filler).unwrap();
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(60));
    assert_eq!((job["status"].as_str(), job["rowsSynced"].as_u64()), (Some("succeeded"), Some(500)), "{job}\n{}", p.log());
    assert_eq!(integrity(&data.join("sluice.db")), "ok");

    // Another process locks the database.
    let mut holder = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(7)"])
        .arg(data.join("sluice.db"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    let said = refused(&p, "/workspaces", json!({"name": "locked out"}));
    assert!(said.contains("another process holds a lock on the database"), "{said}");
    holder.wait().unwrap();
    p.post("/workspaces", json!({"name": "after the lock"}));

    // A second platform on the same directory.
    let second = support::sluice().args(["up", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success() && stderr.contains("another `sluice up`") && stderr.contains(&p.pid().to_string()), "{stderr}");

    // Read-only at start.
    p.kill();
    disk.remount("ro");
    let started = support::sluice().args(["up", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data).output().unwrap();
    let stderr = String::from_utf8_lossy(&started.stderr);
    disk.remount("rw");
    assert!(!started.status.success() && stderr.contains("is read-only") && stderr.contains("--data-dir"), "{stderr}");
    p.restart();
    let names: Vec<Value> = p.get("/workspaces")["data"].as_array().unwrap().iter().map(|w| w["name"].clone()).collect();
    assert!(names.contains(&json!("limits")) && names.contains(&json!("after the lock")), "{names:?}");
    p.ok("PATCH", &format!("/sources/{source}"), Some(json!({"configuration": {"sourceType": "sluice-faker", "count": 600}})));
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(60));
    assert_eq!((job["status"].as_str(), job["rowsSynced"].as_u64()), (Some("succeeded"), Some(100)), "{job}");
    drop(p);
    assert_eq!(integrity(&data.join("sluice.db")), "ok");
}

/// The disk of the data directory fills up while a sync runs (its states,
/// heartbeats and log go there): the platform says so, and once there is
/// room again the job ends succeeded, from its committed state, with each
/// record once in the dedup stream and the database whole.
#[test]
fn a_disk_that_fills_up_mid_sync_loses_and_duplicates_nothing() {
    let scratch = Scratch::new();
    let data = scratch.path("data");
    let disk = Disk::tmpfs(&data, "24m");
    let p = Platform::start(&data, &[]);
    let connection = scripted_connection(&p, &scratch, json!({"records": 300, "state_every": 10, "delay_secs": 0.02}), "incremental_deduped_history");
    let job = p.sync(&connection);
    p.wait_for("a committed state", Duration::from_secs(60), |p| committed_cursor(p, &connection) >= 50);
    let filler = disk.fill();
    let (status, answer) = p.call("POST", "/workspaces", Some(&json!({"name": "no room"})), Some(&p.token));
    assert_eq!(status, 503, "{answer}");
    // Long enough for the sync to reach its next states and its end while nothing can be written.
    std::thread::sleep(Duration::from_secs(8));
    std::fs::remove_file(filler).unwrap();

    let done = p.wait_job(job, Duration::from_secs(120));
    assert_eq!(done["status"], "succeeded", "{done}\n{}", p.log());
    let last = committed_cursor(&p, &connection);
    assert_eq!(item_ids(&scratch), (1..=last).collect::<Vec<_>>(), "each record once in the dedup stream, up to the committed state");
    let attempts = p.get(&format!("/jobs/{job}/attempts"));
    // The attempt that could not commit its state says why, and what to do;
    // or, when the disk took its report of that too, the platform recorded
    // it once there was room.
    for failed in attempts["attempts"].as_array().unwrap().iter().filter(|a| a["status"] == "failed") {
        let said = failed["failure"]["message"].as_str().unwrap_or_default();
        let named = said.contains("the disk of the data directory is full") && said.contains("free space");
        assert!(named || said.contains("without reporting the attempt's end"), "{failed:#}\n{}", p.log());
    }
    drop(p);
    assert_eq!(integrity(&data.join("sluice.db")), "ok");
}

/// A launch that fails while the data directory's disk is full is recorded
/// once there is room again, instead of holding its connection until the
/// monitor's heartbeat timeout.
#[test]
fn a_launch_failure_a_full_disk_refused_is_recorded_once_there_is_room() {
    let scratch = Scratch::new();
    let data = scratch.path("data");
    let disk = Disk::tmpfs(&data, "24m");
    let mut p = Platform::start(&data, &[]);
    let workspace = p.workspace("launch");
    let source = p.actor("source", &workspace, "sluice-faker", json!({"count": 10}));
    let destination = jsonl_destination(&p, &workspace, &scratch.path("out"));
    let connection = connection(&p, &source, &destination, json!([{"name": "users", "syncMode": "full_refresh_overwrite"}]));
    p.kill();
    drop(p);

    // An engine that reads each request and never answers: a launch fails at its timeout.
    let silent = scratch.path("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
    let (asked, engine_asked) = std::sync::mpsc::channel();
    let held = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(50).flatten() {
            let mut request = [0u8; 512];
            let n = std::io::Read::read(&mut &stream, &mut request).unwrap_or(0);
            let _ = asked.send(String::from_utf8_lossy(&request[..n]).into_owned());
            held.push(stream);
        }
    });
    let p = Platform::start(&data, &["--executor", "docker", "--docker-socket", silent.to_str().unwrap(), "--docker-timeout-secs", "3"]);
    let job = p.sync(&connection);
    // The sync's workload is claimed and launching (its first request names
    // the connection; others may be a recovered spec's): now the disk fills up.
    while !engine_asked.recv_timeout(Duration::from_secs(30)).expect("the launcher asks the engine").contains(&connection) {}
    let filler = disk.fill();
    p.wait_for("the platform to say it cannot record the failure yet", Duration::from_secs(30), |p| p.log().contains("cannot record yet that workload"));
    std::fs::remove_file(filler).unwrap();

    let first = || p.get(&format!("/jobs/{job}/attempts"))["attempts"][0].clone();
    p.wait_for("the first attempt's failure recorded", Duration::from_secs(60), |_| first()["status"] == "failed");
    let said = first()["failure"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(said.contains("did not answer"), "the attempt names the engine that did not answer: {said}\n{}", p.log());
    p.call("DELETE", &format!("/jobs/{job}"), None, Some(&p.token));
    drop(p);
    drop(held);
    assert_eq!(integrity(&data.join("sluice.db")), "ok");
}
