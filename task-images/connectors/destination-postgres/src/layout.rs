//! Airbyte's direct-load layout in Postgres, as plain data: identifiers,
//! column types from a stream's JSON Schema, and each value in `COPY`'s
//! binary format. Nothing here talks to a server.
//!
//! A value that does not fit its column is written as NULL and named in
//! the row's `_airbyte_meta.changes` (`DESTINATION_TYPECAST_ERROR`), as
//! Airbyte's destinations do: a sync never fails on one bad value.

use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use sluice_protocol::protobuf::Scalar;
use sluice_protocol::types::{airbyte_type, AirbyteType};

/// The longest identifier Postgres keeps, in bytes.
const MAX_IDENTIFIER: usize = 63;

/// A table or column name by Airbyte's rules for Postgres: every character
/// that is not alphanumeric becomes `_`, a leading digit gets a `_` in
/// front, and a name over 63 bytes keeps its first 54 bytes, `_`, and 8 hex
/// digits of a hash of the whole name (so two long names stay apart).
pub fn identifier(name: &str) -> String {
    let mut clean: String = name.chars().map(|c| if c.is_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if clean.is_empty() || clean.starts_with(|c: char| c.is_ascii_digit()) {
        clean.insert(0, '_');
    }
    if clean.len() <= MAX_IDENTIFIER {
        return clean;
    }
    let mut cut = 54;
    while !clean.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = name.bytes().fold(0x811c9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x01000193));
    format!("{}_{hash:08x}", &clean[..cut])
}

/// `"name"`, with quotes doubled: every identifier we send is quoted.
pub use sluice_postgres::quoted;

/// A column's type, as Airbyte maps JSON Schema to Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    BigInt,
    Decimal,
    Varchar,
    Boolean,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Jsonb,
}

impl ColumnType {
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::BigInt => "bigint",
            ColumnType::Decimal => "decimal",
            ColumnType::Varchar => "varchar",
            ColumnType::Boolean => "boolean",
            ColumnType::Date => "date",
            ColumnType::Time => "time without time zone",
            ColumnType::TimeTz => "time with time zone",
            ColumnType::Timestamp => "timestamp without time zone",
            ColumnType::TimestampTz => "timestamp with time zone",
            ColumnType::Jsonb => "jsonb",
        }
    }

    /// The type as `information_schema.columns.data_type` names it.
    pub fn from_catalog(data_type: &str) -> Option<ColumnType> {
        [
            ColumnType::BigInt,
            ColumnType::Decimal,
            ColumnType::Varchar,
            ColumnType::Boolean,
            ColumnType::Date,
            ColumnType::Time,
            ColumnType::TimeTz,
            ColumnType::Timestamp,
            ColumnType::TimestampTz,
            ColumnType::Jsonb,
        ]
        .into_iter()
        .find(|t| match t {
            ColumnType::Decimal => data_type == "numeric",
            // text and varchar share their binary format.
            ColumnType::Varchar => data_type == "character varying" || data_type == "text",
            other => other.sql() == data_type,
        })
    }

    /// Whether a column of this type can hold every value of `to` after
    /// `ALTER COLUMN ... TYPE`: the widenings schema evolution applies.
    pub fn widens_to(self, to: ColumnType) -> bool {
        matches!((self, to), (ColumnType::BigInt, ColumnType::Decimal) | (_, ColumnType::Jsonb) | (_, ColumnType::Varchar)) && self != to
    }

    /// The column type a column of `self` becomes when the stream now
    /// declares `to`: the narrowest that holds both the values it has and
    /// the ones to come, so a change of type never loses a value. A type
    /// that already holds `to`'s values stays (a string column stays one
    /// when the stream's field becomes an integer); two types neither of
    /// which holds the other meet in jsonb, as Airbyte maps a union.
    pub fn evolved(self, to: ColumnType) -> ColumnType {
        if self == to || to.widens_to(self) {
            self
        } else if self.widens_to(to) {
            to
        } else {
            ColumnType::Jsonb
        }
    }
}

/// The column type of one property's JSON Schema.
pub fn column_type(schema: &Value) -> ColumnType {
    match airbyte_type(schema) {
        AirbyteType::Integer => ColumnType::BigInt,
        AirbyteType::Number => ColumnType::Decimal,
        AirbyteType::Boolean => ColumnType::Boolean,
        AirbyteType::String => ColumnType::Varchar,
        AirbyteType::Date => ColumnType::Date,
        AirbyteType::TimeWithoutTimezone => ColumnType::Time,
        AirbyteType::TimeWithTimezone => ColumnType::TimeTz,
        AirbyteType::TimestampWithoutTimezone => ColumnType::Timestamp,
        AirbyteType::TimestampWithTimezone => ColumnType::TimestampTz,
        AirbyteType::Unknown => ColumnType::Jsonb,
    }
}

/// The column that says what changed in a row on its way, and the sync that wrote it.
pub const META: &str = "_airbyte_meta";

/// Airbyte's own columns, first in every table.
pub const META_COLUMNS: [(&str, &str); 4] = [
    ("_airbyte_raw_id", "uuid not null"),
    ("_airbyte_extracted_at", "timestamp with time zone not null"),
    (META, "jsonb not null"),
    ("_airbyte_generation_id", "bigint"),
];

/// A stream's data column: the property it comes from and its place in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub property: String,
    pub name: String,
    pub kind: ColumnType,
}

/// The data columns of a stream's JSON Schema, in the schema's order. Two
/// properties that map to one column name are an error naming both.
pub fn columns(schema: &Value) -> Result<Vec<Column>, String> {
    let mut out: Vec<Column> = Vec::new();
    for (property, sub) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
        let name = identifier(property);
        if let Some(meta) = META_COLUMNS.iter().find(|(m, _)| *m == name) {
            return Err(format!("property `{property}` would be the column {}, which Airbyte keeps for itself", meta.0));
        }
        if let Some(other) = out.iter().find(|c| c.name == name) {
            return Err(format!("properties `{}` and `{property}` both become the column {name}", other.property));
        }
        out.push(Column { property: property.clone(), name, kind: column_type(sub) });
    }
    Ok(out)
}

/// Days from 1970-01-01 to 2000-01-01, Postgres's epoch.
const PG_EPOCH_DAYS: i64 = 10_957;
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * 86_400 * 1_000_000;

/// [`encode`] for a value as written in the record: a number for a numeric
/// column keeps every digit (no trip through a double), and JSON for a
/// jsonb column goes as it came.
pub fn encode_raw(out: &mut Vec<u8>, kind: ColumnType, raw: Option<&RawValue>) -> bool {
    let text = raw.map_or("null", |r| r.get());
    let number = text.starts_with(|c: char| c == '-' || c.is_ascii_digit());
    match kind {
        _ if text == "null" => encode(out, kind, &Value::Null),
        ColumnType::Decimal if number => field(out, |out| numeric(out, text)),
        // A number where a string was declared keeps its text, every digit.
        ColumnType::Varchar if number => encode_str(out, kind, text),
        ColumnType::Jsonb => field(out, |out| {
            out.push(1);
            out.extend_from_slice(text.as_bytes());
            // Postgres refuses \u0000 in jsonb text.
            !text.contains("\\u0000")
        }),
        _ => match sluice_protocol::json::string_text(text) {
            Some(s) => encode_str(out, kind, &s),
            // JSON that Rust's strings cannot hold (a lone surrogate escape) fits no column.
            None => match serde_json::from_str::<Value>(text) {
                Ok(value) => encode(out, kind, &value),
                Err(_) => !encode(out, kind, &Value::Null),
            },
        },
    }
}

/// [`encode`] for a PROTOBUF record's value: strings, integers and
/// decimals go straight in; JSON and decimals keep the text they came as.
pub fn encode_scalar(out: &mut Vec<u8>, kind: ColumnType, value: &Scalar<'_>) -> bool {
    match value {
        Scalar::Null => encode(out, kind, &Value::Null),
        Scalar::String(s) => encode_str(out, kind, s),
        Scalar::Integer(i) if kind == ColumnType::BigInt => field(out, |out| {
            out.extend_from_slice(&i.to_be_bytes());
            true
        }),
        Scalar::Integer(i) => encode(out, kind, &Value::from(*i)),
        Scalar::Number(f) => encode(out, kind, &serde_json::Number::from_f64(*f).map_or_else(|| Value::String(f.to_string()), Value::Number)),
        Scalar::Bool(b) => encode(out, kind, &Value::Bool(*b)),
        Scalar::Decimal(text) => match serde_json::from_str::<&RawValue>(text).ok() {
            Some(number) => encode_raw(out, kind, Some(number)),
            // A big number's text that is no JSON number (`NaN`) is kept as a string.
            None => encode_str(out, kind, text),
        },
        Scalar::Json(text) => match serde_json::from_str::<&RawValue>(text).ok() {
            Some(json) => encode_raw(out, kind, Some(json)),
            None => !encode(out, kind, &Value::Null),
        },
        Scalar::Instant { micros, .. } if kind == ColumnType::TimestampTz => field(out, |out| {
            out.extend_from_slice(&(micros - PG_EPOCH_MICROS).to_be_bytes());
            true
        }),
        // It decoded once already: its text does too.
        Scalar::Instant { encoded, .. } => encode(out, kind, &sluice_protocol::protobuf::decode_value(encoded).unwrap_or_default()),
        Scalar::Other(v) => encode(out, kind, v),
    }
}

/// Appends one field of a binary `COPY` row: its length, then its bytes;
/// NULL is length -1. Returns false (and writes NULL) when the value does
/// not fit the column.
pub fn encode(out: &mut Vec<u8>, kind: ColumnType, value: &Value) -> bool {
    match value {
        Value::Null => {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            true
        }
        Value::String(s) => encode_str(out, kind, s),
        _ => field(out, |out| match kind {
            ColumnType::BigInt => integer(value).map(|i| out.extend_from_slice(&i.to_be_bytes())).is_some(),
            ColumnType::Decimal => value.is_number() && numeric(out, &value.to_string()),
            // A number or boolean where a string was declared is kept as its text.
            ColumnType::Varchar => {
                serde_json::to_writer(&mut *out, value).expect("JSON serializes");
                true
            }
            ColumnType::Boolean => value.as_bool().map(|b| out.push(u8::from(b))).is_some(),
            ColumnType::Jsonb => {
                out.push(1);
                let start = out.len();
                serde_json::to_writer(&mut *out, value).expect("JSON serializes");
                // Postgres refuses \u0000 in jsonb text.
                !out[start..].windows(6).any(|w| w == b"\\u0000")
            }
            ColumnType::Date | ColumnType::Timestamp | ColumnType::TimestampTz | ColumnType::Time | ColumnType::TimeTz => false,
        }),
    }
}

/// [`encode`] for a string value: the common case, which the hot path
/// takes without building a `Value`.
fn encode_str(out: &mut Vec<u8>, kind: ColumnType, s: &str) -> bool {
    field(out, |out| match kind {
        ColumnType::BigInt => s.trim().parse::<i64>().map(|i| out.extend_from_slice(&i.to_be_bytes())).is_ok(),
        ColumnType::Decimal => !s.trim().is_empty() && numeric(out, s.trim()),
        ColumnType::Varchar => {
            out.extend_from_slice(s.as_bytes());
            !s.contains('\0')
        }
        ColumnType::Boolean => false,
        ColumnType::Jsonb => {
            out.push(1);
            serde_json::to_writer(&mut *out, s).expect("JSON serializes");
            !s.contains('\0')
        }
        ColumnType::Date => s.parse::<jiff::civil::Date>().map(|d| out.extend_from_slice(&(days(d) as i32).to_be_bytes())).is_ok(),
        ColumnType::Timestamp => civil_datetime(s).map(|us| out.extend_from_slice(&us.to_be_bytes())).is_some(),
        ColumnType::TimestampTz => instant(s).map(|us| out.extend_from_slice(&us.to_be_bytes())).is_some(),
        ColumnType::Time => s.parse::<jiff::civil::Time>().map(|t| out.extend_from_slice(&time_micros(t).to_be_bytes())).is_ok(),
        ColumnType::TimeTz => time_tz(s)
            .map(|(us, west)| {
                out.extend_from_slice(&us.to_be_bytes());
                out.extend_from_slice(&west.to_be_bytes());
            })
            .is_some(),
    })
}

/// One field: its length, then what `write` appends; NULL in its place
/// when `write` says the value does not fit.
fn field(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let fits = write(out);
    if fits {
        let len = (out.len() - start - 4) as i32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    } else {
        out.truncate(start);
        out.extend_from_slice(&(-1i32).to_be_bytes());
    }
    fits
}

/// A JSON number that is a whole number in range.
fn integer(value: &Value) -> Option<i64> {
    let n = value.as_number()?;
    n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64))
}

/// Postgres's binary `numeric`: base-10000 digits, a weight, a sign and
/// the display scale, from a decimal text (`-12.5`, `1e-3`).
fn numeric(out: &mut Vec<u8>, text: &str) -> bool {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => match text[at + 1..].parse::<i32>() {
            Ok(e) if e.abs() <= 1000 => (&text[..at], e),
            _ => return false,
        },
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty() || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return false;
    }
    // All digits, and where the decimal point falls among them.
    let digits: Vec<u8> = whole.bytes().chain(fraction.bytes()).map(|b| b - b'0').collect();
    let point = whole.len() as i32 + exponent;
    let scale = (digits.len() as i32 - point).max(0);
    if scale > 16383 || point > 131072 {
        return false;
    }
    // Pad so that the point sits on a group boundary, then group by four.
    let lead = (4 - point.rem_euclid(4)) % 4;
    let mut padded = vec![0u8; lead as usize];
    padded.extend_from_slice(&digits);
    while !padded.len().is_multiple_of(4) {
        padded.push(0);
    }
    let mut groups: Vec<i16> = padded.chunks(4).map(|c| c.iter().fold(0i16, |g, &d| g * 10 + i16::from(d))).collect();
    let mut weight = (point + lead) / 4 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if negative && !groups.is_empty() { 0x4000 } else { 0 };
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(scale as i16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    true
}

fn days(date: jiff::civil::Date) -> i64 {
    jiff::tz::TimeZone::UTC.to_timestamp(date.to_datetime(jiff::civil::Time::midnight())).map(|t| t.as_second().div_euclid(86_400)).unwrap_or(0) - PG_EPOCH_DAYS
}

fn time_micros(t: jiff::civil::Time) -> i64 {
    (i64::from(t.hour()) * 3600 + i64::from(t.minute()) * 60 + i64::from(t.second())) * 1_000_000 + i64::from(t.subsec_nanosecond()) / 1000
}

/// Microseconds since Postgres's epoch of a date-time that names no zone
/// (a zone, if given, is dropped, as a cast to `timestamp` drops it).
fn civil_datetime(text: &str) -> Option<i64> {
    let civil = without_zone(text).parse::<jiff::civil::DateTime>().ok()?;
    let utc = jiff::tz::TimeZone::UTC.to_timestamp(civil).ok()?;
    Some(utc.as_microsecond() - PG_EPOCH_MICROS)
}

/// Microseconds since Postgres's epoch of an instant; a date-time without
/// a zone is taken as UTC.
fn instant(text: &str) -> Option<i64> {
    let at = match text.parse::<jiff::Timestamp>() {
        Ok(t) => t,
        Err(_) => jiff::tz::TimeZone::UTC.to_timestamp(text.parse::<jiff::civil::DateTime>().ok()?).ok()?,
    };
    Some(at.as_microsecond() - PG_EPOCH_MICROS)
}

/// A date-time's text without its offset (`Z`, `+05:00`, `-0800`).
fn without_zone(text: &str) -> &str {
    let time_at = text.find(['T', 't', ' ']).unwrap_or(text.len());
    match text[time_at..].find(['Z', 'z', '+', '-']) {
        Some(at) => &text[..time_at + at],
        None => text,
    }
}

/// A time with an offset: microseconds of the day, and seconds west of UTC
/// (Postgres's sign).
fn time_tz(text: &str) -> Option<(i64, i32)> {
    let split = text.rfind(['+', '-', 'Z', 'z'])?;
    let (clock, zone) = text.split_at(split);
    let time = clock.parse::<jiff::civil::Time>().ok()?;
    let east = match zone {
        "Z" | "z" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let digits: String = zone[1..].chars().filter(char::is_ascii_digit).collect();
            let (h, m) = match digits.len() {
                2 => (digits.parse::<i32>().ok()?, 0),
                4 => (digits[..2].parse::<i32>().ok()?, digits[2..].parse::<i32>().ok()?),
                _ => return None,
            };
            sign * (h * 3600 + m * 60)
        }
    };
    Some((time_micros(time), -east))
}

/// `_airbyte_extracted_at` from a record's `emitted_at` (milliseconds since 1970).
pub fn extracted_at_micros(emitted_at_ms: i64) -> i64 {
    emitted_at_ms.saturating_mul(1000) - PG_EPOCH_MICROS
}

/// A row's `_airbyte_meta`: the sync and what was changed in the row, by
/// the source (`changes`, from the record's meta) and here (`nulled`).
pub fn meta(sync_id: Option<i64>, mut changes: Vec<Value>, nulled: &[&str]) -> Value {
    changes.extend(nulled.iter().map(|field| json!({"field": field, "change": "NULLED", "reason": "DESTINATION_TYPECAST_ERROR"})));
    let mut meta = Map::new();
    meta.insert("changes".into(), Value::Array(changes));
    meta.insert("sync_id".into(), sync_id.map_or(Value::Null, Value::from));
    Value::Object(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_change_never_loses_a_value() {
        use ColumnType::*;
        assert_eq!(BigInt.evolved(Decimal), Decimal, "widened");
        assert_eq!(Decimal.evolved(BigInt), Decimal, "a decimal holds integers");
        assert_eq!(Varchar.evolved(BigInt), Varchar, "a string holds an integer's text");
        assert_eq!(Boolean.evolved(Varchar), Varchar);
        assert_eq!(Boolean.evolved(Date), Jsonb, "neither holds the other");
        assert_eq!(Jsonb.evolved(TimestampTz), Jsonb);
        assert_eq!(Date.evolved(Date), Date);
    }

    #[test]
    fn names_follow_airbytes_rules_for_postgres() {
        assert_eq!(identifier("users"), "users");
        assert_eq!(identifier("Order Items-2024"), "Order_Items_2024");
        assert_eq!(identifier("2fa"), "_2fa");
        assert_eq!(identifier("café"), "café");
        let long = "a".repeat(70);
        let cut = identifier(&long);
        assert_eq!(cut.len(), 63);
        assert!(cut.starts_with(&"a".repeat(54)) && cut.as_bytes()[54] == b'_', "{cut}");
        assert_ne!(identifier(&format!("{long}x")), cut, "two long names stay apart");
        assert!(identifier(&"é".repeat(40)).len() <= 63, "cut on a character boundary");
        assert_eq!(quoted("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn json_schema_maps_to_airbytes_column_types() {
        let cases = [
            (json!({"type": "integer"}), ColumnType::BigInt),
            (json!({"type": ["null", "integer"]}), ColumnType::BigInt),
            (json!({"type": "number", "airbyte_type": "integer"}), ColumnType::BigInt),
            (json!({"type": ["null", "number"]}), ColumnType::Decimal),
            (json!({"type": "string"}), ColumnType::Varchar),
            (json!({"type": "boolean"}), ColumnType::Boolean),
            (json!({"type": "string", "format": "date"}), ColumnType::Date),
            (json!({"type": "string", "format": "date-time"}), ColumnType::TimestampTz),
            (json!({"type": "string", "format": "date-time", "airbyte_type": "timestamp_without_timezone"}), ColumnType::Timestamp),
            (json!({"type": "string", "format": "time", "airbyte_type": "time_without_timezone"}), ColumnType::Time),
            (json!({"type": "string", "format": "time", "airbyte_type": "time_with_timezone"}), ColumnType::TimeTz),
            (json!({"type": "object", "properties": {}}), ColumnType::Jsonb),
            (json!({"type": "array"}), ColumnType::Jsonb),
            (json!({"type": ["string", "integer"]}), ColumnType::Jsonb),
            (json!({"oneOf": [{"type": "string"}, {"type": "integer"}]}), ColumnType::Jsonb),
            (json!({}), ColumnType::Jsonb),
            (json!({"$ref": "WellKnownTypes.json#/definitions/Integer"}), ColumnType::BigInt),
            (json!({"$ref": "WellKnownTypes.json#/definitions/TimestampWithTimezone"}), ColumnType::TimestampTz),
        ];
        for (schema, expected) in cases {
            assert_eq!(column_type(&schema), expected, "{schema}");
        }
        let clash = columns(&json!({"properties": {"a-b": {}, "a_b": {}}})).unwrap_err();
        assert!(clash.contains("`a-b`") && clash.contains("`a_b`"), "{clash}");
        assert!(columns(&json!({"properties": {"_airbyte_meta": {}}})).is_err());
    }

    fn field(kind: ColumnType, value: Value) -> (bool, Vec<u8>) {
        let mut out = Vec::new();
        let fits = encode(&mut out, kind, &value);
        (fits, out)
    }

    #[test]
    fn numbers_as_written_keep_every_digit_and_json_goes_as_it_came() {
        let raw = |text: &str| serde_json::value::RawValue::from_string(text.to_owned()).unwrap();
        let mut exact = Vec::new();
        assert!(encode_raw(&mut exact, ColumnType::Decimal, Some(&raw("123456789012345678901234567890.123456789"))));
        let mut lossy = Vec::new();
        encode(&mut lossy, ColumnType::Decimal, &json!(123456789012345678901234567890.123456789));
        assert_ne!(exact, lossy, "a double holds 17 digits; the text holds all 39");
        assert_eq!(numeric_of("123456789012345678901234567890.123456789").map(|n| n.4.len()), Some(11), "8 base-10000 digits before the point, 3 after");
        let mut doc = Vec::new();
        assert!(encode_raw(&mut doc, ColumnType::Jsonb, Some(&raw(r#"{"big": 1234567890123456789012}"#))));
        assert_eq!(&doc[5..], br#"{"big": 1234567890123456789012}"#);
        let mut nothing = Vec::new();
        assert!(encode_raw(&mut nothing, ColumnType::Jsonb, None));
        assert_eq!(nothing, (-1i32).to_be_bytes());
        let mut misfit = Vec::new();
        assert!(!encode_raw(&mut misfit, ColumnType::Decimal, Some(&raw(r#""abc""#))));
        assert_eq!(misfit, (-1i32).to_be_bytes(), "a misfit is NULL");
        let mut text = Vec::new();
        assert!(encode_raw(&mut text, ColumnType::Varchar, Some(&raw("12.50"))));
        assert_eq!(&text[4..], b"12.50", "a number into a string column keeps its text");
        let mut surrogate = Vec::new();
        assert!(!encode_raw(&mut surrogate, ColumnType::Varchar, Some(&raw(r#""\ud800""#))), "a lone surrogate fits no string");
        assert_eq!(surrogate, (-1i32).to_be_bytes());
        let mut decimal = Vec::new();
        assert!(encode_scalar(&mut decimal, ColumnType::Varchar, &Scalar::Decimal("12345.67890")));
        assert_eq!(&decimal[4..], b"12345.67890", "PROTOBUF's decimal text too");
        let mut bad_json = Vec::new();
        assert!(!encode_scalar(&mut bad_json, ColumnType::Jsonb, &Scalar::Json("{not json")));
        assert_eq!(bad_json, (-1i32).to_be_bytes());
    }

    #[test]
    fn values_encode_in_copys_binary_format_and_misfits_become_null() {
        assert_eq!(field(ColumnType::BigInt, json!(7)), (true, [&8i32.to_be_bytes()[..], &7i64.to_be_bytes()].concat()));
        assert_eq!(field(ColumnType::BigInt, json!("x")), (false, (-1i32).to_be_bytes().to_vec()));
        assert_eq!(field(ColumnType::BigInt, json!(1e30)), (false, (-1i32).to_be_bytes().to_vec()));
        assert_eq!(field(ColumnType::Boolean, Value::Null), (true, (-1i32).to_be_bytes().to_vec()));
        assert_eq!(field(ColumnType::Varchar, json!("hé")).1, [&3i32.to_be_bytes()[..], "hé".as_bytes()].concat());
        assert!(!field(ColumnType::Varchar, json!("a\u{0}b")).0, "Postgres text holds no NUL");
        assert_eq!(field(ColumnType::Jsonb, json!({"a": 1})).1, [&8i32.to_be_bytes()[..], b"\x01{\"a\":1}"].concat());
        // 2000-01-02 is day 1 of Postgres's epoch; 1999-12-31 is day -1.
        assert_eq!(field(ColumnType::Date, json!("2000-01-02")).1[4..], 1i32.to_be_bytes());
        assert_eq!(field(ColumnType::Date, json!("1999-12-31")).1[4..], (-1i32).to_be_bytes());
        assert!(!field(ColumnType::Date, json!("not a date")).0);
        let noon = 12 * 3600 * 1_000_000i64;
        assert_eq!(field(ColumnType::TimestampTz, json!("2000-01-01T13:00:00+01:00")).1[4..], noon.to_be_bytes());
        assert_eq!(field(ColumnType::Timestamp, json!("2000-01-01T12:00:00")).1[4..], noon.to_be_bytes());
        assert_eq!(field(ColumnType::Timestamp, json!("2000-01-01T12:00:00+05:00")).1[4..], noon.to_be_bytes(), "the zone is dropped");
        assert_eq!(field(ColumnType::Time, json!("12:00:00")).1[4..], noon.to_be_bytes());
        assert_eq!(field(ColumnType::TimeTz, json!("12:00:00+02:00")).1[4..], [&noon.to_be_bytes()[..], &(-7200i32).to_be_bytes()].concat());
    }

    fn numeric_of(text: &str) -> Option<(i16, i16, u16, i16, Vec<i16>)> {
        let mut out = Vec::new();
        if !numeric(&mut out, text) {
            return None;
        }
        let word = |i: usize| i16::from_be_bytes([out[i], out[i + 1]]);
        let n = word(0);
        Some((n, word(2), word(4) as u16, word(6), (0..n as usize).map(|i| word(8 + 2 * i)).collect()))
    }

    #[test]
    fn numerics_are_base_10000_digits_with_weight_sign_and_scale() {
        assert_eq!(numeric_of("12345.678"), Some((3, 1, 0, 3, vec![1, 2345, 6780])));
        assert_eq!(numeric_of("-0.5"), Some((1, -1, 0x4000, 1, vec![5000])));
        assert_eq!(numeric_of("0"), Some((0, 0, 0, 0, vec![])));
        assert_eq!(numeric_of("10000"), Some((1, 1, 0, 0, vec![1])));
        assert_eq!(numeric_of("1e-3"), Some((1, -1, 0, 3, vec![10])));
        assert_eq!(numeric_of("2.5E2"), Some((1, 0, 0, 0, vec![250])));
        assert_eq!(numeric_of("0.00012"), Some((2, -1, 0, 5, vec![1, 2000])));
        assert_eq!(numeric_of("abc"), None);
        assert_eq!(numeric_of("1e99999"), None);
    }
}
