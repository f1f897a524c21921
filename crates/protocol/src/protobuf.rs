//! Socket mode's PROTOBUF framing (`proto/airbyte_record_message.proto`),
//! encoded and decoded by hand: the messages are few and flat, and the data
//! plane wants to borrow from its read buffer rather than build a tree.
//!
//! A frame is a varint length and one `AirbyteMessageProtobuf`: a record, a
//! JSON protocol message (STATE, stream status), or a probe. Record values
//! are positional: one per property of the stream's schema, in alphabetical
//! order of the names.

use serde_json::{Map, Number, Value};

use crate::time::civil_from_days;

/// Field numbers, as in the `.proto` (a test keeps the two in step).
pub mod field {
    pub const RECORD: u32 = 1;
    pub const PROTOCOL_MESSAGE: u32 = 2;
    pub const PROBE: u32 = 3;

    pub const NAMESPACE: u32 = 1;
    pub const STREAM: u32 = 2;
    pub const EMITTED_AT_MS: u32 = 3;
    pub const PARTITION_ID: u32 = 4;
    pub const DATA: u32 = 5;
    pub const META: u32 = 6;

    pub const BOOLEAN: u32 = 1;
    pub const STRING: u32 = 2;
    pub const INTEGER: u32 = 3;
    pub const BIG_INTEGER: u32 = 4;
    pub const NUMBER: u32 = 5;
    pub const BIG_DECIMAL: u32 = 6;
    pub const DATE: u32 = 7;
    pub const TIME_WITH_TIMEZONE: u32 = 8;
    pub const TIME_WITHOUT_TIMEZONE: u32 = 9;
    pub const TIMESTAMP_WITH_TIMEZONE: u32 = 10;
    pub const TIMESTAMP_WITHOUT_TIMEZONE: u32 = 11;
    pub const JSON: u32 = 12;
    pub const IS_NULL: u32 = 13;
}

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(out, u64::from(field << 3 | wire));
}

fn put_len(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// Appends one frame holding a JSON protocol message (a STATE, a stream status).
pub fn frame_protocol_message(out: &mut Vec<u8>, json: &[u8]) {
    let inner = 1 + varint_len(json.len() as u64) + json.len();
    put_varint(out, inner as u64);
    put_len(out, field::PROTOCOL_MESSAGE, json);
}

/// Appends one probe frame: it says "still here" and carries nothing.
pub fn frame_probe(out: &mut Vec<u8>) {
    put_varint(out, 2);
    put_len(out, field::PROBE, &[]);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Builds record frames; its buffers are reused from one record to the next.
#[derive(Default)]
pub struct RecordEncoder {
    record: Vec<u8>,
    value: Vec<u8>,
    head: Vec<u8>,
}

impl RecordEncoder {
    pub fn begin(&mut self, namespace: Option<&str>, stream: &str, emitted_at_ms: u64, partition_id: &str) {
        self.record.clear();
        if let Some(namespace) = namespace {
            put_len(&mut self.record, field::NAMESPACE, namespace.as_bytes());
        }
        put_len(&mut self.record, field::STREAM, stream.as_bytes());
        put_tag(&mut self.record, field::EMITTED_AT_MS, VARINT);
        put_varint(&mut self.record, emitted_at_ms);
        put_len(&mut self.record, field::PARTITION_ID, partition_id.as_bytes());
    }

    fn push_value(&mut self) {
        put_len(&mut self.record, field::DATA, &self.value);
        self.value.clear();
    }

    pub fn null(&mut self) {
        put_tag(&mut self.value, field::IS_NULL, VARINT);
        self.value.push(1);
        self.push_value();
    }

    pub fn boolean(&mut self, v: bool) {
        put_tag(&mut self.value, field::BOOLEAN, VARINT);
        self.value.push(u8::from(v));
        self.push_value();
    }

    pub fn integer(&mut self, v: i64) {
        put_tag(&mut self.value, field::INTEGER, VARINT);
        put_varint(&mut self.value, zigzag(v));
        self.push_value();
    }

    pub fn number(&mut self, v: f64) {
        put_tag(&mut self.value, field::NUMBER, FIXED64);
        self.value.extend_from_slice(&v.to_le_bytes());
        self.push_value();
    }

    /// Written straight into the record: a string is most of a record's
    /// bytes, and the value buffer would copy it once more.
    pub fn string(&mut self, v: &str) {
        self.bytes_value(field::STRING, v.as_bytes());
    }

    fn bytes_value(&mut self, number: u32, bytes: &[u8]) {
        let inner = 1 + varint_len(bytes.len() as u64) + bytes.len();
        put_tag(&mut self.record, field::DATA, LEN);
        put_varint(&mut self.record, inner as u64);
        put_len(&mut self.record, number, bytes);
    }

    /// A string that the schema marks as a number too large for i64 or f64.
    pub fn big_integer(&mut self, digits: &str) {
        self.bytes_value(field::BIG_INTEGER, digits.as_bytes());
    }

    /// A decimal number's text, every digit kept (`numeric`, or a float's
    /// shortest text).
    pub fn big_decimal(&mut self, text: &str) {
        self.bytes_value(field::BIG_DECIMAL, text.as_bytes());
    }

    /// Days since 1970-01-01.
    pub fn date(&mut self, days: i64) {
        put_tag(&mut self.value, field::DATE, VARINT);
        put_varint(&mut self.value, zigzag(days));
        self.push_value();
    }

    pub fn time_without_timezone(&mut self, nanos_of_day: u64) {
        put_tag(&mut self.value, field::TIME_WITHOUT_TIMEZONE, VARINT);
        put_varint(&mut self.value, nanos_of_day);
        self.push_value();
    }

    /// Days since 1970-01-01 and the time of that day.
    pub fn timestamp_without_timezone(&mut self, days: i64, nanos_of_day: u64) {
        let (days, nanos) = (zigzag(days), nanos_of_day);
        let len = 1 + varint_len(days) + if nanos == 0 { 0 } else { 1 + varint_len(nanos) };
        put_tag(&mut self.value, field::TIMESTAMP_WITHOUT_TIMEZONE, LEN);
        put_varint(&mut self.value, len as u64);
        put_tag(&mut self.value, 1, VARINT);
        put_varint(&mut self.value, days);
        if nanos != 0 {
            put_tag(&mut self.value, 2, VARINT);
            put_varint(&mut self.value, nanos);
        }
        self.push_value();
    }

    pub fn timestamp_with_timezone(&mut self, epoch_second: i64, nano: u32, offset_seconds: i32) {
        // Fields 1..3 as varints (zeros left out), each after a one-byte tag.
        let fields = [(1, zigzag(epoch_second)), (2, u64::from(nano)), (3, zigzag(i64::from(offset_seconds)))];
        let present = |&&(n, v): &&(u32, u64)| n == 1 || v != 0;
        let len: usize = fields.iter().filter(present).map(|&(_, v)| 1 + varint_len(v)).sum();
        put_tag(&mut self.value, field::TIMESTAMP_WITH_TIMEZONE, LEN);
        put_varint(&mut self.value, len as u64);
        for &(n, v) in fields.iter().filter(present) {
            put_tag(&mut self.value, n, VARINT);
            put_varint(&mut self.value, v);
        }
        self.push_value();
    }

    /// Objects and arrays travel as JSON bytes.
    pub fn json(&mut self, v: &Value) {
        self.json_text(&serde_json::to_vec(v).expect("a JSON value serializes"));
    }

    /// JSON already written (a database's `jsonb`).
    pub fn json_text(&mut self, json: &[u8]) {
        self.bytes_value(field::JSON, json);
    }

    /// Any JSON value, by its JSON type: what a source without a typed
    /// reader does.
    pub fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.null(),
            Value::Bool(b) => self.boolean(*b),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => self.integer(i),
                (None, _) if n.is_u64() => self.big_integer(&n.to_string()),
                (None, Some(f)) => self.number(f),
                (None, None) => self.big_integer(&n.to_string()),
            },
            Value::String(s) => self.string(s),
            Value::Array(_) | Value::Object(_) => self.json(v),
        }
    }

    /// The record's `meta`: fields the source nulled, and why (one of
    /// the protocol's reasons, e.g. `SOURCE_RETRIEVAL_ERROR`). After the values.
    pub fn nulled(&mut self, fields: &[&str], reason: &str) {
        let reason = REASONS.iter().position(|r| *r == reason).unwrap_or_else(|| panic!("{reason} is not a reason of the protocol")) as u64;
        let mut changes = Vec::new();
        for field in fields {
            let mut change = Vec::new();
            put_len(&mut change, 1, field.as_bytes());
            put_tag(&mut change, 2, VARINT);
            put_varint(&mut change, 0);
            put_tag(&mut change, 3, VARINT);
            put_varint(&mut change, reason);
            put_len(&mut changes, 1, &change);
        }
        put_len(&mut self.record, field::META, &changes);
    }

    /// Ends the record and appends its frame to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let (head, record) = self.frame();
        out.extend_from_slice(head);
        out.extend_from_slice(record);
    }

    /// Ends the record: its frame as two pieces, the frame's length and the
    /// record's tag and length, then the record (not copied into one).
    pub fn frame(&mut self) -> (&[u8], &[u8]) {
        let record_len = self.record.len() as u64;
        self.head.clear();
        put_varint(&mut self.head, (1 + varint_len(record_len)) as u64 + record_len);
        put_tag(&mut self.head, field::RECORD, LEN);
        put_varint(&mut self.head, record_len);
        (&self.head, &self.record)
    }
}

/// A frame that does not decode; says what was wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn bad(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

/// A cursor over protobuf wire data.
struct Wire<'a> {
    bytes: &'a [u8],
}

enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32,
}

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for (i, &b) in self.bytes.iter().enumerate().take(10) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.bytes = &self.bytes[i + 1..];
                return Ok(v);
            }
        }
        Err(bad("a varint runs past the end of its message"))
    }

    fn next(&mut self) -> Result<Option<(u32, Field<'a>)>, DecodeError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let (number, wire) = ((tag >> 3) as u32, (tag & 7) as u32);
        let field = match wire {
            VARINT => Field::Varint(self.varint()?),
            FIXED64 => {
                let (head, rest) = self.bytes.split_at_checked(8).ok_or_else(|| bad("a 64-bit field runs past the end"))?;
                self.bytes = rest;
                Field::Fixed64(head.try_into().expect("8 bytes"))
            }
            LEN => {
                let len = usize::try_from(self.varint()?).map_err(|_| bad("a length does not fit in memory"))?;
                let (head, rest) = self.bytes.split_at_checked(len).ok_or_else(|| bad(format!("field {number} claims {len} bytes, more than its message holds")))?;
                self.bytes = rest;
                Field::Bytes(head)
            }
            FIXED32 => {
                self.bytes = self.bytes.get(4..).ok_or_else(|| bad("a 32-bit field runs past the end"))?;
                Field::Fixed32
            }
            other => return Err(bad(format!("field {number} has wire type {other}, which this framing never uses"))),
        };
        Ok(Some((number, field)))
    }
}

fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| bad(format!("{what} is not UTF-8")))
}

/// One decoded frame, borrowing from the frame's bytes.
#[derive(Debug)]
pub enum Frame<'a> {
    Record(Record<'a>),
    /// A JSON AirbyteMessage.
    ProtocolMessage(&'a str),
    Probe,
}

#[derive(Debug)]
pub struct Record<'a> {
    pub namespace: Option<&'a str>,
    pub stream: &'a str,
    pub emitted_at_ms: u64,
    pub partition_id: &'a str,
    /// The record's fields 5 (values) and 6 (meta), still encoded.
    body: &'a [u8],
    /// Whether it has field 6: [`Record::meta`] need not look otherwise.
    pub has_meta: bool,
}

pub fn decode_frame(frame: &[u8]) -> Result<Frame<'_>, DecodeError> {
    let mut wire = Wire { bytes: frame };
    let mut found = None;
    while let Some((number, value)) = wire.next()? {
        found = match (number, value) {
            (field::RECORD, Field::Bytes(b)) => Some(Frame::Record(decode_record(b)?)),
            (field::PROTOCOL_MESSAGE, Field::Bytes(b)) => Some(Frame::ProtocolMessage(utf8(b, "airbyte_protocol_message")?)),
            (field::PROBE, Field::Bytes(_)) => Some(Frame::Probe),
            _ => found,
        };
    }
    found.ok_or_else(|| bad("the frame holds no record, protocol message or probe"))
}

fn decode_record(bytes: &[u8]) -> Result<Record<'_>, DecodeError> {
    let mut record = Record { namespace: None, stream: "", emitted_at_ms: 0, partition_id: "", body: &[], has_meta: false };
    let mut wire = Wire { bytes };
    let mut body_start = None;
    let before = |w: &Wire| bytes.len() - w.bytes.len();
    loop {
        let at = before(&wire);
        let Some((number, value)) = wire.next()? else { break };
        match (number, value) {
            (field::NAMESPACE, Field::Bytes(b)) => record.namespace = Some(utf8(b, "stream_namespace")?),
            (field::STREAM, Field::Bytes(b)) => record.stream = utf8(b, "stream_name")?,
            (field::EMITTED_AT_MS, Field::Varint(v)) => record.emitted_at_ms = v,
            (field::PARTITION_ID, Field::Bytes(b)) => record.partition_id = utf8(b, "partition_id")?,
            (field::DATA | field::META, _) => {
                body_start.get_or_insert(at);
                record.has_meta |= number == field::META;
            }
            _ => {}
        }
    }
    if record.stream.is_empty() {
        return Err(bad("a record without stream_name"));
    }
    record.body = body_start.map_or(&[][..], |start| &bytes[start..]);
    Ok(record)
}

impl Record<'_> {
    /// The record's data as a JSON object, naming the values by `names`
    /// (the stream's properties, sorted). More values than names is an error:
    /// the source and the catalog disagree.
    pub fn data(&self, names: &[String]) -> Result<Value, DecodeError> {
        let mut data = Map::with_capacity(names.len());
        let mut wire = Wire { bytes: self.body };
        let mut names = names.iter();
        while let Some((number, value)) = wire.next()? {
            if let (field::DATA, Field::Bytes(b)) = (number, value) {
                let name = names.next().ok_or_else(|| {
                    bad(format!("stream {}: the record has more values than the catalog has properties", self.stream))
                })?;
                data.insert(name.clone(), decode_value(b)?);
            }
        }
        Ok(Value::Object(data))
    }

    /// Each value in turn, borrowed from the frame: what a destination
    /// that encodes values itself reads instead of [`Self::data`].
    pub fn values(&self) -> impl Iterator<Item = Result<Scalar<'_>, DecodeError>> {
        let mut wire = Wire { bytes: self.body };
        std::iter::from_fn(move || loop {
            match wire.next() {
                Ok(Some((field::DATA, Field::Bytes(b)))) => return Some(scalar(b)),
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        })
    }

    /// The record's `meta` in the protocol's JSON shape, if it has one.
    pub fn meta(&self) -> Result<Option<Value>, DecodeError> {
        let mut wire = Wire { bytes: self.body };
        while let Some((number, value)) = wire.next()? {
            if let (field::META, Field::Bytes(b)) = (number, value) {
                return decode_meta(b).map(Some);
            }
        }
        Ok(None)
    }

    pub fn body_len(&self) -> usize {
        self.body.len()
    }
}

const REASONS: [&str; 11] = [
    "SOURCE_RECORD_SIZE_LIMITATION",
    "DESTINATION_RECORD_SIZE_LIMITATION",
    "PLATFORM_RECORD_SIZE_LIMITATION",
    "SOURCE_FIELD_SIZE_LIMITATION",
    "DESTINATION_FIELD_SIZE_LIMITATION",
    "PLATFORM_FIELD_SIZE_LIMITATION",
    "SOURCE_SERIALIZATION_ERROR",
    "DESTINATION_SERIALIZATION_ERROR",
    "PLATFORM_SERIALIZATION_ERROR",
    "SOURCE_RETRIEVAL_ERROR",
    "DESTINATION_TYPECAST_ERROR",
];

fn decode_meta(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut changes = Vec::new();
    let mut wire = Wire { bytes };
    while let Some((number, value)) = wire.next()? {
        let (1, Field::Bytes(b)) = (number, value) else { continue };
        let (mut name, mut change, mut reason) = ("", 0u64, 0u64);
        let mut inner = Wire { bytes: b };
        while let Some((number, value)) = inner.next()? {
            match (number, value) {
                (1, Field::Bytes(b)) => name = utf8(b, "meta change field")?,
                (2, Field::Varint(v)) => change = v,
                (3, Field::Varint(v)) => reason = v,
                _ => {}
            }
        }
        let change = if change == 1 { "TRUNCATED" } else { "NULLED" };
        let reason = REASONS.get(reason as usize).ok_or_else(|| bad(format!("meta change reason {reason} is unknown")))?;
        changes.push(serde_json::json!({"field": name, "change": change, "reason": reason}));
    }
    Ok(serde_json::json!({"changes": changes}))
}

/// A record's value as a destination's hot path takes it: the kinds that
/// make up most data borrowed as they came, the rest as their JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    Integer(i64),
    Number(f64),
    String(&'a str),
    /// A big integer's or a decimal's text, every digit kept.
    Decimal(&'a str),
    /// An object or array, as JSON text.
    Json(&'a str),
    /// A timestamp with a time zone: microseconds since 1970 (UTC), and
    /// the value as it came, for its text.
    Instant { micros: i64, encoded: &'a [u8] },
    /// Other dates and times, as the ISO text [`Record::data`] gives them.
    Other(Value),
}

fn scalar(bytes: &[u8]) -> Result<Scalar<'_>, DecodeError> {
    let mut wire = Wire { bytes };
    let mut found = Scalar::Null;
    while let Some((number, field)) = wire.next()? {
        found = match (number, field) {
            (field::IS_NULL, Field::Varint(v)) if v != 0 => return Ok(Scalar::Null),
            (field::IS_NULL, _) => found,
            (field::BOOLEAN, Field::Varint(v)) => Scalar::Bool(v != 0),
            (field::STRING, Field::Bytes(b)) => Scalar::String(utf8(b, "a string value")?),
            (field::INTEGER, Field::Varint(v)) => Scalar::Integer(unzigzag(v)),
            (field::BIG_INTEGER | field::BIG_DECIMAL, Field::Bytes(b)) => Scalar::Decimal(utf8(b, "a big number")?),
            (field::NUMBER, Field::Fixed64(b)) => Scalar::Number(f64::from_le_bytes(b)),
            (field::JSON, Field::Bytes(b)) => Scalar::Json(utf8(b, "a json value")?),
            (field::TIMESTAMP_WITH_TIMEZONE, Field::Bytes(b)) => {
                let (mut second, mut nano) = (0i64, 0i64);
                let mut inner = Wire { bytes: b };
                while let Some((number, field)) = inner.next()? {
                    match (number, field) {
                        (1, Field::Varint(v)) => second = unzigzag(v),
                        (2, Field::Varint(v)) => nano = v as i64,
                        _ => {}
                    }
                }
                let micros = second.checked_mul(1_000_000).and_then(|m| m.checked_add(nano / 1000)).ok_or_else(|| bad("a timestamp out of range"))?;
                Scalar::Instant { micros, encoded: bytes }
            }
            _ => Scalar::Other(decode_value(bytes)?),
        };
    }
    Ok(found)
}

/// One encoded value as [`Record::data`] gives it (a [`Scalar::Instant`]'s
/// `encoded`, for its text).
pub fn decode_value(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut wire = Wire { bytes };
    let mut value = Value::Null;
    while let Some((number, field)) = wire.next()? {
        value = match (number, field) {
            (field::IS_NULL, Field::Varint(v)) if v != 0 => return Ok(Value::Null),
            (field::IS_NULL, _) => value,
            (field::BOOLEAN, Field::Varint(v)) => Value::Bool(v != 0),
            (field::STRING, Field::Bytes(b)) => Value::String(utf8(b, "a string value")?.to_owned()),
            (field::INTEGER, Field::Varint(v)) => Value::from(unzigzag(v)),
            (field::BIG_INTEGER | field::BIG_DECIMAL, Field::Bytes(b)) => {
                let text = utf8(b, "a big number")?;
                // A JSON number only when that loses nothing; otherwise kept as written.
                let exact = text.parse::<i64>().map(Value::from).or_else(|_| text.parse::<u64>().map(Value::from)).ok().or_else(|| {
                    let f = text.parse::<f64>().ok()?;
                    (f.to_string() == text).then(|| Number::from_f64(f).map(Value::Number))?
                });
                exact.unwrap_or_else(|| Value::String(text.to_owned()))
            }
            (field::NUMBER, Field::Fixed64(b)) => {
                let f = f64::from_le_bytes(b);
                Number::from_f64(f).map_or_else(|| Value::String(f.to_string()), Value::Number)
            }
            (field::DATE, Field::Varint(v)) => Value::String(date(unzigzag(v))),
            (field::TIME_WITHOUT_TIMEZONE, Field::Varint(v)) => Value::String(time_of_day(v)),
            (field::TIME_WITH_TIMEZONE, Field::Bytes(b)) => {
                let (nanos, offset) = two_fields(b)?;
                Value::String(format!("{}{}", time_of_day(nanos), offset_text(unzigzag(offset))))
            }
            (field::TIMESTAMP_WITHOUT_TIMEZONE, Field::Bytes(b)) => {
                let (days, nanos) = two_fields(b)?;
                Value::String(format!("{}T{}", date(unzigzag(days)), time_of_day(nanos)))
            }
            (field::TIMESTAMP_WITH_TIMEZONE, Field::Bytes(b)) => Value::String(offset_date_time(b)?),
            (field::JSON, Field::Bytes(b)) => serde_json::from_slice(b).map_err(|e| bad(format!("a json value is not JSON: {e}")))?,
            (number, _) => return Err(bad(format!("value field {number} is unknown or has the wrong wire type"))),
        };
    }
    Ok(value)
}

/// Fields 1 and 2 of a small message, both varints.
fn two_fields(bytes: &[u8]) -> Result<(u64, u64), DecodeError> {
    let (mut a, mut b) = (0, 0);
    let mut wire = Wire { bytes };
    while let Some((number, field)) = wire.next()? {
        match (number, field) {
            (1, Field::Varint(v)) => a = v,
            (2, Field::Varint(v)) => b = v,
            _ => {}
        }
    }
    Ok((a, b))
}

fn offset_date_time(bytes: &[u8]) -> Result<String, DecodeError> {
    let (mut second, mut nano, mut offset) = (0i64, 0u64, 0i64);
    let mut wire = Wire { bytes };
    while let Some((number, field)) = wire.next()? {
        match (number, field) {
            (1, Field::Varint(v)) => second = unzigzag(v),
            (2, Field::Varint(v)) => nano = v,
            (3, Field::Varint(v)) => offset = unzigzag(v),
            _ => {}
        }
    }
    let local = second + offset;
    let nanos_of_day = local.rem_euclid(86_400) as u64 * 1_000_000_000 + nano;
    Ok(format!("{}T{}{}", date(local.div_euclid(86_400)), time_of_day(nanos_of_day), offset_text(offset)))
}

fn date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn time_of_day(nanos: u64) -> String {
    let secs = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    let hms = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    match frac {
        0 => hms,
        f if f % 1_000_000 == 0 => format!("{hms}.{:03}", f / 1_000_000),
        f if f % 1_000 == 0 => format!("{hms}.{:06}", f / 1_000),
        f => format!("{hms}.{f:09}"),
    }
}

fn offset_text(seconds: i64) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.abs();
    format!("{sign}{:02}:{:02}", s / 3600, s / 60 % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame_body(frames: &[u8]) -> &[u8] {
        let mut wire = Wire { bytes: frames };
        let len = wire.varint().unwrap() as usize;
        &wire.bytes[..len]
    }

    #[test]
    fn a_record_round_trips_with_every_value_kind() {
        let mut encoder = RecordEncoder::default();
        encoder.begin(Some("public"), "users", 1_700_000_000_000, "p-7");
        encoder.integer(-42);
        encoder.string("Ada");
        encoder.null();
        encoder.number(12.5);
        encoder.boolean(true);
        encoder.timestamp_with_timezone(1_577_836_860, 0, 0);
        encoder.json(&json!({"a": [1, 2]}));
        encoder.big_integer("123456789012345678901234567890");
        let mut out = Vec::new();
        encoder.finish(&mut out);
        let Frame::Record(record) = decode_frame(frame_body(&out)).unwrap() else { panic!("not a record") };
        assert_eq!((record.namespace, record.stream, record.emitted_at_ms, record.partition_id), (Some("public"), "users", 1_700_000_000_000, "p-7"));
        let names: Vec<String> = ["a", "b", "c", "d", "e", "f", "g", "h"].map(String::from).to_vec();
        let data = record.data(&names).unwrap();
        assert_eq!(data["a"], json!(-42));
        assert_eq!(data["b"], json!("Ada"));
        assert_eq!(data["c"], Value::Null);
        assert_eq!(data["d"], json!(12.5));
        assert_eq!(data["e"], json!(true));
        // The same text source-faker writes in JSONL.
        assert_eq!(data["f"], json!(crate::time::format_utc(1_577_836_860)));
        assert_eq!(data["g"], json!({"a": [1, 2]}));
        assert_eq!(data["h"], json!("123456789012345678901234567890"));
        let short = record.data(&names[..3]).unwrap_err();
        assert!(short.0.contains("more values than the catalog has properties"), "{short}");
        assert_eq!(record.meta().unwrap(), None);
        assert!(!record.has_meta);
    }

    #[test]
    fn nulled_fields_travel_in_the_records_meta() {
        let mut encoder = RecordEncoder::default();
        encoder.begin(None, "items", 1, "p");
        encoder.integer(7);
        encoder.null();
        encoder.nulled(&["body", "note"], "SOURCE_RETRIEVAL_ERROR");
        let mut out = Vec::new();
        encoder.finish(&mut out);
        let Frame::Record(record) = decode_frame(frame_body(&out)).unwrap() else { panic!("not a record") };
        assert_eq!(record.data(&["id".into(), "body".into()]).unwrap(), json!({"id": 7, "body": null}));
        let change = |field: &str| json!({"field": field, "change": "NULLED", "reason": "SOURCE_RETRIEVAL_ERROR"});
        assert!(record.has_meta);
        assert_eq!(record.meta().unwrap(), Some(json!({"changes": [change("body"), change("note")]})));
    }

    #[test]
    fn probes_and_protocol_messages_frame() {
        let mut out = Vec::new();
        frame_probe(&mut out);
        assert!(matches!(decode_frame(frame_body(&out)).unwrap(), Frame::Probe));
        out.clear();
        frame_protocol_message(&mut out, br#"{"type":"STATE"}"#);
        assert!(matches!(decode_frame(frame_body(&out)).unwrap(), Frame::ProtocolMessage(r#"{"type":"STATE"}"#)));
    }

    #[test]
    fn dates_and_times_decode_to_iso_text() {
        let mut value = Vec::new();
        put_tag(&mut value, field::DATE, VARINT);
        put_varint(&mut value, zigzag(-1));
        assert_eq!(decode_value(&value).unwrap(), json!("1969-12-31"));
        let mut inner = Vec::new();
        put_tag(&mut inner, 1, VARINT);
        put_varint(&mut inner, zigzag(0));
        put_tag(&mut inner, 2, VARINT);
        put_varint(&mut inner, 500_000_000);
        put_tag(&mut inner, 3, VARINT);
        put_varint(&mut inner, zigzag(-5 * 3600));
        let mut value = Vec::new();
        put_len(&mut value, field::TIMESTAMP_WITH_TIMEZONE, &inner);
        assert_eq!(decode_value(&value).unwrap(), json!("1969-12-31T19:00:00.500-05:00"));
    }

    #[test]
    fn typed_values_decode_as_scalars_and_as_json() {
        let mut encoder = RecordEncoder::default();
        encoder.begin(None, "t", 1, "p");
        encoder.date(19_782);
        encoder.time_without_timezone(45_296_789_000_000);
        encoder.timestamp_without_timezone(19_724, 11_045_678_000_000);
        encoder.timestamp_with_timezone(1_704_164_645, 500_000_000, 0);
        encoder.big_decimal("12345.67890");
        encoder.json_text(br#"{"a":[1,2]}"#);
        encoder.string("é ☃");
        let mut out = Vec::new();
        encoder.finish(&mut out);
        let Frame::Record(record) = decode_frame(frame_body(&out)).unwrap() else { panic!("not a record") };
        let names: Vec<String> = ["a", "b", "c", "d", "e", "f", "g"].map(String::from).to_vec();
        let data = record.data(&names).unwrap();
        assert_eq!(data["a"], json!("2024-02-29"));
        assert_eq!(data["b"], json!("12:34:56.789"));
        assert_eq!(data["c"], json!("2024-01-02T03:04:05.678"));
        assert_eq!(data["d"], json!("2024-01-02T03:04:05.500+00:00"));
        assert_eq!(data["e"], json!("12345.67890"), "a decimal whose text a double would not keep stays text");
        assert_eq!(data["f"], json!({"a": [1, 2]}));
        let scalars: Vec<Scalar> = record.values().collect::<Result<_, _>>().unwrap();
        assert!(matches!(scalars[3], Scalar::Instant { micros: 1_704_164_645_500_000, .. }), "{:?}", scalars[3]);
        assert_eq!(scalars[4], Scalar::Decimal("12345.67890"), "every digit, as sent");
        assert_eq!(scalars[5], Scalar::Json(r#"{"a":[1,2]}"#));
        assert_eq!(scalars[6], Scalar::String("é ☃"));
        assert_eq!(scalars[0], Scalar::Other(json!("2024-02-29")));
    }

    #[test]
    fn garbage_is_named() {
        assert!(decode_frame(&[0x0a, 0x05, 1]).unwrap_err().0.contains("claims 5 bytes"));
        assert!(decode_frame(&[0x0f]).unwrap_err().0.contains("wire type 7"));
        assert!(decode_frame(&[]).unwrap_err().0.contains("holds no record"));
    }

    #[test]
    fn field_numbers_match_the_proto_file() {
        let proto = include_str!("../proto/airbyte_record_message.proto");
        let number_of = |message: &str, name: &str| -> u32 {
            let start = proto.find(&format!("message {message} {{")).unwrap_or_else(|| panic!("message {message}"));
            let body = &proto[start..];
            let line = body.lines().find(|l| l.split_whitespace().any(|w| w == name) && l.contains('=')).unwrap_or_else(|| panic!("{message}.{name}"));
            line.split('=').nth(1).unwrap().trim().trim_end_matches(';').parse().unwrap()
        };
        use field::*;
        for (name, number) in [("record", RECORD), ("airbyte_protocol_message", PROTOCOL_MESSAGE), ("probe", PROBE)] {
            assert_eq!(number_of("AirbyteMessageProtobuf", name), number, "{name}");
        }
        for (name, number) in
            [("stream_namespace", NAMESPACE), ("stream_name", STREAM), ("emitted_at_ms", EMITTED_AT_MS), ("partition_id", PARTITION_ID), ("data", DATA), ("meta", META)]
        {
            assert_eq!(number_of("AirbyteRecordMessageProtobuf", name), number, "{name}");
        }
        for (name, number) in [
            ("boolean", BOOLEAN),
            ("string", STRING),
            ("integer", INTEGER),
            ("big_integer", BIG_INTEGER),
            ("number", NUMBER),
            ("big_decimal", BIG_DECIMAL),
            ("date", DATE),
            ("time_with_timezone", TIME_WITH_TIMEZONE),
            ("time_without_timezone", TIME_WITHOUT_TIMEZONE),
            ("timestamp_with_timezone", TIMESTAMP_WITH_TIMEZONE),
            ("timestamp_without_timezone", TIMESTAMP_WITHOUT_TIMEZONE),
            ("json", JSON),
            ("is_null", IS_NULL),
        ] {
            assert_eq!(number_of("AirbyteValueProtobuf", name), number, "{name}");
        }
        for (i, reason) in REASONS.iter().enumerate() {
            assert!(proto.contains(&format!("{reason} = {i};")), "{reason}");
        }
    }
}
