//! Sluice's own connectors through `sluice sync` and the orchestrator: the
//! incremental cycle, destination sync modes, attach mode, and what they
//! emit checked against the protocol's JSON Schema.

mod support;

use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::*;

fn faker_sync(s: &Scratch, count: u64, extra: &[&str]) -> Synced {
    let source = s.json("faker.json", &json!({"count": count, "seed": 3, "records_per_slice": 7}));
    let destination = s.json("jsonl.json", &json!({"destination_path": s.path("out")}));
    let state = s.path("state.json");
    let mut args = vec![
        "--source", "source-faker",
        "--source-config", source.to_str().unwrap(),
        "--destination", "destination-jsonl",
        "--destination-config", destination.to_str().unwrap(),
        "--state-file", state.to_str().unwrap(),
        // Records in key order, which socket mode's parallel partitions do not keep
        // (tests/socket_mode.rs checks that one).
        "--data-channel", "stdio",
    ];
    args.extend_from_slice(extra);
    run_sync(&args)
}

fn ids(rows: &[Value]) -> Vec<i64> {
    rows.iter().map(|r| r["_airbyte_data"]["id"].as_i64().unwrap()).collect()
}

#[test]
fn reference_faker_resumes_from_the_acknowledged_state() {
    let s = Scratch::new();
    let first = faker_sync(&s, 100, &["--streams", "users,purchases"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.committed("users"), 100);
    let purchases_first = first.committed("purchases");

    // Nothing new: nothing emitted.
    let again = faker_sync(&s, 100, &["--streams", "users,purchases"]);
    assert_eq!((again.emitted("users"), again.emitted("purchases")), (0, 0), "{}", again.stderr);

    // 50 more users: exactly those arrive, after the first hundred.
    let more = faker_sync(&s, 150, &["--streams", "users,purchases"]);
    assert_eq!(more.emitted("users"), 50);
    assert_eq!(ids(&s.read_lines("out/users.jsonl")), (1..=150).collect::<Vec<_>>());
    let purchases = ids(&s.read_lines("out/purchases.jsonl"));
    assert_eq!(purchases, (1..=purchases.len() as i64).collect::<Vec<_>>(), "each purchase once, in order");
    assert_eq!(purchases.len() as u64, purchases_first + more.emitted("purchases"));
}

#[test]
fn field_selection_and_full_refresh_overwrite() {
    let s = Scratch::new();
    for _ in 0..2 {
        let synced = faker_sync(&s, 10, &["--streams", "products", "--fields", "products=id,make"]);
        assert_eq!(synced.code, 0, "{}", synced.stderr);
        let rows = s.read_lines("out/products.jsonl");
        assert_eq!(rows.len(), 10, "overwrite replaces the previous run");
        assert_eq!(rows[0]["_airbyte_data"].as_object().unwrap().keys().collect::<Vec<_>>(), ["id", "make"]);
    }
    let bad = sluice().args(["sync", "--source", "source-faker", "--source-config", "/nonexistent.json"])
        .args(["--destination", "destination-jsonl", "--destination-config", "/nonexistent.json"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--source-config: cannot read /nonexistent.json"));
}

#[test]
fn unknown_streams_are_refused_with_the_ones_that_exist() {
    let s = Scratch::new();
    let source = s.json("faker.json", &json!({"count": 1}));
    let destination = s.json("jsonl.json", &json!({"destination_path": s.path("out")}));
    let out = sluice()
        .args(["sync", "--source", "source-faker", "--destination", "destination-jsonl", "--streams", "userz"])
        .arg("--source-config").arg(&source).arg("--destination-config").arg(&destination)
        .output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`userz`") && stderr.contains("users, purchases, products"), "{stderr}");
}

/// Runs a reference connector with `input` on stdin; returns its stdout lines.
fn connector(name: &str, args: &[&str], input: &str) -> Vec<Value> {
    let mut child = sluice().arg("connector").arg(name).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{name} {args:?} failed");
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn append_dedup_keeps_the_latest_record_per_key() {
    let s = Scratch::new();
    let config = s.json("config.json", &json!({"destination_path": s.path("out")}));
    let catalog = s.json("catalog.json", &json!({"streams": [{
        "stream": {"name": "items", "json_schema": {}, "supported_sync_modes": ["incremental"]},
        "sync_mode": "incremental", "cursor_field": ["v"], "destination_sync_mode": "append_dedup", "primary_key": [["id"]]}]}));
    let record = |id: i64, v: i64| json!({"type": "RECORD", "record": {"stream": "items", "data": {"id": id, "v": v}, "emitted_at": 1}}).to_string();
    let state = json!({"type": "STATE", "state": {"type": "STREAM", "stream": {"stream_descriptor": {"name": "items"}, "stream_state": {"v": 3}}, "id": 1}});
    let input = [record(1, 1), record(2, 1), record(1, 3), record(1, 2), state.to_string()].join("\n");
    let args = ["write", "--config", config.to_str().unwrap(), "--catalog", catalog.to_str().unwrap()];
    let echoed = connector("destination-jsonl", &args, &input);
    assert_eq!(echoed.len(), 1);
    assert_eq!(echoed[0]["state"]["id"], 1, "the echo keeps the platform's id");
    assert_eq!(echoed[0]["state"]["destinationStats"]["recordCount"], 4.0);
    let rows: Vec<Value> = s.read_lines("out/items.jsonl").into_iter().map(|r| r["_airbyte_data"].clone()).collect();
    assert_eq!(rows, vec![json!({"id": 1, "v": 3}), json!({"id": 2, "v": 1})]);
    // A second sync appends, and dedup still holds across syncs.
    connector("destination-jsonl", &args, &record(2, 5));
    let rows: Vec<Value> = s.read_lines("out/items.jsonl").into_iter().map(|r| r["_airbyte_data"].clone()).collect();
    assert_eq!(rows, vec![json!({"id": 1, "v": 3}), json!({"id": 2, "v": 5})]);
}

fn validator(definition: &str) -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../protocol/schema/airbyte_protocol.json");
    let mut schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    schema["$ref"] = json!(format!("#/definitions/{definition}"));
    schema.as_object_mut().unwrap().remove("properties");
    jsonschema::draft7::new(&schema).unwrap()
}

fn assert_all_valid(definition: &str, values: &[Value]) {
    let validator = validator(definition);
    for value in values {
        let errors: Vec<String> = validator.iter_errors(value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?} in {value}");
    }
}

#[test]
fn what_sluice_emits_is_valid_protocol() {
    let s = Scratch::new();
    let config = s.json("faker.json", &json!({"count": 20, "records_per_slice": 6}));
    let mut messages = connector("source-faker", &["spec"], "");
    messages.extend(connector("destination-jsonl", &["spec"], ""));
    messages.extend(connector("destination-dev-null", &["spec"], ""));
    messages.extend(connector("source-faker", &["check", "--config", config.to_str().unwrap()], ""));
    let discovered = connector("source-faker", &["discover", "--config", config.to_str().unwrap()], "");
    messages.extend(discovered.clone());
    let streams: Vec<Value> = discovered[0]["catalog"]["streams"].as_array().unwrap().iter()
        .map(|s| json!({"stream": s, "sync_mode": "incremental", "cursor_field": ["updated_at"], "destination_sync_mode": "append"}))
        .filter(|c| c["stream"]["name"] != "products")
        .collect();
    let catalog = s.json("catalog.json", &json!({"streams": streams}));
    assert_all_valid("ConfiguredAirbyteCatalog", &[s.read_json("catalog.json")]);
    let read = connector("source-faker", &["read", "--config", config.to_str().unwrap(), "--catalog", catalog.to_str().unwrap()], "");
    for kind in ["RECORD", "STATE", "TRACE", "LOG"] {
        assert!(read.iter().any(|m| m["type"] == kind), "faker emitted no {kind}");
    }
    messages.extend(read);
    assert_all_valid("AirbyteMessage", &messages);

    // The state a sync saves is a list of valid state messages.
    let synced = faker_sync(&s, 20, &["--streams", "users"]);
    assert_all_valid("AirbyteStateMessage", synced.outcome["state"].as_array().unwrap());
}

/// As in a task: an init step made the FIFOs, each connector runs in its own
/// "container" (here a shell running `attach_wrapper`) on those pipes, and
/// the orchestrator attaches. Returns the shells and the sync config file.
fn attached_task(s: &Scratch, source: (&[String], Value), destination: (&[String], Value)) -> (Vec<std::process::Child>, std::path::PathBuf) {
    let mut shells = Vec::new();
    for (side, verb, wants_stdin, command) in [("source", "read", false, source.0), ("destination", "write", true, destination.0)] {
        let pipes = s.path(&format!("pipes/{side}"));
        std::fs::create_dir_all(&pipes).unwrap();
        let names: &[&str] = if wants_stdin { &["stdin", "stdout", "stderr"] } else { &["stdout", "stderr"] };
        for name in names {
            assert!(Command::new("mkfifo").arg(pipes.join(name)).status().unwrap().success());
        }
        let script = sluice_orchestrator::connector::attach_wrapper(&pipes, command, wants_stdin);
        let work = s.path(&format!("work/{side}"));
        let files = [format!("--config {}/config.json", work.display()), format!("--catalog {}/catalog.json", work.display())].join(" ");
        // The connector waits for its files like a container would; the catalog is written last.
        let shell = format!("while [ ! -f {}/catalog.json ]; do sleep 0.05; done; set -- {verb} {files}; {script}", work.display());
        shells.push(Command::new("sh").arg("-c").arg(shell).spawn().unwrap());
    }
    let attach = |side: &str| json!({"attach": {"dir": s.path(&format!("pipes/{side}"))}});
    let config = s.json("sync.json", &json!({
        "source": {"name": "source", "launch": attach("source"), "config": source.1},
        "destination": {"name": "destination", "launch": attach("destination"), "config": destination.1},
        "catalog": {"streams": [{"stream": {"name": "items", "json_schema": {}, "supported_sync_modes": ["incremental"]},
            "sync_mode": "incremental", "cursor_field": ["id"], "destination_sync_mode": "append"}]},
        "work_dir": s.path("work"),
        "limits": {"shutdown_grace_secs": 2},
    }));
    (shells, config)
}

#[test]
fn the_orchestrator_attaches_to_connectors_through_named_pipes() {
    let s = Scratch::new();
    let source = vec![fixture("scripted_source.py")];
    let destination = vec![env!("CARGO_BIN_EXE_sluice").to_string(), "connector".into(), "destination-jsonl".into()];
    let (shells, config) = attached_task(&s, (&source, json!({"records": 42, "state_every": 10})), (&destination, json!({"destination_path": s.path("out")})));
    let out = sluice().arg("orchestrate").arg("--config").arg(&config).output().unwrap();
    let outcome: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(outcome["status"], "succeeded", "{outcome:#}");
    assert_eq!(outcome["streams"][0]["committed"]["records"], 42);
    assert_eq!(s.read_lines("out/items.jsonl").len(), 42);
    for mut shell in shells {
        assert!(shell.wait().unwrap().success());
    }
}

#[test]
fn cancelling_an_attached_task_stops_its_connectors() {
    let s = Scratch::new();
    let source = vec![fixture("scripted_source.py")];
    let destination = vec![env!("CARGO_BIN_EXE_sluice").to_string(), "connector".into(), "destination-jsonl".into()];
    let slow = json!({"records": 100000, "state_every": 5, "delay_secs": 0.01});
    let (shells, config) = attached_task(&s, (&source, slow), (&destination, json!({"destination_path": s.path("out")})));
    let state = s.path("state.json");
    let child = sluice().arg("orchestrate").arg("--config").arg(&config).arg("--state-file").arg(&state)
        .stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !state.exists() {
        assert!(std::time::Instant::now() < deadline, "no state committed in time");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let outcome: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(outcome["status"], "cancelled", "{outcome:#}");
    assert_eq!(out.status.code(), Some(3));
    assert!(outcome["state"][0]["stream"]["stream_state"]["cursor"].as_i64().unwrap() >= 5);
    // Both "containers" ended and reported how.
    for (side, mut shell) in ["source", "destination"].into_iter().zip(shells) {
        shell.wait().unwrap();
        assert!(s.path(&format!("pipes/{side}/exit")).exists(), "{side} wrote no exit status");
    }
}
