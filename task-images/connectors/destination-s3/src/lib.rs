//! `destination-s3`: Airbyte's S3 layout (S3 V2) in JSONL, CSV and Parquet.
//!
//! Built in steps: this much is the config in Airbyte's shape (`config.rs`)
//! and where and how records are written (`layout.rs`: object keys,
//! JSONL lines and CSV rows in Airbyte's record shape). The S3 client, the
//! Parquet encoder and the pipeline (streaming multipart upload, STATEs
//! released once the objects holding their records are complete) come next;
//! until then the connector is not built into `sluice` nor offered as a
//! definition.

pub mod config;
pub mod layout;
