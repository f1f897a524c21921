//! Progress on a terminal: one line per stream, redrawn about once a second.

use std::io::{self, Write};

use serde_json::Value;
use sluice_orchestrator::{FileReporter, Progress, Reporter, Side};
use sluice_protocol::{AirbyteStateMessage, LogLevel};

/// Writes everything to files like [`FileReporter`], and draws progress when
/// stderr is a terminal. Connector errors are shown as they happen.
pub struct Terminal {
    files: FileReporter,
    draw: bool,
    drawn_lines: usize,
    /// Records emitted per stream at the previous redraw, and when: rates are recent, not averages.
    previous: Option<(std::time::Duration, Vec<u64>)>,
}

impl Terminal {
    pub fn new(files: FileReporter, draw: bool) -> Self {
        Terminal { files, draw, drawn_lines: 0, previous: None }
    }

    /// Removes the progress lines, before the summary is printed.
    pub fn clear(&mut self) {
        if self.drawn_lines > 0 {
            eprint!("\x1b[{}A\x1b[J", self.drawn_lines);
            self.drawn_lines = 0;
        }
    }
}

impl Reporter for Terminal {
    fn log(&mut self, side: Side, connector: &str, level: &LogLevel, message: &str) {
        if matches!(level, LogLevel::Error | LogLevel::Fatal) {
            self.clear();
            eprintln!("{side} {connector}: {message}");
        }
        self.files.log(side, connector, level, message);
    }

    fn state_committed(&mut self, state: &[AirbyteStateMessage]) -> io::Result<()> {
        self.files.state_committed(state)
    }

    fn config_updated(&mut self, side: Side, connector: &str, config: &Value) -> io::Result<()> {
        self.files.config_updated(side, connector, config)
    }

    fn progress(&mut self, progress: &Progress<'_>) {
        if !self.draw {
            return;
        }
        let (since, before) = self.previous.take().unwrap_or_default();
        let secs = (progress.elapsed - since).as_secs_f64().max(1e-9);
        let mut screen = String::new();
        for (i, s) in progress.streams.iter().enumerate() {
            let recent = s.emitted.records - before.get(i).copied().unwrap_or(0);
            let estimate = s.estimated_records.map(|e| format!(" of ~{e}")).unwrap_or_default();
            screen.push_str(&format!(
                "  {:<24} {:>11} records{estimate}  {:>9.1} MB  {:>9.0} rec/s  {:>11} committed\n",
                s.stream.to_string(),
                s.emitted.records,
                s.emitted.bytes as f64 / 1e6,
                recent as f64 / secs,
                s.committed.records
            ));
        }
        self.previous = Some((progress.elapsed, progress.streams.iter().map(|s| s.emitted.records).collect()));
        self.clear();
        let mut err = io::stderr().lock();
        let _ = err.write_all(screen.as_bytes());
        self.drawn_lines = progress.streams.len();
    }
}
