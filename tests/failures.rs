//! Every way a sync attempt can fail ends with an error that names the
//! connector, the stream and the line, and keeps exactly the state the
//! destination had acknowledged.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const SOURCE: &str = "scripted_source.py";

/// Runs `scripted_source.py` -> `destination` with the given configs.
fn sync(s: &Scratch, source: Value, destination: &str, destination_config: Value, extra: &[&str]) -> Synced {
    let source_config = s.json("source.json", &source);
    let destination_config = s.json("destination.json", &destination_config);
    let state = s.path("state.json");
    let source_exe = fixture(SOURCE);
    let mut args = vec![
        "--source", &source_exe,
        "--source-config", source_config.to_str().unwrap(),
        "--destination", destination,
        "--destination-config", destination_config.to_str().unwrap(),
        "--state-file", state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_sync(&args)
}

fn jsonl(s: &Scratch) -> Value {
    json!({"destination_path": s.path("out")})
}

/// The cursor of the saved state file.
fn saved_cursor(s: &Scratch) -> Option<i64> {
    if !s.path("state.json").exists() {
        return None;
    }
    s.read_json("state.json")[0]["stream"]["stream_state"]["cursor"].as_i64()
}

/// Source lines: LOG, STARTED, records 1-10, STATE, records 11-20, STATE, records 21-25, then line 30.
fn after_25_records(then: &str) -> Value {
    json!({"records": 25, "state_every": 10, "then": then})
}

fn assert_failure(synced: &Synced, side: &str, kind: &str) {
    assert_eq!(synced.code, 1, "{}", synced.stderr);
    assert_eq!(synced.outcome["status"], "failed", "{:#}", synced.outcome);
    let failure = synced.failure();
    assert_eq!(failure["side"], side, "{failure:#}");
    assert_eq!(failure["kind"], kind, "{failure:#}");
}

#[test]
fn garbage_on_stdout_names_connector_stream_and_line() {
    let s = Scratch::new();
    let synced = sync(&s, after_25_records("garbage"), "destination-jsonl", jsonl(&s), &[]);
    assert_failure(&synced, "source", "invalid_message");
    let failure = synced.failure();
    assert_eq!(failure["connector"], SOURCE);
    assert_eq!(failure["line"], 30);
    assert_eq!(failure["stream"], "items");
    assert!(synced.stderr.contains("source scripted_source.py stdout line 30 (stream items): not a protocol message"), "{}", synced.stderr);
    assert_eq!(saved_cursor(&s), Some(20), "the last acknowledged state is kept");
    assert_eq!(synced.committed("items"), 20);
    // The destination stored what it received before the failure.
    assert_eq!(s.read_lines("out/items.jsonl").len(), 25);
}

#[test]
fn a_crashing_source_fails_with_its_exit_status_and_stderr() {
    let s = Scratch::new();
    let synced = sync(&s, after_25_records("crash"), "destination-jsonl", jsonl(&s), &[]);
    assert_failure(&synced, "source", "crashed");
    let message = synced.failure()["message"].as_str().unwrap();
    assert!(message.contains("exited with status 3") && message.contains("boom: simulated crash"), "{message}");
    assert_eq!(saved_cursor(&s), Some(20));
}

#[test]
fn a_line_over_the_limit_fails_without_buffering_it() {
    let s = Scratch::new();
    let synced = sync(&s, after_25_records("oversize"), "destination-jsonl", jsonl(&s), &["--max-line-bytes", "1000000"]);
    assert_failure(&synced, "source", "line_too_long");
    assert_eq!(synced.failure()["line"], 30);
    assert_eq!(synced.failure()["stream"], "items");
    assert_eq!(saved_cursor(&s), Some(20));
}

#[test]
fn non_utf8_output_fails_with_its_line() {
    let s = Scratch::new();
    let synced = sync(&s, after_25_records("non_utf8"), "destination-jsonl", jsonl(&s), &[]);
    assert_failure(&synced, "source", "not_utf8");
    assert_eq!(synced.failure()["line"], 30);
    assert_eq!(saved_cursor(&s), Some(20));
}

#[test]
fn a_silent_source_times_out() {
    let s = Scratch::new();
    let started = Instant::now();
    let synced = sync(&s, after_25_records("hang"), "destination-jsonl", jsonl(&s), &["--source-idle-timeout-secs", "2"]);
    assert_failure(&synced, "source", "source_timeout");
    assert!(started.elapsed() < Duration::from_secs(60), "the hung source was not stopped");
    assert_eq!(saved_cursor(&s), Some(20));
}

#[test]
fn a_trace_error_is_the_reason_given() {
    let s = Scratch::new();
    let synced = sync(&s, after_25_records("trace_error"), "destination-jsonl", jsonl(&s), &[]);
    assert_failure(&synced, "source", "connector_error");
    assert_eq!(synced.failure()["message"], "the API key was rejected");
    assert_eq!(synced.failure()["failure_type"], "config_error");
    assert_eq!(saved_cursor(&s), Some(20));
}

#[test]
fn a_crashing_destination_keeps_only_what_it_echoed() {
    let s = Scratch::new();
    let destination = json!({"echo_states": 1, "then": "crash"});
    let synced = sync(&s, after_25_records("exit"), &fixture("flaky_destination.py"), destination, &[]);
    assert_failure(&synced, "destination", "crashed");
    assert!(synced.failure()["message"].as_str().unwrap().contains("destination exploded"));
    assert_eq!(saved_cursor(&s), Some(10), "only the echoed state is committed");
    assert_eq!(synced.committed("items"), 10);
}

#[test]
fn a_destination_that_stops_reading_times_out() {
    let s = Scratch::new();
    let destination = json!({"echo_states": 1, "then": "hang"});
    let source = json!({"records": 5000, "state_every": 10});
    let synced = sync(&s, source, &fixture("flaky_destination.py"), destination, &["--destination-idle-timeout-secs", "2"]);
    assert_failure(&synced, "destination", "destination_timeout");
    assert_eq!(saved_cursor(&s), Some(10));
}

#[test]
fn echoes_without_ids_are_matched_by_content() {
    let s = Scratch::new();
    let synced = sync(&s, after_25_records("exit"), &fixture("flaky_destination.py"), json!({"then": "drop_ids"}), &[]);
    assert_eq!(synced.code, 0, "{}", synced.stderr);
    assert_eq!(saved_cursor(&s), Some(20));
    assert_eq!(synced.outcome["states_committed"], 2);
}

#[test]
fn control_messages_update_the_source_config_file() {
    let s = Scratch::new();
    let synced = sync(&s, after_25_records("control"), "destination-jsonl", jsonl(&s), &[]);
    assert_eq!(synced.code, 0, "{}", synced.stderr);
    assert_eq!(s.read_json("source.json")["token"], "rotated");
}

#[test]
fn records_of_streams_outside_the_catalog_never_reach_the_destination() {
    let s = Scratch::new();
    let log = s.path("records.jsonl");
    let destination = json!({"record_log": log});
    let synced = sync(&s, after_25_records("other_stream"), &fixture("flaky_destination.py"), destination, &[]);
    assert_eq!(synced.code, 0, "{}", synced.stderr);
    assert_eq!(synced.outcome["records_filtered"], 1);
    assert_eq!(s.read_lines("records.jsonl").len(), 25);
}

#[test]
fn sigterm_cancels_cleanly_and_keeps_the_committed_state() {
    let s = Scratch::new();
    let pid_file = s.path("source.pid");
    let source = s.json("source.json", &json!({"records": 100000, "state_every": 5, "delay_secs": 0.01, "pid_file": pid_file}));
    let destination = s.json("destination.json", &jsonl(&s));
    let state = s.path("state.json");
    let child = sluice()
        .args(["sync", "--json", "--source", &fixture(SOURCE), "--destination", "destination-jsonl"])
        .arg("--source-config")
        .arg(&source)
        .arg("--destination-config")
        .arg(&destination)
        .arg("--state-file")
        .arg(&state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until some state is committed, then ask politely.
    let deadline = Instant::now() + Duration::from_secs(60);
    while saved_cursor(&s).is_none_or(|c| c < 10) {
        assert!(Instant::now() < deadline, "no state committed in time");
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let synced = parse_sync(child.wait_with_output().unwrap());
    assert_eq!(synced.code, 1, "{}", synced.stderr);
    assert_eq!(synced.outcome["status"], "cancelled");
    let cursor = saved_cursor(&s).unwrap();
    assert_eq!(cursor % 5, 0, "a state the source emitted");
    assert_eq!(synced.outcome["state"][0]["stream"]["stream_state"]["cursor"], cursor, "the file holds the final committed state");
    assert!(synced.committed("items") >= cursor as u64);
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the source was left running");
}

#[test]
fn a_large_record_under_the_limit_passes_intact() {
    let s = Scratch::new();
    let synced = sync(&s, after_25_records("oversize"), "destination-jsonl", jsonl(&s), &[]);
    assert_eq!(synced.code, 0, "{}", synced.stderr);
    let rows = s.read_lines("out/items.jsonl");
    assert_eq!(rows.len(), 26);
    assert_eq!(rows[25]["_airbyte_data"]["blob"].as_str().unwrap().len(), 2_000_000);
}

#[test]
fn a_source_whose_child_holds_stdout_open_does_not_hang_the_sync() {
    let s = Scratch::new();
    let started = Instant::now();
    let synced = sync(&s, after_25_records("orphan"), "destination-jsonl", jsonl(&s), &["--shutdown-grace-secs", "1"]);
    assert_eq!(synced.code, 0, "{}", synced.stderr);
    assert_eq!(synced.committed("items"), 25);
    assert!(started.elapsed() < Duration::from_secs(30), "waited on the orphan");
}

#[test]
fn a_trace_error_does_not_stop_the_other_records() {
    let s = Scratch::new();
    let source = json!({"records": 25, "state_every": 10, "trace_at": 5});
    let synced = sync(&s, source, "destination-jsonl", jsonl(&s), &[]);
    assert_failure(&synced, "source", "connector_error");
    assert_eq!(synced.emitted("items"), 25, "the source went on after its error");
    assert_eq!(s.read_lines("out/items.jsonl").len(), 25);
    // Records after the last state count as committed only when the attempt succeeds.
    assert_eq!(synced.committed("items"), 20);
    assert_eq!(saved_cursor(&s), Some(20));
}

#[test]
fn a_failed_overwrite_keeps_the_previous_data_whole() {
    let s = Scratch::new();
    let first = sync(&s, json!({"records": 30, "state_every": 10}), "destination-jsonl", jsonl(&s), &["--full-refresh"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(s.read_lines("out/items.jsonl").len(), 30);
    let second = sync(&s, after_25_records("garbage"), "destination-jsonl", jsonl(&s), &["--full-refresh"]);
    assert_failure(&second, "source", "invalid_message");
    assert_eq!(s.read_lines("out/items.jsonl").len(), 30, "the failed overwrite replaced nothing");
    let third = sync(&s, json!({"records": 12, "state_every": 10}), "destination-jsonl", jsonl(&s), &["--full-refresh"]);
    assert_eq!(third.code, 0, "{}", third.stderr);
    assert_eq!(s.read_lines("out/items.jsonl").len(), 12, "a clean overwrite replaces it");
}

/// A sync killed with SIGKILL takes its connectors with it: a destination
/// that would otherwise hang for ten minutes (it stops reading after one
/// STATE) is gone at once, so a rerun never finds an earlier attempt's
/// destination still writing beside its own. In both data modes' launch path.
#[test]
fn connectors_die_with_the_sync_that_started_them() {
    let s = Scratch::new();
    let source = s.json("source.json", &json!({"records": 100000, "state_every": 10, "delay_secs": 0.001}));
    let destination = s.json("destination.json", &json!({"echo_states": 1, "then": "hang"}));
    let mut sync = sluice()
        .args(["sync", "--source", &fixture(SOURCE), "--source-config"]).arg(&source)
        .args(["--destination", &fixture("flaky_destination.py"), "--destination-config"]).arg(&destination)
        .arg("--state-file").arg(s.path("state.json"))
        .stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null())
        .spawn().unwrap();
    let mut connectors = Vec::new();
    wait_until("both connectors running", || {
        connectors = [SOURCE, "flaky_destination.py"].iter().flat_map(|name| children_with(sync.id(), name)).collect();
        connectors.len() == 2
    });
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(sync.id() as i32, libc::SIGKILL) };
    sync.wait().unwrap();
    let alive = |pid: &u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'));
    let deadline = Instant::now() + Duration::from_secs(5);
    while connectors.iter().any(alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<&u32> = connectors.iter().filter(|p| alive(p)).collect();
    for pid in &left {
        unsafe { libc::kill(**pid as i32, libc::SIGKILL) };
    }
    assert!(left.is_empty(), "connectors {left:?} outlived the sync that started them");
}

/// One destination-jsonl per directory: a second one (say, the next
/// attempt's, while a killed attempt's still drains) waits for the first to
/// end, saying so, instead of interleaving lines with it.
#[test]
fn a_second_destination_jsonl_on_the_same_directory_waits_for_the_first() {
    use std::io::Write;
    let s = Scratch::new();
    let config = s.json("destination.json", &jsonl(&s));
    let catalog = s.json("catalog.json", &json!({"streams": [{"stream": {"name": "items", "json_schema": {"type": "object"}, "supported_sync_modes": ["full_refresh"]},
        "sync_mode": "full_refresh", "destination_sync_mode": "append"}]}));
    let start = || {
        sluice().args(["connector", "destination-jsonl", "write", "--config"]).arg(&config).arg("--catalog").arg(&catalog)
            .stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null())
            .spawn().unwrap()
    };
    let record = |id: i64| format!("{}\n", json!({"type": "RECORD", "record": {"stream": "items", "data": {"id": id}, "emitted_at": 1}}));
    let mut first = start();
    first.stdin.as_mut().unwrap().write_all(record(1).as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut second = start();
    second.stdin.as_mut().unwrap().write_all(record(2).as_bytes()).unwrap();
    drop(second.stdin.take());
    std::thread::sleep(Duration::from_millis(500));
    assert!(second.try_wait().unwrap().is_none(), "the second waits while the first writes");
    drop(first.stdin.take());
    assert!(first.wait().unwrap().success());
    let said = second.wait_with_output().unwrap();
    assert!(said.status.success());
    assert!(String::from_utf8_lossy(&said.stdout).contains("another destination-jsonl is writing to"), "{}", String::from_utf8_lossy(&said.stdout));
    assert_eq!(s.read_lines("out/items.jsonl").len(), 2);
}

/// The chaos loop, short: syncs of 20,000 users into a dedup stream, each
/// with one process SIGKILLed at a random moment (source, destination,
/// orchestrator or bookkeeper, `sluice sync` or `sluice up` itself), then
/// rerun or retried to success: nothing committed lost, nothing duplicated,
/// in both data modes. `sluice chaos --iterations 1000` is the long form.
#[test]
fn a_short_chaos_loop_of_random_kills_loses_and_duplicates_nothing() {
    let s = Scratch::new();
    let output = sluice()
        .args(["chaos", "--iterations", "5", "--records", "20000", "--json", "--work-dir"])
        .arg(s.path("chaos"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("no report: {stderr}"));
    assert_eq!(report["problems"], 0, "{report:#}\n{stderr}");
    assert!(output.status.success(), "{stderr}");
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "sync and platform, each in legacy and socket mode: {report:#}");
    let landed: u64 = runs.iter().flat_map(|r| r["faults"].as_object().unwrap().values()).map(|n| n.as_u64().unwrap()).sum();
    assert!(landed >= 10, "most kills land on a running sync: {report:#}");
}
