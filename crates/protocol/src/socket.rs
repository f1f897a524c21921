//! Socket mode's data channel, by Airbyte's conventions: the platform tells
//! both connectors through `DATA_CHANNEL_MEDIUM`, `DATA_CHANNEL_FORMAT` and
//! `DATA_CHANNEL_SOCKET_PATHS`; the source listens on each socket and the
//! destination connects to each. Records, and copies of the source's
//! STATEs, travel there as JSONL lines or PROTOBUF frames.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::codec::{LineError, LineReader};
use crate::protobuf::{self, DecodeError, RecordEncoder};
use crate::AirbyteMessage;

pub const MEDIUM_VAR: &str = "DATA_CHANNEL_MEDIUM";
pub const FORMAT_VAR: &str = "DATA_CHANNEL_FORMAT";
pub const SOCKET_PATHS_VAR: &str = "DATA_CHANNEL_SOCKET_PATHS";
/// Where a task's sockets live: an in-memory volume its containers share.
pub const SOCKET_DIR: &str = "/var/run/sockets";
/// How long a destination waits for a source's socket, as Airbyte's do.
pub const CONNECT_GIVE_UP: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Format {
    Jsonl,
    Protobuf,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jsonl => "JSONL",
            Format::Protobuf => "PROTOBUF",
        }
    }

    pub fn parse(text: &str) -> Option<Format> {
        match text.to_ascii_uppercase().as_str() {
            "JSONL" => Some(Format::Jsonl),
            "PROTOBUF" => Some(Format::Protobuf),
            _ => None,
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A socket-mode data channel: its framing and its sockets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataChannel {
    pub format: Format,
    pub socket_paths: Vec<PathBuf>,
}

/// `airbyte_socket_<n>.sock`, n from 1.
pub fn socket_name(n: usize) -> String {
    format!("airbyte_socket_{n}.sock")
}

impl DataChannel {
    pub fn in_dir(dir: &Path, sockets: usize, format: Format) -> Self {
        DataChannel { format, socket_paths: (1..=sockets).map(|n| dir.join(socket_name(n))).collect() }
    }

    /// The environment both connectors get.
    pub fn env(&self) -> Vec<(String, String)> {
        let paths: Vec<String> = self.socket_paths.iter().map(|p| p.display().to_string()).collect();
        vec![
            (MEDIUM_VAR.into(), "SOCKET".into()),
            (FORMAT_VAR.into(), self.format.as_str().into()),
            (SOCKET_PATHS_VAR.into(), paths.join(",")),
        ]
    }

    /// What a connector was told: `None` for STDIO (the default).
    pub fn from_env() -> Result<Option<DataChannel>, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<DataChannel>, String> {
        match var(MEDIUM_VAR).as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("" | "STDIO") => return Ok(None),
            Some("SOCKET") => {}
            Some(other) => return Err(format!("{MEDIUM_VAR}={other}: expected STDIO or SOCKET")),
        }
        let format = match var(FORMAT_VAR).filter(|f| !f.is_empty()) {
            None => Format::Jsonl,
            Some(text) => Format::parse(&text).ok_or_else(|| format!("{FORMAT_VAR}={text}: expected JSONL or PROTOBUF"))?,
        };
        let paths = var(SOCKET_PATHS_VAR).unwrap_or_default();
        let socket_paths: Vec<PathBuf> = paths.split(',').map(str::trim).filter(|p| !p.is_empty()).map(PathBuf::from).collect();
        if socket_paths.is_empty() {
            return Err(format!("{MEDIUM_VAR}=SOCKET but {SOCKET_PATHS_VAR} names no socket"));
        }
        Ok(Some(DataChannel { format, socket_paths }))
    }
}

/// Binds a source's socket, replacing a stale file left by an earlier run.
pub fn listen(path: &Path) -> io::Result<UnixListener> {
    // sun_path holds 108 bytes with its terminating NUL.
    if path.as_os_str().len() > 107 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is {} bytes; a Unix socket path may have at most 107", path.display(), path.as_os_str().len()),
        ));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(named(path, "cannot replace", e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| named(path, "cannot listen on", e))?;
    // Any user may connect: in a task of containers the destination's image
    // may run as another user, and the directory is what keeps others out.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).map_err(|e| named(path, "cannot open to the destination", e))?;
    Ok(listener)
}

/// Connects a destination to a source's socket, retrying until the source
/// listens there, for at most `give_up`.
pub fn connect(path: &Path, give_up: Duration) -> io::Result<UnixStream> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return Ok(stream),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) && started.elapsed() < give_up => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(named(path, &format!("gave up after {:?} connecting to", started.elapsed()), e)),
        }
    }
}

fn named(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} socket {}: {e}", path.display()))
}

/// The source's end of one socket: records and STATE copies, framed.
pub struct FrameWriter<W: Write> {
    out: BufWriter<W>,
    pub format: Format,
    encoder: RecordEncoder,
    /// Protocol messages' and probes' frames.
    frame: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(inner: W, format: Format) -> Self {
        FrameWriter { out: BufWriter::with_capacity(256 * 1024, inner), format, encoder: RecordEncoder::default(), frame: Vec::new() }
    }

    /// JSONL: one complete message line, without its newline.
    pub fn line(&mut self, json: &[u8]) -> io::Result<()> {
        debug_assert_eq!(self.format, Format::Jsonl);
        self.out.write_all(json)?;
        self.out.write_all(b"\n")
    }

    /// JSONL: the writer a record line is formatted into; end it with `\n`.
    pub fn writer(&mut self) -> &mut BufWriter<W> {
        &mut self.out
    }

    /// PROTOBUF: the encoder for the next record, begun; end with [`Self::end_record`].
    pub fn begin_record(&mut self, namespace: Option<&str>, stream: &str, emitted_at_ms: u64, partition_id: &str) -> &mut RecordEncoder {
        self.encoder.begin(namespace, stream, emitted_at_ms, partition_id);
        &mut self.encoder
    }

    /// Writes the record begun; returns its frame's size.
    pub fn end_record(&mut self) -> io::Result<usize> {
        let (head, record) = self.encoder.frame();
        self.out.write_all(head)?;
        self.out.write_all(record)?;
        Ok(head.len() + record.len())
    }

    /// Any protocol message (a STATE, a stream status) in this framing.
    pub fn message(&mut self, message: &AirbyteMessage) -> io::Result<()> {
        let json = serde_json::to_vec(message)?;
        match self.format {
            Format::Jsonl => self.line(&json),
            Format::Protobuf => {
                self.frame.clear();
                protobuf::frame_protocol_message(&mut self.frame, &json);
                self.out.write_all(&self.frame)
            }
        }
    }

    pub fn probe(&mut self) -> io::Result<()> {
        match self.format {
            Format::Jsonl => self.out.write_all(b"\n"),
            Format::Protobuf => {
                self.frame.clear();
                protobuf::frame_probe(&mut self.frame);
                self.out.write_all(&self.frame)
            }
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// What a destination reads from one socket.
pub enum SocketFrame<'a> {
    Record(SocketRecord<'a>),
    /// A JSON protocol message that is no record: a STATE, a stream status.
    Message(&'a [u8]),
    /// PROTOBUF only: a JSONL probe is a blank line, which the reader skips.
    Probe,
}

pub enum SocketRecord<'a> {
    Json(JsonRecord<'a>),
    Proto(protobuf::Record<'a>),
}

/// A JSONL record, its data left as the source wrote it.
#[derive(Deserialize)]
pub struct JsonRecord<'a> {
    #[serde(borrow, default)]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub stream: Cow<'a, str>,
    #[serde(default)]
    pub emitted_at: i64,
    #[serde(borrow, default)]
    pub partition_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub data: &'a RawValue,
    #[serde(borrow, default)]
    pub meta: Option<&'a RawValue>,
}

/// A protocol line's RECORD, its data left as written (numbers keep every
/// digit), or None for a line of another type.
pub fn json_record(line: &[u8]) -> Result<Option<JsonRecord<'_>>, serde_json::Error> {
    let parsed: JsonLine<'_> = serde_json::from_slice(line)?;
    Ok(if parsed.kind == "RECORD" { parsed.record } else { None })
}

#[derive(Deserialize)]
struct JsonLine<'a> {
    #[serde(rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    record: Option<JsonRecord<'a>>,
}

impl SocketRecord<'_> {
    pub fn stream(&self) -> &str {
        match self {
            SocketRecord::Json(r) => &r.stream,
            SocketRecord::Proto(r) => r.stream,
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        match self {
            SocketRecord::Json(r) => r.namespace.as_deref(),
            SocketRecord::Proto(r) => r.namespace,
        }
    }

    pub fn partition_id(&self) -> Option<&str> {
        match self {
            SocketRecord::Json(r) => r.partition_id.as_deref(),
            SocketRecord::Proto(r) => Some(r.partition_id).filter(|p| !p.is_empty()),
        }
    }

    pub fn emitted_at(&self) -> i64 {
        match self {
            SocketRecord::Json(r) => r.emitted_at,
            SocketRecord::Proto(r) => r.emitted_at_ms as i64,
        }
    }

    /// The size of the record's data as it travelled: its JSON text, or its
    /// encoded values.
    pub fn data_len(&self) -> usize {
        match self {
            SocketRecord::Json(r) => r.data.get().len(),
            SocketRecord::Proto(r) => r.body_len(),
        }
    }

    /// Appends the record's data as JSON: as written for JSONL, named by
    /// `properties` (the stream's, sorted) for PROTOBUF.
    pub fn write_data(&self, properties: &[String], out: &mut Vec<u8>) -> Result<(), FrameError> {
        match self {
            SocketRecord::Json(r) => out.extend_from_slice(r.data.get().as_bytes()),
            SocketRecord::Proto(r) => serde_json::to_writer(out, &r.data(properties)?).expect("a JSON value serializes"),
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("{0}")]
    Line(#[from] LineError),
    #[error("frame is not a protocol message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("frame does not decode: {0}")]
    Protobuf(#[from] DecodeError),
    #[error("a frame of {0} bytes is longer than the limit of {1}")]
    TooLong(u64, usize),
    /// The stream ended inside its last frame: the writer stopped mid-message.
    #[error("the stream ended inside a frame: its writer stopped mid-message")]
    Truncated,
}

/// A destination's end of one socket.
pub enum FrameReader<R: Read> {
    Jsonl(LineReader<R>),
    Protobuf { input: BufReader<R>, frame: Vec<u8>, limit: usize },
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R, format: Format, limit: usize) -> Self {
        match format {
            Format::Jsonl => FrameReader::Jsonl(LineReader::new(inner, limit)),
            Format::Protobuf => {
                FrameReader::Protobuf { input: BufReader::with_capacity(256 * 1024, inner), frame: Vec::new(), limit }
            }
        }
    }

    /// The next frame, or `None` at the end of the stream.
    pub fn read_frame(&mut self) -> Result<Option<SocketFrame<'_>>, FrameError> {
        match self {
            FrameReader::Jsonl(lines) => {
                let Some((_, line, cut)) = lines.next_line_or_cut(|| Ok(()))? else { return Ok(None) };
                if line.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Some(SocketFrame::Probe));
                }
                let parsed: JsonLine<'_> = match serde_json::from_slice(line) {
                    Ok(parsed) => parsed,
                    Err(e) if e.is_eof() && cut => return Err(FrameError::Truncated),
                    Err(e) => return Err(e.into()),
                };
                Ok(Some(match (parsed.kind.as_ref(), parsed.record) {
                    ("RECORD", Some(record)) => SocketFrame::Record(SocketRecord::Json(record)),
                    _ => SocketFrame::Message(line),
                }))
            }
            FrameReader::Protobuf { input, frame, limit } => {
                let len = match read_varint(input) {
                    Ok(Some(len)) => len,
                    Ok(None) => return Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Truncated),
                    Err(e) => return Err(e.into()),
                };
                if len > *limit as u64 {
                    return Err(FrameError::TooLong(len, *limit));
                }
                frame.resize(len as usize, 0);
                input.read_exact(frame).map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { FrameError::Truncated } else { e.into() })?;
                Ok(Some(match protobuf::decode_frame(frame)? {
                    protobuf::Frame::Record(record) => SocketFrame::Record(SocketRecord::Proto(record)),
                    protobuf::Frame::ProtocolMessage(json) => SocketFrame::Message(json.as_bytes()),
                    protobuf::Frame::Probe => SocketFrame::Probe,
                }))
            }
        }
    }
}

/// A frame's length prefix; `None` at a clean end of stream.
fn read_varint(input: &mut impl BufRead) -> io::Result<Option<u64>> {
    let mut value = 0u64;
    for i in 0..10 {
        let byte = match input.fill_buf()?.first() {
            Some(&b) => b,
            None if i == 0 => return Ok(None),
            None => return Err(io::ErrorKind::UnexpectedEof.into()),
        };
        input.consume(1);
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(Some(value));
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "a frame length longer than 10 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AirbyteStateMessage, StreamDescriptor};

    #[test]
    fn the_environment_round_trips_and_bad_values_are_named() {
        let channel = DataChannel::in_dir(Path::new("/var/run/sockets"), 2, Format::Protobuf);
        let env = channel.env();
        let back = DataChannel::from_vars(|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap();
        assert_eq!(back, Some(channel));
        assert_eq!(env[2].1, "/var/run/sockets/airbyte_socket_1.sock,/var/run/sockets/airbyte_socket_2.sock");
        assert_eq!(DataChannel::from_vars(|_| None).unwrap(), None);
        let err = DataChannel::from_vars(|k| (k == MEDIUM_VAR).then(|| "PIGEON".to_string())).unwrap_err();
        assert!(err.contains("DATA_CHANNEL_MEDIUM=PIGEON"), "{err}");
        let err = DataChannel::from_vars(|k| (k == MEDIUM_VAR).then(|| "SOCKET".to_string())).unwrap_err();
        assert!(err.contains("names no socket"), "{err}");
    }

    #[test]
    fn both_framings_carry_records_states_and_probes() {
        for format in [Format::Jsonl, Format::Protobuf] {
            let mut writer = FrameWriter::new(Vec::new(), format);
            match format {
                Format::Jsonl => writer
                    .line(br#"{"type":"RECORD","record":{"stream":"users","emitted_at":5,"partition_id":"p1","data":{"id":1,"name":"Ada"}}}"#)
                    .unwrap(),
                Format::Protobuf => {
                    let encoder = writer.begin_record(None, "users", 5, "p1");
                    encoder.integer(1);
                    encoder.string("Ada");
                    writer.end_record().unwrap();
                }
            }
            writer.probe().unwrap();
            let mut state = AirbyteStateMessage::for_stream(StreamDescriptor::new("users", None), serde_json::json!({"c": 1}));
            state.id = Some(1);
            writer.message(&AirbyteMessage::state(state)).unwrap();
            let bytes = writer.out.into_inner().unwrap();

            let mut reader = FrameReader::new(&bytes[..], format, 1 << 20);
            let Some(SocketFrame::Record(record)) = reader.read_frame().unwrap() else { panic!("{format}: not a record") };
            assert_eq!((record.stream(), record.partition_id(), record.emitted_at()), ("users", Some("p1"), 5));
            let mut data = Vec::new();
            record.write_data(&["id".into(), "name".into()], &mut data).unwrap();
            assert_eq!(serde_json::from_slice::<serde_json::Value>(&data).unwrap(), serde_json::json!({"id": 1, "name": "Ada"}));
            if format == Format::Protobuf {
                // A JSONL probe is a blank line, which the line reader skips.
                assert!(matches!(reader.read_frame().unwrap(), Some(SocketFrame::Probe)));
            }
            let Some(SocketFrame::Message(json)) = reader.read_frame().unwrap() else { panic!("{format}: not a message") };
            let message: AirbyteMessage = serde_json::from_slice(json).unwrap();
            assert_eq!(message.state.unwrap().id, Some(1));
            assert!(reader.read_frame().unwrap().is_none());
        }
    }

    #[test]
    fn a_cut_frame_is_told_from_a_clean_end() {
        let mut writer = FrameWriter::new(Vec::new(), Format::Protobuf);
        writer.probe().unwrap();
        let mut bytes = writer.out.into_inner().unwrap();
        bytes.push(0x05);
        bytes.push(0x0a);
        let mut reader = FrameReader::new(&bytes[..], Format::Protobuf, 1 << 20);
        assert!(reader.read_frame().unwrap().is_some());
        assert!(matches!(reader.read_frame(), Err(FrameError::Truncated)));
        let mut reader = FrameReader::new(&[0xff, 0xff, 0x03][..], Format::Protobuf, 1024);
        assert!(matches!(reader.read_frame(), Err(FrameError::TooLong(..))));
        let mut reader = FrameReader::new(&b"{\"type\":\"RECORD\"}\n{\"type\":\"REC"[..], Format::Jsonl, 1024);
        assert!(matches!(reader.read_frame(), Ok(Some(SocketFrame::Message(_)))));
        assert!(matches!(reader.read_frame(), Err(FrameError::Truncated)));
        let mut reader = FrameReader::new(&b"{\"type\":\"RECORD\"\n{}"[..], Format::Jsonl, 1024);
        assert!(matches!(reader.read_frame(), Err(FrameError::Json(_))), "a broken line with more after it is garbage, not a cut");
    }

    #[test]
    fn a_destination_waits_for_the_source_to_listen() {
        let dir = std::env::temp_dir().join(format!("sluice-socket-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(socket_name(1));
        let _ = std::fs::remove_file(&path);
        let connecting = {
            let path = path.clone();
            std::thread::spawn(move || connect(&path, Duration::from_secs(10)).map(|_| ()))
        };
        std::thread::sleep(Duration::from_millis(100));
        let listener = listen(&path).unwrap();
        let _accepted = listener.accept().unwrap();
        connecting.join().unwrap().unwrap();
        let err = connect(&dir.join("nobody.sock"), Duration::from_millis(50)).unwrap_err();
        assert!(err.to_string().contains("nobody.sock"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
