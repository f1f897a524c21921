//! `destination-s3`: Airbyte's S3 layout (S3 V2) in JSONL, CSV and Parquet,
//! by streaming multipart upload.
//!
//! Each stream's records are encoded into its open object (`layout.rs` for
//! JSONL and CSV, `columnar.rs` for Parquet); the object's bytes leave in
//! parts as they fill (`client.rs`), and the object is completed at its
//! size target or at the end of the input. Only a completed object is
//! visible, so a crash leaves none half-written.
//!
//! A STATE is released once every object holding a record before it is
//! complete: at a STATE the writer notes the objects then open, and the
//! STATE waits until they are finished. Objects are not cut at every
//! STATE (sources checkpoint often; objects would be tiny): they finish at
//! their size, or when the oldest waiting STATE has waited
//! `RELEASE_WITHIN`. A retry resumes from the last released STATE; records
//! in objects completed after it are written again (S3 is at-least-once,
//! as Airbyte's).
//!
//! Overwrite (the generation is the minimum generation): objects carry
//! their generation in metadata (`ab-generation-id`), and a stream's
//! objects of earlier generations are deleted only when the stream
//! completes, so a failed overwrite leaves the old data whole.

pub mod client;
pub mod columnar;
pub mod config;
pub mod layout;

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use serde_json::Value;
use sluice_connector_kit::sockets::{self, Sink};
use sluice_connector_kit::{each_input_line, echo_state, parse_message, parse_record, read_json, Command, Failure, Output};
use sluice_protocol::socket::{self, SocketRecord};
use sluice_protocol::*;

use client::{Bucket, Upload};
use columnar::{ParquetObject, Table};
use config::{Config, Format};
use layout::{Columns, KeyParts};

pub const NAME: &str = "destination-s3";

/// The longest a STATE waits for the objects holding its records: then
/// they are finished early, so progress is saved at least this often. And
/// the most STATEs that wait at once (a source that checkpoints every few
/// records must not fill memory with them).
const RELEASE_WITHIN: Duration = Duration::from_secs(300);
const MAX_WAITING_STATES: usize = 10_000;

/// What the open objects of a sync may hold in memory, over all its
/// writers: past it, a writer completes its largest open object. (One
/// object per stream and writer is open; many streams would otherwise
/// hold a part each.)
const MEMORY_BUDGET: usize = 512 << 20;

pub fn main(args: &[String]) -> i32 {
    sluice_connector_kit::main(NAME, args, run)
}

fn run(command: Command, out: &mut Output) -> Result<(), Failure> {
    match command {
        Command::Spec => Ok(out.message(&AirbyteMessage::spec(config::spec()))?),
        Command::Check { config } => Ok(out.check_result(Config::load(&config).and_then(|c| Bucket::connect(&c)?.check(&c.bucket_path)))?),
        Command::Write { config, catalog } => {
            let config = Config::load(&config)?;
            let catalog: ConfiguredAirbyteCatalog = read_json("catalog", &catalog)?;
            write(&config, &catalog, out)
        }
        Command::Discover { .. } | Command::Read { .. } => Err(Failure::config("destination-s3 is a destination: it only runs spec, check and write")),
    }
}

/// A configured stream, and how its objects are named and encoded.
struct Target {
    descriptor: StreamDescriptor,
    generation: i64,
    sync_id: Option<i64>,
    /// Earlier generations are deleted once the stream completes.
    overwrite: bool,
    /// Parquet's schema; CSV's flattened columns.
    parquet: Option<Arc<Table>>,
    csv_columns: Option<Vec<String>>,
    /// `_airbyte_meta` of a record without changes, written once.
    clean_meta: Vec<u8>,
    /// The next object's number, shared by every writer of the stream.
    next_object: AtomicU64,
}

/// What every writer of a sync shares.
struct Objects {
    bucket: Arc<Bucket>,
    config: Config,
    targets: Vec<Target>,
    started_at: jiff::Timestamp,
    statuses: Mutex<Vec<Option<StreamStatus>>>,
}

impl Objects {
    fn key_parts<'a>(&'a self, target: &'a Target) -> KeyParts<'a> {
        KeyParts {
            bucket_path: &self.config.bucket_path,
            path_format: &self.config.path_format,
            file_name_pattern: self.config.file_name_pattern.as_deref(),
            namespace: target.descriptor.namespace.as_deref(),
            stream: &target.descriptor.name,
            started_at: self.started_at,
            sync_id: target.sync_id.unwrap_or(0),
            extension: self.config.format.extension(),
        }
    }

    /// A new object of `stream`, under a key no object has: an earlier
    /// attempt's objects are never overwritten, whatever the name pattern.
    fn open(&self, stream: usize) -> Result<Encoder, Failure> {
        let target = &self.targets[stream];
        let key = loop {
            let number = target.next_object.fetch_add(1, Ordering::Relaxed);
            let key = layout::object_key(&self.key_parts(target), number, &uuid::Uuid::new_v4().to_string());
            if !self.bucket.exists(&key)? {
                break key;
            }
        };
        let upload = Upload::new(self.bucket.clone(), key, target.generation, self.config.part_bytes);
        Ok(match self.config.format {
            Format::Parquet { codec } => Encoder::Parquet(Box::new(ParquetObject::new(upload, target.parquet.clone().expect("a Parquet schema"), codec)?)),
            Format::Jsonl { gzip, .. } | Format::Csv { gzip, .. } => {
                let mut encoder = if gzip { Encoder::Gzip(Box::new(GzEncoder::new(upload, flate2::Compression::fast()))) } else { Encoder::Plain(upload) };
                if let Format::Csv { .. } = self.config.format {
                    let mut header = Vec::new();
                    layout::csv_header(&mut header, target.csv_columns.as_deref());
                    encoder.write(&header)?;
                }
                encoder
            }
        })
    }
}

/// An object being written, in its format.
enum Encoder {
    Plain(Upload),
    Gzip(Box<GzEncoder<Upload>>),
    Parquet(Box<ParquetObject>),
}

impl Encoder {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let written = match self {
            Encoder::Plain(upload) => upload.write_all(bytes),
            Encoder::Gzip(gzip) => gzip.write_all(bytes),
            Encoder::Parquet(_) => unreachable!("Parquet takes records, not lines"),
        };
        written.map_err(|e| Failure::system(format!("writing an object: {e}")))
    }

    /// Bytes held in memory, not yet sent.
    fn buffered(&self) -> usize {
        match self {
            Encoder::Plain(upload) => upload.buffered(),
            Encoder::Gzip(gzip) => gzip.get_ref().buffered(),
            Encoder::Parquet(parquet) => parquet.buffered(),
        }
    }

    /// Bytes so far (for gzip, those out of the compressor).
    fn size(&self) -> u64 {
        match self {
            Encoder::Plain(upload) => upload.written,
            Encoder::Gzip(gzip) => gzip.get_ref().written,
            Encoder::Parquet(parquet) => parquet.size(),
        }
    }

    /// Completes the object: visible, whole. On a failure it is aborted.
    fn complete(self) -> Result<(), Failure> {
        let upload = match self {
            Encoder::Plain(upload) => upload,
            Encoder::Gzip(gzip) => gzip.finish().map_err(|e| Failure::system(format!("finishing a gzip object: {e}")))?,
            Encoder::Parquet(parquet) => parquet.finish()?,
        };
        upload.complete()
    }
}

/// An open object (opened by a record, so never empty) and its place
/// among the writer's objects of its stream.
struct Open {
    encoder: Encoder,
    /// This writer's count of the stream's objects before this one.
    sequence: u64,
}

/// A STATE's records are durable once these objects are complete.
struct Checkpoint {
    number: u64,
    /// (stream, sequence) of each object open when it was taken.
    waits_for: Vec<(usize, u64)>,
    taken: Instant,
}

/// One reader's objects: stdin's, or a socket's.
struct Writer<'a> {
    objects: &'a Objects,
    open: Vec<Option<Open>>,
    /// Per stream, how many of this writer's objects are complete.
    completed: Vec<u64>,
    pending: VecDeque<Checkpoint>,
    taken: u64,
    durable: u64,
    /// This writer's share of [`MEMORY_BUDGET`], and records since it was last checked.
    budget: usize,
    since_budget_check: u32,
    line: Vec<u8>,
    data: Vec<u8>,
}

impl<'a> Writer<'a> {
    fn new(objects: &'a Objects, writers: usize) -> Writer<'a> {
        let streams = objects.targets.len();
        Writer {
            objects,
            open: (0..streams).map(|_| None).collect(),
            completed: vec![0; streams],
            pending: VecDeque::new(),
            taken: 0,
            durable: 0,
            budget: MEMORY_BUDGET / writers.max(1),
            since_budget_check: 0,
            line: Vec::new(),
            data: Vec::new(),
        }
    }

    /// One record of `stream`; `data` is its data's JSON text.
    fn record(&mut self, stream: usize, emitted_at: i64, data: &str, source_changes: Vec<Value>) -> Result<(), Failure> {
        if self.open[stream].is_none() {
            let encoder = self.objects.open(stream)?;
            self.open[stream] = Some(Open { encoder, sequence: self.completed[stream] });
        }
        let target = &self.objects.targets[stream];
        let open = self.open[stream].as_mut().expect("opened");
        let mut raw_id = [0u8; 36];
        let raw_id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut raw_id);
        let changed;
        let meta = if source_changes.is_empty() {
            &target.clean_meta
        } else {
            changed = layout::meta_json(target.sync_id.unwrap_or(0), &source_changes);
            &changed
        };
        let columns = Columns { raw_id, extracted_at_ms: emitted_at, meta, generation: target.generation };
        let bad = |e: String| Failure::system(format!("a record of stream {}: {e}", target.descriptor));
        match (&mut open.encoder, self.objects.config.format) {
            (Encoder::Parquet(parquet), _) => parquet.append(&columns, target.sync_id.unwrap_or(0), data, source_changes.iter().map(change).collect())?,
            (encoder, Format::Csv { .. }) => {
                self.line.clear();
                layout::csv_row(&mut self.line, &columns, data, target.csv_columns.as_deref()).map_err(bad)?;
                encoder.write(&self.line)?;
            }
            (encoder, Format::Jsonl { flatten, .. }) => {
                self.line.clear();
                layout::jsonl_line(&mut self.line, &columns, data, flatten).map_err(bad)?;
                encoder.write(&self.line)?;
            }
            (_, Format::Parquet { .. }) => unreachable!("a Parquet stream's objects are Parquet"),
        }
        if open.encoder.size() >= self.objects.config.object_bytes {
            self.complete(stream)?;
        }
        self.since_budget_check += 1;
        if self.since_budget_check >= 256 {
            self.since_budget_check = 0;
            self.keep_to_budget()?;
        }
        self.complete_overdue()
    }

    /// Completes the largest open objects while those open hold more than the budget.
    fn keep_to_budget(&mut self) -> Result<(), Failure> {
        loop {
            let held: Vec<(usize, usize)> = self.open.iter().enumerate().filter_map(|(stream, open)| Some((stream, open.as_ref()?.encoder.buffered()))).collect();
            if held.len() < 2 || held.iter().map(|(_, bytes)| bytes).sum::<usize>() <= self.budget {
                return Ok(());
            }
            let (largest, _) = held.into_iter().max_by_key(|(_, bytes)| *bytes).expect("two or more");
            self.complete(largest)?;
        }
    }

    /// When the oldest waiting STATE has waited too long, or too many
    /// wait, the objects it waits for are completed now.
    fn complete_overdue(&mut self) -> Result<(), Failure> {
        let Some(oldest) = self.pending.front() else { return Ok(()) };
        if oldest.taken.elapsed() < RELEASE_WITHIN && self.pending.len() < MAX_WAITING_STATES {
            return Ok(());
        }
        let streams: Vec<usize> = oldest.waits_for.iter().map(|(s, _)| *s).collect();
        for stream in streams {
            if self.open[stream].is_some() {
                self.complete(stream)?;
            }
        }
        Ok(())
    }

    /// Notes a checkpoint: its records are in the objects open now.
    fn checkpoint(&mut self) -> Result<(), Failure> {
        self.taken += 1;
        let waits_for: Vec<(usize, u64)> = self.open.iter().enumerate().filter_map(|(stream, open)| open.as_ref().map(|o| (stream, o.sequence))).collect();
        self.pending.push_back(Checkpoint { number: self.taken, waits_for, taken: Instant::now() });
        self.settle();
        self.complete_overdue()
    }

    fn complete(&mut self, stream: usize) -> Result<(), Failure> {
        let open = self.open[stream].take().expect("an open object");
        open.encoder.complete()?;
        self.completed[stream] += 1;
        self.settle();
        Ok(())
    }

    /// Moves `durable` past every checkpoint whose objects are complete.
    fn settle(&mut self) {
        while let Some(first) = self.pending.front() {
            if first.waits_for.iter().any(|&(stream, sequence)| self.completed[stream] <= sequence) {
                break;
            }
            self.durable = first.number;
            self.pending.pop_front();
        }
    }

    /// The end of the input: every open object completed.
    fn complete_all(&mut self) -> Result<(), Failure> {
        for stream in 0..self.open.len() {
            if self.open[stream].is_some() {
                self.complete(stream)?;
            }
        }
        Ok(())
    }
}

/// A change the source made to a record (from its `meta.changes`), for Parquet's struct.
fn change(value: &Value) -> (String, String, String) {
    let text = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    (text("field"), text("change"), text("reason"))
}

/// The changes the source listed in a record's meta.
fn source_changes(meta: Option<Value>) -> Vec<Value> {
    match meta.and_then(|mut m| m.get_mut("changes").map(Value::take)) {
        Some(Value::Array(changes)) => changes,
        _ => Vec::new(),
    }
}

fn targets(config: &Config, catalog: &ConfiguredAirbyteCatalog) -> Result<Vec<Target>, Failure> {
    let mut targets = Vec::new();
    for configured in &catalog.streams {
        let descriptor = configured.stream.descriptor();
        let generation = configured.generation_id.unwrap_or(0);
        let minimum = configured.minimum_generation_id.unwrap_or(0);
        let overwrite = match configured.destination_sync_mode {
            DestinationSyncMode::Append => minimum == generation && generation > 0,
            DestinationSyncMode::Overwrite => true,
            ref other => return Err(Failure::config(format!("stream {descriptor}: destination sync mode `{other}` is not supported: S3 takes append and overwrite (no dedup)"))),
        };
        if minimum != 0 && minimum != generation {
            return Err(Failure::config(format!("stream {descriptor}: minimum_generation_id {minimum} is neither 0 nor the generation {generation}; Airbyte's loaders take only those")));
        }
        let schema = &configured.stream.json_schema;
        let parquet = match config.format {
            Format::Parquet { .. } => Some(Arc::new(columnar::table(schema).map_err(|e| Failure::config(format!("stream {descriptor}: {e}")))?)),
            _ => None,
        };
        let csv_columns = match config.format {
            Format::Csv { flatten: true, .. } => Some(schema.get("properties").and_then(Value::as_object).map(|p| p.keys().cloned().collect()).unwrap_or_default()),
            _ => None,
        };
        targets.push(Target {
            descriptor,
            generation,
            sync_id: configured.sync_id,
            overwrite,
            parquet,
            csv_columns,
            clean_meta: layout::meta_json(configured.sync_id.unwrap_or(0), &[]),
            next_object: AtomicU64::new(0),
        });
    }
    Ok(targets)
}

fn write(config: &Config, catalog: &ConfiguredAirbyteCatalog, out: &mut Output) -> Result<(), Failure> {
    let channel = socket::DataChannel::from_env().map_err(Failure::config)?;
    let objects = Objects {
        bucket: Bucket::connect(config)?,
        config: config.clone(),
        targets: targets(config, catalog)?,
        started_at: jiff::Timestamp::now(),
        statuses: Mutex::new(vec![None; catalog.streams.len()]),
    };
    refuse_shared_keys(&objects)?;
    let ended_well = match channel {
        Some(channel) => write_sockets(&objects, &channel, catalog, out)?,
        None => write_stdin(&objects, out)?,
    };
    // Streams that said how they ended decide for themselves; without any
    // status, the input's end (no failure) says it.
    let statuses = objects.statuses.lock().expect("statuses lock").clone();
    for (target, status) in objects.targets.iter().zip(statuses) {
        let complete = match status {
            Some(status) => status == StreamStatus::Complete,
            None => ended_well,
        };
        if target.overwrite && complete {
            delete_older_generations(&objects, target)?;
        }
    }
    Ok(())
}

/// An overwrite deletes what matches its stream's keys: another stream
/// whose keys match them too (a path format without the namespace or the
/// stream's name, names alike once S3-safe) would lose its objects.
fn refuse_shared_keys(objects: &Objects) -> Result<(), Failure> {
    for a in objects.targets.iter().filter(|t| t.overwrite) {
        let keys = layout::StreamKeys::of(&objects.key_parts(a));
        for b in objects.targets.iter().filter(|b| b.descriptor != a.descriptor) {
            let sample = layout::object_key(&objects.key_parts(b), 0, "00000000-0000-0000-0000-000000000000");
            if keys.matches(&sample) {
                return Err(Failure::config(format!(
                    "streams {} and {} would have keys s3_path_format {:?} cannot tell apart ({sample}), and {} overwrites: put ${{NAMESPACE}} and ${{STREAM_NAME}} in the path format",
                    a.descriptor, b.descriptor, objects.config.path_format, a.descriptor
                )));
            }
        }
    }
    Ok(())
}

/// After a stream's overwrite succeeded: its objects of earlier generations go.
fn delete_older_generations(objects: &Objects, target: &Target) -> Result<(), Failure> {
    let keys = layout::StreamKeys::of(&objects.key_parts(target));
    let mut older = Vec::new();
    for key in objects.bucket.list(&keys.prefix)?.into_iter().filter(|k| keys.matches(k)) {
        // An object without a generation predates generations: it is older.
        if objects.bucket.generation(&key)?.is_none_or(|g| g < target.generation) {
            older.push(key);
        }
    }
    objects.bucket.delete(&older)
}

/// Legacy mode: every message on stdin, in order.
fn write_stdin(objects: &Objects, out: &mut Output) -> Result<bool, Failure> {
    let index: HashMap<StreamDescriptor, usize> = objects.targets.iter().enumerate().map(|(i, t)| (t.descriptor.clone(), i)).collect();
    let mut writer = Writer::new(objects, 1);
    // STATEs stored but not yet durable: the checkpoint each waits for, and its count.
    let mut held: VecDeque<(u64, AirbyteStateMessage, u64)> = VecDeque::new();
    let mut since_state = 0u64;
    let release = |writer: &Writer<'_>, held: &mut VecDeque<(u64, AirbyteStateMessage, u64)>, out: &mut Output| -> Result<(), Failure> {
        while held.front().is_some_and(|(checkpoint, _, _)| *checkpoint <= writer.durable) {
            let (_, state, count) = held.pop_front().expect("not empty");
            echo_state(out, state, count)?;
        }
        Ok(())
    };
    each_input_line(|line, text| {
        if let Some(record) = parse_record(line, text)? {
            let descriptor = StreamDescriptor::new(record.stream.as_ref(), record.namespace.map(String::from));
            let Some(&stream) = index.get(&descriptor) else {
                return Err(Failure::system(format!("stdin line {line}: a record of stream {descriptor}, which the configured catalog does not have")));
            };
            let changes = source_changes(record.meta.and_then(|m| serde_json::from_str(m.get()).ok()));
            writer.record(stream, record.emitted_at, record.data.get(), changes).map_err(|f| Failure { message: format!("stdin line {line}: {}", f.message), ..f })?;
            since_state += 1;
            if !held.is_empty() {
                release(&writer, &mut held, out)?;
            }
            return Ok(());
        }
        let message = parse_message(line, text)?;
        if let Some(status) = message.trace.and_then(|t| t.stream_status) {
            if let Some(&i) = index.get(&status.stream_descriptor) {
                objects.statuses.lock().expect("statuses lock")[i] = Some(status.status);
            }
        } else if let Some(state) = message.state {
            writer.checkpoint()?;
            held.push_back((writer.taken, state, since_state));
            since_state = 0;
            release(&writer, &mut held, out)?;
        }
        Ok(())
    })?;
    writer.complete_all()?;
    release(&writer, &mut held, out)?;
    Ok(true)
}

/// Socket mode: a writer per socket, each with its own objects; the kit
/// holds each STATE until its writer's objects before it are complete.
fn write_sockets(objects: &Objects, channel: &socket::DataChannel, catalog: &ConfiguredAirbyteCatalog, out: &mut Output) -> Result<bool, Failure> {
    let shared = Mutex::new(std::mem::take(out));
    let result = sockets::write(channel, catalog, &SocketObjects(objects, channel.socket_paths.len()), &shared);
    *out = shared.into_inner().expect("stdout lock");
    result?;
    // A source says STARTED on stdout only: a stream that said nothing on the sockets may have been cut off.
    let mut statuses = objects.statuses.lock().expect("statuses lock");
    for status in statuses.iter_mut() {
        status.get_or_insert(StreamStatus::Incomplete);
    }
    Ok(false)
}

/// The sync's objects, and how many sockets share them.
struct SocketObjects<'a>(&'a Objects, usize);

impl<'a> Sink for SocketObjects<'a> {
    type Local = Writer<'a>;

    fn local(&self) -> Writer<'a> {
        Writer::new(self.0, self.1)
    }

    fn record(&self, local: &mut Writer<'a>, stream: usize, properties: &[String], record: &SocketRecord<'_>) -> Result<(), Failure> {
        let mut data = std::mem::take(&mut local.data);
        data.clear();
        record.write_data(properties, &mut data).map_err(|e| Failure::system(format!("a record of stream {} does not decode: {e}", record.stream())))?;
        let meta = match record {
            SocketRecord::Json(r) => r.meta.and_then(|m| serde_json::from_str(m.get()).ok()),
            SocketRecord::Proto(r) => r.meta().ok().flatten(),
        };
        let text = std::str::from_utf8(&data).map_err(|e| Failure::system(format!("a record of stream {} is not UTF-8: {e}", record.stream())))?;
        let result = local.record(stream, record.emitted_at(), text, source_changes(meta));
        local.data = data;
        result
    }

    fn checkpoint(&self, local: &mut Writer<'a>) -> Result<(), Failure> {
        local.checkpoint()
    }

    fn durable_checkpoints(&self, local: &Writer<'a>) -> Option<u64> {
        Some(local.durable)
    }

    fn end(&self, local: &mut Writer<'a>) -> Result<(), Failure> {
        local.complete_all()
    }

    fn status(&self, stream: usize, status: StreamStatus) {
        self.0.statuses.lock().expect("statuses lock")[stream] = Some(status);
    }
}
