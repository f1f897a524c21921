//! destination-s3 on moto's S3 (one moto per test binary, on 127.0.0.1):
//! source-faker into every format, read back by Airbyte's own
//! `airbyte-source-s3` from PyPI and, for Parquet's types, by `pyarrow`;
//! a destination killed mid-upload; overwrite by generation; the errors
//! a user meets; and the same through `sluice up`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::aws::{bucket, moto, objects, s3};
use support::*;

/// Airbyte's source-s3, pinned: 4.14 is the newest whose dependencies install from PyPI.
const SOURCE_S3: &str = "pypi:airbyte-source-s3==4.14.2";

fn in_progress_uploads(bucket: &str) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(s3(&rt).list_multipart_uploads().bucket(bucket).send()).unwrap().uploads().len()
}

fn config(bucket: &str, format: Value) -> Value {
    json!({
        "s3_bucket_name": bucket, "s3_bucket_path": "data", "s3_bucket_region": "us-east-1",
        "s3_endpoint": moto(), "access_key_id": "test", "secret_access_key": "test",
        "format": format,
    })
}

fn gunzip(body: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(body).read_to_string(&mut text).expect("a whole gzip object");
    text
}

/// Airbyte's source-s3 reading `glob` of `bucket` as `filetype`, into destination-jsonl: the records' data.
fn read_back(s: &Scratch, bucket: &str, glob: &str, format: Value) -> Vec<Value> {
    let source = s.json(
        "source-s3.json",
        &json!({"bucket": bucket, "aws_access_key_id": "test", "aws_secret_access_key": "test", "endpoint": moto(), "region_name": "us-east-1",
            "streams": [{"name": "users", "globs": [glob], "format": format, "validation_policy": "Emit Record"}]}),
    );
    let out = s.path(&format!("read-back-{bucket}"));
    let destination = s.json("jsonl.json", &json!({"destination_path": out}));
    let state = s.path(&format!("read-back-{bucket}.state.json"));
    let synced = run_sync(&[
        "--source", SOURCE_S3,
        "--source-config", source.to_str().unwrap(),
        "--destination", "destination-jsonl",
        "--destination-config", destination.to_str().unwrap(),
        "--state-file", state.to_str().unwrap(),
    ]);
    assert_eq!(synced.code, 0, "source-s3 read the objects back: {}\n{:#}", synced.stderr, synced.outcome);
    s.read_lines(&format!("read-back-{bucket}/users.jsonl")).into_iter().map(|line| line["_airbyte_data"].clone()).collect()
}

fn faker_into_s3(s: &Scratch, bucket: &str, format: Value, count: u64, extra: &[&str]) -> Synced {
    let source = s.json("faker.json", &json!({"count": count, "records_per_slice": 100}));
    let destination = s.json("s3.json", &config(bucket, format));
    // A state of its own: the default is named for the config files, which the runs of a test share.
    let state = s.path(&format!("state-{bucket}.json"));
    let mut args = vec![
        "--source", "source-faker",
        "--source-config", source.to_str().unwrap(),
        "--destination", "destination-s3",
        "--destination-config", destination.to_str().unwrap(),
        "--streams", "users",
        "--state-file", state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let synced = run_sync(&args);
    assert_eq!(synced.code, 0, "{}\n{:#}", synced.stderr, synced.outcome);
    assert_eq!(synced.committed("users"), count);
    synced
}

/// Each record's `field` as a number (CSV's are read back as text).
fn ids(records: &[Value], field: &str) -> BTreeSet<i64> {
    let id = |r: &Value| r[field].as_i64().or_else(|| r[field].as_str().and_then(|t| t.parse().ok()));
    records.iter().map(|r| id(r).unwrap_or_else(|| panic!("no {field} in {r}"))).collect()
}

#[test]
fn source_faker_into_jsonl_gzip_in_airbytes_layout_reads_back_with_airbytes_source_s3() {
    let s = Scratch::new();
    let bucket = bucket("jsonl");
    faker_into_s3(&s, &bucket, json!({"format_type": "JSONL"}), 500, &["--data-channel", "stdio"]);
    let objects = objects(&bucket, "data/");
    assert!(!objects.is_empty());
    let mut lines = Vec::new();
    for object in &objects {
        // data/users/<yyyy>_<mm>_<dd>_<epoch millis>_<n>.jsonl.gz: Airbyte's default path, no namespace.
        let name = object.key.strip_prefix("data/users/").unwrap_or_else(|| panic!("{}", object.key));
        let parts: Vec<&str> = name.split('_').collect();
        assert_eq!(parts.len(), 5, "{name}");
        assert!(parts[3].len() == 13 && parts[4].ends_with(".jsonl.gz"), "{name}");
        assert_eq!(object.generation, Some(0), "the generation is in the object's metadata");
        lines.extend(gunzip(&object.body).lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    assert_eq!(lines.len(), 500);
    let first = &lines[0];
    let keys: Vec<&str> = first.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["_airbyte_raw_id", "_airbyte_extracted_at", "_airbyte_meta", "_airbyte_generation_id", "_airbyte_data"], "Airbyte's record shape, in its order");
    assert_eq!(first["_airbyte_raw_id"].as_str().unwrap().len(), 36);
    assert!(first["_airbyte_extracted_at"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(first["_airbyte_meta"]["changes"], json!([]));

    let read = read_back(&s, &bucket, "data/users/*.jsonl.gz", json!({"filetype": "jsonl"}));
    assert_eq!(read.len(), 500, "Airbyte's reader found every record");
    let data: Vec<Value> = read.iter().map(|r| r["_airbyte_data"].clone()).collect();
    assert_eq!(ids(&data, "id"), (1..=500).collect(), "the rows match what was sent");
}

#[test]
fn csv_flattened_and_parquet_read_back_with_airbytes_source_s3_and_parquet_has_typed_columns() {
    let s = Scratch::new();
    // CSV, root-level flattening, gzip: a column per property.
    let csv = bucket("csv");
    faker_into_s3(&s, &csv, json!({"format_type": "CSV", "flattening": "Root level flattening"}), 300, &["--data-channel", "stdio"]);
    let objects_csv = objects(&csv, "data/users/");
    assert!(objects_csv.iter().all(|o| o.key.ends_with(".csv.gz")));
    let text = gunzip(&objects_csv[0].body);
    let header = text.lines().next().unwrap();
    assert!(header.starts_with("\"_airbyte_raw_id\",\"_airbyte_extracted_at\",\"_airbyte_meta\",\"_airbyte_generation_id\","), "{header}");
    assert!(header.contains("\"id\"") && header.contains("\"email\""), "{header}");
    let read = read_back(&s, &csv, "data/users/*.csv.gz", json!({"filetype": "csv"}));
    assert_eq!(ids(&read, "id"), (1..=300).collect());

    // Parquet with snappy, in socket mode: typed columns.
    let parquet = bucket("parquet");
    faker_into_s3(&s, &parquet, json!({"format_type": "Parquet", "compression_codec": "SNAPPY"}), 3000, &["--data-channel", "socket", "--sockets", "3"]);
    let objects_parquet = objects(&parquet, "data/users/");
    assert!(objects_parquet.iter().all(|o| o.key.ends_with(".parquet")));
    let read = read_back(&s, &parquet, "data/users/*.parquet", json!({"filetype": "parquet"}));
    assert_eq!(read.len(), 3000, "each record once over three sockets");
    assert_eq!(ids(&read, "id"), (1..=3000).collect());

    let file = s.path("users.parquet");
    std::fs::write(&file, &objects_parquet[0].body).unwrap();
    let script = "import json, sys, pyarrow.parquet as pq\n\
                  t = pq.read_table(sys.argv[1])\n\
                  print(json.dumps({'types': {f.name: str(f.type) for f in t.schema}, 'rows': t.num_rows,\n\
                  'codec': pq.ParquetFile(sys.argv[1]).metadata.row_group(0).column(0).compression}))";
    let python = cache_dir().join("venvs/airbyte-source-s3-4.14.2/bin/python");
    let output = Command::new(python).args(["-c", script]).arg(&file).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    let types = &seen["types"];
    assert_eq!(types["_airbyte_raw_id"], "string");
    assert_eq!(types["_airbyte_extracted_at"], "timestamp[ms, tz=UTC]");
    assert_eq!(types["_airbyte_generation_id"], "int64");
    assert!(types["_airbyte_meta"].as_str().unwrap().starts_with("struct<sync_id: int64"), "{types}");
    assert_eq!(types["id"], "int64");
    assert_eq!(types["created_at"], "timestamp[us, tz=UTC]");
    assert_eq!(types["email"], "string");
    assert_eq!(seen["codec"], "SNAPPY");
}

/// `kill -9` of the destination a running `sluice sync` spawned.
fn kill_destination_of(sync: &std::process::Child) {
    let killed = children_with(sync.id(), "destination-s3");
    assert_eq!(killed.len(), 1, "the destination's process");
    unsafe { libc::kill(killed[0] as i32, libc::SIGKILL) };
}

#[test]
fn a_destination_killed_mid_upload_leaves_only_whole_objects_and_the_retry_resumes_from_the_released_state() {
    let s = Scratch::new();
    let bucket = bucket("kill");
    // Users of 20 KB, uncompressed: parts of 5 MB, objects of about 12 MB
    // (three parts, a multipart upload each), a STATE every 1000 users.
    let source = s.json("faker.json", &json!({"count": 6000, "records_per_slice": 1000, "record_size_bytes": 20000, "slice_pause_ms": 200}));
    let mut settings = config(&bucket, json!({"format_type": "JSONL", "compression": {"compression_type": "No Compression"}}));
    settings["part_size_mb"] = json!(5);
    settings["object_size_mb"] = json!(12);
    let destination = s.json("s3.json", &settings);
    let state = s.path("state.json");
    let args = [
        "--source", "source-faker",
        "--source-config", source.to_str().unwrap(),
        "--destination", "destination-s3",
        "--destination-config", destination.to_str().unwrap(),
        "--streams", "users",
        "--state-file", state.to_str().unwrap(),
        "--data-channel", "stdio",
    ];
    let sync = sluice().arg("sync").arg("--json").args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Killed once a STATE is released and a multipart upload is under way.
    wait_until("no STATE released and no upload under way in a minute", || {
        std::fs::read_to_string(&state).is_ok_and(|t| t.contains("users")) && in_progress_uploads(&bucket) > 0
    });
    kill_destination_of(&sync);
    let first = parse_sync(sync.wait_with_output().unwrap());
    assert_ne!(first.code, 0, "the attempt failed: {}", first.stderr);
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for object in objects(&bucket, "data/") {
        let text = String::from_utf8(object.body).unwrap();
        assert!(text.ends_with('\n'), "{} is whole", object.key);
        for line in text.lines() {
            let line: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: a partial line ({e})", object.key));
            *seen.entry(line["_airbyte_data"]["id"].as_i64().unwrap()).or_default() += 1;
        }
    }
    let kept = seen.len();
    assert!((1000..6000).contains(&kept), "some objects were complete before the kill, not all: {kept}");

    let retry = run_sync(&args);
    assert_eq!(retry.code, 0, "{}", retry.stderr);
    assert!(retry.emitted("users") < 6000, "the retry resumed from the released STATE: it read {}", retry.emitted("users"));
    let mut after: BTreeMap<i64, usize> = BTreeMap::new();
    for object in objects(&bucket, "data/") {
        for line in String::from_utf8(object.body).unwrap().lines() {
            let line: Value = serde_json::from_str(line).unwrap();
            *after.entry(line["_airbyte_data"]["id"].as_i64().unwrap()).or_default() += 1;
        }
    }
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), (1..=6000).collect::<Vec<_>>(), "every user arrived");
    let twice = after.values().filter(|&&n| n > 1).count();
    assert!(twice < 2000, "only records after the released STATE came twice: {twice}");
}

/// `sluice connector destination-s3 write` fed these messages on stdin.
fn write(s: &Scratch, config: &Value, catalog: &Value, messages: &[Value]) -> Written {
    destination_write("destination-s3", s, config, catalog, messages)
}

fn overwrite_catalog(generation: i64) -> Value {
    json!({"streams": [{
        "stream": {"name": "items", "namespace": "shop", "json_schema": {"type": "object", "properties": {"id": {"type": "integer"}}}, "supported_sync_modes": ["full_refresh"]},
        "sync_mode": "full_refresh", "destination_sync_mode": "overwrite",
        "generation_id": generation, "minimum_generation_id": generation, "sync_id": 100 + generation,
    }]})
}

fn item(id: i64) -> Value {
    json!({"type": "RECORD", "record": {"namespace": "shop", "stream": "items", "data": {"id": id}, "emitted_at": 1_700_000_000_000i64}})
}

fn status(status: &str) -> Value {
    json!({"type": "TRACE", "trace": {"type": "STREAM_STATUS", "emitted_at": 1.0, "stream_status": {"stream_descriptor": {"name": "items", "namespace": "shop"}, "status": status}}})
}

fn state() -> Value {
    json!({"type": "STATE", "state": {"type": "STREAM", "stream": {"stream_descriptor": {"name": "items", "namespace": "shop"}, "stream_state": {"done": true}}}})
}

/// The generations of a bucket's objects, and the ids in each.
fn generations(bucket: &str) -> BTreeMap<i64, BTreeSet<i64>> {
    let mut found: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for object in objects(bucket, "data/shop/items/") {
        let ids = gunzip(&object.body).lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["_airbyte_data"]["id"].as_i64().unwrap()).collect::<Vec<_>>();
        found.entry(object.generation.expect("a generation")).or_default().extend(ids);
    }
    found
}

#[test]
fn an_overwrite_deletes_earlier_generations_only_after_it_succeeds() {
    let s = Scratch::new();
    let bucket = bucket("overwrite");
    let settings = config(&bucket, json!({"format_type": "JSONL"}));
    let first = write(&s, &settings, &overwrite_catalog(1), &[status("STARTED"), item(1), item(2), state(), status("COMPLETE")]);
    assert_eq!((first.code, first.states().len()), (0, 1), "{}\n{}", first.error(), first.stderr);
    assert_eq!(generations(&bucket), BTreeMap::from([(1, BTreeSet::from([1, 2]))]));

    // The next generation fails midway: the old one stays whole beside it.
    let failed = write(&s, &settings, &overwrite_catalog(2), &[status("STARTED"), item(3), state(), status("INCOMPLETE")]);
    assert_eq!(failed.code, 0, "{}", failed.error());
    assert_eq!(generations(&bucket), BTreeMap::from([(1, BTreeSet::from([1, 2])), (2, BTreeSet::from([3]))]));

    // The one after succeeds: it alone remains.
    let third = write(&s, &settings, &overwrite_catalog(3), &[status("STARTED"), item(4), item(5), state(), status("COMPLETE")]);
    assert_eq!(third.code, 0, "{}", third.error());
    assert_eq!(generations(&bucket), BTreeMap::from([(3, BTreeSet::from([4, 5]))]));

    // Streams that share a directory: an overwrite of `items` leaves `items_archive`'s objects alone.
    let mut shared = settings.clone();
    shared["s3_path_format"] = json!("${NAMESPACE}_${STREAM_NAME}_${EPOCH}_");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let archive = "data/shop_items_archive_1700000000000_0.jsonl.gz";
    rt.block_on(s3(&rt).put_object().bucket(&bucket).key(archive).metadata("ab-generation-id", "1").body(b"{}".to_vec().into()).send()).unwrap();
    let shared_write = write(&s, &shared, &overwrite_catalog(4), &[item(6), state(), status("COMPLETE")]);
    assert_eq!(shared_write.code, 0, "{}", shared_write.error());
    let keys: Vec<String> = objects(&bucket, "data/").into_iter().map(|o| o.key).collect();
    assert!(keys.iter().any(|k| k == archive), "another stream's object stays: {keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("data/shop_items_1")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("data/shop/items/")), "objects of another path format are not the stream's as this one names them (as Airbyte's): {keys:?}");

    // Two streams whose keys cannot be told apart, one overwriting: refused before anything is written.
    let mut two = overwrite_catalog(5);
    let mut twin = two["streams"][0].clone();
    twin["stream"]["name"] = json!("it ems");
    two["streams"][0]["stream"]["name"] = json!("it_ems");
    two["streams"].as_array_mut().unwrap().push(twin);
    let refused = write(&s, &settings, &two, &[]);
    assert_eq!(refused.code, 1);
    assert!(refused.error().contains("cannot tell apart"), "{}", refused.error());
}

/// `check` with this config: its status and message, and everything it printed.
fn check(s: &Scratch, config: &Value) -> (String, String, String) {
    let path = s.json("check.json", config);
    let output = sluice().args(["connector", "destination-s3", "check", "--config"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let message: Value = stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|m| m["type"] == "CONNECTION_STATUS").unwrap_or_else(|| panic!("no status: {stdout}"));
    let status = message["connectionStatus"]["status"].as_str().unwrap().to_owned();
    let text = message["connectionStatus"]["message"].as_str().unwrap_or_default().to_owned();
    (status, text, format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)))
}

/// A moto of its own that enforces IAM after its first requests (which
/// set it up): a user allowed to list the bucket and nothing else.
fn moto_with_iam(s: &Scratch) -> (String, String, String, std::process::Child) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let venv = support::aws::moto_venv();
    let child = Command::new(venv.join("bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "4")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_until("moto with IAM did not start", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let setup = s.path("setup.py");
    std::fs::write(
        &setup,
        "import boto3, json, sys\n\
         kw = dict(endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\n\
         boto3.client('s3', **kw).create_bucket(Bucket='locked')\n\
         iam = boto3.client('iam', **kw)\n\
         iam.create_user(UserName='reader')\n\
         iam.put_user_policy(UserName='reader', PolicyName='list', PolicyDocument=json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': 's3:ListBucket', 'Resource': '*'}]}))\n\
         key = iam.create_access_key(UserName='reader')['AccessKey']\n\
         print(key['AccessKeyId'], key['SecretAccessKey'])\n",
    )
    .unwrap();
    let output = Command::new(venv.join("bin/python")).arg(&setup).arg(&url).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let (id, secret) = text.trim().split_once(' ').unwrap();
    (url, id.to_owned(), secret.to_owned(), child)
}

#[test]
fn spec_and_check_say_what_is_wrong_without_showing_the_secret() {
    let s = Scratch::new();
    let spec = sluice().args(["connector", "destination-s3", "spec"]).output().unwrap();
    let spec: Value = serde_json::from_slice(&spec.stdout).unwrap();
    assert_eq!(spec["spec"]["connectionSpecification"]["properties"]["secret_access_key"]["airbyte_secret"], true);

    let good = bucket("check");
    assert_eq!(check(&s, &config(&good, json!({"format_type": "JSONL"}))).0, "SUCCEEDED");
    assert!(objects(&good, "").is_empty(), "check cleans up after itself");

    let (status, message, _) = check(&s, &config("no-such-bucket-here", json!({"format_type": "JSONL"})));
    assert_eq!(status, "FAILED");
    assert!(message.contains("no-such-bucket-here does not exist"), "{message}");

    let mut unreachable = config(&good, json!({"format_type": "JSONL"}));
    unreachable["s3_endpoint"] = json!("http://127.0.0.1:9");
    unreachable["secret_access_key"] = json!("do-not-print-me");
    let (status, message, everything) = check(&s, &unreachable);
    assert_eq!(status, "FAILED");
    assert!(message.contains("cannot reach S3 at http://127.0.0.1:9"), "{message}");
    assert!(!everything.contains("do-not-print-me"), "the secret was printed: {everything}");

    let (url, id, secret, mut moto_iam) = moto_with_iam(&s);
    let mut locked = config("locked", json!({"format_type": "JSONL"}));
    locked["s3_endpoint"] = json!(url);
    locked["access_key_id"] = json!(id);
    locked["secret_access_key"] = json!(secret);
    let (status, message, everything) = check(&s, &locked);
    assert_eq!(status, "FAILED");
    assert!(message.contains("access denied") && message.contains("s3:PutObject"), "{message}");
    assert!(!everything.contains(&secret), "the secret was printed: {everything}");
    locked["access_key_id"] = json!("AKIAUNKNOWNKEY000000");
    let (status, message, everything) = check(&s, &locked);
    assert_eq!(status, "FAILED");
    assert!(message.contains("refused the credentials"), "{message}");
    assert!(!everything.contains(&secret));
    moto_iam.kill().unwrap();
    moto_iam.wait().unwrap();
}

#[test]
fn sluice_up_syncs_into_s3_with_the_builtin_definition_and_overwrites_by_generation() {
    let s = Scratch::new();
    let bucket = bucket("up");
    let p = support::platform::Platform::start(&s.path("data"), &[]);
    let workspace = p.workspace("s3");
    let source = p.actor("source", &workspace, "sluice-faker", json!({"count": 250}));
    let destination = p.actor("destination", &workspace, "s3", config(&bucket, json!({"format_type": "Parquet", "compression_codec": "ZSTD"})));
    assert_eq!(p.get(&format!("/destinations/{destination}"))["configuration"]["secret_access_key"], "**********", "the secret key is a secret");
    let connection = p.post("/connections", json!({"sourceId": source, "destinationId": destination,
        "configurations": {"streams": [{"name": "users", "syncMode": "incremental_append"}, {"name": "products", "syncMode": "full_refresh_overwrite"}]}}))["connectionId"].as_str().unwrap().to_owned();
    let mut after_first = 0;
    for run in 1..=2 {
        let job = p.wait_job(p.sync(&connection), std::time::Duration::from_secs(120));
        assert_eq!(job["status"], "succeeded", "run {run}: {job}\n{}", p.log());
        // Each overwrite job starts a generation, and only the last one's objects stay.
        let products = objects(&bucket, "data/products/");
        let generations: BTreeSet<Option<i64>> = products.iter().map(|o| o.generation).collect();
        assert_eq!(generations, BTreeSet::from([Some(run)]), "run {run}");
        let bytes: usize = products.iter().map(|o| o.body.len()).sum();
        if run == 1 {
            after_first = bytes;
        } else {
            assert!(bytes < after_first * 3 / 2, "the first sync's products are gone: {after_first} then {bytes} bytes");
        }
    }
    let users = objects(&bucket, "data/users/");
    assert!(!users.is_empty() && users.iter().all(|o| o.key.ends_with(".parquet")));
}

#[test]
fn the_s3_bench_runs_its_short_form() {
    let out = sluice().args(["bench", "--destination", "s3", "--records", "2000", "--record-size", "256", "--s3-endpoint", moto()]).output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}\n{}", String::from_utf8_lossy(&out.stderr));
    for way in ["destination-s3 Parquet snappy (stdin)", "destination-s3 JSONL gzip (stdin)", "peak RSS: "] {
        assert!(printed.contains(way), "{way} missing from:\n{printed}");
    }
}
