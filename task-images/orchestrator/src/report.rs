//! Where an attempt's logs, committed state, config updates and progress go.
//!
//! One small port: `sluice sync` writes files and draws progress on a
//! terminal; in a task the same calls go to the workload API.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sluice_protocol::{AirbyteStateMessage, LogLevel};

use crate::ledger::StreamSummary;
use crate::outcome::Side;

/// A snapshot of the attempt for progress displays and heartbeats.
pub struct Progress<'a> {
    pub streams: &'a [StreamSummary],
    pub elapsed: Duration,
    pub states_committed: u64,
}

pub trait Reporter {
    /// One line for the attempt log.
    fn log(&mut self, side: Side, connector: &str, level: &LogLevel, message: &str);
    /// The committed state changed; this is the whole state to resume from.
    fn state_committed(&mut self, state: &[AirbyteStateMessage]) -> io::Result<()>;
    /// A connector replaced its own configuration (a CONTROL message).
    fn config_updated(&mut self, side: Side, connector: &str, config: &Value) -> io::Result<()>;
    /// Called about once a second while the attempt runs.
    fn progress(&mut self, _progress: &Progress<'_>) {}
}

/// Writes the attempt log to a writer and state and configs to files.
pub struct FileReporter {
    pub log: Box<dyn Write + Send>,
    pub state_file: Option<PathBuf>,
    /// Where each side's updated config goes; `None` keeps updates in the log only.
    pub source_config_file: Option<PathBuf>,
    pub destination_config_file: Option<PathBuf>,
}

impl Reporter for FileReporter {
    fn log(&mut self, side: Side, connector: &str, level: &LogLevel, message: &str) {
        let _ = writeln!(self.log, "{} {level:<5} {side} {connector}: {message}", utc_now());
    }

    fn state_committed(&mut self, state: &[AirbyteStateMessage]) -> io::Result<()> {
        match &self.state_file {
            Some(path) => write_atomically(path, &serde_json::to_vec_pretty(state)?),
            None => Ok(()),
        }
    }

    fn config_updated(&mut self, side: Side, connector: &str, config: &Value) -> io::Result<()> {
        let file = match side {
            Side::Source => self.source_config_file.clone(),
            _ => self.destination_config_file.clone(),
        };
        let target = file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "nowhere (no config file)".into());
        self.log(side, connector, &LogLevel::Info, &format!("connector updated its config; saved to {target}"));
        match file {
            Some(path) => write_atomically(&path, &serde_json::to_vec_pretty(config)?),
            None => Ok(()),
        }
    }
}

/// Replaces a file's content so that readers see the old or the new, never half.
pub fn write_atomically(path: &Path, content: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp~");
    let mut file = OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(content)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The current time for log lines.
pub fn utc_now() -> String {
    sluice_protocol::time::format_utc_millis(sluice_protocol::now_millis())
}
