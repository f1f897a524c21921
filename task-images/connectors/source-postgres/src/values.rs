//! Rows of a binary `COPY ... TO STDOUT` written as a record's JSON.
//!
//! The server sends each value in its type's binary form, the cheapest it
//! has (building JSON with `row_to_json` cost the server six times the
//! COPY itself); this writes the JSON that `to_json` would have made of it.
//! Types with no decoder here arrive already as JSON (`Wire::Json`) or as
//! text (`Wire::Text`): the select list (`layout::select`) says which.

use sluice_protocol::protobuf::RecordEncoder;

/// How a selected value is sent, and so how it becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    /// `text` (and any type cast to it): a JSON string.
    Text,
    Date,
    Time,
    Timestamp,
    /// In UTC, the session's time zone.
    Timestamptz,
    /// `jsonb`: a version byte, then its text.
    Jsonb,
    /// `to_json(...)::text`: JSON as it is.
    Json,
}

/// A record's columns: each one's `"name":` and how its value comes.
pub struct Row {
    keys: Vec<Vec<u8>>,
    wires: Vec<Wire>,
}

impl Row {
    pub fn new<'a>(columns: impl IntoIterator<Item = (&'a str, Wire)>) -> Row {
        let (mut keys, mut wires) = (Vec::new(), Vec::new());
        for (i, (name, wire)) in columns.into_iter().enumerate() {
            let mut key = if i == 0 { b"{".to_vec() } else { b",".to_vec() };
            serde_json::to_writer(&mut key, name).expect("a string serializes");
            key.push(b':');
            keys.push(key);
            wires.push(wire);
        }
        Row { keys, wires }
    }

    /// How many of a tuple's first fields are the record's.
    pub fn width(&self) -> usize {
        self.wires.len()
    }

    /// The record's JSON object from its fields (None: SQL null).
    pub fn write(&self, fields: &[Option<&[u8]>], out: &mut Vec<u8>) -> Result<(), String> {
        if self.keys.is_empty() {
            out.extend_from_slice(b"{}");
            return Ok(());
        }
        for (i, ((key, wire), field)) in self.keys.iter().zip(&self.wires).zip(fields).enumerate() {
            out.extend_from_slice(key);
            match field {
                None => out.extend_from_slice(b"null"),
                Some(value) => write_value(*wire, value, out).map_err(|e| format!("column {}: {e}", self.name(i)))?,
            }
        }
        out.push(b'}');
        Ok(())
    }

    /// The record's PROTOBUF values: for each of the stream's properties in
    /// sorted order, the field `order` names (None: a property the row does
    /// not have, sent as null).
    pub fn encode(&self, fields: &[Option<&[u8]>], order: &[Option<usize>], e: &mut RecordEncoder, scratch: &mut Vec<u8>) -> Result<(), String> {
        for &position in order {
            match position.and_then(|i| Some((i, fields[i]?))) {
                None => e.null(),
                Some((i, value)) => encode_value(self.wires[i], value, e, scratch).map_err(|err| format!("column {}: {err}", self.name(i)))?,
            }
        }
        Ok(())
    }

    /// The name of column `i`, for an error.
    fn name(&self, i: usize) -> String {
        let key = &self.keys[i];
        serde_json::from_slice(&key[1..key.len() - 1]).unwrap_or_default()
    }
}

/// A binary integer of `n` bytes.
fn integer(v: &[u8], n: usize) -> Result<i64, String> {
    match (n, v.len()) {
        (2, 2) => Ok(i16::from_be_bytes([v[0], v[1]]) as i64),
        (4, 4) => Ok(i32::from_be_bytes(v.try_into().expect("4 bytes")) as i64),
        (8, 8) => Ok(i64::from_be_bytes(v.try_into().expect("8 bytes"))),
        _ => Err(format!("{} bytes where {n} were expected", v.len())),
    }
}

/// The PROTOBUF value of a field, typed where Airbyte's framing has the
/// type; where it has none (a float's shortest text, NaN, infinity, a BC
/// date) the JSON writer's text goes as a decimal or a string, so both
/// framings carry the same value.
fn encode_value(wire: Wire, v: &[u8], e: &mut RecordEncoder, scratch: &mut Vec<u8>) -> Result<(), String> {
    const DAY: i64 = 86_400_000_000;
    // Days from 1970-01-01 (the framing's epoch) to 2000-01-01 (PostgreSQL's).
    const EPOCH_DAYS: i64 = 10_957;
    let int = |n: usize| integer(v, n);
    let ad = |days: i64| days != i32::MAX as i64 && days != i32::MIN as i64 && civil(days).0 > 0;
    match wire {
        Wire::Bool => e.boolean(v.first() == Some(&1)),
        Wire::Int2 => e.integer(int(2)?),
        Wire::Int4 => e.integer(int(4)?),
        Wire::Int8 => e.integer(int(8)?),
        Wire::Float8 if f64::from_bits(int(8)? as u64).is_finite() => e.number(f64::from_bits(int(8)? as u64)),
        // The double nearest the float's shortest text: what that text reads as in JSON.
        Wire::Float4 if f32::from_bits(int(4)? as u32).is_finite() => {
            scratch.clear();
            write_value(wire, v, scratch)?;
            e.number(std::str::from_utf8(scratch).ok().and_then(|t| t.parse().ok()).ok_or("a float's text does not read back")?);
        }
        Wire::Text => match std::str::from_utf8(v) {
            Ok(text) => e.string(text),
            Err(_) => e.string(&String::from_utf8_lossy(v)),
        },
        Wire::Jsonb => match v.split_first() {
            Some((1, text)) => e.json_text(text),
            _ => return Err("a jsonb value of an unknown version".into()),
        },
        Wire::Json => e.json_text(v),
        Wire::Date if ad(int(4)?) => e.date(int(4)? + EPOCH_DAYS),
        Wire::Time => e.time_without_timezone(int(8)? as u64 * 1000),
        // Infinity and -infinity are i64::MAX and i64::MIN, and the last
        // millennia before them do not fit the framing's epoch: they go as text.
        Wire::Timestamp | Wire::Timestamptz if ![i64::MAX, i64::MIN].contains(&int(8)?) && ad(int(8)?.div_euclid(DAY)) && int(8)?.checked_add(EPOCH_DAYS * DAY).is_some() => {
            let micros = int(8)?;
            if wire == Wire::Timestamptz {
                let micros = micros + EPOCH_DAYS * DAY;
                e.timestamp_with_timezone(micros.div_euclid(1_000_000), (micros.rem_euclid(1_000_000) * 1000) as u32, 0);
            } else {
                e.timestamp_without_timezone(micros.div_euclid(DAY) + EPOCH_DAYS, micros.rem_euclid(DAY) as u64 * 1000);
            }
        }
        _ => {
            scratch.clear();
            write_value(wire, v, scratch)?;
            // These texts (numbers, or dates and words in quotes) never need an escape.
            let text = std::str::from_utf8(scratch).map_err(|e| e.to_string())?;
            match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
                Some(quoted) => e.string(quoted),
                None => e.big_decimal(text),
            }
        }
    }
    Ok(())
}

fn write_value(wire: Wire, v: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let int = |n: usize| integer(v, n);
    match wire {
        Wire::Bool => out.extend_from_slice(if v.first() == Some(&1) { b"true" } else { b"false" }),
        Wire::Int2 => write_int(int(2)?, out),
        Wire::Int4 => write_int(int(4)?, out),
        Wire::Int8 => write_int(int(8)?, out),
        Wire::Float4 => {
            let f = f32::from_bits(int(4)? as u32);
            write_float(f as f64, Some(f), out)
        }
        Wire::Float8 => write_float(f64::from_bits(int(8)? as u64), None, out),
        Wire::Numeric => write_numeric(v, out)?,
        // Bytes that are not UTF-8 (a database in SQL_ASCII) become U+FFFD rather than fail the read.
        Wire::Text => sluice_protocol::json::write_string(v, out),
        Wire::Jsonb => match v.split_first() {
            Some((1, text)) => out.extend_from_slice(text),
            _ => return Err("a jsonb value of an unknown version".into()),
        },
        Wire::Json => out.extend_from_slice(v),
        Wire::Date => {
            let days = int(4)?;
            match days as i32 {
                i32::MAX => out.extend_from_slice(b"\"infinity\""),
                i32::MIN => out.extend_from_slice(b"\"-infinity\""),
                _ => {
                    out.push(b'"');
                    let (year, month, day) = civil(days);
                    write_date(year, month, day, out);
                    era(year, out);
                    out.push(b'"');
                }
            }
        }
        Wire::Time => {
            out.push(b'"');
            write_time(int(8)?, out);
            out.push(b'"');
        }
        Wire::Timestamp | Wire::Timestamptz => {
            let micros = int(8)?;
            match micros {
                i64::MAX => out.extend_from_slice(b"\"infinity\""),
                i64::MIN => out.extend_from_slice(b"\"-infinity\""),
                _ => {
                    const DAY: i64 = 86_400_000_000;
                    let (year, month, day) = civil(micros.div_euclid(DAY));
                    out.push(b'"');
                    write_date(year, month, day, out);
                    out.push(b'T');
                    write_time(micros.rem_euclid(DAY), out);
                    if wire == Wire::Timestamptz {
                        out.extend_from_slice(b"+00:00");
                    }
                    era(year, out);
                    out.push(b'"');
                }
            }
        }
    }
    Ok(())
}

fn write_int(n: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The shortest text that reads back as the same float (what PostgreSQL
/// prints by default); NaN and the infinities as strings, as `to_json`.
pub(crate) fn write_float(x: f64, single: Option<f32>, out: &mut Vec<u8>) {
    use std::io::Write;
    if x.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if x.is_infinite() {
        out.extend_from_slice(if x > 0.0 { b"\"Infinity\"" } else { b"\"-Infinity\"" });
    } else if x != 0.0 && !(1e-5..1e16).contains(&x.abs()) {
        let _ = match single {
            Some(f) => write!(out, "{f:e}"),
            None => write!(out, "{x:e}"),
        };
    } else {
        let _ = match single {
            Some(f) => write!(out, "{f}"),
            None => write!(out, "{x}"),
        };
    }
}

/// `numeric`'s binary form (digits in base 10000, the weight of the first,
/// the sign, the display scale) as its text, every digit kept.
fn write_numeric(v: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    if v.len() < 8 {
        return Err(format!("a numeric of {} bytes", v.len()));
    }
    let word = |i: usize| u16::from_be_bytes([v[2 * i], v[2 * i + 1]]);
    let (ndigits, weight, sign, dscale) = (word(0) as usize, word(1) as i16 as i64, word(2), word(3) as usize);
    if v.len() != 8 + 2 * ndigits {
        return Err(format!("a numeric of {ndigits} digits in {} bytes", v.len()));
    }
    let special: &[u8] = match sign {
        0x0000 | 0x4000 => b"",
        0xC000 => b"\"NaN\"",
        0xD000 => b"\"Infinity\"",
        0xF000 => b"\"-Infinity\"",
        other => return Err(format!("a numeric with sign {other:#x}")),
    };
    if !special.is_empty() {
        out.extend_from_slice(special);
        return Ok(());
    }
    let digit = |i: i64| if i >= 0 && (i as usize) < ndigits { word(4 + i as usize) } else { 0 };
    if sign == 0x4000 {
        out.push(b'-');
    }
    if weight < 0 {
        out.push(b'0');
    } else {
        write_int(digit(0) as i64, out);
        for i in 1..=weight {
            out.extend_from_slice(&four_digits(digit(i)));
        }
    }
    if dscale > 0 {
        out.push(b'.');
        let mut written = 0;
        let mut i = weight + 1;
        while written < dscale {
            let take = (dscale - written).min(4);
            out.extend_from_slice(&four_digits(digit(i))[..take]);
            written += take;
            i += 1;
        }
    }
    Ok(())
}

/// A base-10000 digit as its four decimal digits, zeros leading.
fn four_digits(d: u16) -> [u8; 4] {
    [b'0' + (d / 1000 % 10) as u8, b'0' + (d / 100 % 10) as u8, b'0' + (d / 10 % 10) as u8, b'0' + (d % 10) as u8]
}

/// Days since PostgreSQL's epoch (2000-01-01) as a proleptic Gregorian
/// (year, month, day); year 0 is 1 BC.
fn civil(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days-to-civil, from 1970-01-01.
    let z = days + 10_957 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// ISO's date, a BC year by its number before Christ as PostgreSQL prints it.
fn write_date(year: i64, month: u32, day: u32, out: &mut Vec<u8>) {
    let year = if year > 0 { year } else { 1 - year };
    if year < 10_000 {
        out.extend_from_slice(&four_digits(year as u16));
    } else {
        write_int(year, out);
    }
    out.extend_from_slice(&[b'-', b'0' + (month / 10) as u8, b'0' + (month % 10) as u8, b'-', b'0' + (day / 10) as u8, b'0' + (day % 10) as u8]);
}

fn era(year: i64, out: &mut Vec<u8>) {
    if year <= 0 {
        out.extend_from_slice(b" BC");
    }
}

/// Microseconds of a day as `HH:MM:SS`, with the fraction's significant digits.
fn write_time(micros: i64, out: &mut Vec<u8>) {
    let (seconds, fraction) = (micros / 1_000_000, micros % 1_000_000);
    let two = |n: i64| [b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8];
    let ([h1, h2], [m1, m2], [s1, s2]) = (two(seconds / 3600), two(seconds / 60 % 60), two(seconds % 60));
    out.extend_from_slice(&[h1, h2, b':', m1, m2, b':', s1, s2]);
    if fraction > 0 {
        let digits = [fraction / 100_000, fraction / 10_000, fraction / 1_000, fraction / 100, fraction / 10, fraction].map(|d| b'0' + (d % 10) as u8);
        let significant = 6 - digits.iter().rev().take_while(|&&d| d == b'0').count();
        out.push(b'.');
        out.extend_from_slice(&digits[..significant]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(wire: Wire, v: &[u8]) -> String {
        let mut out = Vec::new();
        write_value(wire, v, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale].iter().chain(digits) {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_keep_every_digit_and_their_scale() {
        // 12345.67890 (numeric(20,5)): digits 1|2345|6789, weight 1, scale 5.
        assert_eq!(json(Wire::Numeric, &numeric(3, 1, 0, 5, &[1, 2345, 6789])), "12345.67890");
        assert_eq!(json(Wire::Numeric, &numeric(1, -2, 0x4000, 5, &[1000])), "-0.00001");
        assert_eq!(json(Wire::Numeric, &numeric(0, 0, 0, 0, &[])), "0");
        assert_eq!(json(Wire::Numeric, &numeric(0, 0, 0, 2, &[])), "0.00");
        // 10^8: one digit of weight 2, the lower groups implied zeros.
        assert_eq!(json(Wire::Numeric, &numeric(1, 2, 0, 0, &[1])), "100000000");
        assert_eq!(json(Wire::Numeric, &numeric(2, 0, 0, 9, &[3, 1415, 9265, 3589][..2])), "3.141500000");
        assert_eq!(json(Wire::Numeric, &numeric(0, 0, 0xC000, 0, &[])), "\"NaN\"");
        assert_eq!(json(Wire::Numeric, &numeric(0, 0, 0xF000, 0, &[])), "\"-Infinity\"");
        assert!(write_value(Wire::Numeric, &numeric(3, 0, 0, 0, &[1]), &mut Vec::new()).is_err());
    }

    #[test]
    fn dates_and_times_read_as_postgres_prints_them() {
        let date = |days: i32| json(Wire::Date, &days.to_be_bytes());
        assert_eq!(date(0), "\"2000-01-01\"");
        assert_eq!(date(-10_957), "\"1970-01-01\"");
        assert_eq!(date(8_825), "\"2024-02-29\"");
        // 44 BC, March 15: year -43 in the proleptic calendar.
        assert_eq!(date(-746_117), "\"0044-03-15 BC\"");
        assert_eq!(date(i32::MAX), "\"infinity\"");
        let ts = |micros: i64, wire| json(wire, &micros.to_be_bytes());
        assert_eq!(ts(0, Wire::Timestamp), "\"2000-01-01T00:00:00\"");
        assert_eq!(ts(-1, Wire::Timestamptz), "\"1999-12-31T23:59:59.999999+00:00\"");
        assert_eq!(ts(757_479_845_678_000, Wire::Timestamp), "\"2024-01-02T03:04:05.678\"");
        assert_eq!(ts(i64::MIN, Wire::Timestamp), "\"-infinity\"");
        assert_eq!(ts(45_296_789_000, Wire::Time), "\"12:34:56.789\"");
    }

    #[test]
    fn floats_are_the_shortest_text_that_reads_back() {
        assert_eq!(json(Wire::Float4, &0.1f32.to_bits().to_be_bytes()), "0.1");
        assert_eq!(json(Wire::Float8, &2.25f64.to_bits().to_be_bytes()), "2.25");
        assert_eq!(json(Wire::Float8, &f64::MAX.to_bits().to_be_bytes()), "1.7976931348623157e308");
        assert_eq!(json(Wire::Float4, &(-3.4e38f32).to_bits().to_be_bytes()), "-3.4e38");
        assert_eq!(json(Wire::Float8, &f64::NAN.to_bits().to_be_bytes()), "\"NaN\"");
    }

    #[test]
    fn protobuf_values_carry_what_the_json_says() {
        use sluice_protocol::protobuf::{decode_frame, Frame};
        let columns = [
            ("a_bool", Wire::Bool, vec![1]),
            ("b_int", Wire::Int4, 7i32.to_be_bytes().to_vec()),
            ("c_float4", Wire::Float4, 0.1f32.to_bits().to_be_bytes().to_vec()),
            ("c_float4_small", Wire::Float4, 1e-7f32.to_bits().to_be_bytes().to_vec()),
            ("d_nan", Wire::Float8, f64::NAN.to_bits().to_be_bytes().to_vec()),
            ("e_numeric", Wire::Numeric, numeric(3, 1, 0, 5, &[1, 2345, 6789])),
            ("f_date", Wire::Date, 8_825i32.to_be_bytes().to_vec()),
            ("g_bc", Wire::Date, (-746_117i32).to_be_bytes().to_vec()),
            ("h_before_2000", Wire::Timestamptz, (-1i64).to_be_bytes().to_vec()),
            ("i_minus_infinity", Wire::Timestamp, i64::MIN.to_be_bytes().to_vec()),
            ("i_plus_infinity", Wire::Timestamptz, i64::MAX.to_be_bytes().to_vec()),
            ("j_time", Wire::Time, 45_296_789_000i64.to_be_bytes().to_vec()),
            ("k_text", Wire::Text, b"x\ny".to_vec()),
            ("l_null", Wire::Text, vec![]),
        ];
        let row = Row::new(columns.iter().map(|(name, wire, _)| (*name, *wire)));
        let fields: Vec<Option<&[u8]>> = columns.iter().map(|(name, _, v)| (*name != "l_null").then_some(v.as_slice())).collect();
        let positions: Vec<Option<usize>> = (0..columns.len()).map(Some).collect();
        let (mut encoder, mut scratch, mut frame) = (RecordEncoder::default(), Vec::new(), Vec::new());
        encoder.begin(None, "t", 0, "p");
        row.encode(&fields, &positions, &mut encoder, &mut scratch).unwrap();
        encoder.finish(&mut frame);
        // The frame's length, a varint, then the frame.
        let start = frame.iter().position(|b| b & 0x80 == 0).unwrap() + 1;
        let Frame::Record(record) = decode_frame(&frame[start..]).unwrap() else { panic!("not a record") };
        let names: Vec<String> = columns.iter().map(|(name, _, _)| name.to_string()).collect();
        assert_eq!(
            record.data(&names).unwrap(),
            serde_json::json!({
                "a_bool": true, "b_int": 7, "c_float4": 0.1, "c_float4_small": 1e-7, "d_nan": "NaN", "e_numeric": "12345.67890",
                "f_date": "2024-02-29", "g_bc": "0044-03-15 BC", "h_before_2000": "1999-12-31T23:59:59.999999+00:00",
                "i_minus_infinity": "-infinity", "i_plus_infinity": "infinity", "j_time": "12:34:56.789", "k_text": "x\ny", "l_null": null
            })
        );
    }

    #[test]
    fn a_row_is_one_object_with_nulls_and_escaped_names() {
        let row = Row::new([("id", Wire::Int8), ("a \"b\"", Wire::Text), ("j", Wire::Jsonb)]);
        let mut out = Vec::new();
        row.write(&[Some(&7i64.to_be_bytes()), Some(b"x\ny"), None], &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"id":7,"a \"b\"":"x\ny","j":null}"#);
        let error = row.write(&[Some(b"abc"), None, None], &mut Vec::new()).unwrap_err();
        assert!(error.contains("column id"), "{error}");
    }
}
