//! The line codec of the data plane.
//!
//! A sync moves millions of RECORD lines and a handful of everything else, so
//! routing looks at a line through [`peek`]: it checks that the line is one
//! well-formed JSON object in UTF-8 and borrows the message type and, for a
//! record, its stream, without building the record's data. The line itself is
//! what travels on, byte for byte.

use std::borrow::Cow;
use std::io::{self, Read};

use serde::Deserialize;

/// What routing needs to know about one line.
#[derive(Debug, PartialEq, Eq)]
pub struct Head<'a> {
    pub kind: Kind<'a>,
    /// For a RECORD: its stream and namespace.
    pub stream: Option<(Cow<'a, str>, Option<Cow<'a, str>>)>,
}

/// The message type, borrowed; known types are matched without allocating.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Kind<'a> {
    Record,
    State,
    Log,
    Trace,
    Control,
    Spec,
    Catalog,
    ConnectionStatus,
    Other(&'a str),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeekError {
    #[error("not UTF-8 (invalid byte at offset {0})")]
    NotUtf8(usize),
    #[error("not a protocol message: {0}")]
    NotJson(String),
    #[error("a RECORD without a `record` object holding `stream`")]
    RecordWithoutStream,
}

#[derive(Deserialize)]
struct RawHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    record: Option<RawRecordHead<'a>>,
}

#[derive(Deserialize)]
struct RawRecordHead<'a> {
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(default, borrow)]
    namespace: Option<Cow<'a, str>>,
}

/// Reads the type (and a record's stream) of one protocol line.
///
/// Fields other than `type` and `record.{stream,namespace}` are skipped by a
/// syntax-only scan, which still rejects malformed JSON.
pub fn peek(line: &[u8]) -> Result<Head<'_>, PeekError> {
    let text = std::str::from_utf8(line).map_err(|e| PeekError::NotUtf8(e.valid_up_to()))?;
    let raw: RawHead<'_> = serde_json::from_str(text).map_err(|e| PeekError::NotJson(e.to_string()))?;
    let kind = match &*raw.kind {
        "RECORD" => Kind::Record,
        "STATE" => Kind::State,
        "LOG" => Kind::Log,
        "TRACE" => Kind::Trace,
        "CONTROL" => Kind::Control,
        "SPEC" => Kind::Spec,
        "CATALOG" => Kind::Catalog,
        "CONNECTION_STATUS" => Kind::ConnectionStatus,
        _ => match raw.kind {
            Cow::Borrowed(other) => Kind::Other(other),
            // An escaped type name is no type we know; keep the line's own text out of it.
            Cow::Owned(_) => Kind::Other("(escaped)"),
        },
    };
    let stream = match (kind, raw.record) {
        (Kind::Record, Some(record)) => Some((record.stream, record.namespace)),
        (Kind::Record, None) => return Err(PeekError::RecordWithoutStream),
        _ => None,
    };
    Ok(Head { kind, stream })
}

/// A line longer than the reader's limit.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("line {line} is longer than the limit of {limit} bytes")]
    TooLong { line: u64, limit: usize },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A line's number, its bytes, and whether it ended the stream without a newline.
pub type NumberedLine<'a> = (u64, &'a [u8], bool);

/// Splits a byte stream into lines without copying them, up to a size limit.
///
/// Lines are returned as slices of the reader's own buffer, which grows only
/// as far as the longest line (and never past the limit), so memory stays
/// flat whatever the volume. Blank lines are skipped; a trailing `\r` is cut.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    limit: usize,
    line_number: u64,
    eof: bool,
    /// Inside a line that was too long: drop input up to its end.
    skipping: bool,
    /// Where the newline search resumes.
    scanned: usize,
}

const INITIAL_BUFFER: usize = 256 * 1024;

impl<R: Read> LineReader<R> {
    pub fn new(inner: R, limit: usize) -> Self {
        LineReader {
            inner,
            buf: vec![0; INITIAL_BUFFER.min(limit + 1).max(4096)],
            start: 0,
            end: 0,
            limit,
            line_number: 0,
            eof: false,
            skipping: false,
            scanned: 0,
        }
    }

    /// The number of the last line returned, counting from 1 and counting
    /// blank lines too, as an editor would.
    pub fn line_number(&self) -> u64 {
        self.line_number
    }

    /// The next line and its number, or `None` at the end of the stream.
    /// Blank lines (only whitespace) are skipped but counted.
    /// `before_block` runs before every read that may block, so a caller can
    /// flush its own output first and never sit on buffered data while
    /// waiting for input. After a `TooLong` error the reader skips the rest of
    /// that line and can go on.
    pub fn next_line(&mut self, before_block: impl FnMut() -> io::Result<()>) -> Result<Option<(u64, &[u8])>, LineError> {
        Ok(self.next_range(before_block)?.map(|(start, end)| (self.line_number, trim_cr(&self.buf[start..end]))))
    }

    /// Like [`Self::next_line`], also saying whether the line ended the
    /// stream without its newline: the writer may have stopped mid-line.
    pub fn next_line_or_cut(&mut self, before_block: impl FnMut() -> io::Result<()>) -> Result<Option<NumberedLine<'_>>, LineError> {
        let Some((start, end)) = self.next_range(before_block)? else { return Ok(None) };
        // A line ended by its newline leaves `start` past that newline.
        let cut = self.start == end;
        Ok(Some((self.line_number, trim_cr(&self.buf[start..end]), cut)))
    }

    fn next_range(&mut self, mut before_block: impl FnMut() -> io::Result<()>) -> Result<Option<(usize, usize)>, LineError> {
        loop {
            if self.skipping {
                match memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                    Some(pos) => {
                        self.start += pos + 1;
                        self.skipping = false;
                    }
                    None => self.start = self.end,
                }
            }
            // Bytes before `scanned` are known to hold no newline: a long line is scanned once.
            let from = self.scanned.max(self.start);
            if let Some(found) = memchr::memchr(b'\n', &self.buf[from..self.end]) {
                let pos = from - self.start + found;
                self.scanned = 0;
                let line = (self.start, self.start + pos);
                self.start += pos + 1;
                self.line_number += 1;
                if pos > self.limit {
                    return Err(LineError::TooLong { line: self.line_number, limit: self.limit });
                }
                if self.buf[line.0..line.1].trim_ascii().is_empty() {
                    continue;
                }
                return Ok(Some(line));
            }
            self.scanned = self.end;
            let pending = self.end - self.start;
            if pending > self.limit && !self.skipping {
                self.line_number += 1;
                self.start = self.end;
                self.skipping = true;
                return Err(LineError::TooLong { line: self.line_number, limit: self.limit });
            }
            if self.eof {
                if pending == 0 || self.skipping {
                    return Ok(None);
                }
                // The last line had no newline.
                let line = (self.start, self.end);
                self.start = self.end;
                self.line_number += 1;
                if self.buf[line.0..line.1].trim_ascii().is_empty() {
                    return Ok(None);
                }
                return Ok(Some(line));
            }
            self.make_room();
            before_block()?;
            let read = loop {
                match self.inner.read(&mut self.buf[self.end..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            if read == 0 {
                self.eof = true;
            }
            self.end += read;
        }
    }

    fn make_room(&mut self) {
        // Move the partial line to the front only when little room is left behind it.
        if self.start > 0 && self.buf.len() - self.end < self.buf.len() / 4 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned = self.scanned.saturating_sub(self.start);
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).min(self.limit + 2);
            self.buf.resize(grown.max(self.buf.len() + 1), 0);
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, LineError> {
        let mut reader = LineReader::new(input, limit);
        let mut out = Vec::new();
        while let Some((_, line)) = reader.next_line(|| Ok(()))? {
            out.push(line.to_vec());
        }
        Ok(out)
    }

    #[test]
    fn splits_lines_skipping_blanks_and_carriage_returns() {
        let got = lines(b"a\r\n\n  \nbb\nccc\n\r", 10).unwrap();
        assert_eq!(got, vec![b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()]);
    }

    #[test]
    fn lines_longer_than_the_buffer_are_assembled() {
        let long = vec![b'x'; 1_000_000];
        let mut input = long.clone();
        input.extend_from_slice(b"\nshort\n");
        let got = lines(&input, 2_000_000).unwrap();
        assert_eq!(got, vec![long, b"short".to_vec()]);
    }

    #[test]
    fn a_line_over_the_limit_names_its_number() {
        let mut input = b"ok\n".to_vec();
        input.extend(vec![b'x'; 5000]);
        input.push(b'\n');
        match lines(&input, 4096) {
            Err(LineError::TooLong { line, limit }) => assert_eq!((line, limit), (2, 4096)),
            other => panic!("expected TooLong, got {other:?}"),
        }
    }

    #[test]
    fn reading_goes_on_after_a_long_line() {
        let mut input = vec![b'x'; 300_000];
        input.extend_from_slice(b"\nnext\n");
        let mut reader = LineReader::new(&input[..], 5000);
        assert!(matches!(reader.next_line(|| Ok(())), Err(LineError::TooLong { line: 1, .. })));
        assert_eq!(reader.next_line(|| Ok(())).unwrap(), Some((2, &b"next"[..])));
        assert_eq!(reader.next_line(|| Ok(())).unwrap(), None);
    }

    #[test]
    fn peek_borrows_the_type_and_stream() {
        let line = br#"{"type":"RECORD","record":{"data":{"a":{"b":[1,"}"]}},"stream":"users","namespace":"public","emitted_at":1}}"#;
        let head = peek(line).unwrap();
        assert_eq!(head.kind, Kind::Record);
        let (stream, namespace) = head.stream.unwrap();
        assert!(matches!(stream, Cow::Borrowed("users")));
        assert_eq!(namespace.as_deref(), Some("public"));
    }

    #[test]
    fn peek_keeps_unknown_types() {
        let head = peek(br#"{"type":"NEW_THING","new_thing":{}}"#).unwrap();
        assert_eq!(head.kind, Kind::Other("NEW_THING"));
    }

    #[test]
    fn peek_rejects_garbage_and_invalid_utf8() {
        assert!(matches!(peek(b"hello world"), Err(PeekError::NotJson(_))));
        assert!(matches!(peek(br#"{"type":"RECORD","record":{"stream":"a","data":{}}"#), Err(PeekError::NotJson(_))));
        assert!(matches!(peek(br#"{"type":"RECORD"}"#), Err(PeekError::RecordWithoutStream)));
        assert_eq!(peek(b"{\"type\":\"LOG\",\"x\":\"\xff\"}"), Err(PeekError::NotUtf8(19)));
    }
}
