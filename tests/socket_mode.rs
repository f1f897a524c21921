//! Socket mode through `sluice sync`: records go from source to destination
//! over Unix sockets and the bookkeeper keeps the books. Exactly-once by
//! record id for every socket count and both framings; failures that keep
//! the last released state; a STATE whose records never arrived is never
//! committed; interoperability with a socket-mode source written in Python
//! from Airbyte's conventions alone; and the cases that stay in legacy mode.

mod support;

use serde_json::{json, Value};
use support::*;

fn ids(rows: &[Value]) -> Vec<i64> {
    let mut ids: Vec<i64> = rows.iter().map(|r| r["_airbyte_data"]["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    ids
}

fn cursor(state: &Value, stream: &str) -> Value {
    state.as_array().unwrap().iter().find(|s| s["stream"]["stream_descriptor"]["name"] == stream).map(|s| s["stream"]["stream_state"].clone()).unwrap_or(Value::Null)
}

fn log_of(s: &Scratch) -> String {
    std::fs::read_to_string(s.path("attempt.log")).unwrap()
}

fn sync(s: &Scratch, source: &str, source_config: &Value, extra: &[&str]) -> Synced {
    let source_config = s.json("source.json", source_config);
    let destination = s.json("jsonl.json", &json!({"destination_path": s.path("out")}));
    let (state, log) = (s.path("state.json"), s.path("attempt.log"));
    let mut args = vec![
        "--source", source,
        "--source-config", source_config.to_str().unwrap(),
        "--destination", "destination-jsonl",
        "--destination-config", destination.to_str().unwrap(),
        "--state-file", state.to_str().unwrap(),
        "--log-file", log.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_sync(&args)
}

#[test]
fn every_record_arrives_exactly_once_over_1_2_4_and_8_sockets_in_both_framings() {
    for format in ["protobuf", "jsonl"] {
        for sockets in ["1", "2", "4", "8"] {
            let s = Scratch::new();
            let faker = |count: u64| json!({"count": count, "seed": 5, "records_per_slice": 37});
            let args = ["--streams", "users,purchases", "--data-format", format, "--sockets", sockets];
            let first = sync(&s, "source-faker", &faker(600), &args);
            let what = format!("{format} over {sockets} sockets");
            assert_eq!(first.code, 0, "{what}: {}", first.stderr);
            assert!(log_of(&s).contains(&format!("socket mode: records go from source to destination in {} over {sockets} sockets", format.to_uppercase())), "{what}");
            assert_eq!(ids(&s.read_lines("out/users.jsonl")), (1..=600).collect::<Vec<_>>(), "{what}");
            let purchases = ids(&s.read_lines("out/purchases.jsonl"));
            assert_eq!(purchases, (1..=purchases.len() as i64).collect::<Vec<_>>(), "{what}: each purchase once");
            assert_eq!((first.committed("users"), first.emitted("users")), (600, 600), "{what}");
            assert_eq!(first.committed("purchases"), purchases.len() as u64, "{what}");
            let state = s.read_json("state.json");
            assert_eq!(cursor(&state, "users"), json!({"updated_at": "2020-01-01T10:00:00+00:00"}), "{what}: user 600's updated_at");

            // The next sync resumes there: exactly the 150 new users arrive.
            let more = sync(&s, "source-faker", &faker(750), &args);
            assert_eq!(more.code, 0, "{what}: {}", more.stderr);
            assert_eq!(more.committed("users"), 150, "{what}");
            assert_eq!(ids(&s.read_lines("out/users.jsonl")), (1..=750).collect::<Vec<_>>(), "{what}");
            let purchases = ids(&s.read_lines("out/purchases.jsonl"));
            assert_eq!(purchases, (1..=purchases.len() as i64).collect::<Vec<_>>(), "{what}: each purchase once after resuming");
        }
    }
}

#[test]
fn a_python_socket_source_written_from_the_conventions_syncs_into_our_destination() {
    let s = Scratch::new();
    let source = fixture("socket_source.py");
    let config = json!({"records": 500, "state_every": 20});
    let synced = sync(&s, &source, &config, &["--data-channel", "socket", "--data-format", "jsonl", "--sockets", "3"]);
    assert_eq!(synced.code, 0, "{}", synced.stderr);
    assert_eq!(ids(&s.read_lines("out/items.jsonl")), (1..=500).collect::<Vec<_>>());
    assert_eq!(synced.committed("items"), 500);
    assert_eq!(cursor(&s.read_json("state.json"), "items"), json!({"cursor": 500}));
    assert_eq!(synced.outcome["states_committed"], synced.outcome["states_emitted"]);
}

#[test]
fn a_source_that_dies_keeps_the_released_state_and_the_retry_resumes_from_it() {
    let s = Scratch::new();
    let source = fixture("socket_source.py");
    let args = ["--data-channel", "socket", "--data-format", "jsonl", "--sockets", "2"];
    let died = sync(&s, &source, &json!({"records": 400, "state_every": 25, "die_after": 230}), &args);
    assert_eq!(died.code, 1, "{}", died.stderr);
    assert_eq!(died.failure()["side"], "source", "{:#}", died.outcome);
    assert!(died.failure()["message"].as_str().unwrap().contains("exit"), "{:#}", died.failure());
    // 0 when only the second partition checkpointed: its low-water mark is still the start.
    let kept = cursor(&s.read_json("state.json"), "items")["cursor"].as_i64().expect("a state was released before the crash");
    assert!((0..400).contains(&kept), "{kept}");
    let stored = ids(&s.read_lines("out/items.jsonl"));
    assert!((1..=kept).all(|id| stored.binary_search(&id).is_ok()), "every record up to the committed cursor {kept} is stored");

    let retried = sync(&s, &source, &json!({"records": 400, "state_every": 25}), &args);
    assert_eq!(retried.code, 0, "{}", retried.stderr);
    assert_eq!(retried.committed("items"), (400 - kept) as u64, "the retry starts after the committed cursor");
    let all = ids(&s.read_lines("out/items.jsonl"));
    let mut unique = all.clone();
    unique.dedup();
    assert_eq!(unique, (1..=400).collect::<Vec<_>>(), "nothing is lost");
    // At-least-once: only what was stored past the committed state comes twice.
    assert!(all.windows(2).filter(|w| w[0] == w[1]).all(|w| w[0] > kept), "nothing at or before the committed cursor twice");
    assert_eq!(cursor(&s.read_json("state.json"), "items"), json!({"cursor": 400}));
}

#[test]
fn a_source_that_fails_before_it_listens_ends_the_attempt_at_once() {
    let s = Scratch::new();
    let started = std::time::Instant::now();
    // No `records`: the source fails on its config before it listens on any socket.
    let failed = sync(&s, &fixture("socket_source.py"), &json!({}), &["--data-channel", "socket", "--data-format", "jsonl", "--sockets", "2"]);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert_eq!(failed.failure()["side"], "source", "{:#}", failed.outcome);
    // The destination would otherwise wait its connect timeout (15 minutes) for sockets no one opens.
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "the attempt took {:?}", started.elapsed());
}

#[test]
fn a_state_whose_records_never_arrived_is_never_committed() {
    let s = Scratch::new();
    let source = fixture("socket_source.py");
    // One socket: the states go out in id order, and state 3 claims a record that never came.
    let synced = sync(&s, &source, &json!({"records": 100, "state_every": 10, "lie_at": 3}), &["--data-channel", "socket", "--data-format", "jsonl", "--sockets", "1"]);
    assert_eq!(synced.code, 1, "{}", synced.stderr);
    let failure = synced.failure();
    assert_eq!(failure["side"], "destination", "{failure:#}");
    assert!(failure["message"].as_str().unwrap().contains("covers 11 records, but 10 arrived"), "{failure:#}");
    assert_eq!(cursor(&s.read_json("state.json"), "items"), json!({"cursor": 20}), "states 1 and 2 only");
}

#[test]
fn mixed_capabilities_and_field_selection_run_in_legacy_mode() {
    let s = Scratch::new();
    // A connector given by path declares nothing: auto picks legacy mode, and the
    // same Python source then speaks stdio.
    let synced = sync(&s, &fixture("socket_source.py"), &json!({"records": 30, "state_every": 10}), &[]);
    assert_eq!(synced.code, 0, "{}", synced.stderr);
    assert!(log_of(&s).contains("legacy mode: records go through the orchestrator over stdio"));
    assert_eq!(ids(&s.read_lines("out/items.jsonl")), (1..=30).collect::<Vec<_>>());

    let s = Scratch::new();
    let synced = sync(&s, "source-faker", &json!({"count": 10}), &["--streams", "products", "--fields", "products=id,make"]);
    assert_eq!(synced.code, 0, "{}", synced.stderr);
    assert!(log_of(&s).contains("legacy mode"), "field selection needs the platform to see each record");
    let config = s.json("faker.json", &json!({"count": 10}));
    let refused = sluice()
        .args(["sync", "--source", "source-faker", "--destination", "destination-dev-null", "--fields", "products=id", "--data-channel", "socket"])
        .arg("--source-config").arg(&config).arg("--destination-config").arg(&config)
        .output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--fields needs legacy mode"), "{stderr}");
}

#[test]
fn a_destination_that_dies_keeps_the_released_state_and_the_retry_resumes_from_it() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    // destination-jsonl, killed by SIGXFSZ once a file passes 64 KiB.
    let dying = s.path("dying-destination");
    let script = format!("#!/bin/sh\nulimit -f 128\nexec '{}' connector destination-jsonl \"$@\"\n", env!("CARGO_BIN_EXE_sluice"));
    std::fs::write(&dying, script).unwrap();
    std::fs::set_permissions(&dying, std::fs::Permissions::from_mode(0o755)).unwrap();
    let faker = s.json("faker.json", &json!({"count": 3000, "seed": 1, "records_per_slice": 50}));
    let destination = s.json("jsonl.json", &json!({"destination_path": s.path("out")}));
    let (state, log) = (s.path("state.json"), s.path("attempt.log"));
    let run = |destination_program: &str| {
        run_sync(&[
            "--source", "source-faker", "--source-config", faker.to_str().unwrap(),
            "--destination", destination_program, "--destination-config", destination.to_str().unwrap(),
            "--streams", "users", "--state-file", state.to_str().unwrap(), "--log-file", log.to_str().unwrap(),
            "--data-channel", "socket", "--data-format", "protobuf", "--sockets", "2",
        ])
    };
    let died = run(dying.to_str().unwrap());
    assert_eq!(died.code, 1, "{}", died.stderr);
    assert_eq!(died.failure()["side"], "destination", "{:#}", died.outcome);
    let committed = died.committed("users");
    assert!(committed < 3000, "{committed}");
    // Users are incremental on updated_at = 2020-01-01 + id minutes.
    let kept_id = match cursor(&s.read_json("state.json"), "users")["updated_at"].as_str() {
        Some(at) => {
            let (day, time) = (at[8..10].parse::<i64>().unwrap(), &at[11..19]);
            (day - 1) * 1440 + time[0..2].parse::<i64>().unwrap() * 60 + time[3..5].parse::<i64>().unwrap()
        }
        None => 0,
    };
    assert!(kept_id as u64 <= committed, "the cursor ({kept_id}) never claims more than the committed records ({committed})");

    let retried = run("destination-jsonl");
    assert_eq!(retried.code, 0, "{}", retried.stderr);
    assert_eq!(retried.committed("users"), 3000 - kept_id as u64, "the retry starts after the released cursor");
    let all = ids(&s.read_lines("out/users.jsonl"));
    let mut unique = all.clone();
    unique.dedup();
    assert_eq!(unique, (1..=3000).collect::<Vec<_>>(), "nothing is lost");
    assert!(all.windows(2).filter(|w| w[0] == w[1]).all(|w| w[0] > kept_id), "nothing at or before the released cursor twice");
}

#[test]
fn sigterm_cancels_a_socket_mode_sync_and_keeps_the_released_state() {
    let s = Scratch::new();
    let source = s.json("source.json", &json!({"records": 100000, "state_every": 5, "delay_secs": 0.002}));
    let destination = s.json("jsonl.json", &json!({"destination_path": s.path("out")}));
    let state = s.path("state.json");
    let child = sluice()
        .args(["sync", "--json", "--source", &fixture("socket_source.py"), "--destination", "destination-jsonl"])
        .args(["--data-channel", "socket", "--data-format", "jsonl", "--sockets", "2"])
        .arg("--source-config").arg(&source)
        .arg("--destination-config").arg(&destination)
        .arg("--state-file").arg(&state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let released = || std::fs::read_to_string(&state).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok()).map(|v| cursor(&v, "items")["cursor"].as_i64().unwrap_or(0));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while released().is_none_or(|c| c < 10) {
        assert!(std::time::Instant::now() < deadline, "no state released in time");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let synced = parse_sync(child.wait_with_output().unwrap());
    assert_eq!(synced.outcome["status"], "cancelled", "{}", synced.stderr);
    let kept = released().unwrap();
    assert_eq!(synced.outcome["state"][0]["stream"]["stream_state"]["cursor"], kept, "the file holds the final committed state");
    // The stopped destination may leave a partial last line (the next run cuts it); no state covers it.
    let text = std::fs::read_to_string(s.path("out/items.jsonl")).unwrap();
    let complete = &text[..text.rfind('\n').map_or(0, |n| n + 1)];
    let stored = ids(&complete.lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<Value>>());
    assert!((1..=kept).all(|id| stored.binary_search(&id).is_ok()), "every record up to the committed cursor {kept} is stored");
}
