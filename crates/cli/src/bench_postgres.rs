//! `sluice bench --destination postgres --postgres-url URL`: loading
//! PostgreSQL, against the server's own limit.
//!
//! The same rows (source-faker's users, padded to the record size), read
//! once into a file, loaded into tables of the same columns and types, in
//! one run:
//! 1. `COPY ... FROM STDIN` by psql of those rows as CSV from a file: the
//!    physical limit, as the server takes rows;
//! 2. destination-postgres alone, fed the records file on stdin;
//! 3. the whole sync, legacy mode (source-faker, the orchestrator and
//!    destination-postgres) and socket mode (the bookkeeper, a connection
//!    per socket);
//! 4. dlt (`dlt[postgres]`), loading the same records, when a Python with
//!    it is at hand (`--install-dlt` puts it in the cache).
//!
//! Each is timed, with its CPU seconds (its own process and children, not
//! the server's) and its peak RSS; rows are counted in the table after.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sluice_connectors::Cache;

pub const DLT_PACKAGE: &str = "dlt[postgres]";
pub const DLT_VERSION: &str = "1.31.0";

const DLT_SCRIPT: &str = r#"
import json, sys, time, dlt
records, url, schema = sys.argv[1], sys.argv[2], sys.argv[3]
def users():
    with open(records) as f:
        for line in f:
            m = json.loads(line)
            if m.get("type") == "RECORD":
                yield m["record"]["data"]
pipeline = dlt.pipeline(pipeline_name="sluice_bench_" + schema, destination=dlt.destinations.postgres(credentials=url), dataset_name=schema)
started = time.perf_counter()
pipeline.run(dlt.resource(users, name="users", write_disposition="append"))
print(json.dumps({"elapsed_secs": time.perf_counter() - started}))
"#;

pub struct Run {
    pub secs: f64,
    pub cpu_secs: f64,
    pub peak_rss_bytes: u64,
    /// Each process the command ran (it and its descendants), as last seen.
    pub processes: Vec<Process>,
}

/// One process of a run, from `/proc` every 50 ms while it lived: its CPU
/// (up to 50 ms short) and its peak RSS (the kernel's high-water mark).
#[derive(Debug, Clone)]
pub struct Process {
    pub name: String,
    pub cpu_secs: f64,
    pub peak_rss_bytes: u64,
}

/// What `pid` is, for a reader: our subcommand and connector, or the program.
fn process_name(pid: i32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    // Debian's psql is a Perl wrapper: the script is what runs.
    let args = if args.first().is_some_and(|a| a.ends_with("/perl") || a == "perl") { &args[1..] } else { &args[..] };
    let program = Path::new(args.first()?).file_name()?.to_string_lossy().into_owned();
    Some(match args.iter().position(|a| a == "connector") {
        Some(at) if program == "sluice" => args.get(at + 1).cloned().unwrap_or(program),
        _ if program == "sluice" => format!("sluice {}", args.get(1).map_or("", String::as_str)),
        _ => program,
    })
}

/// What `/proc/<pid>/stat` says after the command name in parentheses,
/// space-separated: state, ppid, ... utime (the 12th), stime, cutime, cstime.
pub fn proc_stat(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat[stat.rfind(')')? + 2..].to_owned())
}

/// The pid's descendants and itself, with what /proc says of each now.
fn sample(root: i32, seen: &mut std::collections::BTreeMap<i32, Process>) {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut parents = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Some(rest) = proc_stat(pid) else { continue };
        let fields: Vec<&str> = rest.split(' ').collect();
        let (Some(ppid), Some(utime), Some(stime)) = (fields.get(1), fields.get(11), fields.get(12)) else { continue };
        let cpu = (utime.parse::<f64>().unwrap_or(0.0) + stime.parse::<f64>().unwrap_or(0.0)) / ticks;
        parents.insert(pid, (ppid.parse::<i32>().unwrap_or(0), cpu));
    }
    let mut family = vec![root];
    let mut at = 0;
    while at < family.len() {
        let parent = family[at];
        family.extend(parents.iter().filter(|(_, (ppid, _))| *ppid == parent).map(|(pid, _)| *pid));
        at += 1;
    }
    for pid in family {
        let Some(&(_, cpu)) = parents.get(&pid) else { continue };
        let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()));
        let Some(hwm) = hwm else { continue };
        match seen.get_mut(&pid) {
            Some(p) => (p.cpu_secs, p.peak_rss_bytes) = (p.cpu_secs.max(cpu), p.peak_rss_bytes.max(hwm * 1024)),
            None => {
                let Some(name) = process_name(pid) else { continue };
                seen.insert(pid, Process { name, cpu_secs: cpu, peak_rss_bytes: hwm * 1024 });
            }
        }
    }
}

/// Runs a command to its end, with what the kernel counted of it.
pub fn measured(command: &mut Command) -> anyhow::Result<(Run, std::process::Output)> {
    let started = Instant::now();
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id() as i32;
    // wait4 for the rusage of this child; its output is drained by threads meanwhile.
    let (mut out, mut err) = (child.stdout.take().context("stdout")?, child.stderr.take().context("stderr")?);
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut buf).map(|_| buf)
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut buf).map(|_| buf)
    });
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeMap::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                sample(pid, &mut seen);
                std::thread::sleep(Duration::from_millis(50));
            }
            seen.into_values().collect::<Vec<_>>()
        })
    };
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // WNOWAIT first: the child is still there to be sampled once more.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
    // The time is the command's, not the sampler's last round.
    let secs = started.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let processes = sampler.join().expect("sampler");
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let output = std::process::Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: reader.join().expect("reader")?,
        stderr: err_reader.join().expect("reader")?,
    };
    Ok((Run { secs, cpu_secs: tv(usage.ru_utime) + tv(usage.ru_stime), peak_rss_bytes: usage.ru_maxrss as u64 * 1024, processes }, output))
}

/// The destination's config for a server URL and a schema.
pub fn destination_config(url: &str, schema: &str) -> anyhow::Result<Value> {
    let parsed: postgres::Config = url.parse().with_context(|| "--postgres-url is not a PostgreSQL URL (postgres://user:password@host:port/database)")?;
    let host = match parsed.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        _ => bail!("--postgres-url must name a TCP host"),
    };
    Ok(json!({
        "host": host,
        "port": parsed.get_ports().first().copied().unwrap_or(5432),
        "database": parsed.get_dbname().unwrap_or("postgres"),
        "schema": schema,
        "username": parsed.get_user().unwrap_or("postgres"),
        "password": parsed.get_password().map(|p| String::from_utf8_lossy(p).into_owned()),
        "ssl_mode": {"mode": "disable"}
    }))
}

pub fn sql(url: &str, text: &str) -> anyhow::Result<Vec<postgres::Row>> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).with_context(|| "cannot reach the server --postgres-url names")?;
    let mut rows = Vec::new();
    for statement in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        rows = client.query(statement, &[])?;
    }
    Ok(rows)
}

pub fn count(url: &str, table: &str) -> anyhow::Result<u64> {
    Ok(sql(url, &format!("select count(*) from {table}"))?[0].get::<_, i64>(0) as u64)
}

/// A source as a whole sync runs it: its name, config file and configured catalog.
pub struct Source<'a> {
    pub name: &'a str,
    pub config: &'a Path,
    pub catalog: &'a Path,
}

/// One `sluice sync` from `source` into destination-postgres's `schema`,
/// checked to have loaded `rows` rows into its `table`.
#[allow(clippy::too_many_arguments)]
pub fn whole_sync(sluice: &Path, dir: &Path, url: &str, source: &Source, schema: &str, table: &str, rows: u64, channel: &[&str]) -> anyhow::Result<Run> {
    let destination = dir.join(format!("{schema}.json"));
    std::fs::write(&destination, destination_config(url, schema)?.to_string())?;
    let (run, output) = measured(
        Command::new(sluice)
            .arg("sync")
            .args(channel)
            .args(["--source", source.name, "--source-config"])
            .arg(source.config)
            .args(["--destination", "destination-postgres", "--destination-config"])
            .arg(&destination)
            .arg("--catalog")
            .arg(source.catalog)
            .arg("--state-file")
            .arg(dir.join(format!("{schema}-state.json")))
            .arg("--log-file")
            .arg(dir.join(format!("{schema}.log"))),
    )?;
    if !output.status.success() || count(url, &format!("{schema}.{table}"))? != rows {
        bail!("the sync into {schema} failed ({}): {}", output.status, sluice_connectors::last_lines(&output.stderr, 10));
    }
    Ok(run)
}

pub struct Args<'a> {
    pub records: u64,
    pub record_size: usize,
    pub url: &'a str,
    pub psql: PathBuf,
    pub dlt_python: Option<PathBuf>,
}

/// The venv of `package` (at its pinned version) in the cache, installed
/// first when asked; None when it is not there.
pub fn cached_venv(cache: &Cache, package: &str, version: &str, install: bool) -> anyhow::Result<Option<PathBuf>> {
    if install {
        let venv = cache.python_env(package, Some(version), &mut |line| eprintln!("  {line}")).map_err(|e| anyhow::anyhow!("installing {package}: {e}"))?;
        return Ok(Some(venv));
    }
    let venv = cache.root.join("venvs").join(format!("{package}-{version}"));
    Ok(venv.join(".sluice-installed").exists().then_some(venv))
}

pub fn dlt_python(cache: &Cache, install: bool) -> anyhow::Result<Option<PathBuf>> {
    Ok(cached_venv(cache, DLT_PACKAGE, DLT_VERSION, install)?.map(|venv| venv.join("bin/python")))
}

/// source-faker's output for `source`, into `records`.
pub fn read_source(sluice: &Path, source: &Path, catalog: &Path, records: &Path) -> anyhow::Result<()> {
    let read = Command::new(sluice)
        .args(["connector", "source-faker", "read", "--config"])
        .arg(source)
        .arg("--catalog")
        .arg(catalog)
        .stdout(std::fs::File::create(records)?)
        .status()?;
    if !read.success() {
        bail!("source-faker read failed ({read})");
    }
    Ok(())
}

/// A destination alone (`sluice connector <name> write`), fed `records` on
/// stdin, measured; an error if it failed.
pub fn destination_write(sluice: &Path, name: &str, config_file: &Path, catalog: &Path, records: &Path) -> anyhow::Result<Run> {
    let (run, output) = measured(
        Command::new(sluice)
            .args(["connector", name, "write", "--config"])
            .arg(config_file)
            .arg("--catalog")
            .arg(catalog)
            .stdin(std::fs::File::open(records)?),
    )?;
    if !output.status.success() {
        bail!("{name} failed ({}): {}", output.status, sluice_connectors::last_lines(&output.stdout, 5));
    }
    Ok(run)
}

/// destination-postgres alone, fed `records` on stdin, into `schema`.
fn destination_alone(args: &Args, sluice: &Path, dir: &Path, catalog: &Path, records: &Path, schema: &str, rows: u64) -> anyhow::Result<Run> {
    let config_file = dir.join(format!("{schema}.json"));
    std::fs::write(&config_file, destination_config(args.url, schema)?.to_string())?;
    let run = destination_write(sluice, "destination-postgres", &config_file, catalog, records)?;
    let moved = count(args.url, &format!("{schema}.users"))?;
    if moved != rows {
        bail!("destination-postgres loaded {moved} of {rows} rows into {schema}");
    }
    Ok(run)
}

pub fn run(args: &Args, sluice: &Path, dir: &Path, source_config: &Value, catalog: &Value) -> anyhow::Result<()> {
    eprintln!("sluice bench --destination postgres: {} rows of about {} bytes into {}", args.records, args.record_size, args.url.split('@').next_back().unwrap_or("the server"));
    // The rows, once: the source's output, and the same rows as CSV for psql.
    let (source_file, catalog_file) = (dir.join("pg-source.json"), dir.join("pg-catalog.json"));
    std::fs::write(&source_file, source_config.to_string())?;
    std::fs::write(&catalog_file, catalog.to_string())?;
    let records_file = dir.join("records.jsonl");
    read_source(sluice, &source_file, &catalog_file, &records_file)?;
    let schemas = ["sluice_bench_copy", "sluice_bench_stdin", "sluice_bench_quarter", "sluice_bench_sync", "sluice_bench_socket", "sluice_bench_dlt"];
    sql(args.url, &schemas.iter().map(|s| format!("drop schema if exists {s} cascade")).collect::<Vec<_>>().join(";"))?;

    // 2 first: its table is the one the COPY baseline copies the shape of.
    let alone = destination_alone(args, sluice, dir, &catalog_file, &records_file, "sluice_bench_stdin", args.records)?;
    let bytes = std::fs::metadata(&records_file)?.len();
    // The same with a quarter of the rows: memory must not grow with volume.
    let quarter_rows = (args.records / 4).max(1);
    let (quarter_source, quarter_file) = (dir.join("pg-source-quarter.json"), dir.join("records-quarter.jsonl"));
    let mut quarter_config = source_config.clone();
    quarter_config["count"] = quarter_rows.into();
    std::fs::write(&quarter_source, quarter_config.to_string())?;
    read_source(sluice, &quarter_source, &catalog_file, &quarter_file)?;
    let quarter = destination_alone(args, sluice, dir, &catalog_file, &quarter_file, "sluice_bench_quarter", quarter_rows)?;

    // 1: the same rows as CSV, by the server's own COPY.
    let csv = dir.join("rows.csv");
    sql(args.url, "create schema sluice_bench_copy; create table sluice_bench_copy.users (like sluice_bench_stdin.users)")?;
    let export = format!("\\copy (select * from sluice_bench_stdin.users) to '{}' (format csv)", csv.display());
    let exported = Command::new(&args.psql).arg(args.url).args(["-q", "-c", &export]).status()?;
    if !exported.success() {
        bail!("psql could not write the rows as CSV ({exported})");
    }
    let import = format!("\\copy sluice_bench_copy.users from '{}' (format csv)", csv.display());
    let (copy, output) = measured(Command::new(&args.psql).arg(args.url).args(["-q", "-c", &import]))?;
    if !output.status.success() {
        bail!("psql's COPY failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let csv_bytes = std::fs::metadata(&csv)?.len();

    // 3: the whole sync, in legacy mode (the orchestrator) and socket mode
    // (the bookkeeper, a connection per socket), each into its own schema.
    let whole_sync = |schema: &str, channel: &[&str]| {
        let source = Source { name: "source-faker", config: &source_file, catalog: &catalog_file };
        whole_sync(sluice, dir, args.url, &source, schema, "users", args.records, channel)
    };
    let sync = whole_sync("sluice_bench_sync", &["--data-channel", "stdio"])?;
    let socket = whole_sync("sluice_bench_socket", &["--data-channel", "socket", "--data-format", "protobuf"])?;

    // 4: dlt on the same records.
    let dlt = match &args.dlt_python {
        Some(python) => {
            let (run, output) = measured(Command::new(python).args(["-c", DLT_SCRIPT]).arg(&records_file).arg(args.url).arg("sluice_bench_dlt"))?;
            if !output.status.success() {
                bail!("dlt failed ({}): {}", output.status, sluice_connectors::last_lines(&output.stderr, 15));
            }
            let loaded = count(args.url, "sluice_bench_dlt.users")?;
            if loaded != args.records {
                bail!("dlt loaded {loaded} of {} rows", args.records);
            }
            Some(run)
        }
        None => None,
    };

    let mb = |b: u64, secs: f64| b as f64 / 1e6 / secs;
    println!("{} rows; {:.1} MB of records, {:.1} MB as CSV", args.records, bytes as f64 / 1e6, csv_bytes as f64 / 1e6);
    println!("{:<40} {:>11} {:>9} {:>8} {:>10} {:>12}", "way", "rows/s", "MB/s", "CPU s", "peak RSS", "vs COPY");
    let rate = |r: &Run| args.records as f64 / r.secs;
    let row = |way: &str, r: &Run| {
        let versus = if std::ptr::eq(r, &copy) { "(baseline)".to_owned() } else { format!("{:.2}x", rate(r) / rate(&copy)) };
        println!("{way:<40} {:>11.0} {:>9.1} {:>8.2} {:>7.1} MB {versus:>12}", rate(r), mb(bytes, r.secs), r.cpu_secs, r.peak_rss_bytes as f64 / 1e6);
    };
    row("COPY FROM STDIN by psql (CSV file)", &copy);
    row("destination-postgres (stdin, alone)", &alone);
    row("sync, legacy mode (source+orch.+dest.)", &sync);
    row("sync, socket mode PROTOBUF (bookkeeper)", &socket);
    match &dlt {
        Some(d) => {
            row("dlt[postgres]", d);
            println!("destination-postgres / dlt: {:.1}x", rate(&alone) / rate(d));
        }
        None => println!("dlt: not measured (use --install-dlt)"),
    }
    println!(
        "destination-postgres alone, peak RSS: {:.1} MB for {quarter_rows} rows, {:.1} MB for {} rows ({:+.1} MB for 4x the volume)",
        quarter.peak_rss_bytes as f64 / 1e6,
        alone.peak_rss_bytes as f64 / 1e6,
        args.records,
        (alone.peak_rss_bytes as f64 - quarter.peak_rss_bytes as f64) / 1e6
    );
    println!("(MB/s counts the records' JSON; CPU s and RSS are the client side's: psql, our processes, dlt's Python; the sync's RSS is its largest process)");
    sql(args.url, &schemas.iter().map(|s| format!("drop schema if exists {s} cascade")).collect::<Vec<_>>().join(";"))?;
    Ok(())
}
