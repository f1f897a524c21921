//! `sluice bench --destination s3`: writing Parquet and JSONL objects to S3,
//! against pyarrow (the library's limit) and dlt's filesystem destination.
//!
//! The same rows (source-faker's users, padded to the record size), read
//! once into a file, written to the same S3 (moto on 127.0.0.1, started
//! from the cache, or `--s3-endpoint`), each way into a bucket of its own:
//! 1. destination-s3 alone, fed the records on stdin: Parquet (snappy) and
//!    JSONL (gzip), and Parquet with a quarter of the rows (memory must not
//!    grow with volume);
//! 2. pyarrow: the rows' JSON read with the stream's schema
//!    (`pyarrow.json.read_json`) and written as one Parquet table
//!    (snappy) through its own S3 filesystem;
//! 3. dlt (`dlt[filesystem,parquet]`), the same rows as a Parquet load to
//!    the same S3, when installed (`--install-dlt`).
//!
//! Each is timed, with its CPU seconds (its own process and children, not
//! S3's) and its peak RSS; Sluice's Parquet rows are counted back from the
//! objects' footers.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sluice_connectors::Cache;

use crate::bench_postgres::{measured, Run};

pub const DLT_PACKAGE: &str = "dlt[filesystem,parquet]";

const PYARROW_SCRIPT: &str = r#"
import json, sys, time
import pyarrow as pa, pyarrow.json as pj, pyarrow.parquet as pq, pyarrow.fs as pf
rows, schema, endpoint, bucket = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
def arrow(p):
    t = [x for x in ([p["type"]] if isinstance(p.get("type"), str) else p.get("type", [])) if x != "null"]
    if t == ["integer"]: return pa.int64()
    if t == ["number"]: return pa.float64()
    if t == ["boolean"]: return pa.bool_()
    if t == ["string"] and p.get("format") == "date-time": return pa.timestamp("us", tz="UTC")
    return pa.string()
fields = pa.schema([(name, arrow(p)) for name, p in schema["properties"].items()])
s3 = pf.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key="test", secret_key="test", region="us-east-1")
started = time.perf_counter()
table = pj.read_json(rows, parse_options=pj.ParseOptions(explicit_schema=fields))
pq.write_table(table, bucket + "/pyarrow/users.parquet", filesystem=s3, compression="snappy")
print(json.dumps({"elapsed_secs": time.perf_counter() - started, "rows": table.num_rows}))
"#;

const DLT_SCRIPT: &str = r#"
import json, os, sys, time, dlt
rows, endpoint, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
def users():
    with open(rows) as f:
        for line in f:
            yield json.loads(line)
credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "endpoint_url": endpoint, "region_name": "us-east-1"}
destination = dlt.destinations.filesystem(bucket_url="s3://" + bucket + "/dlt", credentials=credentials)
pipeline = dlt.pipeline(pipeline_name="sluice_bench_s3_" + bucket.replace("-", "_"), destination=destination, dataset_name="bench")
started = time.perf_counter()
info = pipeline.run(dlt.resource(users, name="users", write_disposition="append"), loader_file_format="parquet")
print(json.dumps({"elapsed_secs": time.perf_counter() - started}))
"#;

pub struct Args<'a> {
    pub records: u64,
    pub record_size: usize,
    /// An S3 to write to; None: moto from the cache.
    pub endpoint: Option<&'a str>,
    pub dlt_python: Option<PathBuf>,
}

pub fn dlt_python(cache: &Cache, install: bool) -> anyhow::Result<Option<PathBuf>> {
    Ok(crate::bench_postgres::cached_venv(cache, DLT_PACKAGE, crate::bench_postgres::DLT_VERSION, install)?.map(|venv| venv.join("bin/python")))
}

/// The S3 the bench writes to, and a runtime to call it with.
struct Store {
    endpoint: String,
    client: aws_sdk_s3::Client,
    runtime: tokio::runtime::Runtime,
}

impl Store {
    fn new(endpoint: String) -> anyhow::Result<Store> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let credentials = aws_sdk_s3::config::Credentials::new("test", "test", None, None, "sluice bench");
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(credentials)
            .endpoint_url(&endpoint)
            .force_path_style(true)
            .build();
        Ok(Store { endpoint, client: aws_sdk_s3::Client::from_conf(config), runtime })
    }

    fn create(&self, bucket: &str) -> anyhow::Result<()> {
        self.runtime.block_on(self.client.create_bucket().bucket(bucket).send()).with_context(|| format!("cannot create the bucket {bucket} at {}", self.endpoint))?;
        Ok(())
    }

    /// Every object of a bucket: key and size.
    fn objects(&self, bucket: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let page = self.runtime.block_on(self.client.list_objects_v2().bucket(bucket).set_continuation_token(token).send())?;
            found.extend(page.contents().iter().map(|o| (o.key().unwrap_or_default().to_owned(), o.size().unwrap_or(0) as u64)));
            match page.next_continuation_token {
                Some(next) => token = Some(next),
                None => return Ok(found),
            }
        }
    }

    /// Rows in a bucket's Parquet objects, from their footers.
    fn parquet_rows(&self, bucket: &str) -> anyhow::Result<u64> {
        let mut rows = 0;
        for (key, _) in self.objects(bucket)? {
            let object = self.runtime.block_on(self.client.get_object().bucket(bucket).key(&key).send())?;
            let body = self.runtime.block_on(object.body.collect())?.into_bytes();
            let metadata = parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&body).with_context(|| format!("{key} is not a Parquet file"))?;
            rows += metadata.file_metadata().num_rows() as u64;
        }
        Ok(rows)
    }

    /// Empties and removes a bucket: moto keeps objects in memory.
    fn remove(&self, bucket: &str) -> anyhow::Result<()> {
        for (key, _) in self.objects(bucket)? {
            self.runtime.block_on(self.client.delete_object().bucket(bucket).key(key).send())?;
        }
        self.runtime.block_on(self.client.delete_bucket().bucket(bucket).send())?;
        Ok(())
    }
}

/// destination-s3 alone, fed `records` on stdin, into `bucket`.
fn destination_alone(sluice: &Path, dir: &Path, store: &Store, catalog: &Path, records: &Path, bucket: &str, format: Value) -> anyhow::Result<Run> {
    store.create(bucket)?;
    let config = json!({
        "s3_bucket_name": bucket, "s3_bucket_path": "sluice", "s3_bucket_region": "us-east-1", "s3_endpoint": store.endpoint,
        "access_key_id": "test", "secret_access_key": "test", "format": format,
    });
    let config_file = dir.join(format!("{bucket}.json"));
    std::fs::write(&config_file, config.to_string())?;
    crate::bench_postgres::destination_write(sluice, "destination-s3", &config_file, catalog, records)
}

/// Each record's data alone, one JSON object a line: what pyarrow and dlt read.
fn data_lines(records: &Path, rows: &Path) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let mut out = std::io::BufWriter::new(std::fs::File::create(rows)?);
    for line in std::io::BufReader::new(std::fs::File::open(records)?).lines() {
        let line = line?;
        if let Some(record) = sluice_protocol::socket::json_record(line.as_bytes())? {
            out.write_all(record.data.get().as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// A Python script's run, with the elapsed time it reported of its own work.
fn python(python: &Path, script: &str, args: &[&str], what: &str) -> anyhow::Result<(Run, Value)> {
    let (run, output) = measured(Command::new(python).args(["-c", script]).args(args))?;
    if !output.status.success() {
        bail!("{what} failed ({}): {}", output.status, sluice_connectors::last_lines(&output.stderr, 15));
    }
    let said: Value = serde_json::from_slice(output.stdout.rsplit(|b| *b == b'\n').find(|l| !l.is_empty()).unwrap_or_default()).with_context(|| format!("{what} printed no result"))?;
    Ok((run, said))
}

pub fn run(args: &Args, sluice: &Path, dir: &Path, cache: &Cache, source_config: &Value, catalog: &Value) -> anyhow::Result<()> {
    let endpoint = match args.endpoint {
        Some(endpoint) => endpoint.to_owned(),
        None => {
            let venv = cache
                .python_env(sluice_store_aws::moto::PACKAGE, Some(sluice_store_aws::moto::VERSION), &mut |line| eprintln!("  {line}"))
                .map_err(|e| anyhow::anyhow!("installing moto: {e}"))?;
            sluice_store_aws::moto::start(&venv.join("bin/moto_server"))?
        }
    };
    eprintln!("sluice bench --destination s3: {} rows of about {} bytes into {endpoint}", args.records, args.record_size);
    let store = Store::new(endpoint)?;
    let (source_file, catalog_file) = (dir.join("s3-source.json"), dir.join("s3-catalog.json"));
    std::fs::write(&source_file, source_config.to_string())?;
    std::fs::write(&catalog_file, catalog.to_string())?;
    let records_file = dir.join("records.jsonl");
    crate::bench_postgres::read_source(sluice, &source_file, &catalog_file, &records_file)?;
    let bytes = std::fs::metadata(&records_file)?.len();
    let tag = std::process::id();

    // 1: destination-s3 alone.
    let bucket = format!("sluice-bench-parquet-{tag}");
    let parquet = destination_alone(sluice, dir, &store, &catalog_file, &records_file, &bucket, json!({"format_type": "Parquet", "compression_codec": "SNAPPY"}))?;
    let written = store.parquet_rows(&bucket)?;
    if written != args.records {
        bail!("destination-s3 wrote {written} of {} rows as Parquet", args.records);
    }
    let parquet_bytes: u64 = store.objects(&bucket)?.iter().map(|(_, size)| size).sum();
    store.remove(&bucket)?;
    let bucket = format!("sluice-bench-jsonl-{tag}");
    let jsonl = destination_alone(sluice, dir, &store, &catalog_file, &records_file, &bucket, json!({"format_type": "JSONL"}))?;
    let jsonl_bytes: u64 = store.objects(&bucket)?.iter().map(|(_, size)| size).sum();
    if jsonl_bytes == 0 {
        bail!("destination-s3 wrote no JSONL objects");
    }
    store.remove(&bucket)?;
    let quarter_rows = (args.records / 4).max(1);
    let (quarter_source, quarter_file) = (dir.join("s3-source-quarter.json"), dir.join("records-quarter.jsonl"));
    let mut quarter_config = source_config.clone();
    quarter_config["count"] = quarter_rows.into();
    std::fs::write(&quarter_source, quarter_config.to_string())?;
    crate::bench_postgres::read_source(sluice, &quarter_source, &catalog_file, &quarter_file)?;
    let bucket = format!("sluice-bench-quarter-{tag}");
    let quarter = destination_alone(sluice, dir, &store, &catalog_file, &quarter_file, &bucket, json!({"format_type": "Parquet", "compression_codec": "SNAPPY"}))?;
    store.remove(&bucket)?;

    // 2 and 3: pyarrow and dlt on the rows' data, from the dlt environment (it has both).
    let rows_file = dir.join("rows.jsonl");
    data_lines(&records_file, &rows_file)?;
    let schema = catalog["streams"][0]["stream"]["json_schema"].to_string();
    let peers = match &args.dlt_python {
        Some(py) => {
            let bucket = format!("sluice-bench-pyarrow-{tag}");
            store.create(&bucket)?;
            let (pyarrow, said) = python(py, PYARROW_SCRIPT, &[rows_file.to_str().unwrap_or_default(), &schema, &store.endpoint, &bucket], "pyarrow")?;
            if said["rows"].as_u64() != Some(args.records) {
                bail!("pyarrow wrote {} of {} rows", said["rows"], args.records);
            }
            store.remove(&bucket)?;
            let bucket = format!("sluice-bench-dlt-{tag}");
            store.create(&bucket)?;
            let (dlt, _) = python(py, DLT_SCRIPT, &[rows_file.to_str().unwrap_or_default(), &store.endpoint, &bucket], "dlt")?;
            let dlt_rows = store.objects(&bucket)?.iter().filter(|(key, _)| key.ends_with(".parquet")).count();
            if dlt_rows == 0 {
                bail!("dlt wrote no Parquet objects");
            }
            store.remove(&bucket)?;
            Some((pyarrow, dlt))
        }
        None => None,
    };

    let mb = |b: u64, secs: f64| b as f64 / 1e6 / secs;
    println!("{} rows; {:.1} MB of records; Parquet {:.1} MB, JSONL gzip {:.1} MB", args.records, bytes as f64 / 1e6, parquet_bytes as f64 / 1e6, jsonl_bytes as f64 / 1e6);
    println!("{:<44} {:>11} {:>9} {:>8} {:>10} {:>13}", "way", "rows/s", "MB/s", "CPU s", "peak RSS", "vs pyarrow");
    let rate = |r: &Run| args.records as f64 / r.secs;
    let row = |way: &str, r: &Run| {
        let versus = match &peers {
            Some((pyarrow, _)) if std::ptr::eq(r, pyarrow) => "(baseline)".to_owned(),
            Some((pyarrow, _)) => format!("{:.2}x", rate(r) / rate(pyarrow)),
            None => "-".to_owned(),
        };
        println!("{way:<44} {:>11.0} {:>9.1} {:>8.2} {:>7.1} MB {versus:>13}", rate(r), mb(bytes, r.secs), r.cpu_secs, r.peak_rss_bytes as f64 / 1e6);
    };
    row("destination-s3 Parquet snappy (stdin)", &parquet);
    row("destination-s3 JSONL gzip (stdin)", &jsonl);
    match &peers {
        Some((pyarrow, dlt)) => {
            row("pyarrow read_json + write_table (snappy)", pyarrow);
            row("dlt filesystem, Parquet", dlt);
            println!("destination-s3 Parquet / pyarrow: {:.2}x; / dlt: {:.1}x", rate(&parquet) / rate(pyarrow), rate(&parquet) / rate(dlt));
        }
        None => println!("pyarrow and dlt: not measured (use --install-dlt)"),
    }
    println!(
        "destination-s3 Parquet, peak RSS: {:.1} MB for {quarter_rows} rows, {:.1} MB for {} rows ({:+.1} MB for 4x the volume); parts of 10 MB, 2 uploads at once, row groups of {} MB",
        quarter.peak_rss_bytes as f64 / 1e6,
        parquet.peak_rss_bytes as f64 / 1e6,
        args.records,
        (parquet.peak_rss_bytes as f64 - quarter.peak_rss_bytes as f64) / 1e6,
        sluice_destination_s3::columnar::ROW_GROUP_BYTES >> 20,
    );
    println!("(MB/s counts the records' JSON; CPU s and RSS are the writer's own: our process, pyarrow's or dlt's Python, not S3's)");
    Ok(())
}
