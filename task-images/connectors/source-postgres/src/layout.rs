//! Plain data: a column's PostgreSQL type as Airbyte's JSON Schema, and the
//! expression that makes its value the JSON Airbyte's source-postgres emits
//! (the server builds each record's JSON; this says how per type).

use serde_json::{json, Value};
use sluice_postgres::quoted;

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

/// The select-list expression whose `to_json` is the value as Airbyte emits it.
pub fn expression(column: &Column) -> String {
    let c = quoted(&column.name);
    let converted = match (column.element.as_deref(), column.type_name.as_str()) {
        (Some("bytea"), _) => format!("(select array_agg(translate(encode(e, 'base64'), E'\\n', '')) from unnest({c}) e)"),
        (Some("json"), _) => format!("{c}::jsonb[]"),
        (Some("money"), _) => format!("{c}::numeric[]"),
        (Some(element), _) if scalar(element)["type"] == "string" && !matches!(element, "date" | "time" | "timetz" | "timestamp" | "timestamptz") => format!("{c}::text[]"),
        (Some(_), _) => c.clone(),
        (None, "bytea") => format!("translate(encode({c}, 'base64'), E'\\n', '')"),
        // jsonb's text never has a raw newline; json's may.
        (None, "json") => format!("{c}::jsonb"),
        (None, "money") => format!("{c}::numeric"),
        (None, t) if scalar(t)["type"] == "string" && !matches!(t, "date" | "time" | "timetz" | "timestamp" | "timestamptz") => format!("{c}::text"),
        (None, _) => c.clone(),
    };
    format!("{converted} as {c}")
}

/// A string as an SQL literal.
pub fn string_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A value as an SQL literal of the column's type, from its text form.
pub fn literal(text: &str, type_sql: &str) -> String {
    format!("{}::{type_sql}", string_literal(text))
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
        assert_eq!(expression(&column("bytea", None)), "translate(encode(\"c\", 'base64'), E'\\n', '') as \"c\"");
        assert_eq!(expression(&column("uuid", None)), "\"c\"::text as \"c\"");
        assert_eq!(expression(&column("int4", None)), "\"c\" as \"c\"");
        assert_eq!(literal("O'Brien", "text"), "'O''Brien'::text");
    }
}
