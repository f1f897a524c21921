//! The bookkeeper: runs one sync attempt in socket mode. The records go
//! from the source straight to the destination over Unix sockets; the
//! bookkeeper never sees one. It reads both connectors' stdout:
//!
//! - the source's: copies of its STATEs (with `id`, `partition_id` and
//!   `sourceStats.recordCount`), logs, traces and control messages;
//! - the destination's: the STATEs it released once it stored their
//!   records, its stats-only RECORDs (per-stream counts), logs and traces.
//!
//! A STATE is committed when the destination released it (or a later id),
//! and only if the destination stored as many records as the source sent
//! for it. The coordinator, the ledger, timeouts, cancellation and the
//! reporting to the workload API are the orchestrator's
//! ([`sluice_orchestrator::coordinate`]); this crate is the socket-mode
//! data plane, and it holds no record: its memory is one line buffer per
//! stdout, whatever the volume.

use std::io::Read;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::thread;

use sluice_orchestrator::pump::{self, Event, Probes};
use sluice_orchestrator::{AttemptFailure, FailureKind, Outcome, PlaneIo, Reporter, Side, SyncConfig};
use sluice_protocol::{peek, AirbyteMessage, Kind, LineError, LineReader};

/// Runs one socket-mode attempt to its end.
pub fn run(config: &SyncConfig, reporter: &mut dyn Reporter, cancel: &AtomicBool) -> Outcome {
    if config.data_channel.is_none() {
        // The coordinator would start the connectors in legacy mode with
        // nobody moving records: refuse instead.
        return sluice_orchestrator::refuse(config, "this sync config names no data channel: it runs in legacy mode, with the orchestrator");
    }
    sluice_orchestrator::coordinate(config, reporter, cancel, socket_plane)
}

fn socket_plane(config: &SyncConfig, io: PlaneIo) {
    // The destination reads its sockets, never its stdin: close it now.
    drop(io.destination_stdin);
    let limit = config.limits.max_line_bytes;
    {
        let (events, probes, name) = (io.events.clone(), io.probes.clone(), config.source.name.clone());
        let stdout = io.source_stdout;
        thread::spawn(move || {
            let result = source_output(stdout, limit, &name, &probes, &events);
            let _ = events.send(Event::PumpEnded(result));
        });
    }
    sluice_orchestrator::read_destination_output(io.destination_stdout, limit, io.probes, io.events);
}

/// Reads the source's stdout in socket mode. A RECORD here is an error: in
/// socket mode records travel on the sockets, and one that came this way
/// would reach no destination.
fn source_output(stdout: Box<dyn Read + Send>, limit: usize, name: &str, probes: &Probes, events: &Sender<Event>) -> Result<(), AttemptFailure> {
    let mut lines = LineReader::new(stdout, limit);
    let fail = |kind: FailureKind, line: u64, text: String| AttemptFailure::new(Side::Source, name, kind, text).at_line(line);
    loop {
        let (number, line) = match lines.next_line(|| Ok(())) {
            Ok(Some(next)) => next,
            Ok(None) => return Ok(()),
            Err(LineError::TooLong { line, limit }) => return Err(fail(FailureKind::LineTooLong, line, format!("a line longer than {limit} bytes"))),
            Err(LineError::Io(e)) => return Err(fail(FailureKind::Io, lines.line_number(), format!("reading stdout: {e}"))),
        };
        // Any line is a sign of life: the records themselves are out of sight.
        probes.source_lines.store(number, Relaxed);
        let kind = match peek(line) {
            Ok(head) => head.kind,
            Err(e) => return Err(fail(FailureKind::InvalidMessage, number, format!("not a protocol message: {e}"))),
        };
        match kind {
            Kind::Record => {
                return Err(fail(
                    FailureKind::InvalidMessage,
                    number,
                    "a RECORD on stdout: in socket mode records go on the data-channel sockets, and this one would reach no destination".into(),
                ))
            }
            Kind::State | Kind::Log | Kind::Trace | Kind::Control => {
                let message: AirbyteMessage =
                    serde_json::from_slice(line).map_err(|e| fail(FailureKind::InvalidMessage, number, format!("invalid message: {e}")))?;
                let event = match message.state {
                    Some(state) => {
                        let id = state.id.ok_or_else(|| {
                            fail(FailureKind::InvalidMessage, number, "a STATE without `id`: in socket mode the source numbers its states".into())
                        })?;
                        Event::SourceState { id, state: Box::new(state) }
                    }
                    None => Event::Message(Side::Source, Box::new(message)),
                };
                let _ = events.send(event);
            }
            other => {
                let _ = events.send(Event::Ignored { side: Side::Source, kind: pump::kind_name(other), line: number });
            }
        }
    }
}
