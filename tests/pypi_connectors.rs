//! Real, unmodified Airbyte connectors from PyPI, synced through the
//! orchestrator into Sluice's destinations by `sluice sync`.

mod support;

use serde_json::json;
use support::*;

#[test]
fn airbyte_source_faker_syncs_then_resumes_incrementally() {
    let s = Scratch::new();
    // always_updated=false: records keep their updated_at, so a resumed read has nothing new.
    let source = s.json("faker.json", &json!({"count": 120, "seed": 7, "records_per_slice": 25, "always_updated": false}));
    let destination = s.json("jsonl.json", &json!({"destination_path": s.path("out")}));
    let state = s.path("state.json");
    let args = [
        "--source", "pypi:airbyte-source-faker",
        "--source-config", source.to_str().unwrap(),
        "--destination", "destination-jsonl",
        "--destination-config", destination.to_str().unwrap(),
        "--streams", "users,purchases",
        "--state-file", state.to_str().unwrap(),
    ];

    let first = run_sync(&args);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.outcome["status"], "succeeded");
    assert_eq!(first.committed("users"), 120);
    assert_eq!(first.emitted("users"), 120);
    let users = s.read_lines("out/users.jsonl");
    assert_eq!(users.len(), 120);
    let mut ids: Vec<i64> = users.iter().map(|u| u["_airbyte_data"]["id"].as_i64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, (1..=120).collect::<Vec<_>>(), "every user exactly once");
    assert!(!s.path("out/products.jsonl").exists(), "products was not selected");

    // The saved state is the destination-acknowledged one, per stream, without our bookkeeping.
    let saved = s.read_json("state.json");
    let saved = saved.as_array().unwrap();
    assert_eq!(saved.len(), 2, "{saved:#?}");
    for entry in saved {
        assert_eq!(entry["type"], "STREAM");
        assert!(entry["stream"]["stream_state"]["updated_at"].is_string(), "{entry}");
        assert!(entry.get("id").is_none() && entry.get("destinationStats").is_none(), "{entry}");
    }

    let second = run_sync(&args);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(second.emitted("users"), 0, "the resumed run re-emitted users");
    assert_eq!(second.emitted("purchases"), 0, "the resumed run re-emitted purchases");
    assert_eq!(s.read_lines("out/users.jsonl").len(), 120, "append mode added nothing");
}

#[test]
fn airbyte_source_file_reads_a_local_csv_in_full_refresh() {
    let s = Scratch::new();
    let csv = s.path("people.csv");
    let mut text = String::from("id,name,age\n");
    for i in 1..=25 {
        text.push_str(&format!("{i},person {i},{}\n", 20 + i));
    }
    std::fs::write(&csv, text).unwrap();
    let source = s.json(
        "file.json",
        &json!({"dataset_name": "people", "format": "csv", "url": csv, "provider": {"storage": "local"}}),
    );
    let destination = s.json("jsonl.json", &json!({"destination_path": s.path("out")}));
    let state = s.path("state.json");
    let args = [
        "--source", "pypi:airbyte-source-file==0.5.39",
        "--source-config", source.to_str().unwrap(),
        "--destination", "destination-jsonl",
        "--destination-config", destination.to_str().unwrap(),
        "--state-file", state.to_str().unwrap(),
        "--fields", "people=id,name",
    ];
    for run in 1..=2 {
        let synced = run_sync(&args);
        assert_eq!(synced.code, 0, "run {run}: {}", synced.stderr);
        assert_eq!(synced.committed("people"), 25, "run {run}");
        // Full refresh overwrites: the second run replaces the first, it does not add to it.
        let rows = s.read_lines("out/people.jsonl");
        assert_eq!(rows.len(), 25, "run {run}");
        for row in &rows {
            let mut fields: Vec<&String> = row["_airbyte_data"].as_object().unwrap().keys().collect();
            fields.sort();
            assert_eq!(fields, ["id", "name"], "only the selected fields arrive");
        }
    }
}
