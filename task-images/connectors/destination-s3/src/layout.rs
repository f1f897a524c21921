//! Where records go and how they look, as Airbyte's destination-s3 writes
//! them: object keys from the path format and the file name pattern, and
//! Airbyte's record shape as JSONL lines and CSV rows.

use serde_json::value::RawValue;
use sluice_protocol::json;

/// Airbyte's columns, in the order its JSONL and CSV writers put them.
pub const AIRBYTE_COLUMNS: [&str; 4] = ["_airbyte_raw_id", "_airbyte_extracted_at", "_airbyte_meta", "_airbyte_generation_id"];

const PATH_VARIABLES: [&str; 11] = ["NAMESPACE", "STREAM_NAME", "YEAR", "MONTH", "DAY", "HOUR", "MINUTE", "SECOND", "MILLISECOND", "EPOCH", "UUID"];
const NAME_VARIABLES: [&str; 8] = ["date", "date:yyyy_MM", "timestamp", "timestamp:millis", "timestamp:micros", "part_number", "sync_id", "format_extension"];

/// Each `${...}` of a path format, in order; an error names an unclosed one.
fn path_variables(format: &str) -> Result<Vec<&str>, String> {
    let mut found = Vec::new();
    let mut rest = format;
    while let Some(at) = rest.find("${") {
        let end = rest[at..].find('}').ok_or_else(|| format!("{:?} opens a variable it does not close", &rest[at..]))?;
        found.push(&rest[at + 2..at + end]);
        rest = &rest[at + end + 1..];
    }
    Ok(found)
}

pub fn check_path_format(format: &str) -> Result<(), String> {
    match path_variables(format)?.into_iter().find(|v| !PATH_VARIABLES.contains(v)) {
        Some(unknown) => Err(format!("${{{unknown}}} is not a variable: use {}", PATH_VARIABLES.map(|v| format!("${{{v}}}")).join(", "))),
        None => Ok(()),
    }
}

pub fn check_file_name_pattern(pattern: &str) -> Result<(), String> {
    let mut rest = pattern;
    while let Some(at) = rest.find('{') {
        let end = rest[at..].find('}').ok_or_else(|| format!("{:?} opens a variable it does not close", &rest[at..]))?;
        let name = &rest[at + 1..at + end];
        if !NAME_VARIABLES.contains(&name) {
            return Err(format!("{{{name}}} is not a variable: use {}", NAME_VARIABLES.map(|v| format!("{{{v}}}")).join(", ")));
        }
        rest = &rest[at + end + 1..];
    }
    Ok(())
}

/// What a stream's object keys are made of, fixed for the sync.
pub struct KeyParts<'a> {
    pub bucket_path: &'a str,
    pub path_format: &'a str,
    pub file_name_pattern: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub stream: &'a str,
    /// When the sync started: every object of the sync has the same date parts.
    pub started_at: jiff::Timestamp,
    pub sync_id: i64,
    pub extension: &'a str,
}

/// The key of a stream's object `part_number` (from 0). `uuid` fills
/// `${UUID}`, one per object. Empty segments (a stream without a
/// namespace) are left out rather than making `//`.
pub fn object_key(parts: &KeyParts<'_>, part_number: u64, uuid: &str) -> String {
    let at = jiff::tz::Offset::UTC.to_datetime(parts.started_at);
    let millis = parts.started_at.as_millisecond();
    let mut path = String::new();
    let mut rest = parts.path_format;
    while let Some(start) = rest.find("${") {
        path.push_str(&rest[..start]);
        let end = start + rest[start..].find('}').expect("checked when the config was read");
        path.push_str(&match &rest[start + 2..end] {
            "NAMESPACE" => parts.namespace.unwrap_or_default().to_owned(),
            "STREAM_NAME" => parts.stream.to_owned(),
            "YEAR" => format!("{:04}", at.year()),
            "MONTH" => format!("{:02}", at.month()),
            "DAY" => format!("{:02}", at.day()),
            "HOUR" => format!("{:02}", at.hour()),
            "MINUTE" => format!("{:02}", at.minute()),
            "SECOND" => format!("{:02}", at.second()),
            "MILLISECOND" => format!("{:03}", at.millisecond()),
            "EPOCH" => millis.to_string(),
            "UUID" => uuid.to_owned(),
            other => unreachable!("${{{other}}} was checked when the config was read"),
        });
        rest = &rest[end + 1..];
    }
    path.push_str(rest);
    let name = file_name(parts, part_number, &at);
    let mut key: Vec<&str> = Vec::new();
    key.extend(parts.bucket_path.split('/').filter(|s| !s.is_empty()));
    // The path format's last segment is the start of the file's name (`..._${EPOCH}_` + `0.jsonl`).
    let joined = format!("{path}{name}");
    key.extend(joined.split('/').filter(|s| !s.is_empty()));
    key.join("/")
}

/// The part of a path format that names a stream's own directory: up to
/// its last `/` before any variable other than the namespace and the
/// stream's name. None when that part does not hold `${STREAM_NAME}`
/// (streams would share a directory).
pub fn stream_directory(path_format: &str) -> Option<&str> {
    let mut fixed_until = path_format.len();
    let mut rest = 0;
    while let Some(start) = path_format[rest..].find("${") {
        let at = rest + start;
        let end = at + path_format[at..].find('}')?;
        if !matches!(&path_format[at + 2..end], "NAMESPACE" | "STREAM_NAME") {
            fixed_until = at;
            break;
        }
        rest = end + 1;
    }
    let directory = &path_format[..path_format[..fixed_until].rfind('/')? + 1];
    directory.contains("${STREAM_NAME}").then_some(directory)
}

/// The key prefix of a stream's directory (from [`stream_directory`]),
/// ending in `/`, with empty segments left out as [`object_key`] leaves them.
pub fn directory_prefix(parts: &KeyParts<'_>, directory: &str) -> String {
    let expanded = directory.replace("${NAMESPACE}", parts.namespace.unwrap_or_default()).replace("${STREAM_NAME}", parts.stream);
    let segments: Vec<&str> = parts.bucket_path.split('/').chain(expanded.split('/')).filter(|s| !s.is_empty()).collect();
    format!("{}/", segments.join("/"))
}

/// The file's name after the path: `{part_number}{format_extension}` by
/// default. A pattern without the part number gets `-N` after the first
/// object, and one without the extension gets it at the end: objects never
/// overwrite each other, and readers find them by extension.
fn file_name(parts: &KeyParts<'_>, part_number: u64, at: &jiff::civil::DateTime) -> String {
    let Some(pattern) = parts.file_name_pattern else {
        return format!("{part_number}{}", parts.extension);
    };
    let micros = parts.started_at.as_microsecond();
    let mut name = pattern
        .replace("{date:yyyy_MM}", &format!("{:04}_{:02}", at.year(), at.month()))
        .replace("{date}", &format!("{:04}_{:02}_{:02}", at.year(), at.month(), at.day()))
        .replace("{timestamp:micros}", &micros.to_string())
        .replace("{timestamp:millis}", &(micros / 1000).to_string())
        .replace("{timestamp}", &(micros / 1000).to_string())
        .replace("{part_number}", &part_number.to_string())
        .replace("{sync_id}", &parts.sync_id.to_string())
        .replace("{format_extension}", parts.extension);
    if !pattern.contains("{part_number}") && part_number > 0 {
        name.push_str(&format!("-{part_number}"));
    }
    if !pattern.contains("{format_extension}") {
        name.push_str(parts.extension);
    }
    name
}

/// A record's `_airbyte_meta` as Airbyte's S3 writers put it.
pub fn meta_json(sync_id: i64, changes: &[serde_json::Value]) -> Vec<u8> {
    let mut out = format!("{{\"sync_id\":{sync_id},\"changes\":").into_bytes();
    serde_json::to_writer(&mut out, changes).expect("JSON serializes");
    out.push(b'}');
    out
}

/// Airbyte's four columns of one record.
pub struct Columns<'a> {
    pub raw_id: &'a str,
    pub extracted_at_ms: i64,
    /// `_airbyte_meta`'s JSON.
    pub meta: &'a [u8],
    pub generation: i64,
}

/// One JSONL line: Airbyte's four columns, then `_airbyte_data` (or,
/// flattened, the data's own fields). `data` is the record's data as
/// written; an error if it is not an object.
pub fn jsonl_line(out: &mut Vec<u8>, columns: &Columns<'_>, data: &str, flatten: bool) -> Result<(), String> {
    let inner = object_inner(data)?;
    out.extend_from_slice(b"{\"_airbyte_raw_id\":\"");
    out.extend_from_slice(columns.raw_id.as_bytes());
    out.extend_from_slice(b"\",\"_airbyte_extracted_at\":");
    out.extend_from_slice(columns.extracted_at_ms.to_string().as_bytes());
    out.extend_from_slice(b",\"_airbyte_meta\":");
    out.extend_from_slice(columns.meta);
    out.extend_from_slice(b",\"_airbyte_generation_id\":");
    out.extend_from_slice(columns.generation.to_string().as_bytes());
    if flatten {
        if !inner.is_empty() {
            out.push(b',');
            out.extend_from_slice(inner.as_bytes());
        }
    } else {
        out.extend_from_slice(b",\"_airbyte_data\":");
        out.extend_from_slice(data.trim().as_bytes());
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// An object's text between its braces.
fn object_inner(data: &str) -> Result<&str, String> {
    let trimmed = data.trim();
    match trimmed.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        Some(inner) => Ok(inner.trim()),
        None => Err("the record's data is not a JSON object".into()),
    }
}

/// The CSV header: Airbyte's four columns, then `_airbyte_data` or, flattened, the stream's properties.
pub fn csv_header(out: &mut Vec<u8>, flattened: Option<&[String]>) {
    let mut names: Vec<&str> = AIRBYTE_COLUMNS.to_vec();
    match flattened {
        Some(properties) => names.extend(properties.iter().map(String::as_str)),
        None => names.push("_airbyte_data"),
    }
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        quoted(out, name);
    }
    out.extend_from_slice(b"\r\n");
}

/// One CSV row, as Airbyte's writer makes it: CRLF, numbers bare and every
/// other value quoted (`"` doubled), null empty, objects and arrays as
/// their JSON. Flattened, each of the stream's `properties` is a column.
pub fn csv_row(out: &mut Vec<u8>, columns: &Columns<'_>, data: &str, flattened: Option<&[String]>) -> Result<(), String> {
    quoted(out, columns.raw_id);
    out.push(b',');
    out.extend_from_slice(columns.extracted_at_ms.to_string().as_bytes());
    out.push(b',');
    quoted(out, std::str::from_utf8(columns.meta).map_err(|e| e.to_string())?);
    out.push(b',');
    out.extend_from_slice(columns.generation.to_string().as_bytes());
    match flattened {
        None => {
            object_inner(data)?;
            out.push(b',');
            quoted(out, data.trim());
        }
        Some(properties) => {
            let values = json::fields_by_name(data, properties.iter().map(String::as_str)).map_err(|e| format!("the record's data is not a JSON object: {e}"))?;
            for value in values {
                out.push(b',');
                csv_value(out, value);
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

fn csv_value(out: &mut Vec<u8>, value: Option<&RawValue>) {
    let Some(text) = value.map(RawValue::get) else { return };
    match text.as_bytes().first() {
        Some(b'n') => {}
        Some(b'-' | b'0'..=b'9') => out.extend_from_slice(text.as_bytes()),
        Some(b'"') => match json::string_text(text) {
            Some(s) => quoted(out, &s),
            None => quoted(out, text),
        },
        _ => quoted(out, text),
    }
}

fn quoted(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for piece in text.split_inclusive('"') {
        out.extend_from_slice(piece.as_bytes());
        if piece.ends_with('"') {
            out.push(b'"');
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(pattern: Option<&'a str>, namespace: Option<&'a str>) -> KeyParts<'a> {
        KeyParts {
            bucket_path: "data_sync/test",
            path_format: crate::config::DEFAULT_PATH_FORMAT,
            file_name_pattern: pattern,
            namespace,
            stream: "users",
            started_at: jiff::Timestamp::from_millisecond(1_736_179_200_000).unwrap(),
            sync_id: 42,
            extension: ".jsonl.gz",
        }
    }

    #[test]
    fn keys_follow_airbytes_default_layout() {
        assert_eq!(object_key(&parts(None, Some("public")), 0, "u"), "data_sync/test/public/users/2025_01_06_1736179200000_0.jsonl.gz");
        assert_eq!(object_key(&parts(None, Some("public")), 3, "u"), "data_sync/test/public/users/2025_01_06_1736179200000_3.jsonl.gz");
        assert_eq!(object_key(&parts(None, None), 0, "u"), "data_sync/test/users/2025_01_06_1736179200000_0.jsonl.gz", "no namespace, no empty segment");
        let mut custom = parts(Some("{date}-{sync_id}"), Some("public"));
        custom.path_format = "${STREAM_NAME}/${HOUR}${MINUTE}/${UUID}/";
        assert_eq!(object_key(&custom, 0, "abc"), "data_sync/test/users/1600/abc/2025_01_06-42.jsonl.gz", "the extension is added");
        assert_eq!(object_key(&custom, 2, "abc"), "data_sync/test/users/1600/abc/2025_01_06-42-2.jsonl.gz", "later parts never overwrite the first");
    }

    #[test]
    fn a_streams_directory_is_found_only_when_it_is_its_own() {
        assert_eq!(stream_directory(crate::config::DEFAULT_PATH_FORMAT), Some("${NAMESPACE}/${STREAM_NAME}/"));
        assert_eq!(stream_directory("${STREAM_NAME}/${YEAR}/${MONTH}/"), Some("${STREAM_NAME}/"));
        assert_eq!(stream_directory("${STREAM_NAME}_${EPOCH}_"), None, "users_ would match users_archive_ too");
        assert_eq!(stream_directory("${YEAR}/${STREAM_NAME}/"), None, "each day is another directory");
        assert_eq!(stream_directory("${NAMESPACE}/"), None);
        assert_eq!(directory_prefix(&parts(None, Some("public")), "${NAMESPACE}/${STREAM_NAME}/"), "data_sync/test/public/users/");
        assert_eq!(directory_prefix(&parts(None, None), "${NAMESPACE}/${STREAM_NAME}/"), "data_sync/test/users/");
        let key = object_key(&parts(None, None), 0, "u");
        assert!(key.starts_with(&directory_prefix(&parts(None, None), "${NAMESPACE}/${STREAM_NAME}/")));
    }

    #[test]
    fn unknown_variables_are_named() {
        assert!(check_path_format(crate::config::DEFAULT_PATH_FORMAT).is_ok());
        assert!(check_path_format("${NAMESPACE}/${STREEM}").unwrap_err().contains("${STREEM}"));
        assert!(check_path_format("${NAMESPACE").unwrap_err().contains("does not close"));
        assert!(check_file_name_pattern("{date:yyyy_MM}_{part_number}{format_extension}").is_ok());
        assert!(check_file_name_pattern("{day}").unwrap_err().contains("{day}"));
    }

    fn columns(meta: &[u8]) -> Columns<'_> {
        Columns { raw_id: "9c2a", extracted_at_ms: 1_736_179_200_000, meta, generation: 3 }
    }

    #[test]
    fn jsonl_lines_are_airbytes_record_shape() {
        let meta = meta_json(42, &[]);
        let mut out = Vec::new();
        jsonl_line(&mut out, &columns(&meta), r#"{"id": 1, "n": 12.50}"#, false).unwrap();
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "{\"_airbyte_raw_id\":\"9c2a\",\"_airbyte_extracted_at\":1736179200000,\"_airbyte_meta\":{\"sync_id\":42,\"changes\":[]},\"_airbyte_generation_id\":3,\"_airbyte_data\":{\"id\": 1, \"n\": 12.50}}\n"
        );
        out.clear();
        jsonl_line(&mut out, &columns(&meta), r#"{"id": 1}"#, true).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["id"], 1, "flattened: the data's fields at the top");
        assert!(jsonl_line(&mut out, &columns(&meta), "[1]", false).is_err());
    }

    #[test]
    fn csv_rows_quote_what_is_not_a_number() {
        let meta = meta_json(42, &[]);
        let mut out = Vec::new();
        let properties: Vec<String> = ["id", "name", "tags", "gone"].map(String::from).to_vec();
        csv_header(&mut out, Some(&properties));
        csv_row(&mut out, &columns(&meta), r#"{"name": "Ada \"the\" first", "id": 7, "tags": ["a"], "gone": null}"#, Some(&properties)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"_airbyte_raw_id\",\"_airbyte_extracted_at\",\"_airbyte_meta\",\"_airbyte_generation_id\",\"id\",\"name\",\"tags\",\"gone\"\r\n\
             \"9c2a\",1736179200000,\"{\"\"sync_id\"\":42,\"\"changes\"\":[]}\",3,7,\"Ada \"\"the\"\" first\",\"[\"\"a\"\"]\",\r\n"
        );
        let mut out = Vec::new();
        csv_row(&mut out, &columns(&meta), r#"{"id":7}"#, None).unwrap();
        assert!(String::from_utf8(out).unwrap().ends_with(",3,\"{\"\"id\"\":7}\"\r\n"), "the data as one JSON column");
    }
}
