//! `sluice sync`: one sync on this machine, PyAirbyte-style, with no server.
//!
//! Resolve both connectors (installing PyPI ones once), discover the
//! source's catalog and select streams, load the saved state, run the
//! orchestrator in this process, then save the state the destination
//! acknowledged so that the next run is incremental.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use sluice_connectors::{Cache, ConnectorRef};
use sluice_orchestrator::{AttemptStatus, ConnectorConfig, FieldSelection, FileReporter, Launch, Limits, Outcome, SyncConfig};
use sluice_protocol::socket::{DataChannel, Format};
use sluice_protocol::*;

use crate::progress::Terminal;

#[derive(clap::Args)]
pub struct SyncArgs {
    /// Source: an executable, a reference connector (source-faker), or pypi:PACKAGE[==VERSION]
    #[arg(long)]
    source: String,
    /// The source's configuration (JSON)
    #[arg(long, value_name = "FILE")]
    source_config: PathBuf,
    /// Destination: an executable, a reference connector (destination-jsonl), or pypi:PACKAGE
    #[arg(long)]
    destination: String,
    /// The destination's configuration (JSON)
    #[arg(long, value_name = "FILE")]
    destination_config: PathBuf,
    /// Only these streams, comma-separated (default: every stream)
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    streams: Vec<String>,
    /// Keep only these top-level fields of a stream; repeat per stream
    #[arg(long = "fields", value_name = "STREAM=F1,F2")]
    fields: Vec<String>,
    /// Use this configured catalog instead of discovering one
    #[arg(long, value_name = "FILE")]
    catalog: Option<PathBuf>,
    /// Where state is read from and saved to [default: in the cache directory, per source and destination]
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// Read every stream in full, ignoring saved state (the new state is still saved)
    #[arg(long)]
    full_refresh: bool,
    /// The attempt log [default: in the cache directory]
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Print the attempt's outcome as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Fail on a protocol line longer than this
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_line_bytes)]
    max_line_bytes: usize,
    /// Fail when the source sends no RECORD or STATE for this long
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().source_idle_timeout_secs)]
    source_idle_timeout_secs: u64,
    /// Fail when the destination neither reads nor answers for this long
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().destination_idle_timeout_secs)]
    destination_idle_timeout_secs: u64,
    /// Time a connector gets to stop after SIGTERM before SIGKILL
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().shutdown_grace_secs)]
    shutdown_grace_secs: u64,
    /// How records travel: `socket` (source to destination over Unix sockets,
    /// the bookkeeper keeping the books), `stdio` (through the orchestrator),
    /// or `auto` (socket when both connectors support it and no --fields)
    #[arg(long, value_name = "MODE", default_value = "auto")]
    data_channel: String,
    /// Socket mode's framing: protobuf or jsonl
    #[arg(long, value_name = "FORMAT", default_value = "protobuf")]
    data_format: String,
    /// Socket mode's number of sockets [default: 2 per core, as Airbyte's]
    #[arg(long, value_name = "N")]
    sockets: Option<usize>,
}

/// Socket mode's channel for this sync, or `None` for legacy mode.
fn data_channel(args: &SyncArgs, source: &ConnectorRef, destination: &ConnectorRef, run_id: &str) -> anyhow::Result<Option<DataChannel>> {
    let supports = ConnectorRef::speaks_socket;
    let socket = match args.data_channel.as_str() {
        "stdio" => false,
        "socket" if !args.fields.is_empty() => bail!("--data-channel socket: --fields needs legacy mode, where the platform sees each record"),
        "socket" => true,
        "auto" => supports(source) && supports(destination) && args.fields.is_empty(),
        other => bail!("--data-channel {other}: expected auto, socket or stdio"),
    };
    if !socket {
        return Ok(None);
    }
    let format = Format::parse(&args.data_format).with_context(|| format!("--data-format {}: expected protobuf or jsonl", args.data_format))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let sockets = args.sockets.unwrap_or_else(|| sluice_domain::channel::socket_count(cores, cores) as usize);
    if sockets == 0 {
        bail!("--sockets must be at least 1");
    }
    // Short, so that every socket path fits a Unix socket address.
    let dir = std::env::temp_dir().join(format!("sluice-{run_id}"));
    Ok(Some(DataChannel::in_dir(&dir, sockets, format)))
}

pub fn run(args: SyncArgs) -> anyhow::Result<i32> {
    // Check everything the user typed before doing anything slow.
    let source_ref: ConnectorRef = args.source.parse().context("--source")?;
    let destination_ref: ConnectorRef = args.destination.parse().context("--destination")?;
    let source_config = read_json_file(&args.source_config, "--source-config")?;
    let destination_config = read_json_file(&args.destination_config, "--destination-config")?;
    let field_args = parse_fields(&args.fields)?;

    let cache = Cache::from_env();
    let sluice = std::env::current_exe().context("cannot find the sluice executable")?;
    let mut say = |text: &str| sluice_protocol::say!("sluice: {text}");
    let source_command = source_ref.command(&sluice, &cache, &mut say)?;
    let destination_command = destination_ref.command(&sluice, &cache, &mut say)?;

    let mut catalog: ConfiguredAirbyteCatalog = match &args.catalog {
        Some(path) => serde_json::from_value(read_json_file(path, "--catalog")?).context("--catalog is not a configured catalog")?,
        None => {
            let discovered = discover(&source_ref.name(), &source_command, &args.source_config)?;
            select_streams(discovered, &args.streams)?
        }
    };
    let selected_fields = resolve_fields(field_args, &catalog)?;

    let state_file = args.state_file.clone().unwrap_or_else(|| default_state_file(&cache, &args));
    // One sync per state file at a time, and none while any process of an
    // earlier one (say, a killed sync's destination) is still running.
    let fence_path = state_file.with_extension("lock");
    let fence = sluice_orchestrator::fence::take(&fence_path, Duration::from_secs(args.shutdown_grace_secs.max(1) * 6), || {
        sluice_protocol::say!("sluice: another sync with the state file {} is still running; waiting for it to end", state_file.display())
    })
    .map_err(anyhow::Error::msg)?;
    fence.inherit_in_children().context("cannot pass the sync's lock to its connectors")?;
    let mut state = load_state(&state_file)?;
    if args.full_refresh {
        // Read the synced streams afresh and replace what the destination has;
        // the saved state of streams not synced now stays as it was.
        for stream in &mut catalog.streams {
            stream.sync_mode = SyncMode::FullRefresh;
            stream.destination_sync_mode = DestinationSyncMode::Overwrite;
        }
        let synced: Vec<StreamDescriptor> = catalog.streams.iter().map(|s| s.stream.descriptor()).collect();
        state.retain(|s| s.state_type() == StateType::Stream && s.stream.as_ref().is_some_and(|st| !synced.contains(&st.stream_descriptor)));
    }
    let run_id = format!("{}-{}", now_millis(), std::process::id());
    let channel = data_channel(&args, &source_ref, &destination_ref, &run_id)?;
    let work_dir = cache.root.join("runs").join(&run_id);
    let log_file = args.log_file.clone().unwrap_or_else(|| cache.root.join("logs").join(format!("{run_id}.log")));
    if let Some(dir) = log_file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if let Some(dir) = state_file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let config = SyncConfig {
        source: ConnectorConfig { name: source_ref.name(), launch: Launch::Spawn { command: source_command, env: Default::default() }, config: source_config },
        destination: ConnectorConfig {
            name: destination_ref.name(),
            launch: Launch::Spawn { command: destination_command, env: Default::default() },
            config: destination_config,
        },
        catalog,
        state,
        selected_fields,
        work_dir: work_dir.clone(),
        limits: Limits {
            max_line_bytes: args.max_line_bytes,
            source_idle_timeout_secs: args.source_idle_timeout_secs,
            destination_idle_timeout_secs: args.destination_idle_timeout_secs,
            shutdown_grace_secs: args.shutdown_grace_secs,
            ..Limits::default()
        },
        data_channel: channel,
    };

    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, cancel.clone()).context("cannot handle signals")?;
    }
    let log = std::fs::File::create(&log_file).with_context(|| format!("cannot create log file {}", log_file.display()))?;
    let files = FileReporter {
        log: Box::new(std::io::LineWriter::new(log)),
        state_file: Some(state_file.clone()),
        source_config_file: Some(args.source_config.clone()),
        destination_config_file: Some(args.destination_config.clone()),
    };
    let mut reporter = Terminal::new(files, std::io::stderr().is_terminal());
    sluice_protocol::say!("sluice: syncing {} -> {} ({} streams)", config.source.name, config.destination.name, config.catalog.streams.len());
    let outcome = crate::run_attempt(&config, &mut reporter, &cancel);
    reporter.clear();
    let _ = std::fs::remove_dir_all(&work_dir);
    if let Some(dir) = config.data_channel.as_ref().and_then(|c| c.socket_paths.first()).and_then(|p| p.parent()) {
        let _ = std::fs::remove_dir_all(dir);
    }

    print_summary(&outcome, &state_file, &log_file);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    }
    Ok(if outcome.status == AttemptStatus::Succeeded { 0 } else { 1 })
}

fn read_json_file(path: &Path, flag: &str) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{flag}: cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{flag}: {} is not valid JSON", path.display()))
}

/// `users=id,name` -> only `id` and `name` of users' records reach the destination.
fn parse_fields(specs: &[String]) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    specs
        .iter()
        .map(|spec| {
            let (stream, fields) = spec.split_once('=').with_context(|| format!("--fields {spec}: expected STREAM=FIELD,FIELD"))?;
            let fields: Vec<String> = fields.split(',').filter(|f| !f.is_empty()).map(String::from).collect();
            if stream.is_empty() || fields.is_empty() {
                bail!("--fields {spec}: expected STREAM=FIELD,FIELD");
            }
            Ok((stream.to_owned(), fields))
        })
        .collect()
}

/// Matches each `--fields` stream to the catalog (by name, whatever its
/// namespace) and keeps its primary key and cursor, which dedup and
/// incremental reads need, as Airbyte does.
fn resolve_fields(selections: Vec<(String, Vec<String>)>, catalog: &ConfiguredAirbyteCatalog) -> anyhow::Result<Vec<FieldSelection>> {
    selections
        .into_iter()
        .map(|(name, mut fields)| {
            let configured = catalog
                .streams
                .iter()
                .find(|s| s.stream.name == name)
                .with_context(|| format!("--fields names stream `{name}`, which is not being synced"))?;
            let keys = configured.primary_key.iter().flatten().chain(configured.cursor_field.iter()).filter_map(|path| path.first());
            for key in keys {
                if !fields.contains(key) {
                    fields.push(key.clone());
                }
            }
            Ok(FieldSelection { stream: configured.stream.descriptor(), fields })
        })
        .collect()
}

/// Runs the source's `discover` and returns its catalog, or the reason it gave none.
fn discover(name: &str, command: &[String], config: &Path) -> anyhow::Result<AirbyteCatalog> {
    let config = std::fs::canonicalize(config)?;
    let output = std::process::Command::new(&command[0])
        .args(&command[1..])
        .args(["discover", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot start {name}"))?;
    let mut errors = Vec::new();
    for line in output.stdout.split(|&b| b == b'\n').filter(|l| !l.trim_ascii().is_empty()) {
        let Ok(message) = serde_json::from_slice::<AirbyteMessage>(line) else { continue };
        if let Some(catalog) = message.catalog {
            return Ok(catalog);
        }
        if let Some(error) = message.trace.and_then(|t| t.error) {
            errors.push(error.message);
        }
    }
    let why = if errors.is_empty() { sluice_connectors::last_lines(&output.stderr, 10) } else { errors.join("; ") };
    bail!("{name} discover gave no catalog ({}): {why}", output.status)
}

fn select_streams(catalog: AirbyteCatalog, wanted: &[String]) -> anyhow::Result<ConfiguredAirbyteCatalog> {
    let available: Vec<String> = catalog.streams.iter().map(|s| s.name.clone()).collect();
    for name in wanted {
        if !available.contains(name) {
            bail!("--streams names `{name}`, which the source does not have\n\nConsider one of: {}", available.join(", "));
        }
    }
    let streams = catalog
        .streams
        .into_iter()
        .filter(|s| wanted.is_empty() || wanted.contains(&s.name))
        .map(ConfiguredAirbyteStream::with_defaults)
        .collect();
    Ok(ConfiguredAirbyteCatalog { streams, extra: Default::default() })
}

/// One state file per (source, destination, their config files), so that
/// re-running the same command resumes where the last run stopped.
fn default_state_file(cache: &Cache, args: &SyncArgs) -> PathBuf {
    let absolute = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string();
    let key = [args.source.clone(), absolute(&args.source_config), args.destination.clone(), absolute(&args.destination_config)].join("\n");
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let name = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect::<String>();
    cache.root.join("state").join(format!("{}--{}-{hash:016x}.json", name(&args.source), name(&args.destination)))
}

/// A state file holds a list of state messages; a bare object is a legacy state.
fn load_state(path: &Path) -> anyhow::Result<Vec<AirbyteStateMessage>> {
    let value = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str::<Value>(&text).with_context(|| format!("state file {} is not valid JSON", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read state file {}", path.display())),
    };
    match value {
        Value::Array(_) => serde_json::from_value(value).with_context(|| format!("state file {} is not a list of state messages", path.display())),
        Value::Object(_) => Ok(vec![AirbyteStateMessage { kind: Some(StateType::Legacy), data: Some(value), ..Default::default() }]),
        _ => bail!("state file {} must hold a list of state messages", path.display()),
    }
}

fn print_summary(outcome: &Outcome, state_file: &Path, log_file: &Path) {
    let secs = outcome.elapsed_secs.max(1e-9);
    sluice_protocol::say!("{:<24} {:>12} {:>12} {:>10} {:>12}", "stream", "emitted", "committed", "MB", "records/s");
    for s in &outcome.streams {
        sluice_protocol::say!(
            "{:<24} {:>12} {:>12} {:>10.2} {:>12.0}",
            s.stream.to_string(),
            s.emitted.records,
            s.committed.records,
            s.emitted.bytes as f64 / 1e6,
            s.emitted.records as f64 / secs
        );
    }
    let status = match outcome.status {
        AttemptStatus::Succeeded => "succeeded",
        AttemptStatus::Failed => "FAILED",
        AttemptStatus::Cancelled => "cancelled",
    };
    sluice_protocol::say!(
        "sync {status} in {:.1} s: {} records committed of {} emitted, {} of {} states committed",
        outcome.elapsed_secs,
        outcome.records_committed(),
        outcome.records_emitted(),
        outcome.states_committed,
        outcome.states_emitted
    );
    if let Some(failure) = &outcome.failure {
        sluice_protocol::say!("reason: {failure}");
    }
    sluice_protocol::say!("state: {}\nlog:   {}", state_file.display(), log_file.display());
}
