//! What every reference connector shares: the protocol's command line
//! (`spec`, `check`, `discover`, `read`, `write`), buffered protocol output,
//! and the rule that a failure ends as a TRACE ERROR plus exit status 1.

pub mod sockets;

#[doc(hidden)]
pub use mimalloc;

/// A connector binary's `main`: runs `$run` on the command line's arguments
/// and exits with its status, on mimalloc, the allocator of the `sluice`
/// binary that runs the same connector as a local process; so a connector
/// in its image is the program `sluice connector` runs, allocator and all.
#[macro_export]
macro_rules! connector_main {
    ($run:path) => {
        #[global_allocator]
        static ALLOCATOR: $crate::mimalloc::MiMalloc = $crate::mimalloc::MiMalloc;

        fn main() {
            let args: Vec<String> = std::env::args().skip(1).collect();
            std::process::exit($run(&args));
        }
    };
}

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use sluice_protocol::{AirbyteMessage, AirbyteTraceMessage, FailureType, LogLevel};

/// One invocation of a connector, as the protocol defines its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Spec,
    Check { config: PathBuf },
    Discover { config: PathBuf },
    Read { config: PathBuf, catalog: PathBuf, state: Option<PathBuf> },
    Write { config: PathBuf, catalog: PathBuf },
}

/// An error that ends the run, with the failure type Airbyte's retry rules read.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub failure_type: FailureType,
}

impl Failure {
    pub fn config(message: impl Into<String>) -> Self {
        Failure { message: message.into(), failure_type: FailureType::ConfigError }
    }
    pub fn system(message: impl Into<String>) -> Self {
        Failure { message: message.into(), failure_type: FailureType::SystemError }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::system(e.to_string())
    }
}

pub fn parse_args(args: &[String]) -> Result<Command, String> {
    let (command, rest) = args.split_first().ok_or("missing command: expected one of spec, check, discover, read, write")?;
    let mut flags = std::collections::HashMap::new();
    let mut iter = rest.iter();
    while let Some(flag) = iter.next() {
        let name = flag.strip_prefix("--").ok_or_else(|| format!("unexpected argument `{flag}`"))?;
        let value = iter.next().ok_or_else(|| format!("flag --{name} needs a value"))?;
        flags.insert(name.to_owned(), PathBuf::from(value));
    }
    let mut take = |name: &str| flags.remove(name);
    let need = |value: Option<PathBuf>, name: &str| value.ok_or_else(|| format!("`{command}` needs --{name} FILE"));
    let parsed = match command.as_str() {
        "spec" => Command::Spec,
        "check" => Command::Check { config: need(take("config"), "config")? },
        "discover" => Command::Discover { config: need(take("config"), "config")? },
        "read" => Command::Read {
            config: need(take("config"), "config")?,
            catalog: need(take("catalog"), "catalog")?,
            state: take("state"),
        },
        "write" => Command::Write { config: need(take("config"), "config")?, catalog: need(take("catalog"), "catalog")? },
        other => return Err(format!("unknown command `{other}`: expected one of spec, check, discover, read, write")),
    };
    if let Some(extra) = flags.keys().next() {
        return Err(format!("`{command}` does not take --{extra}"));
    }
    Ok(parsed)
}

/// Reads a JSON file named on the command line, saying which file and why when it cannot.
pub fn read_json<T: DeserializeOwned>(what: &str, path: &Path) -> Result<T, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::config(format!("cannot read {what} file {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Failure::config(format!("{what} file {} is not valid: {e}", path.display())))
}

/// Protocol output on stdout, buffered; every message is one line.
pub struct Output {
    out: BufWriter<io::Stdout>,
}

impl Output {
    pub fn new() -> Self {
        Output { out: BufWriter::with_capacity(256 * 1024, io::stdout()) }
    }
    pub fn message(&mut self, message: &AirbyteMessage) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, message)?;
        self.out.write_all(b"\n")
    }
    pub fn log(&mut self, level: LogLevel, text: impl Into<String>) -> io::Result<()> {
        self.message(&AirbyteMessage::log(level, text))
    }
    /// A stream's STARTED, COMPLETE or INCOMPLETE, as a TRACE.
    pub fn stream_status(&mut self, stream: &sluice_protocol::StreamDescriptor, status: sluice_protocol::StreamStatus) -> io::Result<()> {
        let trace = AirbyteTraceMessage::stream_status(sluice_protocol::now_millis() as f64, stream.clone(), status);
        self.message(&AirbyteMessage::trace(trace))
    }
    /// The answer to `check`: SUCCEEDED, or FAILED with the failure's message.
    pub fn check_result(&mut self, result: Result<(), Failure>) -> io::Result<()> {
        use sluice_protocol::ConnectionStatusKind::{Failed, Succeeded};
        self.message(&match result {
            Ok(()) => AirbyteMessage::connection_status(Succeeded, None),
            Err(failure) => AirbyteMessage::connection_status(Failed, Some(failure.message)),
        })
    }
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
    /// The underlying buffered writer, for connectors that format records themselves.
    pub fn writer(&mut self) -> &mut BufWriter<io::Stdout> {
        &mut self.out
    }
}

impl Default for Output {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs a connector's body and turns its outcome into an exit status: a
/// usage error exits 2, a failure prints a TRACE ERROR and exits 1.
pub fn main(name: &str, args: &[String], body: impl FnOnce(Command, &mut Output) -> Result<(), Failure>) -> i32 {
    let command = match parse_args(args) {
        Ok(command) => command,
        Err(usage) => {
            eprintln!("{name}: {usage}");
            return 2;
        }
    };
    let mut out = Output::new();
    let result = body(command, &mut out);
    let status = match result {
        Ok(()) => 0,
        Err(failure) => {
            let trace = AirbyteTraceMessage::error(sluice_protocol::now_millis() as f64, &failure.message, failure.failure_type);
            let _ = out.message(&AirbyteMessage::trace(trace));
            eprintln!("{name}: {}", failure.message);
            1
        }
    };
    match out.flush() {
        Ok(()) => status,
        // The reader went away; nothing more can be said on stdout.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => status.max(1),
        Err(e) => {
            eprintln!("{name}: cannot write to stdout: {e}");
            1
        }
    }
}

/// The largest line a reference destination accepts on stdin.
pub const MAX_INPUT_LINE_BYTES: usize = 256 * 1024 * 1024;

/// Feeds every message on stdin to `handle`, parsed, with its line number.
/// A line that is not a protocol message is a failure naming that line.
pub fn each_input_message(mut handle: impl FnMut(u64, AirbyteMessage) -> Result<(), Failure>) -> Result<(), Failure> {
    each_input_line(|number, line| handle(number, parse_message(number, line)?))
}

/// Feeds every line on stdin to `handle`, with its line number.
pub fn each_input_line(mut handle: impl FnMut(u64, &[u8]) -> Result<(), Failure>) -> Result<(), Failure> {
    let stdin = io::stdin().lock();
    let mut lines = sluice_protocol::LineReader::new(stdin, MAX_INPUT_LINE_BYTES);
    loop {
        let (number, line) = match lines.next_line(|| Ok(())) {
            Ok(Some(next)) => next,
            Ok(None) => return Ok(()),
            Err(e) => return Err(Failure::system(format!("stdin: {e}"))),
        };
        handle(number, line)?;
    }
}

/// Line `number` of stdin as a protocol message, or a failure naming it.
pub fn parse_message(number: u64, line: &[u8]) -> Result<AirbyteMessage, Failure> {
    serde_json::from_slice(line).map_err(|e| Failure::system(format!("stdin line {number} is not a protocol message: {e}")))
}

/// Line `number` of stdin's RECORD, its data left as written (numbers keep
/// every digit, nothing built as a tree), or None for a line of another
/// type; a failure naming the line if it is not a protocol message.
pub fn parse_record(number: u64, line: &[u8]) -> Result<Option<sluice_protocol::socket::JsonRecord<'_>>, Failure> {
    sluice_protocol::socket::json_record(line).map_err(|e| Failure::system(format!("stdin line {number} is not a protocol message: {e}")))
}

/// The STATE a destination prints once everything before it is stored:
/// the state as received, with the count of records it covered.
pub fn echo_state(out: &mut Output, mut state: sluice_protocol::AirbyteStateMessage, records: u64) -> io::Result<()> {
    state.destination_stats =
        Some(sluice_protocol::AirbyteStateStats { record_count: Some(records as f64), ..Default::default() });
    out.message(&AirbyteMessage::state(state))?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(parse_args(&args("spec")), Ok(Command::Spec));
        assert_eq!(
            parse_args(&args("read --config c.json --catalog k.json --state s.json")),
            Ok(Command::Read { config: "c.json".into(), catalog: "k.json".into(), state: Some("s.json".into()) })
        );
        assert_eq!(
            parse_args(&args("write --catalog k.json --config c.json")),
            Ok(Command::Write { config: "c.json".into(), catalog: "k.json".into() })
        );
    }

    #[test]
    fn usage_errors_name_the_problem() {
        assert_eq!(parse_args(&args("check")).unwrap_err(), "`check` needs --config FILE");
        assert_eq!(parse_args(&args("spec --config x")).unwrap_err(), "`spec` does not take --config");
        assert!(parse_args(&args("fly")).unwrap_err().contains("unknown command `fly`"));
    }
}
