//! source-postgres on a real PostgreSQL (`tests/postgres.sh`): check and
//! discover on the server's catalog, and syncs into destination-postgres
//! compared with SQL. The source reads database `sluice`; the destination
//! writes database `sluice_sp`, into the schema named by the stream's
//! namespace (the source's schema), so the two never share a table.

mod support;

use std::process::Stdio;

use serde_json::{json, Value};
use support::postgres::{client, client_of, connection, ensure_database};
use support::*;

const DESTINATION_DB: &str = "sluice_sp";

fn source_config(schema: &str) -> Value {
    let mut config = connection("sluice");
    config["schemas"] = json!([schema]);
    config
}

fn destination_config() -> Value {
    ensure_database(DESTINATION_DB);
    let mut config = connection(DESTINATION_DB);
    config["schema"] = json!("public");
    config
}

/// Runs `sql` in the source database, and drops the destination's copy of `schema`.
fn fresh(schema: &str, sql: &str) {
    client().batch_execute(&format!("drop schema if exists {schema} cascade; create schema {schema}; set search_path = {schema}; {sql}")).unwrap();
    ensure_database(DESTINATION_DB);
    client_of(DESTINATION_DB).batch_execute(&format!("drop schema if exists {schema} cascade")).unwrap();
}

/// The protocol messages a `sluice connector source-postgres ...` printed.
fn connector(args: &[&str]) -> Vec<Value> {
    let out = sluice().args(["connector", "source-postgres"]).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn of_type<'a>(messages: &'a [Value], kind: &str) -> &'a Value {
    messages.iter().find(|m| m["type"] == kind).unwrap_or_else(|| panic!("no {kind} in {messages:#?}"))
}

fn discover(s: &Scratch, config: &Value) -> Vec<Value> {
    let path = s.json("discover.json", config);
    let messages = connector(&["discover", "--config", path.to_str().unwrap()]);
    of_type(&messages, "CATALOG")["catalog"]["streams"].as_array().unwrap().clone()
}

/// The configured catalog for `streams` of the discovered ones.
fn configured(discovered: &[Value], streams: &[(&str, Value)]) -> Value {
    let streams: Vec<Value> = streams
        .iter()
        .map(|(name, how)| {
            let stream = discovered.iter().find(|s| s["name"] == *name).unwrap_or_else(|| panic!("discover found no {name}"));
            let mut c = json!({"stream": stream, "generation_id": 1, "minimum_generation_id": 0, "sync_id": 1});
            c.as_object_mut().unwrap().extend(how.as_object().unwrap().clone());
            c
        })
        .collect();
    json!({"streams": streams})
}

struct Pair {
    args: Vec<String>,
}

impl Pair {
    fn new(s: &Scratch, source: &Value, catalog: &Value) -> Pair {
        let (source, destination, catalog) = (s.json("source.json", source), s.json("destination.json", &destination_config()), s.json("catalog.json", catalog));
        let path = |p: std::path::PathBuf| p.to_str().unwrap().to_owned();
        let args = [
            "--source", "source-postgres",
            "--source-config", &path(source),
            "--destination", "destination-postgres",
            "--destination-config", &path(destination),
            "--catalog", &path(catalog),
            "--state-file", &path(s.path("state.json")),
        ];
        Pair { args: args.iter().map(|a| a.to_string()).collect() }
    }
    fn sync(&self) -> Synced {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        run_sync(&args)
    }
    /// The same pair in socket mode: `format` frames over `sockets` sockets.
    fn over_sockets(mut self, sockets: usize, format: &str) -> Pair {
        self.args.extend(["--data-channel", "socket", "--data-format", format, "--sockets"].map(String::from));
        self.args.push(sockets.to_string());
        self
    }
    fn spawn(&self) -> std::process::Child {
        sluice().arg("sync").arg("--json").args(&self.args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }
    /// A sync whose source is killed (SIGKILL) once the destination has
    /// committed rows into `table` where `filter` holds; the attempt must fail.
    fn killed_once_rows_land(&self, table: &str, filter: &str) {
        let sync = self.spawn();
        wait_for_committed_rows(table, filter);
        let sources = children_with(sync.id(), "source-postgres");
        assert_eq!(sources.len(), 1, "the source's process");
        unsafe { libc::kill(sources[0] as i32, libc::SIGKILL) };
        let killed = parse_sync(sync.wait_with_output().unwrap());
        assert_ne!(killed.code, 0, "the attempt failed: {}", killed.stderr);
    }
}

/// Each row of `select` in the source and in the destination, as text,
/// sorted: the two sides of an EXCEPT, taken both ways.
fn differences(source_select: &str, destination_select: &str) -> (Vec<String>, Vec<String>) {
    let side = |c: &mut ::postgres::Client, sql: &str| -> Vec<String> {
        let mut rows: Vec<String> = c.query(&format!("select row(q.*)::text from ({sql}) q"), &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).iter().map(|r| r.get(0)).collect();
        rows.sort();
        rows
    };
    let source = side(&mut client(), source_select);
    let destination = side(&mut client_of(DESTINATION_DB), destination_select);
    let missing: Vec<String> = source.iter().filter(|r| !destination.contains(r)).cloned().collect();
    let extra: Vec<String> = destination.iter().filter(|r| !source.contains(r)).cloned().collect();
    (missing, extra)
}

fn assert_same(source_select: &str, destination_select: &str) {
    let (missing, extra) = differences(source_select, destination_select);
    assert!(missing.is_empty() && extra.is_empty(), "source EXCEPT destination: {missing:#?}\ndestination EXCEPT source: {extra:#?}");
}

fn destination_count(sql: &str) -> i64 {
    client_of(DESTINATION_DB).query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// Waits until the destination has committed rows into `table` (the
/// stream's staged table while a sync runs): the moment to kill a sync
/// midway. The state file is no signal: it is written once a second, and
/// a sync of these tables can be over sooner.
fn wait_for_committed_rows(table: &str, filter: &str) {
    let mut client = client_of(DESTINATION_DB);
    let sql = format!("select count(*) from {table} where {filter}");
    let what = format!("nothing was committed into {table} in a minute");
    wait_until(&what, || client.query_one(&sql, &[]).is_ok_and(|r| r.get::<_, i64>(0) > 0));
}

#[test]
fn check_and_discover_say_what_is_there_and_what_is_missing() {
    let s = Scratch::new();
    fresh("sp_disc", "create type mood as enum ('sad', 'happy'); \
        create table things (id bigint, part int, name text, at timestamptz, price numeric(10,2), tags text[], doc jsonb, mood mood, primary key (id, part)); \
        create table nokey (v text); create view named as select id, name from things; \
        create materialized view counted as select count(*) as n from things;");
    let check = |config: &Value| -> Value {
        let path = s.json("check.json", config);
        of_type(&connector(&["check", "--config", path.to_str().unwrap()]), "CONNECTION_STATUS")["connectionStatus"].clone()
    };
    assert_eq!(check(&source_config("sp_disc"))["status"], "SUCCEEDED");
    let missing = check(&source_config("sp_nowhere"));
    assert_eq!(missing["status"], "FAILED");
    assert!(missing["message"].as_str().unwrap().contains("schema sp_nowhere does not exist"), "{missing}");
    let mut wrong = source_config("sp_disc");
    wrong["password"] = json!("not-the-password-456");
    let message = check(&wrong)["message"].as_str().unwrap().to_owned();
    assert!(message.contains("refused the password") && !message.contains("not-the-password-456"), "{message}");
    client().batch_execute("do $$ begin if not exists (select from pg_roles where rolname = 'sp_reader') then create role sp_reader login password 'sp-reader-pw'; end if; end $$").unwrap();
    let mut reader = source_config("sp_disc");
    reader["username"] = json!("sp_reader");
    reader["password"] = json!("sp-reader-pw");
    let message = check(&reader)["message"].as_str().unwrap().to_owned();
    assert!(message.contains("may not use schema sp_disc") && message.contains("GRANT USAGE ON SCHEMA \"sp_disc\""), "{message}");

    let streams = discover(&s, &source_config("sp_disc"));
    let names: Vec<&str> = streams.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["counted", "named", "nokey", "things"], "tables, views and materialized views, by name");
    let things = streams.iter().find(|s| s["name"] == "things").unwrap();
    assert_eq!(things["namespace"], "sp_disc");
    assert_eq!(things["source_defined_primary_key"], json!([["id"], ["part"]]));
    assert_eq!(things["supported_sync_modes"], json!(["full_refresh", "incremental"]));
    assert_eq!(things["is_resumable"], true);
    let p = &things["json_schema"]["properties"];
    assert_eq!(p["id"], json!({"type": ["null", "integer"]}));
    assert_eq!(p["price"], json!({"type": ["null", "number"]}));
    assert_eq!(p["at"]["airbyte_type"], "timestamp_with_timezone");
    assert_eq!(p["tags"], json!({"type": ["null", "array"], "items": {"type": "string"}}));
    assert_eq!(p["doc"], json!({}));
    assert_eq!(p["mood"], json!({"type": ["null", "string"]}));
    let named = streams.iter().find(|s| s["name"] == "named").unwrap();
    assert_eq!(named["is_resumable"], false, "a view has no pages to resume by");
    assert!(named.get("source_defined_primary_key").is_none());
}

#[test]
fn every_type_round_trips_into_destination_postgres() {
    let s = Scratch::new();
    fresh("sp_types", r#"
        create type mood as enum ('sad', 'happy');
        create table all_types (id serial primary key, i2 smallint, i4 int, i8 bigint, n numeric(20,5), nbig numeric, r real, d double precision,
            b bool, t text, v varchar(10), c char(3), dt date, tm time, tmz timetz, ts timestamp, tsz timestamptz, u uuid, j json, jb jsonb,
            ai int[], "at" text[], "by" bytea, e mood, iv interval, ip inet, "Odd Name" text);
        insert into all_types (i2, i4, i8, n, nbig, r, d, b, t, v, c, dt, tm, tmz, ts, tsz, u, j, jb, ai, "at", "by", e, iv, ip, "Odd Name") values
            (1, 2, 3, 12345.6789, 123456789012345678901234567890.123456789, 0.1, 2.25, true, E'a\nb "q" \\ \x01\x02 é ☃', 'var', 'ab', '2024-02-29',
             '12:34:56.789', '12:34:56+02', '2024-01-02 03:04:05.678', '2024-01-02 03:04:05+05', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
             E'{"x": [1,\n 2], "s": "\\u00e9"}', '{"y": null, "z": [true]}', '{1,2,NULL}', '{"a","b c",NULL}', '\xdeadbeef00', 'happy', '1 day 02:03:04.5', '10.0.0.1/32', 'odd'),
            (-32768, -2147483648, -9223372036854775808, -0.00001, 0, -3.4e38, 1.7976931348623157e308, false, '', '', '', '1970-01-01',
             '00:00:00', '23:59:59.999999-11', '1900-01-01 00:00:00', '2038-01-19 03:14:08+00', '00000000-0000-0000-0000-000000000000',
             '[]', '"just a string"', '{}', '{}', '\x', 'sad', '-1 mons', '::1', repeat('long ', 20000));
        insert into all_types default values;
    "#);
    let discovered = discover(&s, &source_config("sp_types"));
    let catalog = configured(&discovered, &[("all_types", json!({"sync_mode": "full_refresh", "destination_sync_mode": "overwrite", "minimum_generation_id": 1}))]);
    // Legacy mode, then socket mode in both framings: each overwrites the table, and each must hold the same values.
    for channel in ["stdio", "jsonl", "protobuf"] {
        let pair = Pair::new(&s, &source_config("sp_types"), &catalog);
        let synced = if channel == "stdio" { pair.sync() } else { pair.over_sockets(2, channel).sync() };
        assert_eq!(synced.code, 0, "{channel}: {}", synced.stderr);
        assert_eq!(synced.committed("all_types"), 3, "{channel}");
        all_types_arrived_whole(channel);
    }
}

fn all_types_arrived_whole(channel: &str) {
    let types: Vec<(String, String)> = client_of(DESTINATION_DB)
        .query("select column_name::text, data_type::text from information_schema.columns where table_schema = 'sp_types' and table_name = 'all_types' and column_name in ('i2', 'n', 't', 'tsz', 'ai', 'by') order by column_name", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let types: Vec<(&str, &str)> = types.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(types, [("ai", "jsonb"), ("by", "character varying"), ("i2", "bigint"), ("n", "numeric"), ("t", "character varying"), ("tsz", "timestamp with time zone")], "{channel}");
    // Each value, as the destination's type holds it, equals the source's.
    assert_same(
        "select id, i2, i4, i8, trim_scale(n), trim_scale(nbig), r::text::numeric, d::text::numeric, b, t, v, c::text, dt, tm, tmz, ts, tsz, u::text, j::jsonb, jb, \
                to_jsonb(ai), to_jsonb(\"at\"), encode(\"by\", 'hex'), e::text, iv, ip::text, \"Odd Name\" from sp_types.all_types",
        "select id, i2, i4, i8, trim_scale(n), trim_scale(nbig), trim_scale(r), trim_scale(d), b, t, v, c, dt, tm, tmz, ts, tsz, u, j, jb, \
                ai, \"at\", encode(decode(\"by\", 'base64'), 'hex'), e, iv::interval, ip, \"Odd_Name\" from sp_types.all_types",
    );
    assert_eq!(destination_count("select count(*) from sp_types.all_types where _airbyte_meta->'changes' <> '[]'::jsonb"), 0, "{channel}: no value was nulled on the way");
    // Airbyte's names in the destination: the column "Odd Name" is Odd_Name there.
}

#[test]
fn a_full_refresh_killed_mid_table_resumes_from_its_last_range_and_loads_each_row_once() {
    let s = Scratch::new();
    // About 1 KB a row, 20,000 rows: some 20 MB in ranges of 1 MB of pages.
    fresh("sp_kill", "create table big (id int primary key, body text); \
        insert into big select g, repeat(md5(g::text), 30) from generate_series(1, 20000) g;");
    let mut source = source_config("sp_kill");
    source["checkpoint_mb"] = json!(1);
    let catalog = configured(&discover(&s, &source), &[("big", json!({"sync_mode": "full_refresh", "destination_sync_mode": "overwrite", "minimum_generation_id": 1}))]);
    let pair = Pair::new(&s, &source, &catalog);
    let state = s.path("state.json");
    pair.killed_once_rows_land("sp_kill.big_airbyte_tmp", "true");
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains("\"ctid\""), "the state names the next range: {saved}");

    let retry = pair.sync();
    assert_eq!(retry.code, 0, "{}", retry.stderr);
    assert!(retry.emitted("big") < 20000, "the retry resumed mid-table: {} rows read again", retry.emitted("big"));
    assert_eq!(destination_count("select count(*) from sp_kill.big"), 20000);
    assert_eq!(destination_count("select count(distinct id) from sp_kill.big"), 20000, "no row twice");
    assert_same("select id, body from sp_kill.big", "select id, body from sp_kill.big");
    // Read whole, the next full refresh starts from the first page again.
    let again = pair.sync();
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.emitted("big"), 20000);
    assert_eq!(destination_count("select count(*) from sp_kill.big"), 20000);
}

#[test]
fn incremental_by_cursor_into_dedup_equals_the_source_after_every_sync_and_ties_are_neither_lost_nor_repeated() {
    let s = Scratch::new();
    fresh("sp_ties", "create table items (id int primary key, updated int not null, note text); \
        insert into items values (1, 1, 'a'), (2, 1, 'b'), (3, 2, 'c'), (4, 3, 'd'), (5, 3, 'e'), (6, 3, 'f');");
    // A STATE after every row or so: STATEs fall between rows of one cursor value too.
    let mut source = source_config("sp_ties");
    source["checkpoint_mb"] = json!(0.00005);
    let how = json!({"sync_mode": "incremental", "cursor_field": ["updated"], "destination_sync_mode": "append_dedup", "primary_key": [["id"]]});
    let pair = Pair::new(&s, &source, &configured(&discover(&s, &source), &[("items", how)]));
    let same = || assert_same("select id, updated, note from sp_ties.items", "select id, updated, note from sp_ties.items");

    let first = pair.sync();
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.emitted("items"), 6);
    same();

    // A row at the saved cursor value with a later key, and a row moved forward.
    client().batch_execute("insert into sp_ties.items values (7, 3, 'g'); update sp_ties.items set updated = 4, note = 'B' where id = 2;").unwrap();
    let second = pair.sync();
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(second.emitted("items"), 2, "exactly the new row at the tie and the updated row");
    same();

    // A row at the saved value with an earlier key than the last one read:
    // the rows at that value are read again rather than risk losing it.
    client().batch_execute("insert into sp_ties.items values (0, 4, 'z');").unwrap();
    let third = pair.sync();
    assert_eq!(third.code, 0, "{}", third.stderr);
    assert_eq!(third.emitted("items"), 2, "the new row and the one row already read at that value");
    same();

    let idle = pair.sync();
    assert_eq!(idle.code, 0, "{}", idle.stderr);
    assert_eq!(idle.emitted("items"), 0, "nothing new, nothing read");
    same();
}

#[test]
fn incremental_without_a_key_reads_ties_again_rather_than_lose_them() {
    let s = Scratch::new();
    fresh("sp_nokey", "create table log (at date, line text); \
        insert into log values ('2024-01-01', 'one'), ('2024-01-02', 'two'), ('2024-01-02', 'three');");
    let source = source_config("sp_nokey");
    let how = json!({"sync_mode": "incremental", "cursor_field": ["at"], "destination_sync_mode": "append"});
    let pair = Pair::new(&s, &source, &configured(&discover(&s, &source), &[("log", how)]));
    let first = pair.sync();
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.emitted("log"), 3);
    let idle = pair.sync();
    assert_eq!(idle.emitted("log"), 0, "the rows at the last value were all read");
    client().batch_execute("insert into sp_nokey.log values ('2024-01-02', 'four'), ('2024-01-03', 'five');").unwrap();
    let second = pair.sync();
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(second.emitted("log"), 4, "the three rows at 2024-01-02 (one of them new) and the later one");
    let (missing, _) = differences("select at, line from sp_nokey.log", "select distinct at, line from sp_nokey.log");
    assert!(missing.is_empty(), "no row lost: {missing:?}");
}

#[test]
fn a_catalog_that_does_not_fit_the_tables_is_refused_by_name_before_anything_moves() {
    let s = Scratch::new();
    fresh("sp_bad", "create table t (id int primary key, doc jsonb, at timestamp);");
    let source = source_config("sp_bad");
    let discovered = discover(&s, &source);
    let read = |catalog: &Value| -> String {
        let (config, catalog) = (s.json("config.json", &source), s.json("catalog.json", catalog));
        let messages = connector(&["read", "--config", config.to_str().unwrap(), "--catalog", catalog.to_str().unwrap()]);
        assert!(!messages.iter().any(|m| m["type"] == "RECORD"), "nothing was read");
        of_type(&messages, "TRACE")["trace"]["error"]["message"].as_str().unwrap_or_default().to_owned()
    };
    let incremental = |cursor: &str| json!({"sync_mode": "incremental", "cursor_field": [cursor], "destination_sync_mode": "append"});
    let message = read(&configured(&discovered, &[("t", incremental("nope"))]));
    assert!(message.contains("cursor_field nope is not a column"), "{message}");
    let message = read(&configured(&discovered, &[("t", incremental("doc"))]));
    assert!(message.contains("cursor_field doc is of type jsonb"), "{message}");
    let mut gone = configured(&discovered, &[("t", json!({"sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}))]);
    gone["streams"][0]["stream"]["name"] = json!("vanished");
    let message = read(&gone);
    assert!(message.contains("sp_bad.vanished is not a table or view"), "{message}");
    let mut extra = configured(&discovered, &[("t", json!({"sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}))]);
    extra["streams"][0]["stream"]["json_schema"]["properties"]["dropped"] = json!({"type": "string"});
    let message = read(&extra);
    assert!(message.contains("column dropped is not in the table"), "{message}");
    // A stream without a namespace (the platform's "destination" namespace) must name one table.
    client().batch_execute("drop schema if exists sp_bad2 cascade; create schema sp_bad2; create table sp_bad2.t (id int primary key, doc jsonb, at timestamp);").unwrap();
    let mut two = source.clone();
    two["schemas"] = json!(["sp_bad", "sp_bad2"]);
    let mut bare = configured(&discovered, &[("t", json!({"sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}))]);
    bare["streams"][0]["stream"].as_object_mut().unwrap().remove("namespace");
    let (config, catalog) = (s.json("two.json", &two), s.json("bare.json", &bare));
    let messages = connector(&["read", "--config", config.to_str().unwrap(), "--catalog", catalog.to_str().unwrap()]);
    let message = of_type(&messages, "TRACE")["trace"]["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("has no namespace") && message.contains("sp_bad.t, sp_bad2.t"), "{message}");
}

/// A CDC source config for `schema`, its publication and slot, and a fresh
/// start: the slot and publication of an earlier run are dropped.
fn cdc_config(schema: &str, tables: &str) -> Value {
    let (slot, publication) = (format!("{schema}_slot"), format!("{schema}_pub"));
    client()
        .batch_execute(&format!(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = '{slot}'; \
             drop publication if exists {publication}; create publication {publication} for table {tables};"
        ))
        .unwrap();
    let mut config = source_config(schema);
    config["replication_method"] = json!({"method": "CDC", "replication_slot": slot, "publication": publication});
    config
}

/// Changes made durable at once: logical decoding reads only WAL flushed to disk.
fn change(sql: &str) {
    let mut c = client();
    c.batch_execute("set synchronous_commit = on").unwrap();
    c.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// An inactive slot keeps every byte of WAL written after it, for ever:
/// left on a server that later runs the benches, two tests' slots held 36 GB.
fn drop_slot(slot: &str) {
    client().batch_execute(&format!("select pg_drop_replication_slot('{slot}')")).unwrap();
}

fn confirmed_flush(slot: &str) -> String {
    client().query_one("select confirmed_flush_lsn::text from pg_replication_slots where slot_name = $1", &[&slot]).unwrap().get(0)
}

/// The shared LSN of the GLOBAL state in a state file.
fn saved_lsn(s: &Scratch) -> String {
    let states = s.read_json("state.json");
    states.as_array().unwrap().iter().find(|m| m["type"] == "GLOBAL").and_then(|m| m["global"]["shared_state"]["lsn"].as_str()).unwrap_or_else(|| panic!("no GLOBAL state in {states}")).to_owned()
}

fn cdc_stream() -> Value {
    json!({"sync_mode": "incremental", "cursor_field": ["_ab_cdc_lsn"], "destination_sync_mode": "append_dedup", "primary_key": [["id"]]})
}

#[test]
fn cdc_into_dedup_equals_the_source_after_every_sync_and_the_slot_moves_only_to_committed_positions() {
    let s = Scratch::new();
    fresh("sp_cdc", "create table items (id int primary key, note text, n numeric, at timestamptz, tags int[]); \
        insert into items select g, 'note ' || g, g * 1.5, '2024-01-01'::timestamptz + g * interval '1 hour', array[g, g + 1] from generate_series(1, 50) g;");
    let mut source = cdc_config("sp_cdc", "sp_cdc.items");
    source["checkpoint_mb"] = json!(0.01);
    let discovered = discover(&s, &source);
    let items = discovered.iter().find(|d| d["name"] == "items").unwrap();
    assert_eq!(items["default_cursor_field"], json!(["_ab_cdc_lsn"]));
    assert!(items["json_schema"]["properties"]["_ab_cdc_deleted_at"].is_object());
    let pair = Pair::new(&s, &source, &configured(&discovered, &[("items", cdc_stream())]));
    let same = || assert_same("select id, note, n, at, to_jsonb(tags) from sp_cdc.items", "select id, note, n, at, tags from sp_cdc.items");

    let first = pair.sync();
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.emitted("items"), 50, "the snapshot");
    same();
    let after_first = saved_lsn(&s);

    // Inserts, updates and deletes, one key changed twice in one transaction.
    change("insert into sp_cdc.items values (51, 'new', 1, now(), '{}'); update sp_cdc.items set note = 'changed', tags = null where id = 7; \
            delete from sp_cdc.items where id in (3, 4); begin; insert into sp_cdc.items values (52, 'x', 2, now(), '{1}'); \
            update sp_cdc.items set note = 'y' where id = 52; commit;");
    let second = pair.sync();
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(second.emitted("items"), 6, "each change once");
    same();
    assert_eq!(confirmed_flush("sp_cdc_slot"), after_first, "the slot moved to the position the first sync committed, no further");
    let after_second = saved_lsn(&s);
    assert_ne!(after_second, after_first);

    // Many small transactions, read in several STATEs; the source is killed among them.
    change("do $$ begin for i in 1..400 loop insert into sp_cdc.items select 1000 + i * 50 + g, repeat('x', 500), g, now(), null from generate_series(1, 50) g; commit; end loop; end $$;");
    pair.killed_once_rows_land("sp_cdc.items_airbyte_tmp", "id > 1000");
    assert_eq!(confirmed_flush("sp_cdc_slot"), after_second, "a failed attempt moved the slot no further than what was committed before it");
    let committed = saved_lsn(&s);

    let retry = pair.sync();
    assert_eq!(retry.code, 0, "{}", retry.stderr);
    assert_eq!(confirmed_flush("sp_cdc_slot"), committed, "the retry let go of what the killed attempt had committed");
    assert!(retry.emitted("items") < 20_000, "the retry read only what was not committed: {}", retry.emitted("items"));
    same();
    assert_eq!(destination_count("select count(*) from sp_cdc.items"), destination_count("select count(distinct id) from sp_cdc.items"), "one row per key");

    let idle = pair.sync();
    assert_eq!(idle.code, 0, "{}", idle.stderr);
    assert_eq!(idle.emitted("items"), 0);
    same();
    drop_slot("sp_cdc_slot");
}

#[test]
fn cdc_errors_name_the_table_or_slot_and_what_to_do() {
    let s = Scratch::new();
    fresh("sp_cdcbad", "create table keyed (id int primary key, v text); create table loose (v text); create table hidden (id int primary key, v text); \
        create table blind (id int primary key, v text); alter table blind replica identity nothing; insert into keyed values (1, 'a');");
    let read = |config: &Value, stream: &str| -> String {
        let appended = json!({"sync_mode": "incremental", "cursor_field": ["_ab_cdc_lsn"], "destination_sync_mode": "append"});
        let catalog = configured(&discover(&s, config), &[(stream, appended)]);
        let synced = Pair::new(&s, config, &catalog).sync();
        assert_ne!(synced.code, 0, "the sync failed");
        synced.failure().to_string()
    };
    let source = cdc_config("sp_cdcbad", "sp_cdcbad.keyed, sp_cdcbad.loose, sp_cdcbad.blind");
    let message = read(&source, "loose");
    assert!(message.contains("table sp_cdcbad.loose has no primary key"), "{message}");
    let message = read(&source, "blind");
    assert!(message.contains("table sp_cdcbad.blind has REPLICA IDENTITY NOTHING") && message.contains("REPLICA IDENTITY DEFAULT"), "{message}");
    // A table outside the publication: discover does not list it, and a catalog that names it is refused.
    assert!(!discover(&s, &source).iter().any(|d| d["name"] == "hidden"));
    let mut outside = configured(&discover(&s, &source), &[("keyed", cdc_stream())]);
    outside["streams"][0]["stream"]["name"] = json!("hidden");
    let (config_path, catalog_path) = (s.json("c.json", &source), s.json("k.json", &outside));
    let messages = connector(&["read", "--config", config_path.to_str().unwrap(), "--catalog", catalog_path.to_str().unwrap()]);
    let message = of_type(&messages, "TRACE")["trace"]["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("not in publication sp_cdcbad_pub") && message.contains("ALTER PUBLICATION"), "{message}");
    let mut unpublished = source.clone();
    unpublished["replication_method"]["publication"] = json!("no_such_pub");
    let catalog = configured(&discover(&s, &source), &[("keyed", cdc_stream())]);
    let synced = Pair::new(&s, &unpublished, &catalog).sync();
    assert!(synced.failure().to_string().contains("publication no_such_pub does not exist"), "{}", synced.failure());

    // A saved position the slot has moved past: fail, or read again when asked to.
    std::fs::remove_file(s.path("state.json")).ok();
    let pair = Pair::new(&s, &source, &catalog);
    let first = pair.sync();
    assert_eq!(first.code, 0, "{}", first.stderr);
    change("insert into sp_cdcbad.keyed values (2, 'b'); select pg_replication_slot_advance('sp_cdcbad_slot', pg_current_wal_flush_lsn());");
    let behind = pair.sync();
    assert_ne!(behind.code, 0);
    let message = behind.failure().to_string();
    assert!(message.contains("is no longer in replication slot sp_cdcbad_slot") && message.contains("Re-sync data"), "{message}");
    let mut resync = source.clone();
    resync["replication_method"]["invalid_cdc_cursor_position_behavior"] = json!("Re-sync data");
    let again = Pair::new(&s, &resync, &catalog).sync();
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.emitted("keyed") >= 2, "every row read again (and changes after the slot's position replayed): {}", again.emitted("keyed"));
    assert_same("select id, v from sp_cdcbad.keyed", "select id, v from sp_cdcbad.keyed");

    // The slot dropped under a connection that has a saved position.
    client().batch_execute("select pg_drop_replication_slot('sp_cdcbad_slot')").unwrap();
    let gone = Pair::new(&s, &source, &catalog).sync();
    let message = gone.failure().to_string();
    assert!(message.contains("replication slot sp_cdcbad_slot does not exist any more") && message.contains("pg_create_logical_replication_slot"), "{message}");
}

#[test]
fn the_postgres_to_postgres_bench_runs_its_short_form() {
    let output = sluice()
        .args(["bench", "--source", "postgres", "--records", "2000", "--record-size", "256", "--postgres-url", &support::postgres::server(), "--psql"])
        .arg(std::path::Path::new(&std::env::var("SLUICE_POSTGRES_BIN").expect("tests/postgres.sh exports SLUICE_POSTGRES_BIN")).join("psql"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for way in ["COPY binary out | COPY binary in (psql)", "source-postgres alone", "sync, legacy mode", "sync, socket mode PROTOBUF", "sync, socket mode JSONL"] {
        assert!(stdout.contains(way), "the bench reports {way}: {stdout}");
    }
}

#[test]
fn socket_mode_reads_ranges_in_parallel_under_one_snapshot_and_a_killed_read_resumes_each_range_once() {
    let s = Scratch::new();
    fresh("sp_sock", "create table big (id int primary key, body text); \
        insert into big select g, repeat(md5(g::text), 30) from generate_series(1, 20000) g; \
        create table small (k text primary key, v int, updated int); insert into small select 'k' || g, g, g % 7 from generate_series(1, 500) g; \
        create view seen as select id from big where id % 100 = 0;");
    let mut source = source_config("sp_sock");
    source["checkpoint_mb"] = json!(0.5);
    let discovered = discover(&s, &source);
    let overwrite = json!({"sync_mode": "full_refresh", "destination_sync_mode": "overwrite", "minimum_generation_id": 1});
    let dedup = json!({"sync_mode": "incremental", "cursor_field": ["updated"], "destination_sync_mode": "append_dedup", "primary_key": [["k"]]});
    let catalog = configured(&discovered, &[("big", overwrite.clone()), ("small", dedup), ("seen", overwrite)]);
    let pair = Pair::new(&s, &source, &catalog).over_sockets(4, "protobuf");

    // Killed while ranges are being read on four connections at once.
    pair.killed_once_rows_land("sp_sock.big_airbyte_tmp", "true");

    let retry = pair.sync();
    assert_eq!(retry.code, 0, "{}", retry.stderr);
    assert!(retry.emitted("big") < 20000, "the retry resumed: {} rows read again", retry.emitted("big"));
    assert_eq!(destination_count("select count(*) from sp_sock.big"), 20000, "every row");
    assert_eq!(destination_count("select count(distinct id) from sp_sock.big"), 20000, "each once: no range was read twice");
    assert_same("select id, body from sp_sock.big", "select id, body from sp_sock.big");
    assert_same("select k, v, updated from sp_sock.small", "select k, v, updated from sp_sock.small");
    assert_same("select id from sp_sock.seen", "select id from sp_sock.seen");
}

#[test]
fn cdc_over_sockets_into_dedup_equals_the_source_after_every_sync_in_both_framings() {
    let s = Scratch::new();
    fresh("sp_cdcsock", "create table items (id int primary key, note text, n numeric, at timestamptz, d date, ts timestamp, tags int[], doc jsonb, ok bool, big text); \
        insert into items select g, 'note ' || g, g * 1.5, '2024-01-01'::timestamptz + g * interval '1 hour', '2024-01-01'::date + g, '2024-01-01'::timestamp + g * interval '1 minute', \
            array[g, g + 1], jsonb_build_object('g', g, 'tag', 'x' || g), g % 2 = 0, null from generate_series(1, 2000) g; \
        update items set big = (select string_agg(md5(random()::text || i), '') from generate_series(1, 400) i) where id = 5; \
        create table plain (k text primary key, v int); insert into plain select 'k' || g, g from generate_series(1, 300) g;");
    let mut source = cdc_config("sp_cdcsock", "sp_cdcsock.items, sp_cdcsock.plain");
    source["checkpoint_mb"] = json!(0.05);
    let discovered = discover(&s, &source);
    let overwrite = json!({"sync_mode": "full_refresh", "destination_sync_mode": "overwrite", "minimum_generation_id": 1});
    let catalog = configured(&discovered, &[("items", cdc_stream()), ("plain", overwrite)]);
    let protobuf = Pair::new(&s, &source, &catalog).over_sockets(4, "protobuf");
    let columns = "id, note, n, at, d, ts, to_jsonb(tags), doc, ok";
    let same = || {
        assert_same(&format!("select {columns} from sp_cdcsock.items"), "select id, note, n, at, d, ts, tags, doc, ok from sp_cdcsock.items");
        assert_same("select k, v from sp_cdcsock.plain", "select k, v from sp_cdcsock.plain");
    };

    let first = protobuf.sync();
    assert_eq!(first.code, 0, "{}", first.stderr);
    same();
    assert_eq!(destination_count("select count(*) from sp_cdcsock.items where big is not null"), 1, "the snapshot read the TOASTed value");
    let after_first = saved_lsn(&s);

    // Each kind of change, a decimal wider than any float, and an update
    // that leaves the TOASTed value out (REPLICA IDENTITY DEFAULT).
    change("insert into sp_cdcsock.items values (2001, 'new', 123456789012345678901234.5678901234, now(), '1999-12-31', '2000-01-01 00:00:00.5', '{}', '[1, {\"a\": null}]', true, null); \
            update sp_cdcsock.items set note = 'changed', tags = null, doc = null where id = 7; delete from sp_cdcsock.items where id in (3, 4); \
            update sp_cdcsock.items set note = 'touched' where id = 5;");
    let second = protobuf.sync();
    assert_eq!(second.code, 0, "{}", second.stderr);
    same();
    assert_eq!(confirmed_flush("sp_cdcsock_slot"), after_first, "the slot moved to the position the first sync committed, no further");
    let meta: String = client_of(DESTINATION_DB).query_one("select coalesce(big, '') || _airbyte_meta::text from sp_cdcsock.items where id = 5", &[]).unwrap().get(0);
    assert!(meta.starts_with('{') && meta.contains("SOURCE_RETRIEVAL_ERROR") && meta.contains("big"), "the value the slot left out is null, and its meta says why: {meta}");
    let after_second = saved_lsn(&s);

    // Many small transactions over the socket; the source is killed among them.
    change("do $$ begin for i in 1..300 loop insert into sp_cdcsock.items select 10000 + i * 50 + g, repeat('x', 500), g, now(), null, null, null, null, null, null from generate_series(1, 50) g; commit; end loop; end $$;");
    protobuf.killed_once_rows_land("sp_cdcsock.items_airbyte_tmp", "id > 10000");
    assert_eq!(confirmed_flush("sp_cdcsock_slot"), after_second, "a failed attempt moved the slot no further than what was committed before it");
    let committed = saved_lsn(&s);
    let retry = protobuf.sync();
    assert_eq!(retry.code, 0, "{}", retry.stderr);
    assert_eq!(confirmed_flush("sp_cdcsock_slot"), committed, "the retry let go of what the killed attempt had committed");
    same();
    assert_eq!(destination_count("select count(*) from sp_cdcsock.items"), destination_count("select count(distinct id) from sp_cdcsock.items"), "one row per key");

    // The same connection goes on over JSONL frames.
    change("update sp_cdcsock.items set n = -n, ok = not ok where id % 10 = 0; delete from sp_cdcsock.items where id between 100 and 120;");
    let jsonl = Pair::new(&s, &source, &catalog).over_sockets(2, "jsonl");
    let fourth = jsonl.sync();
    assert_eq!(fourth.code, 0, "{}", fourth.stderr);
    same();
    drop_slot("sp_cdcsock_slot");
}
