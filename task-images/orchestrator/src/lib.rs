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

pub mod cli;
pub mod config;
pub mod connector;
pub mod ledger;
pub mod outcome;
pub mod pump;
pub mod report;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{self, RecvTimeoutError};
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

/// Runs one attempt to its end. `cancel` is raised (by SIGTERM, in the
/// binary) to stop both connectors and keep the state committed so far.
pub fn run(config: &SyncConfig, reporter: &mut dyn Reporter, cancel: &AtomicBool) -> Outcome {
    let started = Instant::now();
    let (routes, streams) = Routes::new(config);
    let mut attempt = Attempt {
        config,
        ledger: Ledger::new(streams, &config.state),
        failures: Vec::new(),
        cancelled: false,
        stderr_tail: [VecDeque::new(), VecDeque::new()],
    };
    let connectors = match start_connectors(config) {
        Ok(connectors) => connectors,
        Err(failure) => {
            attempt.fail(failure);
            return attempt.finish(started);
        }
    };
    let (source, destination) = connectors;
    let probes = Arc::new(Probes::default());
    let (events, inbox) = mpsc::channel();
    let stoppers = [source.stopper.clone(), destination.stopper.clone()];
    let limit = config.limits.max_line_bytes;

    // The data plane.
    {
        let (events, probes) = (events.clone(), probes.clone());
        let name = config.source.name.clone();
        let (stdout, stdin) = (source.stdout, destination.stdin.expect("destination has stdin"));
        thread::spawn(move || {
            let result = pump::source_to_destination(stdout, stdin, routes, limit, &name, &probes, &events);
            let _ = events.send(Event::PumpEnded(result));
        });
    }
    {
        let (events, probes) = (events.clone(), probes.clone());
        let name = config.destination.name.clone();
        let stdout = destination.stdout;
        thread::spawn(move || {
            let result = pump::destination_output(stdout, limit, &name, &probes, &events);
            let _ = events.send(Event::DestinationOutputEnded(result));
        });
    }
    for (side, stderr, exit) in [(Side::Source, source.stderr, source.exit), (Side::Destination, destination.stderr, destination.exit)] {
        let e = events.clone();
        thread::spawn(move || pump::stderr_lines(stderr, side, &e));
        let e = events.clone();
        thread::spawn(move || {
            let _ = e.send(Event::Exited(side, exit.wait()));
        });
    }
    drop(events);

    let mut watch = Watch::new();
    let mut source_exit: Option<Exit> = None;
    let mut destination_exit: Option<Exit> = None;
    // Whether the pump delivered everything the source wrote (Some(true)) or stopped early.
    let mut pump_ended: Option<bool> = None;
    let mut destination_output_ended = false;
    let mut state_dirty = false;
    let mut last_flush = Instant::now();
    let mut last_progress = Instant::now();
    let mut stop: Option<Stop> = None;

    loop {
        match inbox.recv_timeout(TICK) {
            Ok(event) => match event {
                Event::Emitted(delta) => attempt.ledger.emitted(&delta),
                Event::SourceState { id, state } => attempt.ledger.source_state(id, *state),
                Event::Echo(state) => match attempt.ledger.destination_echo(&state) {
                    Echo::Committed(_) => state_dirty = true,
                    Echo::Unmatched => attempt.log(reporter, Side::Destination, LogLevel::Warn, "echoed a STATE that matches no state sent to it; ignored"),
                },
                Event::Message(side, message) => attempt.connector_message(reporter, side, *message),
                Event::Stderr(side, line) => attempt.stderr(reporter, side, line),
                Event::Filtered { stream, first } => {
                    attempt.ledger.records_filtered += 1;
                    if first {
                        let text = format!("records of stream {stream}, which is not in the configured catalog, are dropped");
                        attempt.log(reporter, Side::Source, LogLevel::Warn, &text);
                    }
                }
                Event::Ignored { side, kind, line } => {
                    attempt.log(reporter, side, LogLevel::Debug, &format!("stdout line {line}: {kind} message ignored during a sync"))
                }
                Event::PumpEnded(result) => {
                    pump_ended = Some(result.is_ok());
                    if let Err(failure) = result {
                        attempt.fail(failure);
                    }
                }
                Event::DestinationOutputEnded(result) => {
                    destination_output_ended = true;
                    if let Err(failure) = result {
                        attempt.fail(failure);
                    }
                }
                Event::Exited(side, exit) => {
                    if !exit.success() && !attempt.cancelled {
                        let tail = attempt.stderr_tail(side);
                        let message = if tail.is_empty() { exit.to_string() } else { format!("{exit}; last stderr lines:\n{tail}") };
                        attempt.fail(AttemptFailure::new(side, attempt.name(side), FailureKind::Crashed, message));
                    }
                    match side {
                        Side::Source => source_exit = Some(exit),
                        _ => destination_exit = Some(exit),
                    }
                }
            },
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }

        // Done when both connectors ended and their output is read to the end.
        if source_exit.is_some() && destination_exit.is_some() && pump_ended.is_some() && destination_output_ended {
            break;
        }

        if cancel.load(Relaxed) && !attempt.cancelled {
            attempt.cancelled = true;
            attempt.log(reporter, Side::Orchestrator, LogLevel::Info, "cancelled: stopping both connectors");
        }
        if !attempt.cancelled && !attempt.failed() {
            let source_done = source_exit.is_some() || pump_ended.is_some();
            if let Some(failure) = watch.check(&probes, config, source_done, destination_exit.is_some()) {
                attempt.fail(failure);
            }
        }
        if stop.is_none() && (attempt.cancelled || attempt.failed()) {
            // A failure of the source alone leaves the destination to store
            // and acknowledge what it already received: its input just ends.
            let source_only = !attempt.cancelled && attempt.failures.iter().all(|f| f.side == Side::Source);
            stop = Some(Stop::begin(&stoppers, source_only, &config.limits));
        }
        if let Some(stop) = stop.as_mut() {
            if stop.escalate(&stoppers) {
                attempt.log(reporter, Side::Orchestrator, LogLevel::Warn, "connectors did not stop in time; giving up on them");
                break;
            }
        }

        if state_dirty && last_flush.elapsed() >= Duration::from_secs(config.limits.state_flush_interval_secs) {
            attempt.flush_state(reporter);
            state_dirty = false;
            last_flush = Instant::now();
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            reporter.progress(&Progress { streams: &attempt.ledger.streams, elapsed: started.elapsed(), states_committed: attempt.ledger.states_committed });
            last_progress = Instant::now();
        }
    }

    if destination_exit.is_some_and(Exit::success) && pump_ended == Some(true) && !attempt.failed() && !attempt.cancelled {
        attempt.ledger.destination_finished();
        if attempt.ledger.has_pending_states() {
            attempt.log(reporter, Side::Destination, LogLevel::Warn, "finished without echoing every STATE; the last ones are not committed");
        }
    }
    attempt.flush_state(reporter);
    attempt.finish(started)
}

type Started = (connector::Running, connector::Running);

fn start_connectors(config: &SyncConfig) -> Result<Started, AttemptFailure> {
    let io_failure = |side: Side, name: &str, e: std::io::Error| AttemptFailure::new(side, name, FailureKind::Io, e.to_string());
    let catalog = serde_json::to_value(&config.catalog).expect("catalog serializes");
    let source_dir = config.work_dir.join("source");
    let mut files = vec![("config", &config.source.config), ("catalog", &catalog)];
    let state = json!(config.state.iter().map(|s| s.without_bookkeeping()).collect::<Vec<_>>());
    if !config.state.is_empty() {
        files.push(("state", &state));
    }
    let source_args = connector::prepare_files(&source_dir, &files).map_err(|e| io_failure(Side::Source, &config.source.name, e))?;
    let destination_args = connector::prepare_files(&config.work_dir.join("destination"), &[("config", &config.destination.config), ("catalog", &catalog)])
        .map_err(|e| io_failure(Side::Destination, &config.destination.name, e))?;
    let source = connector::start(&config.source, "read", &source_args, false).map_err(|e| io_failure(Side::Source, &config.source.name, e))?;
    let destination = match connector::start(&config.destination, "write", &destination_args, true) {
        Ok(destination) => destination,
        Err(e) => {
            source.stopper.kill();
            return Err(io_failure(Side::Destination, &config.destination.name, e));
        }
    };
    Ok((source, destination))
}

/// The coordinator's view of the attempt.
struct Attempt<'a> {
    config: &'a SyncConfig,
    ledger: Ledger,
    failures: Vec<AttemptFailure>,
    cancelled: bool,
    stderr_tail: [VecDeque<String>; 2],
}

impl Attempt<'_> {
    fn name(&self, side: Side) -> &str {
        match side {
            Side::Source => &self.config.source.name,
            Side::Destination => &self.config.destination.name,
            Side::Orchestrator => "orchestrator",
        }
    }

    fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    fn fail(&mut self, mut failure: AttemptFailure) {
        if failure.connector.is_empty() {
            failure.connector = self.name(failure.side).to_owned();
        }
        if !self.cancelled {
            self.failures.push(failure);
        }
    }

    fn log(&self, reporter: &mut dyn Reporter, side: Side, level: LogLevel, message: &str) {
        reporter.log(side, self.name(side), &level, message);
    }

    fn stderr(&mut self, reporter: &mut dyn Reporter, side: Side, line: String) {
        self.log(reporter, side, LogLevel::Info, &line);
        let tail = &mut self.stderr_tail[(side != Side::Source) as usize];
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }

    fn stderr_tail(&self, side: Side) -> String {
        let tail = &self.stderr_tail[(side != Side::Source) as usize];
        tail.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
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

/// Stopping the connectors: SIGTERM, then SIGKILL once their time is up.
struct Stop {
    since: Instant,
    grace: Duration,
    /// How long the destination may take to finish; longer after a source failure.
    destination_patience: Duration,
    source_killed: bool,
    destination_killed: bool,
}

impl Stop {
    fn begin(stoppers: &[Stopper; 2], source_only: bool, limits: &Limits) -> Self {
        let grace = Duration::from_secs(limits.shutdown_grace_secs);
        stoppers[0].terminate();
        if !source_only {
            stoppers[1].terminate();
        }
        let destination_patience = if source_only { grace.max(Duration::from_secs(limits.destination_idle_timeout_secs)) } else { grace };
        Stop { since: Instant::now(), grace, destination_patience, source_killed: false, destination_killed: false }
    }

    /// Kills what outlived its time; true once even killed connectors had
    /// their chance to go and the coordinator should stop waiting.
    fn escalate(&mut self, stoppers: &[Stopper; 2]) -> bool {
        let elapsed = self.since.elapsed();
        if !self.source_killed && elapsed >= self.grace {
            stoppers[0].kill();
            self.source_killed = true;
        }
        if !self.destination_killed && elapsed >= self.destination_patience {
            stoppers[1].kill();
            self.destination_killed = true;
        }
        elapsed >= self.destination_patience + self.grace
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

    fn check(&mut self, probes: &Probes, config: &SyncConfig, source_done: bool, destination_done: bool) -> Option<AttemptFailure> {
        let now = Instant::now();
        let lines = probes.source_lines.load(Relaxed);
        let blocked_on_destination = probes.writing.load(Relaxed);
        if lines != self.source_seen.0 || blocked_on_destination || source_done {
            self.source_seen = (lines, now);
        }
        let activity = probes.destination_activity.load(Relaxed);
        // The destination is only late when it holds us up: blocked on its
        // input, or the source is done and it has not finished.
        let waiting_on_destination = blocked_on_destination || (source_done && !destination_done);
        if activity != self.destination_seen.0 || !waiting_on_destination {
            self.destination_seen = (activity, now);
        }
        let limits = &config.limits;
        if now - self.source_seen.1 >= Duration::from_secs(limits.source_idle_timeout_secs) {
            let message = format!("no RECORD or STATE for {} s (the source idle timeout)", limits.source_idle_timeout_secs);
            return Some(AttemptFailure::new(Side::Source, &config.source.name, FailureKind::SourceTimeout, message).at_line(lines));
        }
        if now - self.destination_seen.1 >= Duration::from_secs(limits.destination_idle_timeout_secs) {
            let message = format!(
                "neither accepted input nor answered for {} s (the destination idle timeout)",
                limits.destination_idle_timeout_secs
            );
            return Some(AttemptFailure::new(Side::Destination, &config.destination.name, FailureKind::DestinationTimeout, message));
        }
        None
    }
}
