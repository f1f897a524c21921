//! The orchestrator: runs one sync attempt in legacy mode, where every
//! message flows source -> orchestrator -> destination over stdio.
//!
//! Threads, each with one job:
//! - the pump ([`pump::source_to_destination`]) moves source output to the
//!   destination: the hot loop;
//! - a reader takes the destination's output (echoed states, logs);
//! - two readers forward stderr, two waiters learn how each connector ended;
//! - the coordinator (this module's [`run`]) owns the books: it receives
//!   [`pump::Event`]s, commits states as the destination echoes them, watches
//!   timeouts and cancellation, and stops the connectors when it must.

pub mod ask;
pub mod aws_iam;
pub mod cli;
pub mod config;
pub mod connector;
pub mod fence;
pub mod ledger;
pub mod outcome;
pub mod pump;
pub mod report;
mod stand_in;
pub mod workload_api;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_protocol::{AirbyteMessage, LogLevel, TraceType};

pub use config::{ConnectorConfig, FieldSelection, Launch, Limits, SyncConfig};
use connector::{Exit, Stopper};
pub use ledger::{Counts, StreamSummary};
use ledger::{Echo, Ledger};
pub use outcome::{AttemptFailure, AttemptStatus, FailureKind, Outcome, Side};
use pump::{Event, Probes, Routes};
pub use report::{FileReporter, Progress, Reporter};

const TICK: Duration = Duration::from_millis(200);
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
const STDERR_TAIL_LINES: usize = 20;
/// How long a waiter holds a connector's exit back for its last stderr lines.
const STDERR_SETTLE: Duration = Duration::from_secs(2);

/// Runs one legacy-mode attempt to its end. `cancel` is raised (by SIGTERM,
/// in the binary) to stop both connectors and keep the state committed so far.
pub fn run(config: &SyncConfig, reporter: &mut dyn Reporter, cancel: &AtomicBool) -> Outcome {
    if config.data_channel.is_some() {
        return refuse(config, "this sync config names a socket-mode data channel: the bookkeeper runs it, not the orchestrator");
    }
    coordinate(config, reporter, cancel, legacy_plane)
}

/// A failed attempt that started nothing, saying why.
pub fn refuse(config: &SyncConfig, why: &str) -> Outcome {
    let (_, streams) = Routes::new(config);
    let mut attempt = Attempt::new(config, Ledger::new(streams, &config.state));
    attempt.fail(AttemptFailure::new(Side::Orchestrator, "orchestrator", FailureKind::Io, why.to_owned()));
    attempt.finish(Instant::now())
}

/// What a data plane is handed: the connectors' stdio, with the probes it
/// bumps and the channel it reports on. It starts its threads and returns;
/// they end with `PumpEnded` (the source's output is done) and
/// `DestinationOutputEnded`.
pub struct PlaneIo {
    pub source_stdout: Box<dyn std::io::Read + Send>,
    pub destination_stdin: Box<dyn std::io::Write + Send>,
    pub destination_stdout: Box<dyn std::io::Read + Send>,
    pub probes: Arc<Probes>,
    pub events: mpsc::Sender<Event>,
}

pub type Plane = fn(&SyncConfig, PlaneIo);

/// Legacy mode: every message through the pump.
fn legacy_plane(config: &SyncConfig, io: PlaneIo) {
    let (routes, _) = Routes::new(config);
    let limit = config.limits.max_line_bytes;
    {
        let (events, probes) = (io.events.clone(), io.probes.clone());
        let name = config.source.name.clone();
        let (stdout, stdin) = (io.source_stdout, io.destination_stdin);
        thread::spawn(move || {
            let result = pump::source_to_destination(stdout, stdin, routes, limit, &name, &probes, &events);
            let _ = events.send(Event::PumpEnded(result));
        });
    }
    read_destination_output(io.destination_stdout, limit, io.probes, io.events);
}

/// Both planes read the destination's stdout alike: released STATEs, stats,
/// logs and traces, then `DestinationOutputEnded`.
pub fn read_destination_output(stdout: Box<dyn std::io::Read + Send>, limit: usize, probes: Arc<Probes>, events: mpsc::Sender<Event>) {
    thread::spawn(move || {
        let result = pump::destination_output(stdout, limit, &probes, &events);
        let _ = events.send(Event::DestinationOutputEnded(result));
    });
}

/// Runs one attempt with the given data plane: the books, timeouts,
/// cancellation and the end are the same in both modes.
pub fn coordinate(config: &SyncConfig, reporter: &mut dyn Reporter, cancel: &AtomicBool, plane: Plane) -> Outcome {
    let started = Instant::now();
    let (_, streams) = Routes::new(config);
    let ledger = Ledger::new(streams, &config.state);
    let ledger = if config.data_channel.is_some() { ledger.for_sockets() } else { ledger };
    let mut attempt = Attempt::new(config, ledger);
    let mode = match &config.data_channel {
        Some(c) => format!("socket mode: records go from source to destination in {} over {} sockets; the bookkeeper keeps the books", c.format, c.socket_paths.len()),
        None => "legacy mode: records go through the orchestrator over stdio".to_owned(),
    };
    attempt.log(reporter, Side::Orchestrator, LogLevel::Info, &mode);
    let (source, destination) = match start_connectors(config) {
        Ok(connectors) => connectors,
        Err(failure) => {
            attempt.fail(failure);
            return attempt.finish(started);
        }
    };
    let probes = Arc::new(Probes::default());
    let (events, inbox) = mpsc::channel();
    let stoppers = [source.stopper.clone(), destination.stopper.clone()];
    plane(
        config,
        PlaneIo {
            source_stdout: source.stdout,
            destination_stdin: destination.stdin.expect("destination has stdin"),
            destination_stdout: destination.stdout,
            probes: probes.clone(),
            events: events.clone(),
        },
    );
    for (side, stderr, exit) in [(Side::Source, source.stderr, source.exit), (Side::Destination, destination.stderr, destination.exit)] {
        let e = events.clone();
        let stderr_reader = thread::spawn(move || pump::stderr_lines(stderr, side, &e));
        let e = events.clone();
        thread::spawn(move || {
            let (exit, cause) = exit.wait_with_cause();
            // Let the last stderr lines (a traceback) arrive before the exit is reported.
            let settle = Instant::now();
            while !stderr_reader.is_finished() && settle.elapsed() < STDERR_SETTLE {
                thread::sleep(Duration::from_millis(10));
            }
            let _ = e.send(Event::Exited(side, exit, cause));
        });
    }
    drop(events);

    let mut watch = Watch::new();
    let mut last_flush = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        match inbox.recv_timeout(TICK) {
            Ok(event) => attempt.handle(event, reporter),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if attempt.sides.iter().all(SideState::done) {
            break;
        }

        if cancel.load(Relaxed) && !attempt.cancelled {
            attempt.cancelled = true;
            attempt.log(reporter, Side::Orchestrator, LogLevel::Info, "cancelled: stopping both connectors");
        }
        let source_drained = attempt.sides[0].output_ended.is_some();
        let source_active = !source_drained && !attempt.must_stop(Side::Source);
        let destination_active = attempt.sides[1].exit.is_none() && !attempt.must_stop(Side::Destination);
        if let Some(failure) = watch.check(&probes, config, source_active, source_drained, destination_active) {
            attempt.fail(failure);
        }
        for side in [Side::Source, Side::Destination] {
            let state = &attempt.sides[side.index()];
            // A connector that exited with its output still open (a child holds
            // it), or closed its output and never exits, gets one grace period.
            let half_done = state.half_done_since.is_some_and(|since| since.elapsed() >= attempt.grace());
            if (attempt.must_stop(side) || half_done) && state.stopping.is_none() && !state.done() {
                attempt.sides[side.index()].stopping = Some(Stopping { since: Instant::now(), killed: false });
                stoppers[side.index()].terminate();
            }
        }
        if attempt.escalate(&stoppers) {
            attempt.log(reporter, Side::Orchestrator, LogLevel::Warn, "connectors did not stop after SIGKILL; giving up on them");
            break;
        }

        if attempt.state_dirty && last_flush.elapsed() >= Duration::from_secs(config.limits.state_flush_interval_secs) {
            attempt.flush_state(reporter);
            last_flush = Instant::now();
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            reporter.progress(&Progress { streams: &attempt.ledger.streams, elapsed: started.elapsed(), states_committed: attempt.ledger.states_committed });
            last_progress = Instant::now();
        }
    }
    drain(&inbox, &mut attempt, reporter);

    let destination_succeeded = attempt.sides[1].exit.is_some_and(Exit::success);
    if destination_succeeded && attempt.sides[0].output_ended == Some(true) && !attempt.failed() && !attempt.cancelled {
        if attempt.ledger.has_pending_states() {
            attempt.log(reporter, Side::Destination, LogLevel::Warn, "finished without echoing every STATE; the last ones are not committed");
        } else {
            attempt.ledger.destination_finished();
        }
    }
    attempt.flush_state(reporter);
    attempt.finish(started)
}

/// Handles what the threads said before the coordinator stopped listening.
fn drain(inbox: &Receiver<Event>, attempt: &mut Attempt<'_>, reporter: &mut dyn Reporter) {
    while let Ok(event) = inbox.try_recv() {
        attempt.handle(event, reporter);
    }
}

type Started = (connector::Running, connector::Running);

fn start_connectors(config: &SyncConfig) -> Result<Started, AttemptFailure> {
    let io_failure = |side: Side, name: &str, e: std::io::Error| AttemptFailure::new(side, name, FailureKind::Io, e.to_string());
    let catalog = serde_json::to_value(&config.catalog).expect("catalog serializes");
    let state = json!(config.state.iter().map(|s| s.without_bookkeeping()).collect::<Vec<_>>());
    // The catalog goes last: an attached connector may wait for it as the sign that all are written.
    let mut files = vec![("config", &config.source.config)];
    if !config.state.is_empty() {
        files.push(("state", &state));
    }
    files.push(("catalog", &catalog));
    let source_args =
        connector::prepare_files(&config.work_dir.join("source"), &config.source.launch, &files).map_err(|e| io_failure(Side::Source, &config.source.name, e))?;
    let destination_files = [("config", &config.destination.config), ("catalog", &catalog)];
    let destination_args = connector::prepare_files(&config.work_dir.join("destination"), &config.destination.launch, &destination_files)
        .map_err(|e| io_failure(Side::Destination, &config.destination.name, e))?;
    let (source_config, destination_config) = match &config.data_channel {
        Some(channel) => {
            // Attached connectors' sockets are on a volume the task's init step made.
            if matches!(config.source.launch, Launch::Spawn { .. }) {
                prepare_socket_dir(channel).map_err(|e| io_failure(Side::Orchestrator, "bookkeeper", e))?;
            }
            (with_channel(&config.source, channel), with_channel(&config.destination, channel))
        }
        None => (config.source.clone(), config.destination.clone()),
    };
    let source = connector::start(&source_config, "read", &source_args, false).map_err(|e| io_failure(Side::Source, &config.source.name, e))?;
    match connector::start(&destination_config, "write", &destination_args, true) {
        Ok(destination) => Ok((source, destination)),
        Err(e) => {
            source.stopper.kill();
            source.exit.wait();
            Err(io_failure(Side::Destination, &config.destination.name, e))
        }
    }
}

/// A spawned connector gets the data channel in its environment; an
/// attached one got it from the task's plan.
fn with_channel(connector: &ConnectorConfig, channel: &sluice_protocol::socket::DataChannel) -> ConnectorConfig {
    let mut connector = connector.clone();
    if let Launch::Spawn { env, .. } = &mut connector.launch {
        env.extend(channel.env());
    }
    connector
}

/// The sockets' directory, private to the task; stale sockets of an earlier
/// attempt are removed by the source when it listens.
fn prepare_socket_dir(channel: &sluice_protocol::socket::DataChannel) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    for dir in channel.socket_paths.iter().filter_map(|p| p.parent()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    Ok(())
}

/// What the coordinator knows of one connector.
#[derive(Default)]
struct SideState {
    exit: Option<Exit>,
    /// The source's output was delivered in full (true) or not (false); the
    /// destination's output was read to its end.
    output_ended: Option<bool>,
    /// When exactly one of exit and end of output was seen.
    half_done_since: Option<Instant>,
    /// Set once we signalled it.
    stopping: Option<Stopping>,
    stderr_tail: VecDeque<String>,
}

impl SideState {
    fn done(&self) -> bool {
        self.exit.is_some() && self.output_ended.is_some()
    }

    fn note_progress(&mut self) {
        self.half_done_since = match (self.exit.is_some(), self.output_ended.is_some()) {
            (true, true) | (false, false) => None,
            _ => self.half_done_since.or(Some(Instant::now())),
        };
    }
}

struct Stopping {
    since: Instant,
    killed: bool,
}

impl Side {
    fn index(self) -> usize {
        (self != Side::Source) as usize
    }
}

/// The coordinator's view of the attempt.
struct Attempt<'a> {
    config: &'a SyncConfig,
    ledger: Ledger,
    failures: Vec<AttemptFailure>,
    cancelled: bool,
    sides: [SideState; 2],
    state_dirty: bool,
    /// Socket mode, after the source exited: listens where it did.
    stand_in: Option<stand_in::StandIn>,
}

impl<'a> Attempt<'a> {
    fn new(config: &'a SyncConfig, ledger: Ledger) -> Self {
        Attempt { config, ledger, failures: Vec::new(), cancelled: false, sides: Default::default(), state_dirty: false, stand_in: None }
    }

    fn name(&self, side: Side) -> &str {
        match side {
            Side::Source => &self.config.source.name,
            Side::Destination => &self.config.destination.name,
            Side::Orchestrator => "orchestrator",
        }
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(self.config.limits.shutdown_grace_secs)
    }

    fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    /// Whether a connector must be stopped now. A TRACE ERROR alone stops
    /// nothing: Airbyte's sources report a failed stream and go on with the
    /// others. A source failure leaves the destination to store and
    /// acknowledge what it received (its input just ends); a destination
    /// failure or a cancel stops both.
    fn must_stop(&self, side: Side) -> bool {
        self.cancelled
            || self.failures.iter().any(|f| {
                f.kind != FailureKind::ConnectorError && (side == Side::Source || f.side == Side::Destination || f.side == Side::Orchestrator)
            })
    }

    /// SIGKILL for connectors that outlived their grace; true when even
    /// killed connectors had a grace period more and the coordinator should
    /// stop waiting for them.
    fn escalate(&mut self, stoppers: &[Stopper; 2]) -> bool {
        let grace = self.grace();
        let mut give_up = true;
        for (state, stopper) in self.sides.iter_mut().zip(stoppers) {
            if state.done() {
                continue;
            }
            match &mut state.stopping {
                Some(stopping) if stopping.since.elapsed() >= grace => {
                    if !stopping.killed {
                        stopper.kill();
                        stopping.killed = true;
                    }
                    give_up &= stopping.since.elapsed() >= grace * 2;
                }
                _ => give_up = false,
            }
        }
        give_up
    }

    fn fail(&mut self, mut failure: AttemptFailure) {
        if failure.connector.is_empty() {
            failure.connector = self.name(failure.side).to_owned();
        }
        // After a cancel, connector failures are its echo; ours (state not saved) still count.
        if !self.cancelled || failure.side == Side::Orchestrator {
            self.failures.push(failure);
        }
    }

    fn log(&self, reporter: &mut dyn Reporter, side: Side, level: LogLevel, message: &str) {
        reporter.log(side, self.name(side), &level, message);
    }

    fn handle(&mut self, event: Event, reporter: &mut dyn Reporter) {
        match event {
            Event::Emitted { counts, filtered } => {
                self.ledger.emitted(&counts);
                self.ledger.records_filtered += filtered;
            }
            Event::Filtered(stream) => {
                let text = format!("records of stream {stream}, which is not in the configured catalog, are dropped");
                self.log(reporter, Side::Source, LogLevel::Warn, &text);
            }
            Event::SourceState { id, state } => self.ledger.source_state(id, *state),
            Event::Echo(state) => match self.ledger.destination_echo(&state) {
                Echo::Committed(_) => self.state_dirty = true,
                Echo::Unmatched => self.log(reporter, Side::Destination, LogLevel::Warn, "echoed a STATE that matches no state sent to it; ignored"),
                Echo::Miscounted { id, sent, stored } => {
                    let message = format!("released STATE id {id} after storing {stored} records, but the source sent {sent}; it is not committed");
                    self.fail(AttemptFailure::new(Side::Destination, self.name(Side::Destination), FailureKind::InvalidMessage, message));
                }
            },
            Event::DestinationStats { stream, counts } => self.ledger.destination_stats(&stream, counts),
            Event::Message(side, message) => self.connector_message(reporter, side, *message),
            Event::Stderr(side, line) => {
                self.log(reporter, side, LogLevel::Info, &line);
                let tail = &mut self.sides[side.index()].stderr_tail;
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            Event::Note(side, level, text) => self.log(reporter, side, level, &text),
            Event::Ignored { side, kind, line } => {
                self.log(reporter, side, LogLevel::Debug, &format!("stdout line {line}: {kind} message ignored during a sync"))
            }
            Event::PumpEnded(result) => {
                self.sides[0].output_ended = Some(result.is_ok());
                self.sides[0].note_progress();
                if let Err(failure) = result {
                    self.fail(failure);
                }
            }
            Event::DestinationOutputEnded(result) => {
                self.sides[1].output_ended = Some(result.is_ok());
                self.sides[1].note_progress();
                if let Err(failure) = result {
                    self.fail(failure);
                }
            }
            Event::Exited(side, exit, cause) => {
                let exit_text = match &cause {
                    Some(cause) => format!("{exit} ({cause})"),
                    None => exit.to_string(),
                };
                let state = &mut self.sides[side.index()];
                state.exit = Some(exit);
                state.note_progress();
                let stopped_by_us = state.stopping.is_some();
                if let (Side::Source, Some(channel), None) = (side, &self.config.data_channel, &self.stand_in) {
                    let (stand_in, problems) = stand_in::StandIn::start(channel);
                    self.stand_in = Some(stand_in);
                    for problem in problems {
                        self.log(reporter, Side::Orchestrator, LogLevel::Warn, &format!("the source exited, and its socket is left unanswered: {problem}"));
                    }
                }
                if exit.success() {
                    return;
                }
                // A cause comes from the container runtime: the connector was
                // killed from outside (or for its memory), whatever we asked of it.
                let killed_outside = cause.is_some() && !self.cancelled;
                if !killed_outside && (self.cancelled || (stopped_by_us && self.must_stop(side))) {
                    self.log(reporter, side, LogLevel::Info, &format!("stopped: {exit_text}"));
                    return;
                }
                if stopped_by_us && !killed_outside {
                    // Nothing else failed: we stopped it for hanging after it closed its output.
                    let message = format!("did not exit after closing its output, and was stopped: {exit_text}");
                    self.fail(AttemptFailure::new(side, self.name(side), FailureKind::Crashed, message));
                    return;
                }
                let tail: Vec<&str> = self.sides[side.index()].stderr_tail.iter().map(String::as_str).collect();
                let message = if tail.is_empty() { exit_text } else { format!("{exit_text}; last stderr lines:\n{}", tail.join("\n")) };
                self.fail(AttemptFailure::new(side, self.name(side), FailureKind::Crashed, message));
            }
        }
    }

    /// LOG, TRACE and CONTROL messages from either connector.
    fn connector_message(&mut self, reporter: &mut dyn Reporter, side: Side, message: AirbyteMessage) {
        if let Some(log) = message.log {
            self.log(reporter, side, log.level, &log.message);
            if let Some(stack) = log.stack_trace {
                self.log(reporter, side, LogLevel::Debug, &stack);
            }
        } else if let Some(trace) = message.trace {
            match trace.kind {
                TraceType::Error => {
                    let Some(error) = trace.error else { return };
                    if let Some(internal) = &error.internal_message {
                        self.log(reporter, side, LogLevel::Error, internal);
                    }
                    let mut failure = AttemptFailure::new(side, self.name(side), FailureKind::ConnectorError, error.message)
                        .in_stream(error.stream_descriptor.as_ref().map(|d| d.to_string()));
                    failure.failure_type = error.failure_type;
                    self.log(reporter, side, LogLevel::Error, &failure.to_string());
                    self.fail(failure);
                }
                TraceType::StreamStatus => {
                    if let Some(status) = trace.stream_status {
                        self.ledger.stream_status(&status.stream_descriptor, &status.status);
                    }
                }
                TraceType::Estimate => {
                    if let Some(estimate) = trace.estimate.filter(|e| e.row_estimate.is_some()) {
                        let stream = sluice_protocol::StreamDescriptor::new(estimate.name, estimate.namespace);
                        self.ledger.estimate(&stream, estimate.row_estimate.unwrap_or_default());
                    }
                }
                _ => self.log(reporter, side, LogLevel::Debug, &format!("trace {}", trace.kind)),
            }
        } else if let Some(control) = message.control {
            match control.connector_config {
                Some(update) => {
                    let name = self.name(side).to_owned();
                    if let Err(e) = reporter.config_updated(side, &name, &update.config) {
                        self.log(reporter, side, LogLevel::Error, &format!("cannot persist the connector's updated config: {e}"));
                    }
                }
                None => self.log(reporter, side, LogLevel::Debug, &format!("control message {} ignored", control.kind)),
            }
        }
    }

    fn flush_state(&mut self, reporter: &mut dyn Reporter) {
        self.state_dirty = false;
        if self.ledger.states_committed == 0 {
            return;
        }
        if let Err(e) = reporter.state_committed(&self.ledger.committed_state()) {
            let failure = AttemptFailure::new(Side::Orchestrator, "orchestrator", FailureKind::Io, format!("cannot persist committed state: {e}"));
            self.fail(failure);
        }
    }

    fn finish(self, started: Instant) -> Outcome {
        let mut failures = self.failures;
        // The most telling failure leads; among equals, the first.
        let lead = failures.iter().enumerate().fold(None::<usize>, |best, (i, f)| match best {
            Some(b) if !f.outranks(&failures[b]) => Some(b),
            _ => Some(i),
        });
        // Socket mode: a destination that died breaks the source's sockets, and
        // the source's error about it (its own TRACE, which would lead) is the echo.
        let destination_died = |f: &AttemptFailure| f.side == Side::Destination && f.kind == FailureKind::Crashed;
        let lead = match self.config.data_channel {
            Some(_) => failures.iter().position(destination_died).or(lead),
            None => lead,
        };
        let failure = lead.map(|i| failures.remove(i));
        let status = match (self.cancelled, &failure) {
            (true, _) => AttemptStatus::Cancelled,
            (false, Some(_)) => AttemptStatus::Failed,
            (false, None) => AttemptStatus::Succeeded,
        };
        Outcome {
            status,
            failure,
            other_failures: failures,
            state: self.ledger.committed_state(),
            records_filtered: self.ledger.records_filtered,
            states_emitted: self.ledger.states_emitted,
            states_committed: self.ledger.states_committed,
            streams: self.ledger.streams,
            elapsed_secs: started.elapsed().as_secs_f64(),
            peak_rss_bytes: outcome::peak_rss_bytes(),
        }
    }
}

/// Idle timeouts, from the probes the data-plane threads bump.
struct Watch {
    source_seen: (u64, Instant),
    destination_seen: (u64, Instant),
}

impl Watch {
    fn new() -> Self {
        Watch { source_seen: (0, Instant::now()), destination_seen: (0, Instant::now()) }
    }

    /// `source_active`: the pump reads a source that should go on;
    /// `source_drained`: the pump has ended, the destination's input is closed;
    /// `destination_active`: the destination runs and nothing is stopping it.
    fn check(&mut self, probes: &Probes, config: &SyncConfig, source_active: bool, source_drained: bool, destination_active: bool) -> Option<AttemptFailure> {
        let now = Instant::now();
        let heartbeat = probes.source_lines.load(Relaxed);
        let blocked_on_destination = probes.writing.load(Relaxed);
        if heartbeat != self.source_seen.0 || blocked_on_destination || !source_active {
            self.source_seen = (heartbeat, now);
        }
        let activity = probes.destination_activity.load(Relaxed);
        // The destination is late only when it holds us up: blocked on its
        // input, or the source is done and it has not finished.
        let waiting_on_destination = destination_active && (blocked_on_destination || source_drained);
        if activity != self.destination_seen.0 || !waiting_on_destination {
            self.destination_seen = (activity, now);
        }
        let limits = &config.limits;
        if now - self.source_seen.1 >= Duration::from_secs(limits.source_idle_timeout_secs) {
            self.source_seen.1 = now;
            let message = format!("no RECORD or STATE for {} s (the source idle timeout)", limits.source_idle_timeout_secs);
            return Some(AttemptFailure::new(Side::Source, &config.source.name, FailureKind::SourceTimeout, message).at_line(heartbeat));
        }
        if now - self.destination_seen.1 >= Duration::from_secs(limits.destination_idle_timeout_secs) {
            self.destination_seen.1 = now;
            let message = format!(
                "neither accepted input nor answered for {} s (the destination idle timeout)",
                limits.destination_idle_timeout_secs
            );
            return Some(AttemptFailure::new(Side::Destination, &config.destination.name, FailureKind::DestinationTimeout, message));
        }
        None
    }
}
