//! destination-postgres on a real PostgreSQL (`tests/postgres.sh` starts a
//! throwaway cluster and exports `SLUICE_POSTGRES_URL`): the destination
//! fed crafted messages, checked with SQL; `check`'s errors; and Airbyte's
//! own source-faker from PyPI into Postgres through `sluice sync`.

mod support;

use std::io::Write;
use std::process::Stdio;

use serde_json::{json, Value};
use support::*;

use support::postgres::{client, count, rows, server};

/// The destination's config for `schema` on the tests' server, as the superuser.
fn config(schema: &str) -> Value {
    let mut config = support::postgres::connection("sluice");
    config["schema"] = json!(schema);
    config
}

/// `sluice connector destination-postgres write` fed these messages on stdin.
fn write(s: &Scratch, config: &Value, catalog: &Value, messages: &[Value]) -> Written {
    destination_write("destination-postgres", s, config, catalog, messages)
}

fn record(stream: &str, data: Value) -> Value {
    json!({"type": "RECORD", "record": {"stream": stream, "data": data, "emitted_at": 1_700_000_000_000i64}})
}

fn state(cursor: i64) -> Value {
    json!({"type": "STATE", "state": {"type": "STREAM", "stream": {"stream_descriptor": {"name": "items"}, "stream_state": {"cursor": cursor}}}})
}

fn items_schema() -> Value {
    json!({"type": "object", "properties": {
        "id": {"type": "integer"},
        "name": {"type": ["null", "string"]},
        "price": {"type": "number"},
        "active": {"type": "boolean"},
        "born": {"type": "string", "format": "date"},
        "seen_at": {"type": "string", "format": "date-time"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "updated": {"type": "integer"}
    }})
}

fn catalog(stream: &str, schema: Value, mode: &str, generation: (i64, i64), key: Option<&str>) -> Value {
    let mut configured = json!({
        "stream": {"name": stream, "json_schema": schema, "supported_sync_modes": ["full_refresh", "incremental"]},
        "sync_mode": "incremental",
        "destination_sync_mode": mode,
        "generation_id": generation.0,
        "minimum_generation_id": generation.1,
        "sync_id": 100 + generation.0,
    });
    if let Some(key) = key {
        configured["primary_key"] = json!([[key]]);
        configured["cursor_field"] = json!(["updated"]);
    }
    json!({"streams": [configured]})
}

fn item(id: i64, updated: i64) -> Value {
    record("items", json!({"id": id, "name": format!("item {id}"), "price": 9.99, "active": true, "born": "2001-02-03",
        "seen_at": "2024-05-06T07:08:09Z", "tags": ["a", "b"], "updated": updated}))
}

#[test]
fn spec_and_check_say_what_is_wrong_without_showing_the_password() {
    let s = Scratch::new();
    let spec = sluice().args(["connector", "destination-postgres", "spec"]).output().unwrap();
    let spec: Value = String::from_utf8_lossy(&spec.stdout).lines().find_map(|l| serde_json::from_str::<Value>(l).ok().filter(|m| m["type"] == "SPEC")).unwrap();
    assert_eq!(spec["spec"]["connectionSpecification"]["properties"]["password"]["airbyte_secret"], true);
    let check = |config: &Value| -> Value {
        let path = s.json("check.json", config);
        let out = sluice().args(["connector", "destination-postgres", "check", "--config"]).arg(&path).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| serde_json::from_str::<Value>(l).ok().filter(|m| m["type"] == "CONNECTION_STATUS")).expect("a CONNECTION_STATUS")
    };
    assert_eq!(check(&config("public"))["connectionStatus"]["status"], "SUCCEEDED");

    let mut wrong = config("public");
    wrong["password"] = json!("not-the-password-123");
    let answer = check(&wrong);
    let message = answer["connectionStatus"]["message"].as_str().unwrap();
    assert_eq!(answer["connectionStatus"]["status"], "FAILED");
    assert!(message.contains("refused the password") && !message.contains("not-the-password-123"), "{message}");

    let mut unreachable = config("public");
    unreachable["port"] = json!(1);
    let message = check(&unreachable)["connectionStatus"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("cannot reach PostgreSQL at") && message.contains(":1/"), "{message}");

    // A user without CREATE on the schema is told what to grant.
    let mut c = client();
    c.batch_execute("drop schema if exists locked cascade; create schema locked; do $$ begin if not exists (select from pg_roles where rolname = 'reader') then create role reader login password 'reader-pw'; end if; end $$; grant connect on database sluice to reader;").unwrap();
    let mut reader = config("locked");
    reader["username"] = json!("reader");
    reader["password"] = json!("reader-pw");
    let message = check(&reader)["connectionStatus"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("may not create tables in schema locked") && message.contains("GRANT CREATE ON SCHEMA"), "{message}");
}

#[test]
fn appends_typed_columns_and_airbytes_own_nulling_what_does_not_fit() {
    let s = Scratch::new();
    client().batch_execute("drop schema if exists t_append cascade").unwrap();
    let cat = catalog("items", items_schema(), "append", (1, 0), None);
    let mut messages: Vec<Value> = (1..=30).map(|i| item(i, i)).collect();
    messages.insert(10, state(10));
    // A value that breaks its declared type is nulled and named, never a failed sync.
    messages.push(record("items", json!({"id": 31, "price": "lots", "born": "yesterday", "active": "yes", "updated": 31})));
    messages.push(state(31));
    let w = write(&s, &config("t_append"), &cat, &messages);
    assert_eq!(w.code, 0, "{}\n{}", w.error(), w.stderr);
    assert_eq!(w.states().len(), 2, "each STATE echoed after its rows committed");
    assert_eq!(w.states()[0]["state"]["destinationStats"]["recordCount"], 10.0, "{:?}", w.states()[0]);
    assert_eq!(count("select count(*) from t_append.items"), 31);
    let types: Vec<(String, String)> = rows("select column_name::text, data_type::text from information_schema.columns where table_schema = 't_append' and table_name = 'items' order by ordinal_position")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = [
        ("_airbyte_raw_id", "uuid"),
        ("_airbyte_extracted_at", "timestamp with time zone"),
        ("_airbyte_meta", "jsonb"),
        ("_airbyte_generation_id", "bigint"),
        ("id", "bigint"),
        ("name", "character varying"),
        ("price", "numeric"),
        ("active", "boolean"),
        ("born", "date"),
        ("seen_at", "timestamp with time zone"),
        ("tags", "jsonb"),
        ("updated", "bigint"),
    ];
    assert_eq!(types, expected.map(|(a, b)| (a.to_owned(), b.to_owned())));
    let row = &rows("select price::text, born::text, seen_at = '2024-05-06T07:08:09Z'::timestamptz, tags::text, _airbyte_generation_id, _airbyte_meta::text, _airbyte_extracted_at = to_timestamp(1700000000) from t_append.items where id = 7")[0];
    assert_eq!(row.get::<_, String>(0), "9.99");
    assert_eq!(row.get::<_, String>(1), "2001-02-03");
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, String>(3), r#"["a", "b"]"#);
    assert_eq!(row.get::<_, i64>(4), 1);
    assert_eq!(row.get::<_, String>(5), r#"{"changes": [], "sync_id": 101}"#);
    assert!(row.get::<_, bool>(6));
    let bad = &rows("select price is null, born is null, active is null, (_airbyte_meta->'changes')::text from t_append.items where id = 31")[0];
    assert!(bad.get::<_, bool>(0) && bad.get::<_, bool>(1) && bad.get::<_, bool>(2));
    let changes: Value = serde_json::from_str(&bad.get::<_, String>(3)).unwrap();
    let fields: Vec<&str> = changes.as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["price", "active", "born"]);
    assert!(changes.as_array().unwrap().iter().all(|c| c["change"] == "NULLED" && c["reason"] == "DESTINATION_TYPECAST_ERROR"), "{changes}");

    // A new property becomes a new column; an integer that now is a number widens.
    let mut wider = items_schema();
    wider["properties"]["colour"] = json!({"type": "string"});
    wider["properties"]["updated"] = json!({"type": "number"});
    let w = write(&s, &config("t_append"), &catalog("items", wider, "append", (1, 0), None), &[record("items", json!({"id": 40, "colour": "red", "updated": 1.5})), state(40)]);
    assert_eq!(w.code, 0, "{}\n{}", w.error(), w.stderr);
    assert_eq!(count("select count(*) from t_append.items where colour = 'red' and updated = 1.5"), 1);
    assert_eq!(count("select count(*) from t_append.items"), 32);

    // A boolean that becomes a date: neither holds the other, so the column
    // becomes jsonb with the old values in it; a string that becomes an
    // integer stays a string column, which holds both.
    let mut changed = items_schema();
    changed["properties"]["active"] = json!({"type": "string", "format": "date"});
    changed["properties"]["name"] = json!({"type": "integer"});
    let w = write(&s, &config("t_append"), &catalog("items", changed, "append", (1, 0), None), &[record("items", json!({"id": 41, "active": "2024-01-02", "name": 7})), state(41)]);
    assert_eq!(w.code, 0, "{}\n{}", w.error(), w.stderr);
    let kinds = rows("select column_name::text, data_type::text from information_schema.columns where table_schema = 't_append' and table_name = 'items' and column_name in ('active', 'name') order by column_name");
    let kinds: Vec<(String, String)> = kinds.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(kinds, [("active".to_owned(), "jsonb".to_owned()), ("name".to_owned(), "character varying".to_owned())]);
    assert_eq!(count("select count(*) from t_append.items where active = 'true'::jsonb"), 30, "the booleans kept");
    assert_eq!(count("select count(*) from t_append.items where id = 41 and active = '\"2024-01-02\"'::jsonb and name = '7' and jsonb_array_length(_airbyte_meta->'changes') = 0"), 1);

    // A column altered by hand to a type we cannot COPY into is named.
    client().batch_execute("alter table t_append.items alter column colour type inet using null").unwrap();
    let mut wider2 = items_schema();
    wider2["properties"]["colour"] = json!({"type": "string"});
    let w = write(&s, &config("t_append"), &catalog("items", wider2, "append", (1, 0), None), &[record("items", json!({"id": 42, "colour": "blue"})), state(42)]);
    assert_ne!(w.code, 0);
    assert!(w.error().contains("column colour of t_append.items") && w.error().contains("alter it to varchar"), "{}", w.error());
    assert_eq!(count("select count(*) from t_append.items"), 33, "nothing of the refused sync loaded");
}

#[test]
fn names_are_airbytes_and_two_streams_on_one_table_are_refused() {
    let s = Scratch::new();
    client().batch_execute("drop schema if exists t_names cascade").unwrap();
    let long = format!("Orders by Day-{}", "x".repeat(70));
    let schema = json!({"type": "object", "properties": {"Unit Price ($)": {"type": "number"}, "2nd": {"type": "string"}}});
    let cat = catalog(&long, schema.clone(), "append", (0, 0), None);
    let w = write(&s, &config("t names"), &cat, &[record(&long, json!({"Unit Price ($)": 3, "2nd": "b"}))]);
    assert_eq!(w.code, 0, "{}\n{}", w.error(), w.stderr);
    let tables: Vec<String> = rows("select table_name::text from information_schema.tables where table_schema = 't_names'").iter().map(|r| r.get(0)).collect();
    assert_eq!(tables.len(), 1, "{tables:?}");
    assert_eq!(tables[0].len(), 63);
    assert!(tables[0].starts_with("Orders_by_Day_xxx"), "{tables:?}");
    assert_eq!(count(&format!("select count(*) from t_names.\"{}\" where \"Unit_Price____\" = 3 and \"_2nd\" = 'b'", tables[0])), 1);

    let two = json!({"streams": [
        {"stream": {"name": "a-b", "json_schema": schema, "supported_sync_modes": ["full_refresh"]}, "sync_mode": "full_refresh", "destination_sync_mode": "append"},
        {"stream": {"name": "a_b", "json_schema": schema, "supported_sync_modes": ["full_refresh"]}, "sync_mode": "full_refresh", "destination_sync_mode": "append"}
    ]});
    let w = write(&s, &config("t names"), &two, &[]);
    assert_ne!(w.code, 0);
    assert!(w.error().contains("a-b") && w.error().contains("a_b") && w.error().contains("t_names.a_b"), "{}", w.error());
}

#[test]
fn dedup_keeps_the_latest_row_per_key_and_cdc_deletes_remove_it() {
    let s = Scratch::new();
    client().batch_execute("drop schema if exists t_dedup cascade").unwrap();
    let mut schema = items_schema();
    schema["properties"]["_ab_cdc_deleted_at"] = json!({"type": ["null", "string"], "format": "date-time"});
    let cat = catalog("items", schema, "append_dedup", (1, 0), Some("id"));
    // Keys 1..=5 twice (the later cursor wins, whatever the order), then key 3 deleted.
    let mut messages = vec![item(1, 5), item(1, 9), item(2, 9), item(2, 5), state(2)];
    messages.extend((3..=5).map(|i| item(i, 1)));
    let first = write(&s, &config("t_dedup"), &cat, &messages);
    assert_eq!(first.code, 0, "{}\n{}", first.error(), first.stderr);
    assert_eq!(count("select count(*) from t_dedup.items"), 5);
    assert_eq!(count("select count(*) from t_dedup.items where updated = 9"), 2, "keys 1 and 2 keep their latest cursor");
    let mut delete = item(3, 2);
    delete["record"]["data"]["_ab_cdc_deleted_at"] = json!("2024-01-01T00:00:00Z");
    let second = write(&s, &config("t_dedup"), &cat, &[item(4, 0), item(5, 7), delete, state(3)]);
    assert_eq!(second.code, 0, "{}\n{}", second.error(), second.stderr);
    let kept: Vec<(i64, i64)> = rows("select id, updated from t_dedup.items order by id").iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(kept, [(1, 9), (2, 9), (4, 1), (5, 7)], "an older cursor does not replace a newer row; the deleted key is gone");
    assert_eq!(count("select count(*) from t_dedup.items_airbyte_tmp"), 0, "the staged rows were merged");
}

#[test]
fn an_overwrite_swaps_in_whole_and_a_reader_sees_the_old_table_until_then() {
    let s = Scratch::new();
    client().batch_execute("drop schema if exists t_over cascade").unwrap();
    let first = write(&s, &config("t_over"), &catalog("items", items_schema(), "overwrite", (1, 1), None), &(1..=20).map(|i| item(i, i)).collect::<Vec<_>>());
    assert_eq!(first.code, 0, "{}\n{}", first.error(), first.stderr);
    assert_eq!(count("select count(*) from t_over.items where _airbyte_generation_id = 1"), 20);

    // Generation 2 fails midway (its stream never completes): the old table stays whole.
    let incomplete = json!({"type": "TRACE", "trace": {"type": "STREAM_STATUS", "emitted_at": 1.0,
        "stream_status": {"stream_descriptor": {"name": "items"}, "status": "INCOMPLETE"}}});
    let mut messages: Vec<Value> = (100..105).map(|i| item(i, i)).collect();
    messages.push(state(104));
    messages.push(incomplete);
    let failed = write(&s, &config("t_over"), &catalog("items", items_schema(), "overwrite", (2, 2), None), &messages);
    assert_eq!(failed.code, 0, "{}", failed.error());
    assert_eq!(count("select count(*) from t_over.items"), 20, "a reader sees the old generation whole");
    assert_eq!(count("select count(*) from t_over.items_airbyte_tmp"), 5, "the staged rows wait for the retry");

    // The retry of generation 2 goes on from its state and swaps in at the end.
    let complete = json!({"type": "TRACE", "trace": {"type": "STREAM_STATUS", "emitted_at": 1.0,
        "stream_status": {"stream_descriptor": {"name": "items"}, "status": "COMPLETE"}}});
    // One of them has a value that does not fit, among rows that leave their
    // `_airbyte_meta` to the staged table's default.
    let mut messages: Vec<Value> = (105..110).map(|i| item(i, i)).collect();
    messages[2]["record"]["data"]["price"] = json!("not a number");
    messages.push(complete);
    let retried = write(&s, &config("t_over"), &catalog("items", items_schema(), "overwrite", (2, 2), None), &messages);
    assert_eq!(retried.code, 0, "{}", retried.error());
    let generations: Vec<(i64, i64)> = rows("select _airbyte_generation_id, count(*) from t_over.items group by 1").iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(generations, [(2, 10)]);
    assert_eq!(count("select count(*) from information_schema.tables where table_schema = 't_over'"), 1, "the staged table became the table");
    let metas: Vec<(i64, String)> = rows("select id, _airbyte_meta::text from t_over.items order by id").iter().map(|r| (r.get(0), r.get(1))).collect();
    for (id, meta) in &metas {
        let meta: Value = serde_json::from_str(meta).unwrap();
        assert_eq!(meta["sync_id"], 102, "row {id}: {meta}");
        let nulled: Vec<&str> = meta["changes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
        assert_eq!(nulled, if *id == 107 { vec!["price"] } else { vec![] }, "row {id}: {meta}");
    }
    let default = rows("select column_default from information_schema.columns where table_schema = 't_over' and table_name = 'items' and column_name = '_airbyte_meta'");
    assert_eq!(default[0].get::<_, Option<String>>(0), None, "the table swapped in keeps no default of the sync that wrote it");
}

#[test]
fn airbyte_source_faker_from_pypi_into_postgres_then_resumes() {
    let s = Scratch::new();
    client().batch_execute("drop schema if exists t_faker cascade").unwrap();
    let source = s.json("faker.json", &json!({"count": 300, "seed": 11, "records_per_slice": 50, "always_updated": false}));
    let destination = s.json("pg.json", &config("t_faker"));
    let state = s.path("state.json");
    let args = [
        "--source", "pypi:airbyte-source-faker",
        "--source-config", source.to_str().unwrap(),
        "--destination", "destination-postgres",
        "--destination-config", destination.to_str().unwrap(),
        "--streams", "users,products",
        "--state-file", state.to_str().unwrap(),
    ];
    let first = run_sync(&args);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.committed("users"), 300);
    assert_eq!(count("select count(*) from t_faker.users"), 300);
    assert_eq!(count("select count(distinct id) from t_faker.users"), 300);
    assert_eq!(count("select count(*) from information_schema.columns where table_schema = 't_faker' and table_name = 'users' and column_name = 'created_at' and data_type = 'timestamp with time zone'"), 1);
    assert!(count("select count(*) from t_faker.products") > 0);
    let second = run_sync(&args);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(second.emitted("users"), 0);
    assert_eq!(count("select count(*) from t_faker.users"), 300, "the resumed sync added nothing");
}

/// `kill -9` of the destination a running `sluice sync` spawned.
fn kill_destination_of(sync: &std::process::Child) {
    let killed = children_with(sync.id(), "destination-postgres");
    assert_eq!(killed.len(), 1, "the destination's process");
    unsafe { libc::kill(killed[0] as i32, libc::SIGKILL) };
}

#[test]
fn a_destination_killed_midway_keeps_what_its_states_covered_and_the_retry_duplicates_nothing() {
    let s = Scratch::new();
    client().batch_execute("drop schema if exists t_kill cascade").unwrap();
    // Users of 20 KB: the destination copies a batch at 8 MB (about 400 rows),
    // and a STATE comes every 1000 rows, so batches are copied between states.
    let source = s.json("faker.json", &json!({"count": 6000, "records_per_slice": 1000, "record_size_bytes": 20000, "slice_pause_ms": 100}));
    let destination = s.json("pg.json", &config("t_kill"));
    let state = s.path("state.json");
    let args = [
        "--source", "source-faker",
        "--source-config", source.to_str().unwrap(),
        "--destination", "destination-postgres",
        "--destination-config", destination.to_str().unwrap(),
        "--streams", "users",
        "--state-file", state.to_str().unwrap(),
        // Legacy mode: one stream of STATEs, each committing what came before it.
        "--data-channel", "stdio",
    ];
    let sync = sluice().arg("sync").arg("--json").args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let committed_some = || client().query_one("select count(*) from information_schema.tables where table_schema = 't_kill' and table_name = 'users'", &[]).unwrap().get::<_, i64>(0) == 1 && count("select count(*) from t_kill.users") >= 1000;
    wait_until("no rows committed in a minute", committed_some);
    kill_destination_of(&sync);
    let first = parse_sync(sync.wait_with_output().unwrap());
    assert_ne!(first.code, 0, "the attempt failed: {}", first.stderr);
    let kept = count("select count(*) from t_kill.users");
    assert!((1000..6000).contains(&kept) && kept % 1000 == 0, "rows become visible a STATE at a time, never a batch at a time: {kept}");

    let retry = run_sync(&args);
    assert_eq!(retry.code, 0, "{}", retry.stderr);
    assert_eq!(count("select count(*) from t_kill.users"), 6000, "every user arrived");
    assert_eq!(count("select count(distinct id) from t_kill.users"), 6000, "none twice: rows no STATE covered were never committed");
}

#[test]
fn a_record_of_16_mb_lands_whole() {
    let s = Scratch::new();
    client().batch_execute("drop schema if exists t_big cascade").unwrap();
    let big = "x".repeat(16 << 20);
    let w = write(&s, &config("t_big"), &catalog("items", items_schema(), "append", (0, 0), None), &[record("items", json!({"id": 1, "name": big})), state(1)]);
    assert_eq!(w.code, 0, "{}\n{}", w.error(), w.stderr);
    assert_eq!(count("select length(name)::bigint from t_big.items"), 16 << 20);
}

#[test]
fn sluice_up_syncs_into_postgres_with_the_builtin_definition_and_generations() {
    client().batch_execute("drop schema if exists t_up cascade").unwrap();
    let s = Scratch::new();
    let p = support::platform::Platform::start(&s.path("data"), &[]);
    let workspace = p.workspace("postgres");
    let source = p.actor("source", &workspace, "sluice-faker", json!({"count": 250}));
    let destination = p.actor("destination", &workspace, "postgres", config("t_up"));
    assert_eq!(p.get(&format!("/destinations/{destination}"))["configuration"]["password"], "**********", "the password is a secret");
    let connection = p.post("/connections", json!({"sourceId": source, "destinationId": destination,
        "configurations": {"streams": [{"name": "users", "syncMode": "incremental_append"}, {"name": "products", "syncMode": "full_refresh_overwrite"}]}}))["connectionId"].as_str().unwrap().to_owned();
    for run in 1..=2 {
        let job = p.wait_job(p.sync(&connection), std::time::Duration::from_secs(120));
        assert_eq!(job["status"], "succeeded", "run {run}: {job}\n{}", p.log());
    }
    assert_eq!(count("select count(*) from t_up.users"), 250, "the second sync appended nothing new");
    // The overwritten stream holds the last generation only, swapped in whole.
    let generations: Vec<i64> = rows("select distinct _airbyte_generation_id from t_up.products").iter().map(|r| r.get(0)).collect();
    assert_eq!(generations.len(), 1, "{generations:?}");
    assert!(count("select count(*) from t_up.products") > 0);
    let sync_ids = count("select count(distinct _airbyte_meta->>'sync_id') from t_up.users");
    assert_eq!(sync_ids, 1, "the platform's sync id is in each row's _airbyte_meta");
}

#[test]
fn socket_mode_from_our_source_faker_loads_each_row_once_over_several_connections() {
    let s = Scratch::new();
    client().batch_execute("drop schema if exists t_socket cascade").unwrap();
    let source = s.json("faker.json", &json!({"count": 20000, "records_per_slice": 1000}));
    let destination = s.json("pg.json", &config("t_socket"));
    let state = s.path("state.json");
    let args = [
        "--source", "source-faker",
        "--source-config", source.to_str().unwrap(),
        "--destination", "destination-postgres",
        "--destination-config", destination.to_str().unwrap(),
        "--streams", "users,products",
        "--state-file", state.to_str().unwrap(),
        "--data-channel", "socket",
        "--sockets", "4",
    ];
    let first = run_sync(&args);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.committed("users"), 20000);
    assert_eq!(count("select count(*) from t_socket.users"), 20000);
    assert_eq!(count("select count(distinct id) from t_socket.users"), 20000);
    let second = run_sync(&args);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(count("select count(*) from t_socket.users"), 20000, "resumed: nothing added");
}

/// A cluster of this test's own, to restart without disturbing the others.
struct OwnServer {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    port: u16,
}

impl OwnServer {
    fn as_postgres(&self, program: &str) -> std::process::Command {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(self.bin.join(program));
        c
    }

    fn start(s: &Scratch) -> OwnServer {
        let server = OwnServer::init(s);
        server.pg_ctl("start");
        server
    }

    /// A cluster made but not started, for a test to set up first.
    fn init(s: &Scratch) -> OwnServer {
        let bin = std::path::PathBuf::from(std::env::var("SLUICE_POSTGRES_BIN").expect("SLUICE_POSTGRES_BIN, as tests/postgres.sh exports it"));
        let dir = s.path("own-cluster");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(std::process::Command::new("chown").args(["-R", "postgres:"]).arg(s.dir.path()).status().unwrap().success());
        std::fs::set_permissions(s.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = OwnServer { dir, bin, port };
        let init = server.as_postgres("initdb").arg("-D").arg(server.dir.join("data")).args(["-U", "sluice", "-A", "trust", "--no-sync"]).output().unwrap();
        assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
        server
    }

    fn pg_ctl(&self, verb: &str) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.display());
        let done = self.as_postgres("pg_ctl").arg("-D").arg(self.dir.join("data")).args(["-w", "-m", "fast", "-l"]).arg(self.dir.join("log")).args(["-o", &options, verb]).output().unwrap();
        assert!(done.status.success(), "pg_ctl {verb}: {}", String::from_utf8_lossy(&done.stderr));
    }

    /// A client over the cluster's Unix socket (which its pg_hba always trusts).
    fn client(&self, database: &str) -> ::postgres::Client {
        ::postgres::Client::connect(&format!("host={} port={} user=sluice dbname={database}", self.dir.display(), self.port), ::postgres::NoTls).unwrap()
    }

    fn count(&self, sql: &str) -> i64 {
        self.client("postgres").query_one(sql, &[]).unwrap().get(0)
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.as_postgres("pg_ctl").arg("-D").arg(self.dir.join("data")).args(["-m", "immediate", "stop"]).output();
    }
}

#[test]
fn a_server_restarted_mid_sync_fails_the_attempt_by_name_and_the_retry_completes_once() {
    let s = Scratch::new();
    let server = OwnServer::start(&s);
    let source = s.json("faker.json", &json!({"count": 5000, "records_per_slice": 500, "slice_pause_ms": 150}));
    let destination = s.json("pg.json", &json!({"host": "127.0.0.1", "port": server.port, "database": "postgres", "schema": "t_restart", "username": "sluice"}));
    let state = s.path("state.json");
    let args = [
        "--source", "source-faker",
        "--source-config", source.to_str().unwrap(),
        "--destination", "destination-postgres",
        "--destination-config", destination.to_str().unwrap(),
        "--streams", "users",
        "--state-file", state.to_str().unwrap(),
        "--data-channel", "stdio",
    ];
    let sync = sluice().arg("sync").arg("--json").args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let committed = || server.count("select count(*) from information_schema.tables where table_schema = 't_restart'") == 1 && server.count("select count(*) from t_restart.users") >= 500;
    wait_until("no rows committed in a minute", committed);
    server.pg_ctl("restart");
    let first = parse_sync(sync.wait_with_output().unwrap());
    assert_ne!(first.code, 0, "the attempt failed");
    let failure = first.outcome.to_string();
    assert!(failure.contains("PostgreSQL"), "the failure names the server: {failure}");
    let kept = server.count("select count(*) from t_restart.users");
    assert!(kept >= 500 && kept % 500 == 0, "what was committed stays, a STATE at a time: {kept}");
    let retry = run_sync(&args);
    assert_eq!(retry.code, 0, "{}", retry.stderr);
    assert_eq!(server.count("select count(*) from t_restart.users"), 5000);
    assert_eq!(server.count("select count(distinct id) from t_restart.users"), 5000, "none twice");
}

#[test]
fn in_socket_mode_a_killed_destination_retried_keeps_one_row_per_key_in_a_dedup_stream() {
    let s = Scratch::new();
    client().batch_execute("drop schema if exists t_sockdedup cascade").unwrap();
    let source = s.json("faker.json", &json!({"count": 8000, "records_per_slice": 500, "slice_pause_ms": 150}));
    let discovered = sluice().args(["connector", "source-faker", "discover", "--config"]).arg(&source).output().unwrap();
    let catalog: Value = String::from_utf8_lossy(&discovered.stdout).lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|m| m["type"] == "CATALOG").expect("a CATALOG");
    let users = catalog["catalog"]["streams"].as_array().unwrap().iter().find(|st| st["name"] == "users").unwrap().clone();
    let configured = s.json("catalog.json", &json!({"streams": [{"stream": users, "sync_mode": "incremental", "cursor_field": ["updated_at"],
        "destination_sync_mode": "append_dedup", "primary_key": [["id"]], "generation_id": 1, "minimum_generation_id": 0, "sync_id": 1}]}));
    let destination = s.json("pg.json", &config("t_sockdedup"));
    let state = s.path("state.json");
    let args = [
        "--source", "source-faker",
        "--source-config", source.to_str().unwrap(),
        "--destination", "destination-postgres",
        "--destination-config", destination.to_str().unwrap(),
        "--catalog", configured.to_str().unwrap(),
        "--state-file", state.to_str().unwrap(),
        "--data-channel", "socket",
        "--sockets", "4",
    ];
    let sync = sluice().arg("sync").arg("--json").args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let staged = || count("select count(*) from information_schema.tables where table_schema = 't_sockdedup' and table_name = 'users_airbyte_tmp'") == 1
        && count("select count(*) from t_sockdedup.users_airbyte_tmp") >= 1000;
    wait_until("no rows staged in a minute", staged);
    kill_destination_of(&sync);
    let first = parse_sync(sync.wait_with_output().unwrap());
    assert_ne!(first.code, 0, "the attempt failed");
    let retry = run_sync(&args);
    assert_eq!(retry.code, 0, "{}", retry.stderr);
    assert_eq!(count("select count(*) from t_sockdedup.users"), 8000, "one row per key");
    assert_eq!(count("select count(distinct id) from t_sockdedup.users"), 8000);
}

fn status(stream: &str, status: &str) -> Value {
    json!({"type": "TRACE", "trace": {"type": "STREAM_STATUS", "emitted_at": 1.0, "stream_status": {"stream_descriptor": {"name": stream}, "status": status}}})
}

#[test]
fn rows_after_the_last_state_are_committed_only_when_every_stream_completed() {
    let s = Scratch::new();
    for (schema, last, kept) in [("t_tail_done", "COMPLETE", 8), ("t_tail_cut", "INCOMPLETE", 5)] {
        client().batch_execute(&format!("drop schema if exists {schema} cascade")).unwrap();
        let mut messages: Vec<Value> = (1..=5).map(|i| item(i, i)).collect();
        messages.push(state(5));
        messages.extend((6..=8).map(|i| item(i, i)));
        messages.push(status("items", last));
        let w = write(&s, &config(schema), &catalog("items", items_schema(), "append", (1, 0), None), &messages);
        assert_eq!(w.code, 0, "{}\n{}", w.error(), w.stderr);
        // An incomplete stream's retry resumes from the STATE, before rows 6 to 8.
        assert_eq!(count(&format!("select count(*) from {schema}.items")), kept, "{schema}");
    }
}

#[test]
fn in_socket_mode_rows_commit_in_state_id_order_so_what_is_committed_is_what_is_released() {
    use std::os::unix::net::UnixListener;
    let s = Scratch::new();
    client().batch_execute("drop schema if exists t_order cascade").unwrap();
    let paths = [s.path("a.sock"), s.path("b.sock")];
    let listeners: Vec<UnixListener> = paths.iter().map(|p| UnixListener::bind(p).unwrap()).collect();
    let (config, catalog) = (s.json("config.json", &config("t_order")), s.json("catalog.json", &catalog("items", items_schema(), "append", (1, 0), None)));
    let joined = paths.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>().join(",");
    let child = sluice()
        .args(["connector", "destination-postgres", "write", "--config"])
        .arg(&config)
        .arg("--catalog")
        .arg(&catalog)
        .env("DATA_CHANNEL_MEDIUM", "SOCKET")
        .env("DATA_CHANNEL_FORMAT", "JSONL")
        .env("DATA_CHANNEL_SOCKET_PATHS", &joined)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut a, mut b) = (listeners[0].accept().unwrap().0, listeners[1].accept().unwrap().0);
    let send = |socket: &mut std::os::unix::net::UnixStream, partition: &str, ids: std::ops::RangeInclusive<i64>, state_id: u64| {
        for id in ids.clone() {
            let mut m = item(id, id);
            m["record"]["partition_id"] = json!(partition);
            writeln!(socket, "{m}").unwrap();
        }
        let mut st = state(*ids.end());
        st["state"]["id"] = json!(state_id);
        st["state"]["partition_id"] = json!(partition);
        st["state"]["sourceStats"] = json!({"recordCount": ids.count() as f64});
        writeln!(socket, "{st}").unwrap();
    };
    // Partition a's STATE is id 2: its rows are copied, and wait for id 1.
    send(&mut a, "a", 1..=10, 2);
    // A transaction that copied into the table holds its lock until it ends.
    let copied_not_committed = || {
        count("select count(*) from pg_locks l join pg_class c on c.oid = l.relation join pg_namespace n on n.oid = c.relnamespace \
               where n.nspname = 't_order' and c.relname = 'items' and l.mode = 'RowExclusiveLock' and l.granted") == 1
    };
    wait_until("partition a's rows were never copied", copied_not_committed);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(count("select count(*) from t_order.items"), 0, "id 2 is not committed before id 1");
    send(&mut b, "b", 11..=15, 1);
    wait_until("ids 1 and 2 never committed", || count("select count(*) from t_order.items") == 15);
    drop((a, b));
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let released: Vec<(u64, f64)> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["type"] == "STATE")
        .map(|m| (m["state"]["id"].as_u64().unwrap(), m["state"]["destinationStats"]["recordCount"].as_f64().unwrap()))
        .collect();
    assert_eq!(released, [(1, 5.0), (2, 10.0)], "released in id order, each with its count");
}

/// `openssl` with these arguments, in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").current_dir(dir).args(args).output().expect("openssl, which Debian's postgresql package depends on");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a key and a certificate it signs (`extensions` as openssl's extfile).
fn signed(dir: &std::path::Path, ca: &str, name: &str, subject: &str, extensions: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    openssl(dir, &["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", subject]);
    openssl(dir, &["x509", "-req", "-in", &format!("{name}.csr"), "-CA", &format!("{ca}.crt"), "-CAkey", &format!("{ca}.key"), "-CAcreateserial", "-days", "2", "-out", &format!("{name}.crt"), "-extfile", &format!("{name}.ext")]);
}

fn authority(dir: &std::path::Path, name: &str) {
    openssl(dir, &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", &format!("{name}.key"), "-out", &format!("{name}.crt"), "-days", "2", "-subj", &format!("/CN={name}")]);
}

#[test]
fn every_ssl_mode_on_a_server_that_takes_only_tls_and_a_sync_over_verify_full_with_a_client_certificate() {
    let s = Scratch::new();
    let server = OwnServer::init(&s);
    let pki = s.path("pki");
    std::fs::create_dir_all(&pki).unwrap();
    authority(&pki, "sluice-test-ca");
    authority(&pki, "some-other-ca");
    // The server's name is its address only: `localhost` is not in it.
    signed(&pki, "sluice-test-ca", "server", "/CN=sluice-test-server", "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
    signed(&pki, "sluice-test-ca", "client", "/CN=sluice", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
    let data = server.dir.join("data");
    for file in ["server.crt", "server.key", "sluice-test-ca.crt"] {
        std::fs::copy(pki.join(file), data.join(file)).unwrap();
    }
    let mut conf = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
    writeln!(conf, "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'sluice-test-ca.crt'").unwrap();
    // TLS or nothing over TCP; database `certdb` also wants a client certificate.
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl certdb all 127.0.0.1/32 trust clientcert=verify-ca\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    assert!(std::process::Command::new("chown").args(["-R", "postgres:"]).arg(&data).status().unwrap().success());
    std::fs::set_permissions(data.join("server.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    server.pg_ctl("start");
    server.client("postgres").batch_execute("create database certdb").unwrap();

    let pem = |name: &str| std::fs::read_to_string(pki.join(name)).unwrap();
    let base = |host: &str, database: &str, ssl: Value| json!({"host": host, "port": server.port, "database": database, "schema": "t_tls", "username": "sluice", "ssl_mode": ssl});
    let check = |config: &Value| -> (String, String) {
        let path = s.json("check.json", config);
        let out = sluice().args(["connector", "destination-postgres", "check", "--config"]).arg(&path).output().unwrap();
        let status = String::from_utf8_lossy(&out.stdout).lines().find_map(|l| serde_json::from_str::<Value>(l).ok().filter(|m| m["type"] == "CONNECTION_STATUS")).expect("a CONNECTION_STATUS");
        (status["connectionStatus"]["status"].as_str().unwrap().to_owned(), status["connectionStatus"]["message"].as_str().unwrap_or_default().to_owned())
    };
    let succeeds = |config: Value| {
        let (status, message) = check(&config);
        assert_eq!(status, "SUCCEEDED", "{config}: {message}");
    };
    let fails_saying = |config: Value, said: &[&str]| {
        let (status, message) = check(&config);
        assert_eq!(status, "FAILED", "{config}");
        assert!(said.iter().all(|part| message.contains(part)), "{config}: {message}");
        assert!(!message.contains("MII") && !message.contains("PRIVATE KEY"), "no certificate or key in the message: {message}");
    };

    fails_saying(base("127.0.0.1", "postgres", json!({"mode": "disable"})), &["no encryption"]);
    succeeds(base("127.0.0.1", "postgres", json!({"mode": "prefer"})));
    succeeds(base("127.0.0.1", "postgres", json!({"mode": "require"})));
    // verify-ca proves the chain, not the name.
    succeeds(base("localhost", "postgres", json!({"mode": "verify-ca", "ca_certificate": pem("sluice-test-ca.crt")})));
    fails_saying(base("127.0.0.1", "postgres", json!({"mode": "verify-ca", "ca_certificate": pem("some-other-ca.crt")})), &["TLS handshake", "ssl_mode verify-ca", "UnknownIssuer"]);
    fails_saying(base("127.0.0.1", "postgres", json!({"mode": "verify-ca", "ca_certificate": "not a certificate"})), &["ca_certificate holds no PEM certificate"]);
    let full = |host: &str, database: &str| {
        base(host, database, json!({"mode": "verify-full", "ca_certificate": pem("sluice-test-ca.crt"), "client_certificate": pem("client.crt"), "client_key": pem("client.key")}))
    };
    fails_saying(full("localhost", "postgres"), &["TLS handshake", "not valid for name \"localhost\""]);
    succeeds(full("127.0.0.1", "postgres"));
    // The server wants a client certificate for certdb: without one it says so.
    fails_saying(base("127.0.0.1", "certdb", json!({"mode": "require"})), &["certificate"]);
    let mut encrypted = full("127.0.0.1", "certdb");
    encrypted["ssl_mode"]["client_key_password"] = json!("secret-pass-1");
    fails_saying(encrypted, &["client_key_password", "not supported"]);

    let mut messages: Vec<Value> = (1..=20).map(|i| item(i, i)).collect();
    messages.push(state(20));
    let w = write(&s, &full("127.0.0.1", "certdb"), &catalog("items", items_schema(), "append", (1, 0), None), &messages);
    assert_eq!(w.code, 0, "{}\n{}", w.error(), w.stderr);
    let mut c = server.client("certdb");
    assert_eq!(c.query_one("select count(*) from t_tls.items", &[]).unwrap().get::<_, i64>(0), 20);
}

#[test]
fn the_postgres_bench_runs_its_short_form() {
    let psql = std::path::Path::new(&std::env::var("SLUICE_POSTGRES_BIN").expect("SLUICE_POSTGRES_BIN")).join("psql");
    let out = sluice()
        .args(["bench", "--destination", "postgres", "--records", "2000", "--record-size", "256", "--postgres-url", &server(), "--psql"])
        .arg(&psql)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}\n{}", String::from_utf8_lossy(&out.stderr));
    for way in ["COPY FROM STDIN by psql", "destination-postgres (stdin, alone)", "sync, legacy mode", "sync, socket mode", "peak RSS: "] {
        assert!(printed.contains(way), "{way} missing from:\n{printed}");
    }
}

/// Schema change propagation into Postgres: a manifest source (Airbyte's
/// declarative runner on the test API) whose `items` gain a column between
/// syncs; with `propagate_columns` the next sync adds the column to the
/// table and fills it.
#[test]
fn a_column_propagated_by_a_schema_change_becomes_a_new_column() {
    use support::test_api::{manifest, source_config, TestApi};
    client().batch_execute("drop schema if exists t_propagate cascade").unwrap();
    let s = Scratch::new();
    let api = TestApi::start(&s);
    let p = support::platform::Platform::start(&s.path("data"), &["--schema-refresh-secs", "0"]);
    let workspace = p.workspace("propagating");
    let definition = p.post(&format!("/workspaces/{workspace}/definitions/declarative_sources"), json!({"name": "Test API", "manifest": manifest()}));
    let source = p.post("/sources", json!({"name": "api", "workspaceId": workspace, "definitionId": definition["id"], "configuration": source_config(&api)}))["sourceId"].as_str().unwrap().to_owned();
    let destination = p.actor("destination", &workspace, "postgres", config("t_propagate"));
    let connection = p.post("/connections", json!({"sourceId": source, "destinationId": destination, "nonBreakingSchemaUpdatesBehavior": "propagate_columns",
        "configurations": {"streams": [{"name": "items", "syncMode": "incremental_deduped_history"}]}}))["connectionId"].as_str().unwrap().to_owned();
    let sync = || p.wait_job(p.sync(&connection), std::time::Duration::from_secs(240));
    assert_eq!(sync()["status"], "succeeded", "{}", p.log());
    let columns = || -> Vec<String> {
        rows("select column_name::text from information_schema.columns where table_schema = 't_propagate' and table_name = 'items'").iter().map(|r| r.get(0)).collect()
    };
    assert!(!columns().contains(&"color".to_owned()));
    api.admin("add_field");
    api.admin("add_items?n=2");
    let job = sync();
    assert_eq!(job["status"], "succeeded", "{job}\n{}", p.log());
    assert!(columns().contains(&"color".to_owned()), "{:?}", columns());
    assert_eq!(count("select count(*) from t_propagate.items"), 9, "one row per id");
    assert!(count("select count(*) from t_propagate.items where color is not null") >= 3, "the new column is filled from this sync on");
}
