//! `sluice bench --source postgres --postgres-url URL`: a table moved from
//! PostgreSQL to PostgreSQL (one server, one database, schema to schema),
//! against the server's own limit and the peers, in one run:
//! 1. `COPY ... TO STDOUT (FORMAT binary)` by psql piped into `COPY ...
//!    FROM STDIN (FORMAT binary)` by psql: the physical limit;
//! 2. source-postgres alone, its records to /dev/null (its own rate and peak RSS);
//! 3. the whole sync in legacy mode (source-postgres, the orchestrator and
//!    destination-postgres; a full refresh that overwrites) and in socket
//!    mode (PROTOBUF and JSONL, the table's page ranges read over a
//!    connection per socket);
//! 4. dlt: `sql_database`'s `sql_table` with the pyarrow backend into
//!    `dlt[postgres]` (loading by COPY from CSV files, its fastest);
//! 5. Sling (PyPI `sling-linux-amd64`), `sling run` full refresh.
//!
//! `--runs` rounds of every way, every other round in reverse order, each
//! way after a VACUUM, a checkpoint and (for a server on this machine) a
//! `sync`; each way's median is reported.
//!
//! PyAirbyte is not among them: Airbyte's source-postgres and
//! destination-postgres are Java images, not PyPI packages, and no image
//! registry is reached here.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::json;
use sluice_connectors::Cache;

use crate::bench_postgres::{cached_venv, count, destination_config, measured, proc_stat, sql, whole_sync, Run, Source};

pub const DLT_PACKAGE: &str = "dlt[postgres,sql-database,parquet]";
pub const SLING_PACKAGE: &str = "sling-linux-amd64";
pub const SLING_VERSION: &str = "1.4.11";

const DLT_SCRIPT: &str = r#"
import json, sys, time, dlt
from dlt.sources.sql_database import sql_table
url, schema, table, dataset, workdir = sys.argv[1:6]
# SQLAlchemy 2.1 takes postgresql+psycopg2:// (dlt[postgres] brings psycopg2); dlt's destination the plain URL.
resource = sql_table(credentials=url.replace("postgres://", "postgresql+psycopg2://", 1), schema=schema, table=table, backend="pyarrow", chunk_size=50000)
pipeline = dlt.pipeline(pipeline_name="sluice_bench_" + dataset, destination=dlt.destinations.postgres(credentials=url), dataset_name=dataset, pipelines_dir=workdir)
started = time.perf_counter()
pipeline.run(resource, write_disposition="append", loader_file_format="csv")
print(json.dumps({"elapsed_secs": time.perf_counter() - started}))
"#;

pub struct Args<'a> {
    pub records: u64,
    pub record_size: usize,
    pub url: &'a str,
    pub psql: PathBuf,
    pub dlt_python: Option<PathBuf>,
    pub sling: Option<PathBuf>,
    /// Rounds of every way (at least 1, as `sluice bench` checks).
    pub runs: usize,
}

/// dlt with its SQL source and Arrow, from the cache (installed first when asked).
pub fn dlt_python(cache: &Cache, install: bool) -> anyhow::Result<Option<PathBuf>> {
    Ok(cached_venv(cache, DLT_PACKAGE, crate::bench_postgres::DLT_VERSION, install)?.map(|venv| venv.join("bin/python")))
}

/// Sling's binary from its PyPI wheel (installed first when asked).
pub fn sling(cache: &Cache, install: bool) -> anyhow::Result<Option<PathBuf>> {
    let Some(venv) = cached_venv(cache, SLING_PACKAGE, SLING_VERSION, install)? else { return Ok(None) };
    let lib = venv.join("lib");
    for python in std::fs::read_dir(&lib).with_context(|| format!("{}", lib.display()))?.flatten() {
        let binary = python.path().join("site-packages/sling_linux_amd64/bin/sling-linux-amd64");
        if binary.exists() {
            return Ok(Some(binary));
        }
    }
    bail!("the Sling wheel in {} has no sling-linux-amd64 binary", venv.display())
}

const SOURCE: &str = "sluice_pg2pg_src";
const TARGETS: [&str; 6] = ["sluice_pg2pg_copy", "sluice_pg2pg_sluice", "sluice_pg2pg_socket", "sluice_pg2pg_jsonl", "sluice_pg2pg_dlt", "sluice_pg2pg_sling"];

fn drop_all(url: &str) -> anyhow::Result<()> {
    let schemas = std::iter::once(SOURCE).chain(TARGETS);
    sql(url, &schemas.map(|s| format!("drop schema if exists {s} cascade")).collect::<Vec<_>>().join(";"))?;
    Ok(())
}

pub fn run(args: &Args, sluice: &Path, dir: &Path) -> anyhow::Result<()> {
    let server = args.url.split('@').next_back().unwrap_or("the server");
    eprintln!("sluice bench --source postgres: a table of {} rows of about {} bytes, from schema to schema on {server}", args.records, args.record_size);
    drop_all(args.url)?;
    warn_of_idle_slots(args.url)?;
    // The rows: a key, a few typed columns, and text padding each to the record size.
    let padding = args.record_size.saturating_sub(100).max(1);
    sql(
        args.url,
        &format!(
            "create schema {SOURCE}; \
             create table {SOURCE}.t (id bigint primary key, name text, amount numeric(12,2), created_at timestamptz, flag boolean, payload text); \
             insert into {SOURCE}.t select g, 'name ' || g, g * 0.01, timestamptz '2024-01-01' + g * interval '1 second', g % 2 = 0, \
                 substr(repeat(md5(g::text), {}), 1, {padding}) from generate_series(1, {}) g; \
             vacuum analyze {SOURCE}.t",
            padding / 32 + 1,
            args.records
        ),
    )?;
    let table_bytes = sql(args.url, &format!("select pg_relation_size('{SOURCE}.t')"))?[0].get::<_, i64>(0) as u64;

    // The ways, each a command that moves the table again into its own schema.
    sql(args.url, &format!("create schema sluice_pg2pg_copy; create table sluice_pg2pg_copy.t (like {SOURCE}.t including all)"))?;
    let (source_file, catalog_file) = (dir.join("pg-source.json"), dir.join("pg-catalog.json"));
    let mut source = destination_config(args.url, SOURCE)?;
    source.as_object_mut().expect("an object").remove("schema");
    source["schemas"] = json!([SOURCE]);
    std::fs::write(&source_file, source.to_string())?;
    let discovered = Command::new(sluice).args(["connector", "source-postgres", "discover", "--config"]).arg(&source_file).output()?;
    let catalog = String::from_utf8_lossy(&discovered.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|m| m["type"] == "CATALOG")
        .with_context(|| format!("source-postgres discover gave no catalog: {}", String::from_utf8_lossy(&discovered.stdout)))?;
    let mut stream = catalog["catalog"]["streams"][0].clone();
    // No namespace: the source reads its first schema, the destination writes its own.
    stream.as_object_mut().expect("a stream").remove("namespace");
    let configured = json!({"streams": [{"stream": stream, "sync_mode": "full_refresh", "destination_sync_mode": "overwrite", "generation_id": 1, "minimum_generation_id": 1, "sync_id": 1}]});
    std::fs::write(&catalog_file, configured.to_string())?;
    let source = Source { name: "source-postgres", config: &source_file, catalog: &catalog_file };
    let sockets = sluice_domain::channel::socket_count(cores(), cores());

    let psql = args.psql.display().to_string();
    let pipe = format!(
        "{psql} '{url}' -q -c 'TRUNCATE sluice_pg2pg_copy.t' && {psql} '{url}' -q -c 'COPY {SOURCE}.t TO STDOUT (FORMAT binary)' | {psql} '{url}' -q -c 'COPY sluice_pg2pg_copy.t FROM STDIN (FORMAT binary)'",
        url = args.url
    );
    let copy_way = || -> anyhow::Result<Run> {
        let (run, output) = measured(Command::new("sh").args(["-ec", &pipe]))?;
        if !output.status.success() || count(args.url, "sluice_pg2pg_copy.t")? != args.records {
            bail!("the COPY pipe failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
        }
        Ok(run)
    };
    // The records go to /dev/null by the shell: read into this process, they
    // would grow it, and every process started after would count its size
    // (a spawned child shares the parent's memory until it runs its program).
    let alone_way = || -> anyhow::Result<Run> {
        let (run, output) = measured(
            Command::new("sh").args(["-c", r#"exec "$0" connector source-postgres read --config "$1" --catalog "$2" > /dev/null"#]).arg(sluice).arg(&source_file).arg(&catalog_file),
        )?;
        if !output.status.success() {
            bail!("source-postgres failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
        }
        Ok(run)
    };
    let sync_way = |schema: &'static str, channel: &'static [&'static str]| {
        let source = &source;
        move || -> anyhow::Result<Run> {
            // A full refresh from the start each time, not a resumption.
            let _ = std::fs::remove_file(dir.join(format!("{schema}-state.json")));
            whole_sync(sluice, dir, args.url, source, schema, "t", args.records, channel)
        }
    };
    let dlt_way = |python: &PathBuf| {
        let python = python.clone();
        move || -> anyhow::Result<Run> {
            // dlt appends, and keeps what it loaded in its pipeline's directory: both start empty.
            sql(args.url, "drop schema if exists sluice_pg2pg_dlt cascade")?;
            let work = dir.join("dlt");
            let _ = std::fs::remove_dir_all(&work);
            let (run, output) = measured(Command::new(&python).args(["-c", DLT_SCRIPT, args.url, SOURCE, "t", "sluice_pg2pg_dlt"]).arg(&work).env("RUNTIME__LOG_LEVEL", "WARNING"))?;
            if !output.status.success() || count(args.url, "sluice_pg2pg_dlt.t")? != args.records {
                bail!("dlt failed ({}): {}", output.status, sluice_connectors::last_lines(&output.stderr, 15));
            }
            Ok(run)
        }
    };
    let sling_way = |binary: &PathBuf| {
        let binary = binary.clone();
        move || -> anyhow::Result<Run> {
            let (run, output) = measured(
                Command::new(&binary)
                    .args(["run", "--src-conn", "PG", "--src-stream", &format!("{SOURCE}.t"), "--tgt-conn", "PG", "--tgt-object", "sluice_pg2pg_sling.t", "--mode", "full-refresh"])
                    .env("PG", format!("{}{}sslmode=disable", args.url, if args.url.contains('?') { "&" } else { "?" }))
                    .env("SLING_DISABLE_TELEMETRY", "true")
                    .env("SLING_HOME_DIR", dir.join("sling")),
            )?;
            if !output.status.success() || count(args.url, "sluice_pg2pg_sling.t")? != args.records {
                bail!("Sling failed ({}): {}", output.status, sluice_connectors::last_lines(&output.stdout, 15));
            }
            Ok(run)
        }
    };
    type WayFn<'w> = Box<dyn Fn() -> anyhow::Result<Run> + 'w>;
    let mut ways: Vec<(String, WayFn)> = vec![
        ("COPY binary out | COPY binary in (psql)".into(), Box::new(copy_way)),
        ("source-postgres alone (to /dev/null)".into(), Box::new(alone_way)),
        ("sync, legacy mode (source+orch.+dest.)".into(), Box::new(sync_way("sluice_pg2pg_sluice", &["--data-channel", "stdio"]))),
        (format!("sync, socket mode PROTOBUF x{sockets} (bookkeeper)"), Box::new(sync_way("sluice_pg2pg_socket", &["--data-channel", "socket", "--data-format", "protobuf"]))),
        (format!("sync, socket mode JSONL x{sockets}"), Box::new(sync_way("sluice_pg2pg_jsonl", &["--data-channel", "socket", "--data-format", "jsonl"]))),
    ];
    let (legacy_at, socket_at) = (2, 3);
    let dlt_at = args.dlt_python.as_ref().map(|python| {
        ways.push((format!("dlt {} (sql_table, pyarrow, csv)", crate::bench_postgres::DLT_VERSION), Box::new(dlt_way(python))));
        ways.len() - 1
    });
    let sling_at = args.sling.as_ref().map(|binary| {
        ways.push((format!("Sling {SLING_VERSION}"), Box::new(sling_way(binary))));
        ways.len() - 1
    });

    // Rounds, every other one in reverse order: the server's disk decides at
    // millions of rows, and a way run after another pays for its writes
    // (measured at 4M rows: whichever socket way came right after legacy
    // mode was 25% slower). Each way's median run is reported.
    let postmaster = local_postmaster(args.url);
    let mut runs: Vec<Vec<(Run, Option<f64>)>> = ways.iter().map(|_| Vec::new()).collect();
    for round in 0..args.runs {
        let order: Vec<usize> = if round % 2 == 0 { (0..ways.len()).collect() } else { (0..ways.len()).rev().collect() };
        for i in order {
            settle(args.url);
            let before = postmaster.and_then(server_cpu_secs);
            let run = (ways[i].1)().with_context(|| format!("round {}: {}", round + 1, ways[i].0))?;
            // The way's backends have exited; their time is the postmaster's once it has reaped them.
            std::thread::sleep(std::time::Duration::from_millis(200));
            let server = before.zip(postmaster.and_then(server_cpu_secs)).map(|(b, a)| a - b);
            runs[i].push((run, server));
            empty_targets(args.url)?;
        }
    }
    let (medians, server): (Vec<Run>, Vec<Option<f64>>) = runs
        .into_iter()
        .map(|mut r| {
            r.sort_by(|a, b| a.0.secs.total_cmp(&b.0.secs));
            let middle = r.len() / 2;
            r.swap_remove(middle)
        })
        .unzip();

    println!("{} rows; the table is {:.1} MB; the median of {} rounds, every other one in reverse order", args.records, table_bytes as f64 / 1e6, args.runs);
    println!("{:<44} {:>11} {:>9} {:>8} {:>10} {:>14} {:>9}", "way", "rows/s", "MB/s", "CPU s", "peak RSS", "vs COPY pipe", "server s");
    let rate = |r: &Run| args.records as f64 / r.secs;
    let copy = &medians[0];
    for (i, ((way, _), r)) in ways.iter().zip(&medians).enumerate() {
        let versus = if i == 0 { "(baseline)".to_owned() } else { format!("{:.2}x", rate(r) / rate(copy)) };
        let server = server[i].map_or("-".to_owned(), |s| format!("{s:.2}"));
        println!("{way:<44} {:>11.0} {:>9.1} {:>8.2} {:>7.1} MB {versus:>14} {server:>9}", rate(r), table_bytes as f64 / 1e6 / r.secs, r.cpu_secs, r.peak_rss_bytes as f64 / 1e6);
        for p in r.processes.iter().filter(|p| r.processes.len() > 1 && p.cpu_secs >= 0.01) {
            println!("  {:<42} {:>11} {:>9} {:>8.2} {:>7.1} MB", p.name, "", "", p.cpu_secs, p.peak_rss_bytes as f64 / 1e6);
        }
    }
    let (legacy, socket) = (rate(&medians[legacy_at]), rate(&medians[socket_at]));
    match dlt_at.map(|i| rate(&medians[i])) {
        Some(d) => println!("socket mode / dlt: {:.1}x; legacy mode / dlt: {:.1}x", socket / d, legacy / d),
        None => println!("dlt: not measured (use --install-dlt)"),
    }
    match sling_at.map(|i| rate(&medians[i])) {
        Some(s) => println!("socket mode / Sling: {:.2}x; legacy mode / Sling: {:.2}x", socket / s, legacy / s),
        None => println!("Sling: not measured (use --install-sling)"),
    }
    println!("PyAirbyte: not measured (Airbyte's Postgres connectors are Java images, and no image registry is reached here)");
    println!("(MB/s counts the source table's pages; CPU s and RSS are the client side's; server s is the CPU the server spent meanwhile,");
    println!(" all its processes, when it runs on this machine (\"-\" otherwise); a way's RSS is its largest process,");
    println!(" and the indented lines are each of its processes, sampled from /proc every 50 ms: CPU up to 50 ms short, RSS the kernel's peak)");
    drop_all(args.url)
}

/// Every way writes the table again, WAL included, and an inactive
/// replication slot keeps all of it: a test's two left-over slots once
/// held 36 GB of a bench's WAL, and a way failed with the disk full.
fn warn_of_idle_slots(url: &str) -> anyhow::Result<()> {
    let idle: Vec<String> = sql(url, "select slot_name::text from pg_replication_slots where not active")?.iter().map(|r| r.get(0)).collect();
    if !idle.is_empty() {
        eprintln!(
            "  warning: inactive replication slots on the server keep all the WAL this bench writes (several times the table): {}; drop those no one reads (select pg_drop_replication_slot('NAME'))",
            idle.join(", ")
        );
    }
    Ok(())
}

/// After each way, what it wrote goes, so that every way starts from the
/// same server: the source table alone. Kept, seven ways' copies of a 4 GB
/// table outgrew the page cache, and whichever ways came last paid for it
/// (the same server work took 20 s of server CPU in one way, 30 in the next).
fn empty_targets(url: &str) -> anyhow::Result<()> {
    let dropped = TARGETS[1..].iter().map(|s| format!("drop schema if exists {s} cascade"));
    sql(url, &std::iter::once("truncate sluice_pg2pg_copy.t".to_owned()).chain(dropped).collect::<Vec<_>>().join(";"))?;
    Ok(())
}

/// Before each way: a VACUUM, so that no way pays for autovacuum's first
/// pass over the tables the ways before it wrote (at 4M rows it ran over
/// one target through the next two ways), then a checkpoint, so that none
/// pays for the dirty pages and WAL of the one before it. A server with
/// `fsync=off` (as the tests run theirs) leaves that checkpoint in the
/// kernel's page cache: when the server is on this machine, the kernel's
/// dirty pages are written too. The checkpoint needs superuser or
/// pg_checkpoint; without, the ways run as they come.
fn settle(url: &str) {
    for step in ["vacuum", "checkpoint"] {
        if let Err(e) = sql(url, step) {
            eprintln!("  (no {step} between ways: {e})");
        }
    }
    let local = url.parse::<postgres::Config>().is_ok_and(|c| {
        c.get_hosts().iter().all(|h| match h {
            postgres::config::Host::Tcp(name) => ["127.0.0.1", "localhost", "::1"].contains(&name.as_str()),
            postgres::config::Host::Unix(_) => true,
        })
    });
    if local {
        unsafe { libc::sync() };
    }
}

/// The server's postmaster, when the server runs on this machine: the
/// parent of the backend that answers us.
fn local_postmaster(url: &str) -> Option<i32> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).ok()?;
    let backend: i32 = client.query_one("select pg_backend_pid()", &[]).ok()?.get(0);
    let ppid = proc_stat(backend)?.split(' ').nth(1)?.parse().ok()?;
    // A backend of a server elsewhere could share a pid with a process here: ours must be a postgres.
    let comm = std::fs::read_to_string(format!("/proc/{backend}/comm")).ok()?;
    comm.starts_with("postgres").then_some(ppid)
}

/// CPU seconds the server has used so far: the postmaster's own and its
/// reaped children's, and its live children's.
fn server_cpu_secs(postmaster: i32) -> Option<f64> {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let field = |f: &[&str], i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let own = proc_stat(postmaster)?;
    let own: Vec<&str> = own.split(' ').collect();
    let mut ticks_used = (11..=14).map(|i| field(&own, i)).sum::<f64>();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Some(stat) = proc_stat(pid) else { continue };
        let f: Vec<&str> = stat.split(' ').collect();
        if f.get(1).is_some_and(|p| p.parse() == Ok(postmaster)) {
            ticks_used += field(&f, 11) + field(&f, 12);
        }
    }
    Some(ticks_used / ticks)
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}
