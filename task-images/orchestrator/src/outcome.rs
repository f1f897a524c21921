//! How an attempt ended, and why.

use serde::Serialize;
use sluice_protocol::{AirbyteStateMessage, FailureType};

use crate::ledger::StreamSummary;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Source,
    Destination,
    Orchestrator,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
            Side::Orchestrator => "orchestrator",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The connector reported a TRACE ERROR.
    ConnectorError,
    /// The connector exited with a non-zero status or was killed.
    Crashed,
    /// A line that is not a protocol message.
    InvalidMessage,
    NotUtf8,
    LineTooLong,
    /// No RECORD or STATE from the source within its idle timeout.
    SourceTimeout,
    /// The destination neither accepted input nor answered within its idle timeout.
    DestinationTimeout,
    /// The destination closed its input before the source was done.
    StoppedReading,
    Io,
}

impl FailureKind {
    /// When several failures happen, the one with the highest rank is the
    /// attempt's reason: a connector's own words beat its exit status, which
    /// beats the broken pipe that followed from it.
    fn rank(self) -> u8 {
        match self {
            FailureKind::ConnectorError => 3,
            FailureKind::StoppedReading => 1,
            _ => 2,
        }
    }
}

/// Why an attempt failed, naming the connector, the stream and the line.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptFailure {
    pub side: Side,
    pub connector: String,
    pub kind: FailureKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The line of the connector's stdout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_type: Option<FailureType>,
}

impl AttemptFailure {
    pub fn new(side: Side, connector: &str, kind: FailureKind, message: String) -> Self {
        AttemptFailure { side, connector: connector.to_owned(), kind, message, stream: None, line: None, failure_type: None }
    }
    pub fn at_line(mut self, line: u64) -> Self {
        self.line = Some(line);
        self
    }
    pub fn in_stream(mut self, stream: Option<String>) -> Self {
        self.stream = stream;
        self
    }
    pub fn outranks(&self, other: &AttemptFailure) -> bool {
        self.kind.rank() > other.kind.rank()
    }
}

impl std::fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The orchestrator's own failures name it once, not as "orchestrator orchestrator".
        if self.side.to_string() == self.connector {
            write!(f, "{}", self.side)?;
        } else {
            write!(f, "{} {}", self.side, self.connector)?;
        }
        if let Some(line) = self.line {
            write!(f, " stdout line {line}")?;
        }
        if let Some(stream) = &self.stream {
            write!(f, " (stream {stream})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for AttemptFailure {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    Succeeded,
    Failed,
    Cancelled,
}

/// The attempt's result: status, reason, per-stream counts and the state to resume from.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub status: AttemptStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<AttemptFailure>,
    /// Failures that followed from the first one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_failures: Vec<AttemptFailure>,
    pub streams: Vec<StreamSummary>,
    pub records_filtered: u64,
    pub states_emitted: u64,
    pub states_committed: u64,
    /// The last committed state: what the next attempt resumes from.
    pub state: Vec<AirbyteStateMessage>,
    pub elapsed_secs: f64,
    /// The orchestrator process's own peak resident memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
}

impl Outcome {
    pub fn records_committed(&self) -> u64 {
        self.streams.iter().map(|s| s.committed.records).sum()
    }
    pub fn records_emitted(&self) -> u64 {
        self.streams.iter().map(|s| s.emitted.records).sum()
    }
}

/// This process's peak resident set size, from `/proc/self/status`.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
