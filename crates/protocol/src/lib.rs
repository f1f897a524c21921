//! The Airbyte Protocol: messages as Rust types ([`message`]), the line
//! codec that the data plane routes with ([`codec`]), socket mode's data
//! channel ([`socket`], with its PROTOBUF framing in [`protobuf`]), and the
//! hot path's JSON strings ([`json`]).

pub mod codec;
pub mod json;
pub mod message;
pub mod protobuf;
pub mod socket;
pub mod time;
pub mod types;

pub use codec::{peek, Head, Kind, LineError, LineReader, PeekError};
pub use message::*;

/// Milliseconds since the Unix epoch, as the protocol's `emitted_at` fields want them.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A line to standard error, as `eprintln!` but never panicking: a
/// connector's, the orchestrator's and `sluice up`'s stderr are log files on
/// the data disk, and a full disk costs log lines, not a sync whose data goes
/// elsewhere (`eprintln!` panics when the write fails).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}
