//! `sluice bench`: how close the orchestrator comes to the physical limit.
//!
//! The same generator (`source-faker`, users padded to the record size) feeds
//! the same `destination-dev-null` in one run:
//! 1. a raw pipe, `source | destination`: nothing in between, legacy mode's
//!    baseline;
//! 2. our orchestrator (legacy mode), as its own process (so its peak RSS is
//!    its own);
//! 3. per framing, a raw Unix-socket copy (the source in socket mode on one
//!    socket, its bytes read and dropped) and the two connectors on one
//!    socket with nothing else (no platform container): socket mode's
//!    baselines;
//! 4. socket mode with the bookkeeper, over 1, 2, 4 and 8 sockets, in both
//!    framings;
//! 5. PyAirbyte's `destination.write(source)`, when a Python with the
//!    `airbyte` package is at hand.
//!
//! Each way runs `--runs` times; the median is reported, with ratios.
//! `--containers` measures containers against processes instead
//! (`bench_containers.rs`); `--destination postgres` loading PostgreSQL
//! (`bench_postgres.rs`); `--destination s3` writing objects (`bench_s3.rs`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sluice_connectors::Cache;
use sluice_orchestrator::{ConnectorConfig, Launch, Limits, SyncConfig};
use sluice_protocol::socket::{DataChannel, Format};
use sluice_protocol::{ConfiguredAirbyteCatalog, ConfiguredAirbyteStream, DestinationSyncMode, SyncMode};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Records per run
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Size of each record's JSON line, in bytes
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Runs of each way; the median counts
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Records per PyAirbyte run (it is slow) [default: min(records, 50000)]
    #[arg(long)]
    pyairbyte_records: Option<u64>,
    /// A Python that can `import airbyte` [default: $SLUICE_PYAIRBYTE_PYTHON, or the cache's venv]
    #[arg(long, value_name = "PYTHON")]
    pyairbyte_python: Option<PathBuf>,
    /// Install PyAirbyte into the cache first (about 10 s with uv, 600 MB)
    #[arg(long)]
    install_pyairbyte: bool,
    /// Instead: the same transfer as local processes and as containers on
    /// the Docker engine (DOCKER_HOST), legacy and socket mode, and the time
    /// from POST /jobs to the source container running
    #[arg(long)]
    containers: bool,
    /// Instead: loading this destination (`postgres`) against the server's
    /// own COPY, and dlt when installed; or writing objects (`s3`) against
    /// pyarrow and dlt's filesystem destination
    #[arg(long, value_name = "NAME")]
    destination: Option<String>,
    /// Instead: moving a table from this source (`postgres`) into
    /// destination-postgres, against psql's binary COPY pipe, dlt and Sling
    #[arg(long, value_name = "NAME", conflicts_with = "destination")]
    source: Option<String>,
    /// Install Sling (PyPI sling-linux-amd64) into the cache first, for --source postgres
    #[arg(long)]
    install_sling: bool,
    /// The PostgreSQL server for `--destination postgres` and `--source postgres` (postgres://user:password@host:port/db); it needs CREATE there
    #[arg(long, value_name = "URL", env = "SLUICE_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// psql, for the COPY baseline [default: psql on PATH]
    #[arg(long, value_name = "PATH", default_value = "psql")]
    psql: PathBuf,
    /// The S3 for `--destination s3` (http://host:port) [default: moto on 127.0.0.1, from the cache]
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// Install dlt into the cache first, to measure it on the same rows (dlt[postgres], or for s3 dlt[filesystem,parquet] with pyarrow)
    #[arg(long)]
    install_dlt: bool,
}

const PYAIRBYTE_SCRIPT: &str = r#"
import json, os, sys, time
os.environ.setdefault("AIRBYTE_OFFLINE_MODE", "1")
import airbyte as ab
source_exe, destination_exe, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
source = ab.get_source("source-faker", config=config, local_executable=source_exe, streams=["users"])
destination = ab.get_destination("destination-dev-null", config={}, local_executable=destination_exe)
started = time.perf_counter()
destination.write(source, cache=False, state_cache=False)
print(json.dumps({"elapsed_secs": time.perf_counter() - started}))
"#;

struct Measured {
    secs: f64,
    peak_rss_bytes: Option<u64>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<i32> {
    if args.runs == 0 || args.records == 0 {
        bail!("--runs and --records must be at least 1");
    }
    let cache = Cache::from_env();
    let sluice = std::env::current_exe()?;
    // Settled before the long runs, so a wrong path fails at once.
    let python = pyairbyte_python(&args, &cache)?;
    if let Some(python) = &python {
        if !python.exists() {
            bail!("PyAirbyte's Python {} does not exist\n\nConsider --install-pyairbyte, or leave --pyairbyte-python out", python.display());
        }
    }
    let dir = cache.root.join("bench").join(format!("{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let source = wrapper(&dir, &sluice, "source-faker")?;
    let destination = wrapper(&dir, &sluice, "destination-dev-null")?;
    let source_config = json!({"count": args.records, "record_size_bytes": args.record_size, "records_per_slice": 1000});
    let catalog = users_catalog()?;
    if let Some(name) = &args.source {
        if name != "postgres" {
            bail!("--source {name}: only `postgres` can be measured this way");
        }
        let url = args.postgres_url.as_deref().context("--source postgres needs --postgres-url (or SLUICE_POSTGRES_URL)")?;
        let pg = crate::bench_pg_to_pg::Args {
            records: args.records,
            record_size: args.record_size,
            url,
            psql: args.psql.clone(),
            dlt_python: crate::bench_pg_to_pg::dlt_python(&cache, args.install_dlt)?,
            sling: crate::bench_pg_to_pg::sling(&cache, args.install_sling)?,
            runs: args.runs,
        };
        let result = crate::bench_pg_to_pg::run(&pg, &sluice, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        return result.map(|_| 0);
    }
    if args.destination.as_deref() == Some("s3") {
        let s3 = crate::bench_s3::Args {
            records: args.records,
            record_size: args.record_size,
            endpoint: args.s3_endpoint.as_deref(),
            dlt_python: crate::bench_s3::dlt_python(&cache, args.install_dlt)?,
        };
        let result = crate::bench_s3::run(&s3, &sluice, &dir, &cache, &source_config, &serde_json::to_value(&catalog)?);
        let _ = std::fs::remove_dir_all(&dir);
        return result.map(|_| 0);
    }
    if let Some(name) = &args.destination {
        if name != "postgres" {
            bail!("--destination {name}: only `postgres` and `s3` can be measured this way");
        }
        let url = args.postgres_url.as_deref().context("--destination postgres needs --postgres-url (or SLUICE_POSTGRES_URL)")?;
        let dlt_python = crate::bench_postgres::dlt_python(&cache, args.install_dlt)?;
        let pg = crate::bench_postgres::Args { records: args.records, record_size: args.record_size, url, psql: args.psql.clone(), dlt_python };
        let result = crate::bench_postgres::run(&pg, &sluice, &dir, &source_config, &serde_json::to_value(&catalog)?);
        let _ = std::fs::remove_dir_all(&dir);
        return result.map(|_| 0);
    }
    if args.containers {
        let result = crate::bench_containers::run(args.records, args.record_size, args.runs, &serde_json::to_value(&catalog)?, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        return result.map(|_| 0);
    }

    let raw_files = RawFiles::write(&dir, &source_config, &catalog)?;
    let sync_file = dir.join("sync.json");
    let sync = SyncConfig {
        source: ConnectorConfig { name: "source-faker".into(), launch: spawn(&source), config: source_config.clone() },
        destination: ConnectorConfig { name: "destination-dev-null".into(), launch: spawn(&destination), config: json!({}) },
        catalog: catalog.clone(),
        state: Vec::new(),
        selected_fields: Vec::new(),
        work_dir: dir.join("work"),
        limits: Limits::default(),
        data_channel: None,
    };
    std::fs::write(&sync_file, serde_json::to_vec(&sync)?)?;

    eprintln!("sluice bench: {} records of {} bytes, {} runs each, {} cores", args.records, args.record_size, args.runs, cores());
    let (mut pipe, mut orchestrated) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for run in 1..=args.runs {
        pipe.push(raw_pipe(&source, &destination, &raw_files)?);
        let (measured, outcome) = orchestrator(&sluice, &sync_file, &dir)?;
        check_moved(&outcome, args.records, "orchestrator", run)?;
        bytes = outcome["streams"][0]["emitted"]["bytes"].as_u64().unwrap_or(0);
        orchestrated.push(measured);
        eprintln!("  run {run}: raw pipe {:.2} s, orchestrator {:.2} s", pipe.last().unwrap().secs, orchestrated.last().unwrap().secs);
    }

    // Socket mode: per framing, the raw socket copy, then the bookkeeper over 1..8 sockets.
    let mut socket_rows = Vec::new();
    for format in [Format::Protobuf, Format::Jsonl] {
        let raw: Vec<Measured> = (0..args.runs).map(|_| raw_socket(&source, &raw_files, format, &dir)).collect::<anyhow::Result<_>>()?;
        let direct: Vec<Measured> =
            (0..args.runs).map(|_| direct_sockets(&source, &destination, &raw_files, format, &dir)).collect::<anyhow::Result<_>>()?;
        let mut counts = Vec::new();
        for sockets in SOCKET_COUNTS {
            let file = dir.join(format!("sync-{format}-{sockets}.json"));
            let channel = DataChannel::in_dir(&socket_dir(&dir), sockets, format);
            std::fs::write(&file, serde_json::to_vec(&SyncConfig { data_channel: Some(channel), ..sync.clone() })?)?;
            let mut runs = Vec::new();
            for run in 1..=args.runs {
                let (measured, outcome) = orchestrator(&sluice, &file, &dir)?;
                check_moved(&outcome, args.records, &format!("socket mode {format} x{sockets}"), run)?;
                runs.push(measured);
            }
            eprintln!("  {format} over {sockets} sockets: {:.2} s (raw socket copy {:.2} s)", median(&runs), median(&raw));
            counts.push((sockets, runs));
        }
        socket_rows.push((format, raw, direct, counts));
    }

    let mut pyairbyte = None;
    if let Some(python) = &python {
        let records = args.pyairbyte_records.unwrap_or(args.records.min(50_000));
        let config = json!({"count": records, "record_size_bytes": args.record_size, "records_per_slice": 1000});
        eprintln!("  PyAirbyte ({}) with {records} records ...", python.display());
        let secs = run_pyairbyte(python, &source, &destination, &config)?;
        pyairbyte = Some((records, secs));
    }

    let pipe = median(&pipe);
    let orchestrated_rss = orchestrated.iter().filter_map(|m| m.peak_rss_bytes).max();
    let orchestrated = median(&orchestrated);
    let per_record = bytes as f64 / args.records as f64;
    let rate = |records: u64, secs: f64| records as f64 / secs;
    let pipe_rate = rate(args.records, pipe);
    let orchestrator_rate = rate(args.records, orchestrated);
    println!("{} cores; records of {} bytes; median of {} runs", cores(), args.record_size, args.runs);
    // MB/s counts the records' JSON size, whatever the framing carried.
    println!("{:<34} {:>10} {:>12} {:>9} {:>10} {:>16}", "way", "records", "records/s", "MB/s", "peak RSS", "vs baseline");
    let row = |way: &str, records: u64, r: f64, rss: Option<u64>, baseline: Option<(&str, f64)>| {
        let rss = rss.map(|b| format!("{:.1} MB", b as f64 / 1e6)).unwrap_or_else(|| "-".into());
        let versus = baseline.map(|(name, b)| format!("{:.2}x {name}", r / b)).unwrap_or_else(|| "(baseline)".into());
        println!("{way:<34} {records:>10} {r:>12.0} {:>9.1} {rss:>10} {versus:>16}", r * per_record / 1e6);
    };
    row("raw pipe", args.records, pipe_rate, None, None);
    row("legacy (orchestrator)", args.records, orchestrator_rate, orchestrated_rss, Some(("pipe", pipe_rate)));
    let mut best_protobuf = 0f64;
    for (format, raw, direct, counts) in &socket_rows {
        let raw_rate = rate(args.records, median(raw));
        row(&format!("raw socket copy {format}"), args.records, raw_rate, None, None);
        let direct_rate = rate(args.records, median(direct));
        row(&format!("direct {format} x1 (no platform)"), args.records, direct_rate, None, Some(("raw", raw_rate)));
        for (sockets, runs) in counts {
            let r = rate(args.records, median(runs));
            let rss = runs.iter().filter_map(|m| m.peak_rss_bytes).max();
            row(&format!("socket {format} x{sockets} (bookkeeper)"), args.records, r, rss, Some(("direct", direct_rate)));
            if *sockets == 1 {
                println!("{:<34} one socket with the bookkeeper / raw socket copy: {:.2}x", "", r / raw_rate);
            }
            if *format == Format::Protobuf {
                best_protobuf = best_protobuf.max(r);
            }
        }
    }
    println!("socket mode PROTOBUF (best socket count) / legacy mode: {:.2}x", best_protobuf / orchestrator_rate);
    if let Some((records, secs)) = pyairbyte {
        row("pyairbyte", records, rate(records, secs), None, Some(("pipe", pipe_rate)));
        println!("orchestrator / pyairbyte: {:.1}x", orchestrator_rate / rate(records, secs));
    } else {
        println!("pyairbyte: not measured (no Python with `airbyte`; use --install-pyairbyte or --pyairbyte-python)");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(0)
}

const SOCKET_COUNTS: [usize; 4] = [1, 2, 4, 8];

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn check_moved(outcome: &Value, records: u64, way: &str, run: usize) -> anyhow::Result<()> {
    let committed: u64 = outcome["streams"][0]["committed"]["records"].as_u64().unwrap_or(0);
    if outcome["status"] != "succeeded" || committed != records {
        bail!("{way} run {run} did not move every record: {outcome}");
    }
    Ok(())
}

/// Short, so that every socket path fits a Unix socket address.
fn socket_dir(dir: &Path) -> PathBuf {
    std::env::temp_dir().join(format!("sluice-bench-{}", dir.file_name().and_then(|n| n.to_str()).unwrap_or("run")))
}

/// The source in socket mode on one socket, its bytes read and dropped:
/// generating and moving the bytes, nothing else.
fn raw_socket(source: &Path, files: &RawFiles, format: Format, dir: &Path) -> anyhow::Result<Measured> {
    let channel = DataChannel::in_dir(&socket_dir(dir), 1, format);
    std::fs::create_dir_all(socket_dir(dir))?;
    let _ = std::fs::remove_file(&channel.socket_paths[0]);
    let started = Instant::now();
    let mut src = Command::new(source).args(&files.source_args).envs(channel.env()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let mut stream = sluice_protocol::socket::connect(&channel.socket_paths[0], std::time::Duration::from_secs(60))?;
    // Read as a destination would, in large blocks.
    let mut block = vec![0u8; 256 * 1024];
    while std::io::Read::read(&mut stream, &mut block)? > 0 {}
    let status = src.wait()?;
    if !status.success() {
        bail!("raw socket copy failed: source {status}");
    }
    Ok(Measured { secs: started.elapsed().as_secs_f64(), peak_rss_bytes: None })
}

/// Source and destination on one socket with nothing else: no platform
/// container reads their stdout. What the bookkeeper costs is the gap to this.
fn direct_sockets(source: &Path, destination: &Path, files: &RawFiles, format: Format, dir: &Path) -> anyhow::Result<Measured> {
    let channel = DataChannel::in_dir(&socket_dir(dir), 1, format);
    std::fs::create_dir_all(socket_dir(dir))?;
    let started = Instant::now();
    let mut src = Command::new(source).args(&files.source_args).envs(channel.env()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let mut dst = Command::new(destination).args(&files.destination_args).envs(channel.env()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let (a, b) = (src.wait()?, dst.wait()?);
    if !a.success() || !b.success() {
        bail!("direct socket run failed: source {a}, destination {b}");
    }
    Ok(Measured { secs: started.elapsed().as_secs_f64(), peak_rss_bytes: None })
}

/// A one-line executable for a reference connector, so that every way runs the same program.
fn wrapper(dir: &Path, sluice: &Path, connector: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(connector);
    std::fs::write(&path, format!("#!/bin/sh\nexec '{}' connector {connector} \"$@\"\n", sluice.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

fn spawn(exe: &Path) -> Launch {
    Launch::Spawn { command: vec![exe.display().to_string()], env: Default::default() }
}

fn users_catalog() -> anyhow::Result<ConfiguredAirbyteCatalog> {
    let users = sluice_source_faker::catalog().streams.into_iter().find(|s| s.name == "users").context("faker has users")?;
    let mut stream = ConfiguredAirbyteStream::with_defaults(users);
    stream.sync_mode = SyncMode::FullRefresh;
    stream.destination_sync_mode = DestinationSyncMode::Append;
    Ok(ConfiguredAirbyteCatalog { streams: vec![stream], extra: Default::default() })
}

struct RawFiles {
    source_args: Vec<String>,
    destination_args: Vec<String>,
}

impl RawFiles {
    fn write(dir: &Path, source_config: &Value, catalog: &ConfiguredAirbyteCatalog) -> anyhow::Result<Self> {
        let catalog = serde_json::to_value(catalog)?;
        let put = |name: &str, value: &Value| -> anyhow::Result<String> {
            let path = dir.join(name);
            std::fs::write(&path, serde_json::to_vec(value)?)?;
            Ok(path.display().to_string())
        };
        let (source_config, catalog, empty) = (put("source.json", source_config)?, put("catalog.json", &catalog)?, put("destination.json", &json!({}))?);
        Ok(RawFiles {
            source_args: vec!["read".into(), "--config".into(), source_config, "--catalog".into(), catalog.clone()],
            destination_args: vec!["write".into(), "--config".into(), empty, "--catalog".into(), catalog],
        })
    }
}

fn raw_pipe(source: &Path, destination: &Path, files: &RawFiles) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let mut src = Command::new(source).args(&files.source_args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let pipe = src.stdout.take().context("source stdout")?;
    let mut dst = Command::new(destination).args(&files.destination_args).stdin(pipe).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let (a, b) = (src.wait()?, dst.wait()?);
    if !a.success() || !b.success() {
        bail!("raw pipe failed: source {a}, destination {b}");
    }
    Ok(Measured { secs: started.elapsed().as_secs_f64(), peak_rss_bytes: None })
}

fn orchestrator(sluice: &Path, sync_file: &Path, dir: &Path) -> anyhow::Result<(Measured, Value)> {
    let outcome_file = dir.join("outcome.json");
    let started = Instant::now();
    let status = Command::new(sluice)
        .args(["orchestrate", "--config"])
        .arg(sync_file)
        .arg("--outcome-file")
        .arg(&outcome_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let secs = started.elapsed().as_secs_f64();
    let outcome: Value = serde_json::from_slice(&std::fs::read(&outcome_file).with_context(|| format!("orchestrator ({status}) wrote no outcome"))?)?;
    let peak_rss_bytes = outcome["peak_rss_bytes"].as_u64();
    Ok((Measured { secs, peak_rss_bytes }, outcome))
}

fn pyairbyte_python(args: &BenchArgs, cache: &Cache) -> anyhow::Result<Option<PathBuf>> {
    if let Some(python) = args.pyairbyte_python.clone().or_else(|| std::env::var_os("SLUICE_PYAIRBYTE_PYTHON").map(PathBuf::from)) {
        return Ok(Some(python));
    }
    let venv = if args.install_pyairbyte {
        cache.python_env("airbyte", None, &mut |text| eprintln!("sluice: {text}"))?
    } else {
        cache.root.join("venvs/airbyte")
    };
    let python = venv.join("bin/python");
    Ok(venv.join(".sluice-installed").exists().then_some(python))
}

fn run_pyairbyte(python: &Path, source: &Path, destination: &Path, config: &Value) -> anyhow::Result<f64> {
    let output = Command::new(python)
        .args(["-c", PYAIRBYTE_SCRIPT])
        .arg(source)
        .arg(destination)
        .arg(config.to_string())
        .env("AIRBYTE_OFFLINE_MODE", "1")
        .stdin(Stdio::null())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last: Option<Value> = stdout.lines().rev().find_map(|l| serde_json::from_str(l).ok());
    match last.and_then(|v| v["elapsed_secs"].as_f64()) {
        Some(secs) if output.status.success() => Ok(secs),
        _ => bail!("PyAirbyte run failed ({}):\n{}", output.status, sluice_connectors::last_lines(&output.stderr, 15)),
    }
}

fn median(runs: &[Measured]) -> f64 {
    let mut secs: Vec<f64> = runs.iter().map(|m| m.secs).collect();
    secs.sort_by(f64::total_cmp);
    secs[secs.len() / 2]
}
