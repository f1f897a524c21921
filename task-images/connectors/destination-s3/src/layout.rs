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

/// A name made safe for an S3 key, as Airbyte's `toS3SafeCharacters`:
/// accents dropped (NFKD, combining marks removed), then every character
/// but ASCII letters and digits and `/!_.*')(&$@=;:+,?-` made `_`.
pub fn s3_safe(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    name.nfkd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .map(|c| if c.is_ascii_alphanumeric() || "/!_.*')(&$@=;:+,?-".contains(c) { c } else { '_' })
        .collect()
}

/// The key of a stream's object `part_number` (from 0). `uuid` fills
/// `${UUID}`, one per object. Empty segments (a stream without a
/// namespace) are left out rather than making `//`.
pub fn object_key(parts: &KeyParts<'_>, part_number: u64, uuid: &str) -> String {
    let at = jiff::tz::Offset::UTC.to_datetime(parts.started_at);
    let millis = parts.started_at.as_millisecond();
    render(parts, &mut |variable| match variable {
        "NAMESPACE" => s3_safe(parts.namespace.unwrap_or_default()),
        "STREAM_NAME" => s3_safe(parts.stream),
        "YEAR" => format!("{:04}", at.year()),
        "MONTH" => format!("{:02}", at.month()),
        "DAY" => format!("{:02}", at.day()),
        "HOUR" => format!("{:02}", at.hour()),
        "MINUTE" => format!("{:02}", at.minute()),
        "SECOND" => format!("{:02}", at.second()),
        // Four digits, as Airbyte's.
        "MILLISECOND" => format!("{:04}", at.millisecond()),
        "EPOCH" | "timestamp" | "timestamp:millis" => millis.to_string(),
        "timestamp:micros" => parts.started_at.as_microsecond().to_string(),
        "UUID" => uuid.to_owned(),
        "date" => format!("{:04}_{:02}_{:02}", at.year(), at.month(), at.day()),
        "date:yyyy_MM" => format!("{:04}_{:02}", at.year(), at.month()),
        "part_number" => part_number.to_string(),
        PART_SUFFIX if part_number > 0 => format!("-{part_number}"),
        PART_SUFFIX => String::new(),
        "sync_id" => parts.sync_id.to_string(),
        "format_extension" => parts.extension.to_owned(),
        other => unreachable!("{other} was checked when the config was read"),
    })
}

/// What a file name pattern without `{part_number}` gets after the first
/// object, so that objects never overwrite each other.
const PART_SUFFIX: &str = "part_suffix";

/// A key from the path format and the file name pattern, each variable
/// filled by `fill`: `{part_number}{format_extension}` when there is no
/// pattern; a pattern without the part number gets [`PART_SUFFIX`], and
/// one without the extension gets it at the end (readers find objects by it).
fn render(parts: &KeyParts<'_>, fill: &mut dyn FnMut(&str) -> String) -> String {
    let mut path = String::new();
    expand(parts.path_format, "${", &mut path, fill);
    // The path format's last segment is the start of the file's name (`..._${EPOCH}_` + `0.jsonl`).
    match parts.file_name_pattern {
        None => {
            path.push_str(&fill("part_number"));
            path.push_str(&fill("format_extension"));
        }
        Some(pattern) => {
            expand(pattern, "{", &mut path, fill);
            if !pattern.contains("{part_number}") {
                path.push_str(&fill(PART_SUFFIX));
            }
            if !pattern.contains("{format_extension}") {
                path.push_str(&fill("format_extension"));
            }
        }
    }
    let segments: Vec<&str> = parts.bucket_path.split('/').chain(path.split('/')).filter(|s| !s.is_empty()).collect();
    segments.join("/")
}

/// Appends `template` with each variable (opened by `open`, closed by `}`) filled.
fn expand(template: &str, open: &str, out: &mut String, fill: &mut dyn FnMut(&str) -> String) {
    let mut rest = template;
    while let Some(start) = rest.find(open) {
        out.push_str(&rest[..start]);
        let end = start + rest[start..].find('}').expect("checked when the config was read");
        out.push_str(&fill(&rest[start + open.len()..end]));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
}

/// Which keys are a stream's objects, whatever sync wrote them: the
/// longest prefix all of them share (to list), and a pattern of the whole
/// key (to tell them from another stream's under that prefix), as
/// Airbyte's object storage finds a stream's earlier generations.
pub struct StreamKeys {
    pub prefix: String,
    pattern: regex::Regex,
}

impl StreamKeys {
    pub fn of(parts: &KeyParts<'_>) -> StreamKeys {
        // What differs between objects becomes a mark, replaced by its pattern below.
        const MARK: char = '\u{1}';
        let mut patterns: Vec<&str> = Vec::new();
        let rendered = render(parts, &mut |variable| {
            let pattern = match variable {
                "NAMESPACE" => return s3_safe(parts.namespace.unwrap_or_default()),
                "STREAM_NAME" => return s3_safe(parts.stream),
                "format_extension" => return parts.extension.to_owned(),
                "YEAR" | "MILLISECOND" => r"\d{4}",
                "MONTH" | "DAY" | "HOUR" | "MINUTE" | "SECOND" => r"\d{2}",
                "UUID" => r"[0-9a-fA-F-]{36}",
                "date" => r"\d{4}_\d{2}_\d{2}",
                "date:yyyy_MM" => r"\d{4}_\d{2}",
                PART_SUFFIX => r"(?:-\d+)?",
                _ => r"\d+",
            };
            patterns.push(pattern);
            MARK.to_string()
        });
        let mut pieces = rendered.split(MARK);
        let prefix = pieces.next().unwrap_or_default().to_owned();
        let mut regex = format!("^{}", regex::escape(&prefix));
        for (pattern, literal) in patterns.iter().zip(pieces) {
            regex.push_str(pattern);
            regex.push_str(&regex::escape(literal));
        }
        regex.push('$');
        StreamKeys { prefix, pattern: regex::Regex::new(&regex).expect("escaped literals and fixed patterns") }
    }

    pub fn matches(&self, key: &str) -> bool {
        self.pattern.is_match(key)
    }
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
    fn a_streams_keys_are_told_from_another_streams_under_the_same_prefix() {
        let keys = StreamKeys::of(&parts(None, Some("public")));
        assert_eq!(keys.prefix, "data_sync/test/public/users/");
        assert!(keys.matches(&object_key(&parts(None, Some("public")), 12, "u")));
        assert!(!keys.matches("data_sync/test/public/users/notes.txt"));
        // Streams that share a directory: users_ must not take users_archive_'s objects.
        let mut shared = parts(Some("{part_number}{format_extension}"), Some("public"));
        shared.path_format = "${STREAM_NAME}_${EPOCH}_";
        let keys = StreamKeys::of(&shared);
        assert_eq!(keys.prefix, "data_sync/test/users_");
        assert!(keys.matches(&object_key(&shared, 3, "u")));
        let mut archive = parts(None, Some("public"));
        archive.path_format = "${STREAM_NAME}_${EPOCH}_";
        archive.stream = "users_archive";
        assert!(!keys.matches(&object_key(&archive, 0, "u")));
        // A pattern without the part number: the suffix of later objects matches too.
        let mut dated = parts(Some("{date}"), None);
        dated.path_format = "${STREAM_NAME}/${UUID}/";
        let keys = StreamKeys::of(&dated);
        let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert!(keys.matches(&object_key(&dated, 0, uuid)) && keys.matches(&object_key(&dated, 4, uuid)));
    }

    #[test]
    fn names_are_made_s3_safe_and_milliseconds_have_four_digits() {
        assert_eq!(s3_safe("Café orders/2024 (v2)!"), "Cafe_orders/2024_(v2)!");
        assert_eq!(s3_safe("naïve:日本"), "naive:__");
        let mut p = parts(None, Some("ns"));
        p.path_format = "${STREAM_NAME}/${MILLISECOND}/";
        p.started_at = jiff::Timestamp::from_millisecond(1_736_179_200_042).unwrap();
        assert_eq!(object_key(&p, 0, "u"), "data_sync/test/users/0042/0.jsonl.gz");
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
