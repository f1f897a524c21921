//! Parquet: a stream's records as typed columns, as Airbyte's S3 writes
//! them. Airbyte's columns first (`_airbyte_raw_id`, `_airbyte_extracted_at`
//! as a UTC timestamp in milliseconds, `_airbyte_generation_id`,
//! `_airbyte_meta` as a struct of `sync_id` and `changes`), then a column
//! per property of the stream's JSON Schema, typed by its Airbyte type
//! (never inferred from the data). A value that does not fit its column is
//! nulled and said in `_airbyte_meta.changes`, as Airbyte does.
//!
//! Rows gather in Arrow builders and go to the Parquet writer a batch at
//! a time; the writer closes a row group at `ROW_GROUP_BYTES` (estimated,
//! encoded), so a stream's memory is a row group's, whatever the volume.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder, TimestampMillisecondBuilder};
use arrow_array::{Array, ArrayRef, Int64Array, ListArray, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde_json::value::RawValue;
use serde_json::Value;
use sluice_connector_kit::Failure;
use sluice_protocol::json;
use sluice_protocol::types::{airbyte_type, AirbyteType};

use crate::client::Upload;
use crate::config::ParquetCodec;
use crate::layout::Columns;

/// An Arrow batch goes to the Parquet writer at this many rows or bytes of
/// records, whichever first: large values must not gather 4096 at a time.
const BATCH_ROWS: usize = 4096;
const BATCH_BYTES: usize = 8 << 20;
/// A row group is closed at about this encoded size: the bound on a stream's memory.
pub const ROW_GROUP_BYTES: usize = 32 << 20;
const UTC: &str = "UTC";

/// A stream's Parquet schema, settled before its first record.
pub struct Table {
    schema: SchemaRef,
    /// The data columns: each property and its type.
    properties: Vec<String>,
    types: Vec<AirbyteType>,
}

fn change_fields() -> Fields {
    Fields::from(vec![Field::new("field", DataType::Utf8, false), Field::new("change", DataType::Utf8, false), Field::new("reason", DataType::Utf8, false)])
}

fn meta_fields() -> Fields {
    let change = Field::new("item", DataType::Struct(change_fields()), false);
    Fields::from(vec![Field::new("sync_id", DataType::Int64, true), Field::new("changes", DataType::List(Arc::new(change)), false)])
}

fn arrow_type(kind: AirbyteType) -> DataType {
    match kind {
        AirbyteType::Integer => DataType::Int64,
        AirbyteType::Number => DataType::Float64,
        AirbyteType::Boolean => DataType::Boolean,
        AirbyteType::Date => DataType::Date32,
        AirbyteType::TimeWithoutTimezone => DataType::Time64(TimeUnit::Microsecond),
        AirbyteType::TimestampWithoutTimezone => DataType::Timestamp(TimeUnit::Microsecond, None),
        AirbyteType::TimestampWithTimezone => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        // A time with an offset has no Parquet type; objects, arrays and unions go as their JSON.
        AirbyteType::String | AirbyteType::TimeWithTimezone | AirbyteType::Unknown => DataType::Utf8,
    }
}

/// The Parquet schema of a stream's JSON Schema. A property named as one
/// of Airbyte's columns is an error naming it: it would shadow the column.
pub fn table(json_schema: &Value) -> Result<Table, String> {
    let mut fields = vec![
        Field::new("_airbyte_raw_id", DataType::Utf8, false),
        Field::new("_airbyte_extracted_at", DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into())), false),
        Field::new("_airbyte_generation_id", DataType::Int64, false),
        Field::new("_airbyte_meta", DataType::Struct(meta_fields()), false),
    ];
    let (mut properties, mut types) = (Vec::new(), Vec::new());
    for (property, schema) in json_schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
        if crate::layout::AIRBYTE_COLUMNS.contains(&property.as_str()) || property == "_airbyte_data" {
            return Err(format!("property `{property}` has the name of a column Airbyte keeps for itself"));
        }
        let kind = airbyte_type(schema);
        fields.push(Field::new(property, arrow_type(kind), true));
        properties.push(property.clone());
        types.push(kind);
    }
    Ok(Table { schema: Arc::new(Schema::new(fields)), properties, types })
}

enum Builder {
    Integer(Int64Builder),
    Number(Float64Builder),
    Boolean(BooleanBuilder),
    Text(StringBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Builder {
    fn of(kind: AirbyteType) -> Builder {
        match kind {
            AirbyteType::Integer => Builder::Integer(Int64Builder::new()),
            AirbyteType::Number => Builder::Number(Float64Builder::new()),
            AirbyteType::Boolean => Builder::Boolean(BooleanBuilder::new()),
            AirbyteType::Date => Builder::Date(Date32Builder::new()),
            AirbyteType::TimeWithoutTimezone => Builder::Time(Time64MicrosecondBuilder::new()),
            AirbyteType::TimestampWithoutTimezone => Builder::Timestamp(TimestampMicrosecondBuilder::new()),
            AirbyteType::TimestampWithTimezone => Builder::Timestamp(TimestampMicrosecondBuilder::new().with_timezone(UTC)),
            AirbyteType::String | AirbyteType::TimeWithTimezone | AirbyteType::Unknown => Builder::Text(StringBuilder::new()),
        }
    }

    /// Appends a value as written in the record; false when it does not
    /// fit the column (a null is appended instead).
    fn append(&mut self, raw: Option<&RawValue>) -> bool {
        let text = match raw.map(RawValue::get) {
            None | Some("null") => {
                self.append_null();
                return true;
            }
            Some(text) => text,
        };
        let fits = match self {
            Builder::Integer(b) => integer(text).map(|v| b.append_value(v)).is_some(),
            Builder::Number(b) => (!text.starts_with('"')).then(|| text.parse::<f64>().ok()).flatten().map(|v| b.append_value(v)).is_some(),
            Builder::Boolean(b) => {
                let known = matches!(text, "true" | "false");
                if known {
                    b.append_value(text == "true");
                }
                known
            }
            // A string's text; anything else as its JSON, as Airbyte stringifies it.
            Builder::Text(b) => {
                match json::string_text(text) {
                    Some(s) if text.starts_with('"') => b.append_value(s),
                    _ => b.append_value(text),
                }
                true
            }
            Builder::Date(b) => json::string_text(text).and_then(|s| days(&s)).map(|v| b.append_value(v)).is_some(),
            Builder::Time(b) => json::string_text(text).and_then(|s| s.parse::<jiff::civil::Time>().ok()).map(|t| b.append_value(micros_of_day(t))).is_some(),
            Builder::Timestamp(b) => json::string_text(text).and_then(|s| timestamp_micros(&s)).map(|v| b.append_value(v)).is_some(),
        };
        if !fits {
            self.append_null();
        }
        fits
    }

    fn append_null(&mut self) {
        match self {
            Builder::Integer(b) => b.append_null(),
            Builder::Number(b) => b.append_null(),
            Builder::Boolean(b) => b.append_null(),
            Builder::Text(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Integer(b) => Arc::new(b.finish()),
            Builder::Number(b) => Arc::new(b.finish()),
            Builder::Boolean(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

/// An integer's text; a number with nothing after its point counts (`3.0`).
fn integer(text: &str) -> Option<i64> {
    if let Ok(v) = text.parse::<i64>() {
        return Some(v);
    }
    let v = text.parse::<f64>().ok().filter(|v| v.fract() == 0.0 && v.abs() < 9.0e18)?;
    Some(v as i64)
}

fn days(text: &str) -> Option<i32> {
    let date: jiff::civil::Date = text.parse().ok()?;
    let days = date.since((jiff::Unit::Day, jiff::civil::date(1970, 1, 1))).ok()?.get_days();
    Some(days)
}

fn micros_of_day(t: jiff::civil::Time) -> i64 {
    (t.hour() as i64 * 3600 + t.minute() as i64 * 60 + t.second() as i64) * 1_000_000 + t.subsec_nanosecond() as i64 / 1000
}

/// A timestamp's microseconds since 1970: an instant as it is, a civil time as UTC.
fn timestamp_micros(text: &str) -> Option<i64> {
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Some(at.as_microsecond());
    }
    let civil: jiff::civil::DateTime = text.parse().ok()?;
    Some(jiff::tz::Offset::UTC.to_timestamp(civil).ok()?.as_microsecond())
}

fn codec(codec: ParquetCodec) -> Compression {
    match codec {
        ParquetCodec::Uncompressed => Compression::UNCOMPRESSED,
        ParquetCodec::Snappy => Compression::SNAPPY,
        ParquetCodec::Gzip => Compression::GZIP(GzipLevel::default()),
        ParquetCodec::Zstd => Compression::ZSTD(ZstdLevel::default()),
    }
}

/// One Parquet object being written.
pub struct ParquetObject {
    writer: ArrowWriter<Upload>,
    table: Arc<Table>,
    raw_ids: StringBuilder,
    extracted_at: TimestampMillisecondBuilder,
    generations: Int64Builder,
    sync_ids: Int64Builder,
    /// Per row, the fields nulled (and the source's own changes).
    changes: Vec<Vec<(String, String, String)>>,
    data: Vec<Builder>,
    rows: usize,
    /// The records' JSON bytes in the builders.
    batch_bytes: usize,
}

impl ParquetObject {
    pub fn new(upload: Upload, table: Arc<Table>, compression: ParquetCodec) -> Result<ParquetObject, Failure> {
        let properties = WriterProperties::builder().set_compression(codec(compression)).set_max_row_group_bytes(Some(ROW_GROUP_BYTES)).build();
        let key = upload.key.clone();
        let writer = ArrowWriter::try_new(upload, table.schema.clone(), Some(properties)).map_err(|e| Failure::system(format!("cannot start the Parquet object {key}: {e}")))?;
        Ok(ParquetObject {
            writer,
            data: table.types.iter().map(|&k| Builder::of(k)).collect(),
            table,
            raw_ids: StringBuilder::new(),
            extracted_at: TimestampMillisecondBuilder::new().with_timezone(UTC),
            generations: Int64Builder::new(),
            sync_ids: Int64Builder::new(),
            changes: Vec::new(),
            rows: 0,
            batch_bytes: 0,
        })
    }

    /// One record; `data` is its data's JSON text, `source_changes` what the source said it changed.
    pub fn append(&mut self, columns: &Columns<'_>, sync_id: i64, data: &str, source_changes: Vec<(String, String, String)>) -> Result<(), Failure> {
        let values = json::fields_by_name(data, self.table.properties.iter().map(String::as_str)).map_err(|e| Failure::system(format!("a record's data is not a JSON object: {e}")))?;
        let mut changes = source_changes;
        for ((builder, value), property) in self.data.iter_mut().zip(values).zip(&self.table.properties) {
            if !builder.append(value) {
                changes.push((property.clone(), "NULLED".into(), "DESTINATION_SERIALIZATION_ERROR".into()));
            }
        }
        self.raw_ids.append_value(columns.raw_id);
        self.extracted_at.append_value(columns.extracted_at_ms);
        self.generations.append_value(columns.generation);
        self.sync_ids.append_value(sync_id);
        self.changes.push(changes);
        self.rows += 1;
        self.batch_bytes += data.len();
        if self.rows >= BATCH_ROWS || self.batch_bytes >= BATCH_BYTES {
            self.write_batch()?;
        }
        Ok(())
    }

    fn write_batch(&mut self) -> Result<(), Failure> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(self.raw_ids.finish()), Arc::new(self.extracted_at.finish()), Arc::new(self.generations.finish()), self.meta()];
        arrays.extend(self.data.iter_mut().map(Builder::finish));
        let batch = RecordBatch::try_new(self.table.schema.clone(), arrays).map_err(|e| Failure::system(format!("a Parquet batch does not match its schema: {e}")))?;
        self.rows = 0;
        self.batch_bytes = 0;
        self.writer.write(&batch).map_err(|e| self.failure(e))
    }

    fn meta(&mut self) -> ArrayRef {
        let changes = std::mem::take(&mut self.changes);
        let offsets = arrow_buffer::OffsetBuffer::from_lengths(changes.iter().map(Vec::len));
        let flat: Vec<&(String, String, String)> = changes.iter().flatten().collect();
        let items = StructArray::new(
            change_fields(),
            vec![
                Arc::new(StringArray::from_iter_values(flat.iter().map(|c| c.0.as_str()))) as ArrayRef,
                Arc::new(StringArray::from_iter_values(flat.iter().map(|c| c.1.as_str()))),
                Arc::new(StringArray::from_iter_values(flat.iter().map(|c| c.2.as_str()))),
            ],
            None,
        );
        let item = Arc::new(Field::new("item", DataType::Struct(change_fields()), false));
        let lists = ListArray::new(item, offsets, Arc::new(items), None);
        let sync_ids: Int64Array = self.sync_ids.finish();
        debug_assert_eq!(sync_ids.len(), lists.len());
        Arc::new(StructArray::new(meta_fields(), vec![Arc::new(sync_ids), Arc::new(lists)], None))
    }

    fn failure(&mut self, e: parquet::errors::ParquetError) -> Failure {
        Failure::system(format!("writing the Parquet object {}: {e}", self.writer.inner().key))
    }

    /// Bytes so far: written to the object, the row group in progress
    /// (estimated, encoded) and the batch in the builders (as JSON).
    pub fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size() + self.batch_bytes) as u64
    }

    /// Bytes held in memory: the batch, the row group in progress, the part not yet sent.
    pub fn buffered(&self) -> usize {
        self.batch_bytes + self.writer.memory_size() + self.writer.inner().buffered()
    }

    /// The object's last rows and its footer; the upload, ready to complete.
    /// On an error the upload is dropped, which aborts it.
    pub fn finish(mut self) -> Result<Upload, Failure> {
        self.write_batch()?;
        let key = self.writer.inner().key.clone();
        self.writer.into_inner().map_err(|e| Failure::system(format!("finishing the Parquet object {key}: {e}")))
    }
}
