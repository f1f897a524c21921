//! `sluice bench`: how close the orchestrator comes to the physical limit.
//!
//! The same generator (`source-faker`, users padded to the record size) feeds
//! the same `destination-dev-null` three ways in one run:
//! 1. a raw pipe, `source | destination`: nothing in between, the baseline;
//! 2. our orchestrator, as its own process (so its peak RSS is its own);
//! 3. PyAirbyte's `destination.write(source)`, when a Python with the
//!    `airbyte` package is at hand.
//!
//! Each way runs `--runs` times; the median is reported, with ratios.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sluice_connectors::Cache;
use sluice_orchestrator::{ConnectorConfig, Launch, Limits, SyncConfig};
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

    eprintln!("sluice bench: {} records of {} bytes, {} runs each", args.records, args.record_size, args.runs);
    let (mut pipe, mut orchestrated) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for run in 1..=args.runs {
        pipe.push(raw_pipe(&source, &destination, &raw_files)?);
        let (measured, outcome) = orchestrator(&sluice, &sync_file, &dir)?;
        let committed: u64 = outcome["streams"][0]["committed"]["records"].as_u64().unwrap_or(0);
        if outcome["status"] != "succeeded" || committed != args.records {
            bail!("orchestrator run {run} did not move every record: {}", outcome);
        }
        bytes = outcome["streams"][0]["emitted"]["bytes"].as_u64().unwrap_or(0);
        orchestrated.push(measured);
        eprintln!("  run {run}: raw pipe {:.2} s, orchestrator {:.2} s", pipe.last().unwrap().secs, orchestrated.last().unwrap().secs);
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
    println!("{:<16} {:>10} {:>14} {:>10} {:>12} {:>12}", "way", "records", "records/s", "MB/s", "peak RSS", "vs pipe");
    let row = |way: &str, records: u64, r: f64, rss: Option<u64>| {
        let rss = rss.map(|b| format!("{:.1} MB", b as f64 / 1e6)).unwrap_or_else(|| "-".into());
        println!("{way:<16} {records:>10} {r:>14.0} {:>10.1} {rss:>12} {:>11.2}x", r * per_record / 1e6, r / pipe_rate);
    };
    row("raw pipe", args.records, pipe_rate, None);
    row("orchestrator", args.records, orchestrator_rate, orchestrated_rss);
    if let Some((records, secs)) = pyairbyte {
        row("pyairbyte", records, rate(records, secs), None);
        println!("orchestrator / pyairbyte: {:.1}x", orchestrator_rate / rate(records, secs));
    } else {
        println!("pyairbyte: not measured (no Python with `airbyte`; use --install-pyairbyte or --pyairbyte-python)");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(0)
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
