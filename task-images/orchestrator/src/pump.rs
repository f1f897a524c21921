//! The data plane: source stdout -> destination stdin, and destination
//! stdout back to the books. Each runs on its own thread; both report to the
//! coordinator through [`Event`]s.

use std::collections::HashMap;
use std::io::{self, BufWriter, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use sluice_protocol::{peek, AirbyteMessage, Kind, LineError, LineReader, StreamDescriptor};

use crate::config::SyncConfig;
use crate::ledger::Counts;
use crate::outcome::{AttemptFailure, FailureKind, Side};

/// What the data-plane threads tell the coordinator.
pub enum Event {
    /// Records (per stream index) and records of unknown streams, since the last report.
    Emitted { counts: Vec<(usize, Counts)>, filtered: u64 },
    /// The first record of a stream that is not in the catalog; it is dropped.
    Filtered(StreamDescriptor),
    /// A line worth a log entry that is no message, e.g. junk on the destination's stdout.
    Note(Side, sluice_protocol::LogLevel, String),
    SourceState { id: u64, state: Box<sluice_protocol::AirbyteStateMessage> },
    Echo(Box<sluice_protocol::AirbyteStateMessage>),
    /// Socket mode: the destination's stats-only RECORD, its counts of a stream so far.
    DestinationStats { stream: StreamDescriptor, counts: Counts },
    /// LOG, TRACE or CONTROL from a connector.
    Message(Side, Box<AirbyteMessage>),
    Stderr(Side, String),
    Ignored { side: Side, kind: String, line: u64 },
    /// The pump stopped: the source's output ended (Ok) or could not be
    /// delivered. Either way the destination's stdin is closed.
    PumpEnded(Result<(), AttemptFailure>),
    /// The destination's stdout ended, or held something that is no message.
    DestinationOutputEnded(Result<(), AttemptFailure>),
    /// How it ended, and what its container runtime saw of that, if anything.
    Exited(Side, crate::connector::Exit, Option<String>),
}

/// Liveness counters the coordinator watches for timeouts, without locks.
#[derive(Default)]
pub struct Probes {
    /// The line number of the source's last RECORD or STATE: its heartbeat.
    pub source_lines: AtomicU64,
    pub destination_activity: AtomicU64,
    pub writing: AtomicBool,
}

/// Where each stream's records go: its index in the books and its field selection.
pub struct Routes {
    by_name: HashMap<String, Vec<(Option<String>, usize)>>,
    fields: Vec<Option<Vec<String>>>,
    pending: Vec<Counts>,
    filtered: u64,
    filtered_seen: Vec<StreamDescriptor>,
}

impl Routes {
    pub fn new(config: &SyncConfig) -> (Self, Vec<StreamDescriptor>) {
        let descriptors: Vec<StreamDescriptor> = config.catalog.streams.iter().map(|s| s.stream.descriptor()).collect();
        let mut by_name: HashMap<String, Vec<(Option<String>, usize)>> = HashMap::new();
        for (index, d) in descriptors.iter().enumerate() {
            by_name.entry(d.name.clone()).or_default().push((d.namespace.clone(), index));
        }
        let fields = descriptors
            .iter()
            .map(|d| config.selected_fields.iter().find(|s| &s.stream == d).map(|s| s.fields.clone()))
            .collect();
        let routes = Routes { by_name, fields, pending: vec![Counts::default(); descriptors.len()], filtered: 0, filtered_seen: Vec::new() };
        (routes, descriptors)
    }

    fn find(&self, name: &str, namespace: Option<&str>) -> Option<usize> {
        self.by_name.get(name)?.iter().find(|(ns, _)| ns.as_deref() == namespace).map(|&(_, i)| i)
    }

    /// Hands the counts gathered since the last call to the coordinator.
    fn publish(&mut self, events: &Sender<Event>) {
        let counts: Vec<(usize, Counts)> =
            self.pending.iter_mut().enumerate().filter(|(_, c)| c.records > 0).map(|(i, c)| (i, std::mem::take(c))).collect();
        let filtered = std::mem::take(&mut self.filtered);
        if !counts.is_empty() || filtered > 0 {
            let _ = events.send(Event::Emitted { counts, filtered });
        }
    }
}

/// Counts bytes that reach the destination and flags time spent blocked on it.
struct DestinationPipe<'a> {
    inner: Box<dyn Write + Send>,
    probes: &'a Probes,
}

impl Write for DestinationPipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.probes.writing.store(true, Relaxed);
        let written = self.inner.write(buf);
        self.probes.writing.store(false, Relaxed);
        self.probes.destination_activity.fetch_add(1, Relaxed);
        written
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

const PUBLISH_EVERY: Duration = Duration::from_millis(500);

/// Moves the source's output to the destination until the source ends.
///
/// RECORD lines pass through as the bytes the source wrote, unless the
/// stream has a field selection. Every STATE gets the next `id` before it is
/// forwarded, so the destination's echo can be matched. LOG, TRACE and
/// CONTROL go to the coordinator. The destination's stdin is closed on return.
pub fn source_to_destination(
    source: Box<dyn Read + Send>,
    destination: Box<dyn Write + Send>,
    mut routes: Routes,
    max_line_bytes: usize,
    source_name: &str,
    probes: &Probes,
    events: &Sender<Event>,
) -> Result<(), AttemptFailure> {
    let result = pump(source, destination, &mut routes, max_line_bytes, source_name, probes, events);
    // Whatever stopped the pump, what it already counted is reported.
    routes.publish(events);
    result
}

fn pump(
    source: Box<dyn Read + Send>,
    destination: Box<dyn Write + Send>,
    routes: &mut Routes,
    max_line_bytes: usize,
    source_name: &str,
    probes: &Probes,
    events: &Sender<Event>,
) -> Result<(), AttemptFailure> {
    let mut lines = LineReader::new(source, max_line_bytes);
    let mut out = BufWriter::with_capacity(256 * 1024, DestinationPipe { inner: destination, probes });
    let mut write_error: Option<io::Error> = None;
    let mut next_state_id = 1;
    let mut current_stream: Option<String> = None;
    let mut last_publish = Instant::now();
    let fail = |kind, line, stream: &Option<String>, message: String| {
        AttemptFailure::new(Side::Source, source_name, kind, message).at_line(line).in_stream(stream.clone())
    };
    loop {
        // Flush before blocking on the source, so records never wait in our buffer.
        let next = lines.next_line(|| out.flush().map_err(|e| io::Error::other(write_error.insert(e).to_string())));
        let (number, line) = match next {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(_) if write_error.is_some() => return Err(destination_gone(write_error.take(), lines.line_number())),
            Err(LineError::TooLong { line, limit }) => {
                let message = format!("message longer than the limit of {limit} bytes");
                return Err(fail(FailureKind::LineTooLong, line, &current_stream, message));
            }
            Err(LineError::Io(e)) => return Err(fail(FailureKind::Io, lines.line_number(), &current_stream, format!("reading stdout: {e}"))),
        };
        let head = peek(line).map_err(|e| fail(invalid_kind(&e), number, &current_stream, e.to_string()))?;
        let written = match head.kind {
            Kind::Record => {
                probes.source_lines.store(number, Relaxed);
                let (name, namespace) = head.stream.expect("peek gives a record its stream");
                if current_stream.as_deref() != Some(&name) {
                    current_stream = Some(name.to_string());
                }
                match routes.find(&name, namespace.as_deref()) {
                    Some(index) => {
                        let (written, bytes) = match &routes.fields[index] {
                            None => (write_line(&mut out, line), line.len()),
                            Some(fields) => {
                                let selected = select_fields(line, fields).map_err(|e| fail(FailureKind::InvalidMessage, number, &current_stream, e))?;
                                (write_line(&mut out, selected.as_bytes()), selected.len())
                            }
                        };
                        routes.pending[index].add(Counts { records: 1, bytes: bytes as u64 });
                        written
                    }
                    None => {
                        routes.filtered += 1;
                        let stream = StreamDescriptor::new(name.as_ref(), namespace.map(|n| n.into_owned()));
                        if !routes.filtered_seen.contains(&stream) {
                            routes.filtered_seen.push(stream.clone());
                            let _ = events.send(Event::Filtered(stream));
                        }
                        Ok(())
                    }
                }
            }
            Kind::State => {
                probes.source_lines.store(number, Relaxed);
                let mut message: AirbyteMessage = serde_json::from_slice(line)
                    .map_err(|e| fail(FailureKind::InvalidMessage, number, &current_stream, format!("invalid STATE: {e}")))?;
                let Some(state) = message.state.as_mut() else {
                    return Err(fail(FailureKind::InvalidMessage, number, &current_stream, "a STATE without a `state` object".into()));
                };
                state.id = Some(next_state_id);
                let state = Box::new(state.clone());
                routes.publish(events);
                let _ = events.send(Event::SourceState { id: next_state_id, state });
                next_state_id += 1;
                write_line(&mut out, message.to_line().as_bytes()).and_then(|()| out.flush())
            }
            Kind::Log | Kind::Trace | Kind::Control => {
                let message: AirbyteMessage = serde_json::from_slice(line)
                    .map_err(|e| fail(FailureKind::InvalidMessage, number, &current_stream, e.to_string()))?;
                // Stream statuses go on to the destination too, in order with the records:
                // a destination replaces a stream's data only once it saw the stream COMPLETE.
                let status = message.trace.as_ref().is_some_and(|t| t.kind == sluice_protocol::TraceType::StreamStatus);
                let _ = events.send(Event::Message(Side::Source, Box::new(message)));
                if status { write_line(&mut out, line) } else { Ok(()) }
            }
            other => {
                let _ = events.send(Event::Ignored { side: Side::Source, kind: kind_name(other), line: number });
                Ok(())
            }
        };
        if let Err(e) = written {
            return Err(destination_gone(Some(e), number));
        }
        if number % 1024 == 0 && last_publish.elapsed() >= PUBLISH_EVERY {
            routes.publish(events);
            last_publish = Instant::now();
        }
    }
    out.flush().map_err(|e| destination_gone(Some(e), lines.line_number()))
}

fn invalid_kind(error: &sluice_protocol::PeekError) -> FailureKind {
    match error {
        sluice_protocol::PeekError::NotUtf8(_) => FailureKind::NotUtf8,
        _ => FailureKind::InvalidMessage,
    }
}

fn write_line(out: &mut impl Write, line: &[u8]) -> io::Result<()> {
    out.write_all(line)?;
    out.write_all(b"\n")
}

/// A record keeping only the selected top-level fields of `data`.
fn select_fields(line: &[u8], fields: &[String]) -> Result<String, String> {
    let mut message: AirbyteMessage = serde_json::from_slice(line).map_err(|e| format!("invalid RECORD: {e}"))?;
    let record = message.record.as_mut().ok_or("a RECORD without a `record` object")?;
    let data = record.data.as_object_mut().ok_or("record `data` is not an object")?;
    data.retain(|key, _| fields.iter().any(|f| f == key));
    Ok(message.to_line())
}

fn destination_gone(error: Option<io::Error>, source_line: u64) -> AttemptFailure {
    let why = error.map(|e| e.to_string()).unwrap_or_default();
    AttemptFailure::new(
        Side::Destination,
        "",
        FailureKind::StoppedReading,
        format!("stopped reading its input ({why}) while source line {source_line} was being delivered"),
    )
}

pub fn kind_name(kind: Kind<'_>) -> String {
    match kind {
        Kind::Record => "RECORD".into(),
        Kind::State => "STATE".into(),
        Kind::Log => "LOG".into(),
        Kind::Trace => "TRACE".into(),
        Kind::Control => "CONTROL".into(),
        Kind::Spec => "SPEC".into(),
        Kind::Catalog => "CATALOG".into(),
        Kind::ConnectionStatus => "CONNECTION_STATUS".into(),
        Kind::Other(other) => other.to_string(),
    }
}

/// Reads the destination's output: echoed states, logs, traces. As Airbyte
/// does, a line that is no protocol message is logged, not fatal: the
/// destination's stdout carries no data, only acknowledgements.
pub fn destination_output(stdout: Box<dyn Read + Send>, max_line_bytes: usize, probes: &Probes, events: &Sender<Event>) -> Result<(), AttemptFailure> {
    let mut lines = LineReader::new(stdout, max_line_bytes);
    let note = |text: String| {
        let _ = events.send(Event::Note(Side::Destination, sluice_protocol::LogLevel::Warn, text));
    };
    loop {
        let (number, line) = match lines.next_line(|| Ok(())) {
            Ok(Some(next)) => next,
            Ok(None) => return Ok(()),
            Err(LineError::TooLong { line, limit }) => {
                note(format!("stdout line {line} is longer than {limit} bytes; skipped"));
                continue;
            }
            Err(LineError::Io(e)) => {
                return Err(AttemptFailure::new(Side::Destination, "", FailureKind::Io, format!("reading stdout: {e}")).at_line(lines.line_number()))
            }
        };
        probes.destination_activity.fetch_add(1, Relaxed);
        let message = match peek(line) {
            Ok(head) if matches!(head.kind, Kind::State | Kind::Log | Kind::Trace | Kind::Control) => serde_json::from_slice::<AirbyteMessage>(line),
            Ok(head) if head.kind == Kind::Record => {
                match serde_json::from_slice::<AirbyteMessage>(line).ok().and_then(|m| m.record).and_then(stats_only) {
                    Some((stream, counts)) => {
                        let _ = events.send(Event::DestinationStats { stream, counts });
                    }
                    None => {
                        let _ = events.send(Event::Ignored { side: Side::Destination, kind: "RECORD".into(), line: number });
                    }
                }
                continue;
            }
            Ok(head) => {
                let _ = events.send(Event::Ignored { side: Side::Destination, kind: kind_name(head.kind), line: number });
                continue;
            }
            Err(e) => {
                note(format!("stdout line {number} is not a protocol message ({e}): {}", String::from_utf8_lossy(&line[..line.len().min(500)])));
                continue;
            }
        };
        match message {
            Ok(message) => {
                let event = match message.state {
                    Some(state) => Event::Echo(Box::new(state)),
                    None => Event::Message(Side::Destination, Box::new(message)),
                };
                let _ = events.send(event);
            }
            Err(e) => note(format!("stdout line {number} is not a valid message: {e}")),
        }
    }
}

/// Airbyte's stats-only RECORD (`isDummyStatsMessage`): a socket-mode
/// destination's counts of a stream so far.
fn stats_only(record: sluice_protocol::AirbyteRecordMessage) -> Option<(StreamDescriptor, Counts)> {
    let extra = &record.extra;
    if extra.get("isDummyStatsMessage").and_then(|v| v.as_bool()) != Some(true) {
        return None;
    }
    let count = |key: &str| extra.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
    let counts = Counts { records: count("emittedRecordsCount"), bytes: count("emittedBytesCount") };
    Some((StreamDescriptor::new(record.stream, record.namespace), counts))
}

/// Forwards a connector's stderr, line by line, as log lines.
pub fn stderr_lines(stderr: Box<dyn Read + Send>, side: Side, events: &Sender<Event>) {
    let mut lines = LineReader::new(stderr, 64 * 1024);
    loop {
        match lines.next_line(|| Ok(())) {
            Ok(Some((_, line))) => {
                let _ = events.send(Event::Stderr(side, String::from_utf8_lossy(line).into_owned()));
            }
            Ok(None) | Err(LineError::Io(_)) => return,
            // A huge stderr line is cut, not fatal: stderr is only for people.
            Err(LineError::TooLong { .. }) => {
                let _ = events.send(Event::Stderr(side, "(a stderr line over 64 KiB was dropped)".into()));
            }
        }
    }
}
