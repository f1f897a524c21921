//! The platform end to end: `sluice up` driven over HTTP only, as a user
//! or Airbyte's tools would, with real connectors.

mod support;

use std::time::Duration;

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

fn sync(p: &Platform, connection: &str) -> i64 {
    p.post("/jobs", json!({"connectionId": connection, "jobType": "sync"}))["jobId"].as_i64().unwrap()
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
    let job = p.wait_job(sync(&p, &connection), Duration::from_secs(180));
    assert_eq!(job["status"], "succeeded", "{job}\n{}", p.log());
    assert_eq!(job["rowsSynced"].as_u64().unwrap() >= 120, true, "{job}");
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
    let second = p.wait_job(sync(&p, &connection), Duration::from_secs(180));
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
