//! The connector's config, in the shape of Airbyte's destination-s3 (S3 V2):
//! the same property names and enum values, so a config written for
//! Airbyte's connector works here.

use serde::Deserialize;
use serde_json::{json, Value};
use sluice_connector_kit::Failure;
use sluice_protocol::ConnectorSpecification;

/// Airbyte's default: `<namespace>/<stream>/<yyyy>_<mm>_<dd>_<epoch millis>_`.
pub const DEFAULT_PATH_FORMAT: &str = "${NAMESPACE}/${STREAM_NAME}/${YEAR}_${MONTH}_${DAY}_${EPOCH}_";
/// Airbyte's: an object is finished at about this size.
pub const DEFAULT_OBJECT_BYTES: u64 = 200 << 20;
/// Airbyte's: multipart upload parts of this size.
pub const DEFAULT_PART_BYTES: u64 = 10 << 20;
/// S3's smallest part (all but the last), its largest, and its most parts of an object.
const MIN_PART_BYTES: u64 = 5 << 20;
const MAX_PART_BYTES: u64 = 5 << 30;
const MAX_PARTS: u64 = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub bucket: String,
    /// The prefix every object key starts with (no leading or trailing `/`).
    pub bucket_path: String,
    pub region: String,
    /// Another S3 (moto, LocalStack, MinIO): its URL.
    pub endpoint: Option<String>,
    pub path_format: String,
    pub file_name_pattern: Option<String>,
    pub credentials: Credentials,
    pub format: Format,
    pub part_bytes: u64,
    pub object_bytes: u64,
    /// Parts uploaded at once.
    pub upload_concurrency: usize,
}

#[derive(Clone, PartialEq)]
pub enum Credentials {
    /// The environment's chain: the task role on ECS, the function's role, a profile.
    DefaultChain,
    AccessKey { id: String, secret: String },
}

/// The secret never reaches a log or an error.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::DefaultChain => f.write_str("DefaultChain"),
            Credentials::AccessKey { id, .. } => write!(f, "AccessKey {{ id: {id:?}, secret: \"**********\" }}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl { flatten: bool, gzip: bool },
    Csv { flatten: bool, gzip: bool },
    Parquet { codec: ParquetCodec },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParquetCodec {
    Uncompressed,
    Snappy,
    Gzip,
    Zstd,
}

impl Format {
    /// The object's extension, as Airbyte names it.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jsonl { gzip: true, .. } => ".jsonl.gz",
            Format::Jsonl { gzip: false, .. } => ".jsonl",
            Format::Csv { gzip: true, .. } => ".csv.gz",
            Format::Csv { gzip: false, .. } => ".csv",
            Format::Parquet { .. } => ".parquet",
        }
    }
}

/// The config as written: Airbyte's property names.
#[derive(Deserialize)]
struct Written {
    s3_bucket_name: String,
    #[serde(default)]
    s3_bucket_path: String,
    #[serde(default)]
    s3_bucket_region: String,
    #[serde(default)]
    s3_endpoint: Option<String>,
    #[serde(default)]
    s3_path_format: Option<String>,
    #[serde(default)]
    file_name_pattern: Option<String>,
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default)]
    secret_access_key: Option<String>,
    #[serde(default)]
    role_arn: Option<String>,
    format: Value,
    // Ours, not Airbyte's: hidden settings with Airbyte's values as defaults.
    #[serde(default)]
    part_size_mb: Option<f64>,
    #[serde(default)]
    object_size_mb: Option<f64>,
    #[serde(default)]
    upload_concurrency: Option<usize>,
}

impl Config {
    /// The parsed config from a file, with every problem said by name.
    pub fn load(path: &std::path::Path) -> Result<Config, Failure> {
        let value: Value = sluice_connector_kit::read_json("config", path)?;
        Config::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Config, Failure> {
        // Said before the shape is checked, whose errors quote the value.
        for key in ["access_key_id", "secret_access_key"] {
            if value.get(key).is_some_and(|v| !v.is_string() && !v.is_null()) {
                return Err(Failure::config(format!("{key} must be a string")));
            }
        }
        let w: Written = serde_json::from_value(value).map_err(|e| Failure::config(format!("the config is not destination-s3's: {e}")))?;
        let bucket = w.s3_bucket_name.trim().to_owned();
        if bucket.is_empty() {
            return Err(Failure::config("s3_bucket_name is empty: name the bucket the objects go to"));
        }
        if w.role_arn.as_deref().is_some_and(|r| !r.is_empty()) {
            return Err(Failure::config("role_arn is not supported: give access_key_id and secret_access_key, or leave both out to use the environment's credentials (the task role on ECS)"));
        }
        let credentials = match (w.access_key_id.filter(|s| !s.is_empty()), w.secret_access_key.filter(|s| !s.is_empty())) {
            (Some(id), Some(secret)) => Credentials::AccessKey { id, secret },
            (None, None) => Credentials::DefaultChain,
            (Some(_), None) => return Err(Failure::config("access_key_id is set but secret_access_key is not: give both, or neither to use the environment's credentials")),
            (None, Some(_)) => return Err(Failure::config("secret_access_key is set but access_key_id is not: give both, or neither to use the environment's credentials")),
        };
        let endpoint = w.s3_endpoint.map(|e| e.trim().to_owned()).filter(|e| !e.is_empty());
        if let Some(e) = &endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(Failure::config(format!("s3_endpoint {e:?} is not a URL: write it as http://host:port or https://host")));
            }
        }
        let path_format = w.s3_path_format.filter(|p| !p.trim().is_empty()).unwrap_or_else(|| DEFAULT_PATH_FORMAT.to_owned());
        crate::layout::check_path_format(&path_format).map_err(|e| Failure::config(format!("s3_path_format: {e}")))?;
        let file_name_pattern = w.file_name_pattern.filter(|p| !p.trim().is_empty());
        if let Some(pattern) = &file_name_pattern {
            crate::layout::check_file_name_pattern(pattern).map_err(|e| Failure::config(format!("file_name_pattern: {e}")))?;
        }
        let megabytes = |mb: Option<f64>, default: u64, what: &str| -> Result<u64, Failure> {
            match mb {
                None => Ok(default),
                Some(mb) if mb.is_finite() && mb > 0.0 => Ok((mb * (1u64 << 20) as f64) as u64),
                Some(mb) => Err(Failure::config(format!("{what} {mb} is not a positive number of megabytes"))),
            }
        };
        let part_bytes = megabytes(w.part_size_mb, DEFAULT_PART_BYTES, "part_size_mb")?;
        if part_bytes < MIN_PART_BYTES {
            return Err(Failure::config(format!("part_size_mb {} is below S3's smallest part, 5 MB", part_bytes as f64 / (1u64 << 20) as f64)));
        }
        if part_bytes > MAX_PART_BYTES {
            return Err(Failure::config("part_size_mb is above S3's largest part, 5 GB"));
        }
        let object_bytes = megabytes(w.object_size_mb, DEFAULT_OBJECT_BYTES, "object_size_mb")?;
        if object_bytes / part_bytes >= MAX_PARTS {
            return Err(Failure::config(format!("object_size_mb over part_size_mb is more than S3's {MAX_PARTS} parts of an object: make parts larger or objects smaller")));
        }
        let upload_concurrency = match w.upload_concurrency {
            None => 2,
            Some(n @ 1..=64) => n,
            Some(n) => return Err(Failure::config(format!("upload_concurrency {n} is not between 1 and 64"))),
        };
        Ok(Config {
            bucket,
            bucket_path: w.s3_bucket_path.trim_matches('/').to_owned(),
            region: if w.s3_bucket_region.is_empty() { "us-east-1".to_owned() } else { w.s3_bucket_region },
            endpoint,
            path_format,
            file_name_pattern,
            credentials,
            format: format(&w.format)?,
            part_bytes,
            object_bytes,
            upload_concurrency,
        })
    }
}

fn format(written: &Value) -> Result<Format, Failure> {
    let text = |key: &str| written.get(key).and_then(Value::as_str);
    let format_type = text("format_type").ok_or_else(|| Failure::config("format has no format_type: choose JSONL, CSV or Parquet"))?;
    let flatten = || match text("flattening") {
        None | Some("No flattening") => Ok(false),
        Some("Root level flattening") => Ok(true),
        Some(other) => Err(Failure::config(format!("format.flattening {other:?} is neither \"No flattening\" nor \"Root level flattening\""))),
    };
    // Airbyte's spec offers GZIP first; a format without the choice is compressed.
    let gzip = || match written.pointer("/compression/compression_type").and_then(Value::as_str) {
        None | Some("GZIP") => Ok(true),
        Some("No Compression") => Ok(false),
        Some(other) => Err(Failure::config(format!("format.compression.compression_type {other:?} is neither \"GZIP\" nor \"No Compression\""))),
    };
    match format_type {
        "JSONL" => Ok(Format::Jsonl { flatten: flatten()?, gzip: gzip()? }),
        "CSV" => Ok(Format::Csv { flatten: flatten()?, gzip: gzip()? }),
        "Parquet" => {
            let codec = match text("compression_codec") {
                None | Some("UNCOMPRESSED") => ParquetCodec::Uncompressed,
                Some("SNAPPY") => ParquetCodec::Snappy,
                Some("GZIP") => ParquetCodec::Gzip,
                Some("ZSTD") => ParquetCodec::Zstd,
                Some(other @ ("LZO" | "BROTLI" | "LZ4")) => {
                    return Err(Failure::config(format!("format.compression_codec {other} is not written by this destination: choose UNCOMPRESSED, SNAPPY, GZIP or ZSTD")))
                }
                Some(other) => return Err(Failure::config(format!("format.compression_codec {other:?} is not a Parquet codec: choose UNCOMPRESSED, SNAPPY, GZIP or ZSTD"))),
            };
            Ok(Format::Parquet { codec })
        }
        "Avro" => Err(Failure::config("format_type Avro is not written by this destination: choose JSONL, CSV or Parquet")),
        other => Err(Failure::config(format!("format.format_type {other:?} is not JSONL, CSV or Parquet"))),
    }
}

pub fn spec() -> ConnectorSpecification {
    let compression = json!({
        "title": "Compression", "type": "object", "order": 2,
        "oneOf": [
            {"title": "GZIP", "type": "object", "required": ["compression_type"],
             "properties": {"compression_type": {"type": "string", "const": "GZIP", "default": "GZIP"}}},
            {"title": "No Compression", "type": "object", "required": ["compression_type"],
             "properties": {"compression_type": {"type": "string", "const": "No Compression", "default": "No Compression"}}}
        ]
    });
    let flattening = json!({"title": "Flattening", "type": "string", "enum": ["No flattening", "Root level flattening"], "default": "No flattening", "order": 1});
    serde_json::from_value(json!({
        "documentationUrl": "https://docs.airbyte.com/integrations/destinations/s3",
        "connectionSpecification": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": "S3 Destination Spec",
            "type": "object",
            "required": ["s3_bucket_name", "s3_bucket_path", "s3_bucket_region", "format"],
            "properties": {
                "access_key_id": {"title": "S3 Key ID", "type": "string", "airbyte_secret": true, "order": 0,
                    "description": "The access key ID; leave it and the secret out to use the environment's credentials (the task role on ECS)."},
                "secret_access_key": {"title": "S3 Access Key", "type": "string", "airbyte_secret": true, "order": 1},
                "s3_bucket_name": {"title": "S3 Bucket Name", "type": "string", "order": 3},
                "s3_bucket_path": {"title": "S3 Bucket Path", "type": "string", "order": 4,
                    "description": "The prefix of every object's key."},
                "s3_bucket_region": {"title": "S3 Bucket Region", "type": "string", "default": "", "order": 5},
                "format": {"title": "Output Format", "type": "object", "order": 6, "oneOf": [
                    {"title": "CSV: Comma-Separated Values", "type": "object", "required": ["format_type"], "properties": {
                        "format_type": {"type": "string", "const": "CSV", "default": "CSV"},
                        "flattening": flattening, "compression": compression}},
                    {"title": "JSON Lines: Newline-delimited JSON", "type": "object", "required": ["format_type"], "properties": {
                        "format_type": {"type": "string", "const": "JSONL", "default": "JSONL"},
                        "flattening": flattening, "compression": compression}},
                    {"title": "Parquet: Columnar Storage", "type": "object", "required": ["format_type"], "properties": {
                        "format_type": {"type": "string", "const": "Parquet", "default": "Parquet"},
                        "compression_codec": {"title": "Compression Codec", "type": "string",
                            "enum": ["UNCOMPRESSED", "SNAPPY", "GZIP", "ZSTD"], "default": "UNCOMPRESSED"}}}
                ]},
                "s3_endpoint": {"title": "Endpoint", "type": "string", "default": "", "order": 7,
                    "description": "Another S3-compatible service's URL (MinIO, LocalStack); empty for AWS."},
                "s3_path_format": {"title": "S3 Path Format", "type": "string", "order": 8,
                    "description": "The key under the bucket path: ${NAMESPACE}, ${STREAM_NAME}, ${YEAR}, ${MONTH}, ${DAY}, ${HOUR}, ${MINUTE}, ${SECOND}, ${MILLISECOND}, ${EPOCH}, ${UUID}.",
                    "examples": [DEFAULT_PATH_FORMAT]},
                "file_name_pattern": {"title": "File Name Pattern", "type": "string", "order": 9,
                    "description": "The object's name after the path: {date}, {date:yyyy_MM}, {timestamp}, {timestamp:micros}, {part_number}, {sync_id}, {format_extension}.",
                    "examples": ["{date}", "{part_number}{format_extension}"]}
            }
        },
        "supportsIncremental": true,
        "supported_destination_sync_modes": ["overwrite", "append"],
        "protocol_version": "0.5.2"
    }))
    .expect("static spec")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(value: Value) -> Result<Config, String> {
        Config::from_value(value).map_err(|f| f.message)
    }

    #[test]
    fn airbytes_config_reads_with_its_defaults() {
        let c = config(json!({"s3_bucket_name": "lake", "s3_bucket_path": "/raw/", "s3_bucket_region": "eu-west-1", "format": {"format_type": "JSONL"}})).unwrap();
        assert_eq!((c.bucket.as_str(), c.bucket_path.as_str(), c.region.as_str()), ("lake", "raw", "eu-west-1"));
        assert_eq!(c.format, Format::Jsonl { flatten: false, gzip: true });
        assert_eq!(c.format.extension(), ".jsonl.gz");
        assert_eq!(c.path_format, DEFAULT_PATH_FORMAT);
        assert_eq!((c.part_bytes, c.object_bytes), (10 << 20, 200 << 20));
        assert_eq!(c.credentials, Credentials::DefaultChain);
        let csv = config(json!({"s3_bucket_name": "lake", "format": {"format_type": "CSV", "flattening": "Root level flattening", "compression": {"compression_type": "No Compression"}}})).unwrap();
        assert_eq!(csv.format, Format::Csv { flatten: true, gzip: false });
        let parquet = config(json!({"s3_bucket_name": "lake", "format": {"format_type": "Parquet", "compression_codec": "ZSTD"}})).unwrap();
        assert_eq!(parquet.format, Format::Parquet { codec: ParquetCodec::Zstd });
    }

    #[test]
    fn bad_configs_say_what_is_wrong_and_never_show_the_secret() {
        let base = |extra: Value| {
            let mut v = json!({"s3_bucket_name": "lake", "format": {"format_type": "JSONL"}});
            v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            config(v).unwrap_err()
        };
        assert!(base(json!({"s3_bucket_name": " "})).contains("s3_bucket_name is empty"));
        assert!(base(json!({"secret_access_key": "hunter2"})).contains("access_key_id is not"));
        assert!(base(json!({"format": {"format_type": "Avro"}})).contains("Avro is not written"));
        assert!(base(json!({"format": {"format_type": "Parquet", "compression_codec": "LZO"}})).contains("choose UNCOMPRESSED, SNAPPY, GZIP or ZSTD"));
        assert!(base(json!({"s3_endpoint": "localhost:9000"})).contains("write it as http://host:port"));
        assert!(base(json!({"s3_path_format": "${NAMESPACE}/${STRAEM}/"})).contains("${STRAEM}"));
        assert!(base(json!({"file_name_pattern": "{part}"})).contains("{part}"));
        assert!(base(json!({"part_size_mb": 1})).contains("5 MB"));
        let with_key = config(json!({"s3_bucket_name": "lake", "access_key_id": "AKIA1", "secret_access_key": "hunter2", "format": {"format_type": "JSONL"}})).unwrap();
        assert!(!format!("{with_key:?}").contains("hunter2"), "the secret stays out of Debug");
        let numeric = config(json!({"s3_bucket_name": "lake", "access_key_id": "AKIA", "secret_access_key": 12345678, "format": {"format_type": "JSONL"}})).unwrap_err();
        assert!(numeric.contains("must be a string") && !numeric.contains("12345678"), "{numeric}");
        let parts = config(json!({"s3_bucket_name": "lake", "part_size_mb": 5, "object_size_mb": 60000, "format": {"format_type": "JSONL"}})).unwrap_err();
        assert!(parts.contains("10000 parts"), "{parts}");
    }

    #[test]
    fn the_spec_marks_the_keys_secret() {
        let spec = serde_json::to_value(spec()).unwrap();
        let properties = &spec["connectionSpecification"]["properties"];
        assert_eq!(properties["secret_access_key"]["airbyte_secret"], true);
        assert_eq!(properties["access_key_id"]["airbyte_secret"], true);
    }
}
