//! The Airbyte type of a property, read from its JSON Schema as Airbyte's
//! destinations read it: `type` with `format` and `airbyte_type`, or the
//! protocol's well-known `$ref` types. Every destination maps these to its
//! own column types.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AirbyteType {
    Integer,
    Number,
    Boolean,
    String,
    Date,
    TimeWithoutTimezone,
    TimeWithTimezone,
    TimestampWithoutTimezone,
    TimestampWithTimezone,
    /// Objects, arrays, unions of several types, and schemas that say nothing.
    Unknown,
}

/// The Airbyte type of one property's JSON Schema.
pub fn airbyte_type(schema: &Value) -> AirbyteType {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        // Airbyte's well-known types (protocol v1).
        return match reference.rsplit('/').next().unwrap_or_default() {
            "Integer" => AirbyteType::Integer,
            "Number" => AirbyteType::Number,
            "Boolean" => AirbyteType::Boolean,
            "Date" => AirbyteType::Date,
            "TimeWithTimezone" => AirbyteType::TimeWithTimezone,
            "TimeWithoutTimezone" => AirbyteType::TimeWithoutTimezone,
            "TimestampWithTimezone" => AirbyteType::TimestampWithTimezone,
            "TimestampWithoutTimezone" => AirbyteType::TimestampWithoutTimezone,
            "String" | "BinaryData" => AirbyteType::String,
            _ => AirbyteType::Unknown,
        };
    }
    if schema.get("oneOf").is_some() || schema.get("anyOf").is_some() {
        return AirbyteType::Unknown;
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect(),
        _ => vec![],
    };
    let airbyte_type = schema.get("airbyte_type").and_then(Value::as_str);
    match types.as_slice() {
        ["integer"] => AirbyteType::Integer,
        ["number"] if airbyte_type == Some("integer") => AirbyteType::Integer,
        ["number"] => AirbyteType::Number,
        ["boolean"] => AirbyteType::Boolean,
        ["string"] => match (schema.get("format").and_then(Value::as_str), airbyte_type) {
            (Some("date"), _) => AirbyteType::Date,
            (Some("time"), Some("time_without_timezone")) => AirbyteType::TimeWithoutTimezone,
            (Some("time"), _) => AirbyteType::TimeWithTimezone,
            (Some("date-time"), Some("timestamp_without_timezone")) => AirbyteType::TimestampWithoutTimezone,
            (Some("date-time"), _) => AirbyteType::TimestampWithTimezone,
            _ => AirbyteType::String,
        },
        _ => AirbyteType::Unknown,
    }
}
