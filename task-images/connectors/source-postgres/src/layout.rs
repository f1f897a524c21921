//! Plain data: a column's PostgreSQL type as Airbyte's JSON Schema, and how
//! its value is selected so that it becomes the JSON Airbyte's
//! source-postgres emits (`values.rs` writes it).

use serde_json::{json, Value};
use sluice_postgres::quoted;

use sluice_protocol::protobuf::RecordEncoder;

use crate::values::Wire;

/// A column as the catalog has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// `pg_type.typname`: `int4`, `timestamptz`, `_text` (an array) ...
    pub type_name: String,
    /// `pg_type.typtype`: `e` for an enum, `d` for a domain ...
    pub kind: String,
    /// For an array, its element's `typname`.
    pub element: Option<String>,
}

/// The JSON Schema of one value of `type_name` (not null).
fn scalar(type_name: &str) -> Value {
    match type_name {
        "bool" => json!({"type": "boolean"}),
        "int2" | "int4" | "int8" | "oid" | "xid" => json!({"type": "integer"}),
        "float4" | "float8" | "numeric" | "money" => json!({"type": "number"}),
        "date" => json!({"type": "string", "format": "date"}),
        "time" => json!({"type": "string", "format": "time", "airbyte_type": "time_without_timezone"}),
        "timetz" => json!({"type": "string", "format": "time", "airbyte_type": "time_with_timezone"}),
        "timestamp" => json!({"type": "string", "format": "date-time", "airbyte_type": "timestamp_without_timezone"}),
        "timestamptz" => json!({"type": "string", "format": "date-time", "airbyte_type": "timestamp_with_timezone"}),
        // Any JSON: the destination keeps it as it is (jsonb in Postgres).
        "json" | "jsonb" => json!({}),
        "bytea" => json!({"type": "string", "contentEncoding": "base64"}),
        // text, varchar, char, uuid, inet, interval, enums, bits, xml ...: their text.
        _ => json!({"type": "string"}),
    }
}

/// The column's JSON Schema, nullable as every column of Airbyte's is.
pub fn schema(column: &Column) -> Value {
    let mut schema = match &column.element {
        Some(element) => json!({"type": "array", "items": scalar(element)}),
        None => scalar(&column.type_name),
    };
    if let Some(t) = schema.get("type").and_then(Value::as_str).map(str::to_owned) {
        schema["type"] = json!(["null", t]);
    }
    schema
}

/// The select-list expression of a column and how its value comes in a
/// binary COPY (`values.rs` writes it as the JSON Airbyte emits): types
/// with a binary decoder as they are, text-like ones as text, the rest
/// (arrays, timetz) as the server's `to_json`.
pub fn select(column: &Column) -> (String, Wire) {
    let c = quoted(&column.name);
    let (expression, wire) = match (column.element.as_deref(), column.type_name.as_str()) {
        (Some("bytea"), _) => (format!("to_json((select array_agg(translate(encode(e, 'base64'), E'\\n', '')) from unnest({c}) e))::text"), Wire::Json),
        (Some("json"), _) => (format!("to_json({c}::jsonb[])::text"), Wire::Json),
        (Some("money"), _) => (format!("to_json({c}::numeric[])::text"), Wire::Json),
        (Some(element), _) if is_text(element) => (format!("to_json({c}::text[])::text"), Wire::Json),
        (Some(_), _) => (format!("to_json({c})::text"), Wire::Json),
        (None, "bool") => (c.clone(), Wire::Bool),
        (None, "int2") => (c.clone(), Wire::Int2),
        (None, "int4") => (c.clone(), Wire::Int4),
        (None, "int8") => (c.clone(), Wire::Int8),
        (None, "oid" | "xid") => (format!("{c}::text::int8"), Wire::Int8),
        (None, "float4") => (c.clone(), Wire::Float4),
        (None, "float8") => (c.clone(), Wire::Float8),
        (None, "numeric") => (c.clone(), Wire::Numeric),
        (None, "money") => (format!("{c}::numeric"), Wire::Numeric),
        (None, "date") => (c.clone(), Wire::Date),
        (None, "time") => (c.clone(), Wire::Time),
        (None, "timestamp") => (c.clone(), Wire::Timestamp),
        (None, "timestamptz") => (c.clone(), Wire::Timestamptz),
        (None, "timetz") => (format!("to_json({c})::text"), Wire::Json),
        (None, "jsonb") => (c.clone(), Wire::Jsonb),
        // jsonb's text never has a raw newline; json's may.
        (None, "json") => (format!("{c}::jsonb"), Wire::Jsonb),
        (None, "bytea") => (format!("translate(encode({c}, 'base64'), E'\\n', '')"), Wire::Text),
        (None, _) => (format!("{c}::text"), Wire::Text),
    };
    (format!("{expression} as {c}"), wire)
}

/// A type whose values Airbyte emits as their text.
fn is_text(type_name: &str) -> bool {
    scalar(type_name)["type"] == "string" && !matches!(type_name, "date" | "time" | "timetz" | "timestamp" | "timestamptz" | "bytea")
}

/// A string as an SQL literal.
pub fn string_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A value as an SQL literal of the column's type, from its text form.
pub fn literal(text: &str, type_sql: &str) -> String {
    format!("{}::{type_sql}", string_literal(text))
}

/// Writes a value that came in its type's text form (a change from the
/// replication slot) as the JSON a snapshot makes of it (`select`),
/// so that a row reads the same whichever way it came.
pub fn write_text_value(column: &Column, text: &[u8], out: &mut Vec<u8>) {
    match column.element.as_deref() {
        Some(element) => {
            out.push(b'[');
            for (i, item) in array_items(text).into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match item {
                    None => out.extend_from_slice(b"null"),
                    Some(item) => write_scalar(element, item.as_bytes(), out),
                }
            }
            out.push(b']');
        }
        None => write_scalar(&column.type_name, text, out),
    }
}

/// The same value as a PROTOBUF value: typed as a snapshot's is (booleans,
/// integers, floats, decimals, JSON), the rest as the text above.
pub fn encode_text_value(column: &Column, text: &[u8], e: &mut RecordEncoder, scratch: &mut Vec<u8>) {
    scratch.clear();
    write_text_value(column, text, scratch);
    if column.element.is_some() || matches!(column.type_name.as_str(), "json" | "jsonb") {
        return e.json_text(scratch);
    }
    // What `write_text_value` wrote: a JSON string, a boolean or a number.
    let written = std::str::from_utf8(scratch).unwrap_or("null");
    match written.as_bytes().first() {
        Some(b'"') => e.string(&serde_json::from_str::<String>(written).unwrap_or_default()),
        Some(b't') => e.boolean(true),
        Some(b'f') => e.boolean(false),
        _ => match column.type_name.as_str() {
            "float4" | "float8" => e.number(written.parse().unwrap_or(f64::NAN)),
            _ => match written.parse::<i64>() {
                Ok(integer) if !matches!(column.type_name.as_str(), "numeric" | "money") => e.integer(integer),
                _ => e.big_decimal(written),
            },
        },
    }
}

fn write_scalar(type_name: &str, text: &[u8], out: &mut Vec<u8>) {
    let string = |s: &str, out: &mut Vec<u8>| serde_json::to_writer(&mut *out, s).expect("a string serializes");
    let t = String::from_utf8_lossy(text);
    match type_name {
        "bool" => out.extend_from_slice(if text == b"t" { b"true" } else { b"false" }),
        // The shortest text of the float, as a snapshot's binary value is written.
        "float4" if t.parse::<f32>().is_ok() => {
            let f: f32 = t.parse().expect("parsed");
            crate::values::write_float(f as f64, Some(f), out)
        }
        "float8" if t.parse::<f64>().is_ok() => crate::values::write_float(t.parse().expect("parsed"), None, out),
        "int2" | "int4" | "int8" | "oid" | "xid" | "float4" | "float8" | "numeric" => {
            // NaN and Infinity are no JSON numbers: to_json quotes them too.
            if serde_json::from_str::<serde_json::Number>(&t).is_ok() {
                out.extend_from_slice(text);
            } else {
                string(&t, out);
            }
        }
        "money" => {
            let digits: String = t.chars().filter(|c| c.is_ascii_digit() || *c == '.' || *c == '-').collect();
            if serde_json::from_str::<serde_json::Number>(&digits).is_ok() {
                out.extend_from_slice(digits.as_bytes());
            } else {
                string(&t, out);
            }
        }
        "json" | "jsonb" => minify_json(text, out),
        "bytea" => {
            let hex = t.strip_prefix("\\x").unwrap_or(&t);
            let bytes: Vec<u8> = (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect();
            string(&base64(&bytes), out);
        }
        "timestamp" => string(&t.replacen(' ', "T", 1), out),
        "timestamptz" => {
            let mut iso = t.replacen(' ', "T", 1);
            // `+00` as to_json writes it: `+00:00`.
            if iso.len() >= 3 && iso.as_bytes()[iso.len() - 3] == b'+' || iso.len() >= 3 && iso.as_bytes()[iso.len() - 3] == b'-' {
                iso.push_str(":00");
            }
            string(&iso, out);
        }
        _ => string(&t, out),
    }
}

/// JSON text without the whitespace between its tokens: a record is one line.
fn minify_json(text: &[u8], out: &mut Vec<u8>) {
    let (mut in_string, mut escaped) = (false, false);
    for &b in text {
        if in_string {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
            out.push(b);
        } else if !b.is_ascii_whitespace() {
            out.push(b);
        }
    }
}

/// The items of a one-dimensional array literal (`{1,2,NULL}`,
/// `{"a b","c\"d",NULL}`); a nested array's items are flattened.
fn array_items(text: &[u8]) -> Vec<Option<String>> {
    let t = String::from_utf8_lossy(text);
    let body = t.trim();
    // `[1:2]={...}`: explicit bounds, which JSON has no place for.
    let body = body.split_once('=').filter(|(bounds, _)| bounds.starts_with('[')).map_or(body, |(_, rest)| rest);
    let mut items = Vec::new();
    let mut chars = body.chars().peekable();
    let mut current = String::new();
    let (mut quoted, mut had_quotes, mut any) = (false, false, false);
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => current.extend(chars.next()),
            '"' => {
                quoted = !quoted;
                had_quotes = true;
                any = true;
            }
            '{' | '}' if !quoted => {
                if any || !current.is_empty() {
                    items.push(item(&current, had_quotes));
                }
                current.clear();
                (had_quotes, any) = (false, false);
            }
            ',' if !quoted => {
                if any || !current.is_empty() {
                    items.push(item(&current, had_quotes));
                }
                current.clear();
                (had_quotes, any) = (false, false);
            }
            c => {
                current.push(c);
                any = true;
            }
        }
    }
    items
}

fn item(text: &str, quoted: bool) -> Option<String> {
    (quoted || text != "NULL").then(|| text.to_owned())
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(type_name: &str, element: Option<&str>) -> Column {
        Column { name: "c".into(), type_name: type_name.into(), kind: "b".into(), element: element.map(String::from) }
    }

    #[test]
    fn types_map_as_airbytes_and_values_convert_on_the_server() {
        assert_eq!(schema(&column("int8", None)), json!({"type": ["null", "integer"]}));
        assert_eq!(schema(&column("timestamptz", None))["airbyte_type"], "timestamp_with_timezone");
        assert_eq!(schema(&column("jsonb", None)), json!({}));
        assert_eq!(schema(&column("_int4", Some("int4"))), json!({"type": ["null", "array"], "items": {"type": "integer"}}));
        assert_eq!(select(&column("bytea", None)), ("translate(encode(\"c\", 'base64'), E'\\n', '') as \"c\"".into(), Wire::Text));
        assert_eq!(select(&column("uuid", None)), ("\"c\"::text as \"c\"".into(), Wire::Text));
        assert_eq!(select(&column("int4", None)), ("\"c\" as \"c\"".into(), Wire::Int4));
        assert_eq!(select(&column("_int4", Some("int4"))), ("to_json(\"c\")::text as \"c\"".into(), Wire::Json));
        assert_eq!(literal("O'Brien", "text"), "'O''Brien'::text");
    }

    fn text_json(type_name: &str, element: Option<&str>, text: &str) -> String {
        let mut out = Vec::new();
        write_text_value(&column(type_name, element), text.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_in_text_form_read_as_the_snapshot_writes_them() {
        assert_eq!(text_json("int4", None, "42"), "42");
        assert_eq!(text_json("numeric", None, "123456789012345678901234567890.123456789"), "123456789012345678901234567890.123456789");
        assert_eq!(text_json("numeric", None, "NaN"), r#""NaN""#);
        assert_eq!(text_json("bool", None, "t"), "true");
        assert_eq!(text_json("jsonb", None, "{\"x\": [1,\n 2], \"s\": \"a b\"}"), r#"{"x":[1,2],"s":"a b"}"#);
        assert_eq!(text_json("bytea", None, "\\xdeadbeef00"), r#""3q2+7wA=""#);
        assert_eq!(text_json("timestamp", None, "2024-01-02 03:04:05.678"), r#""2024-01-02T03:04:05.678""#);
        assert_eq!(text_json("timestamptz", None, "2024-01-01 22:04:05+00"), r#""2024-01-01T22:04:05+00:00""#);
        assert_eq!(text_json("_int4", Some("int4"), "{1,2,NULL}"), "[1,2,null]");
        assert_eq!(text_json("_text", Some("text"), r#"{"a","b c",NULL,"NULL","q\"d"}"#), r#"["a","b c",null,"NULL","q\"d"]"#);
        assert_eq!(text_json("_text", Some("text"), "{}"), "[]");
        assert_eq!(text_json("text", None, "line\none"), r#""line\none""#);
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
