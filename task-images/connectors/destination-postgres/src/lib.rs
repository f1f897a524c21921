//! `destination-postgres`: Airbyte's direct-load tables in PostgreSQL,
//! loaded by binary `COPY`.
//!
//! One table per stream, in the schema the stream's namespace names (or
//! the configured one), with Airbyte's typed columns and its own four
//! (`layout.rs`). The loader follows the stream's generations, as
//! Airbyte's Bulk Load CDK chooses it:
//! - `minimum_generation_id` 0, `append`: rows go straight into the table;
//! - 0, `append_dedup`: into a staged table, merged at the end (one row per
//!   primary key, the latest by cursor, then by `_airbyte_extracted_at`;
//!   CDC deletes remove the key);
//! - equal to `generation_id` (overwrite, refresh and remove): into a staged
//!   table that replaces the table in one transaction once the stream is
//!   complete, so a reader sees the old table whole until then.
//!
//! A staged table's `_airbyte_meta` defaults to what this sync writes
//! there for a row whose values all fit, and such rows leave it out of
//! their `COPY`: the server parses that JSON once, not once a row.
//!
//! Rows are encoded once, into a per-stream buffer of `COPY` rows, copied
//! when the buffer is full by the connection's own thread (`client::Copier`)
//! while the next fills (memory stays bounded whatever the volume: per
//! stream and connection, one buffer filling and one copying), and
//! committed when a STATE arrives, which is echoed only then: a crash loses
//! only rows no STATE covers, so a retry from the last STATE duplicates
//! nothing, even in append mode. In socket mode each socket's connection
//! commits at its partition's STATEs, in id order (the kit waits for the
//! turn), so what is committed is what is released there too. Rows after
//! the last STATE are committed at the end only if no stream ended
//! incomplete: after a source's failure the retry reads them again. A
//! staged table outlives a failed attempt: the rows in it are covered by
//! states already released, and the retry goes on with them.

pub mod client;
pub mod config;
pub mod layout;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_connector_kit::sockets::{self, Sink};
use sluice_connector_kit::{each_input_line, echo_state, parse_message, parse_record, read_json, Command, Failure, Output};
use sluice_protocol::json;
use sluice_protocol::protobuf::Scalar;
use sluice_protocol::socket::SocketRecord;
use sluice_protocol::*;

use client::{Copier, Db, Table};
use config::Config;
use layout::Column;

pub const NAME: &str = "destination-postgres";

/// A stream's buffer is copied in at this size, row count or age, whichever
/// first; its rows are committed at the next STATE. With one buffer
/// filling while another is copied, 4 MB moves as fast as 8 MB did
/// (socket mode, 2M rows of 1 KB) and the destination peaks at 150 MB, not 200.
const FLUSH_BYTES: usize = 4 << 20;
const FLUSH_ROWS: usize = 50_000;
const FLUSH_AGE: Duration = Duration::from_secs(5);

pub fn main(args: &[String]) -> i32 {
    sluice_connector_kit::main(NAME, args, run)
}

fn run(command: Command, out: &mut Output) -> Result<(), Failure> {
    match command {
        Command::Spec => Ok(out.message(&AirbyteMessage::spec(config::spec()))?),
        Command::Check { config } => Ok(out.check_result(Config::load(&config).and_then(|c| config::check(&c)))?),
        Command::Write { config, catalog } => {
            let config = Config::load(&config)?;
            let catalog: ConfiguredAirbyteCatalog = read_json("catalog", &catalog)?;
            write(&config, &catalog, out)
        }
        Command::Discover { .. } | Command::Read { .. } => Err(Failure::config("destination-postgres is a destination: it only runs spec, check and write")),
    }
}

/// How a stream's rows reach its table.
#[derive(Debug, Clone, PartialEq)]
enum Loader {
    Append,
    /// Staged, then merged by key.
    Dedup { key: Vec<String>, cursor: Option<String> },
    /// Staged, then swapped in; deduplicated first if `key` is set.
    Truncate { key: Option<(Vec<String>, Option<String>)> },
}

/// A stream's table and how it is loaded: settled before the first row.
struct Target {
    descriptor: StreamDescriptor,
    table: Table,
    /// Where rows are copied: the table, or its staged twin.
    copy_into: Table,
    columns: Vec<Column>,
    loader: Loader,
    generation: i64,
    sync_id: Option<i64>,
    /// `_airbyte_meta` of a row where every value fit, written once.
    clean_meta: Vec<u8>,
    /// Whether `copy_into` has `clean_meta` as its default (a staged
    /// table), so that such rows leave it out.
    meta_default: bool,
    cdc_deletes: bool,
}

/// A stream's rows not yet copied, on one connection.
#[derive(Default)]
struct Batch {
    /// Rows with their `_airbyte_meta`.
    rows: Vec<u8>,
    /// Rows without, which take the table's default.
    plain: Vec<u8>,
    plain_rows: usize,
    /// Rows in both.
    buffered: usize,
    oldest: Option<Instant>,
}

impl Batch {
    fn full(&self) -> bool {
        self.buffered >= FLUSH_ROWS || self.rows.len() + self.plain.len() >= FLUSH_BYTES || self.oldest.is_some_and(|t| t.elapsed() >= FLUSH_AGE)
    }
}

/// The loader Airbyte's Bulk Load CDK would choose for a configured stream.
fn loader(configured: &ConfiguredAirbyteStream, columns: &[Column]) -> Result<Loader, Failure> {
    let descriptor = configured.stream.descriptor();
    let generation = configured.generation_id.unwrap_or(0);
    let minimum = configured.minimum_generation_id.unwrap_or(0);
    let mode = &configured.destination_sync_mode;
    let column_of = |path: &[String], what: &str| -> Result<String, Failure> {
        let [field] = path else {
            return Err(Failure::config(format!("stream {descriptor}: the {what} {path:?} is nested; destination-postgres keys on top-level fields only")));
        };
        columns.iter().find(|c| &c.property == field).map(|c| c.name.clone()).ok_or_else(|| Failure::config(format!("stream {descriptor}: the {what} `{field}` is not in the stream's schema")))
    };
    let dedup = || -> Result<(Vec<String>, Option<String>), Failure> {
        let key = configured.primary_key.clone().filter(|k| !k.is_empty()).ok_or_else(|| Failure::config(format!("stream {descriptor}: `{mode}` needs a primary key in the configured catalog")))?;
        let key = key.iter().map(|k| column_of(k, "primary key")).collect::<Result<Vec<_>, _>>()?;
        let cursor = configured.cursor_field.as_deref().filter(|c| !c.is_empty()).map(|c| column_of(c, "cursor")).transpose()?;
        Ok((key, cursor))
    };
    let keyed = matches!(mode, DestinationSyncMode::AppendDedup | DestinationSyncMode::OverwriteDedup);
    let truncate = matches!(mode, DestinationSyncMode::Overwrite | DestinationSyncMode::OverwriteDedup) || (minimum == generation && generation > 0);
    if !matches!(mode, DestinationSyncMode::Append | DestinationSyncMode::AppendDedup | DestinationSyncMode::Overwrite | DestinationSyncMode::OverwriteDedup) {
        return Err(Failure::config(format!("stream {descriptor}: destination sync mode `{mode}` is not supported")));
    }
    if minimum != 0 && minimum != generation {
        return Err(Failure::config(format!("stream {descriptor}: minimum_generation_id {minimum} is neither 0 nor the generation {generation}; Airbyte's loaders take only those")));
    }
    Ok(match (truncate, keyed) {
        (false, false) => Loader::Append,
        (false, true) => {
            let (key, cursor) = dedup()?;
            Loader::Dedup { key, cursor }
        }
        (true, keyed) => Loader::Truncate { key: if keyed { Some(dedup()?) } else { None } },
    })
}

fn open_targets(db: &mut Db, config: &Config, catalog: &ConfiguredAirbyteCatalog) -> Result<Vec<Target>, Failure> {
    let mut targets: Vec<Target> = Vec::new();
    for configured in &catalog.streams {
        let descriptor = configured.stream.descriptor();
        let schema = layout::identifier(configured.stream.namespace.as_deref().unwrap_or(&config.schema));
        let table = Table { schema: schema.clone(), name: layout::identifier(&configured.stream.name) };
        if let Some(other) = targets.iter().find(|t| t.table == table) {
            return Err(Failure::config(format!("streams {} and {descriptor} both become the table {table}", other.descriptor)));
        }
        let wanted = layout::columns(&configured.stream.json_schema).map_err(|e| Failure::config(format!("stream {descriptor}: {e}")))?;
        let loader = loader(configured, &wanted)?;
        let generation = configured.generation_id.unwrap_or(0);
        let columns = db.ensure_table(&table, &wanted)?;
        let copy_into = match loader {
            Loader::Append => table.clone(),
            Loader::Dedup { .. } | Loader::Truncate { .. } => {
                let staged = Table { schema, name: layout::identifier(&format!("{}_airbyte_tmp", configured.stream.name)) };
                // A staged table of an earlier generation holds rows no state of this sync covers.
                if db.table_exists(&staged)? && matches!(loader, Loader::Truncate { .. }) && db.generations(&staged)?.iter().any(|&g| g != generation) {
                    db.execute(&format!("dropping the stale {staged}"), &format!("drop table {}", staged.sql()))?;
                }
                let staged_columns = db.ensure_table(&staged, &columns)?;
                if staged_columns != columns {
                    // The staged table's columns must be the table's: start it over.
                    db.execute(&format!("dropping {staged}"), &format!("drop table {}", staged.sql()))?;
                    db.ensure_table(&staged, &columns)?;
                }
                staged
            }
        };
        let clean_meta = layout::meta(configured.sync_id, Vec::new(), &[]).to_string();
        // The table itself is the user's: its columns' defaults stay theirs.
        let meta_default = copy_into != table;
        if meta_default {
            db.set_clean_meta(&copy_into, &clean_meta)?;
        }
        let cdc_deletes = columns.iter().any(|c| c.name == "_ab_cdc_deleted_at");
        targets.push(Target {
            descriptor,
            table,
            copy_into,
            columns,
            loader,
            generation,
            sync_id: configured.sync_id,
            clean_meta: clean_meta.into_bytes(),
            meta_default,
            cdc_deletes,
        });
    }
    Ok(targets)
}

fn write(config: &Config, catalog: &ConfiguredAirbyteCatalog, out: &mut Output) -> Result<(), Failure> {
    let channel = sluice_protocol::socket::DataChannel::from_env().map_err(Failure::config)?;
    let mut db = Db::new(config.connect()?);
    let targets = open_targets(&mut db, config, catalog)?;
    let (mut db, statuses) = match channel {
        Some(channel) => (db, write_sockets(config, &channel, catalog, &targets, out)?),
        None => write_stdin(db, &targets, out)?,
    };
    finish(&mut db, &targets, &statuses)
}

/// Legacy mode: every message on stdin, in order, on one connection.
fn write_stdin(db: Db, targets: &[Target], out: &mut Output) -> Result<(Db, Vec<Option<StreamStatus>>), Failure> {
    let mut copier = Copier::spawn(db);
    let index: HashMap<StreamDescriptor, usize> = targets.iter().enumerate().map(|(i, t)| (t.descriptor.clone(), i)).collect();
    let mut batches: Vec<Batch> = targets.iter().map(|_| Batch::default()).collect();
    let mut statuses = vec![None; targets.len()];
    let mut since_state = 0u64;
    each_input_line(|line, text| {
        // Records keep their data as written: a number keeps every digit on its way to a numeric column.
        if let Some(record) = parse_record(line, text)? {
            let descriptor = StreamDescriptor::new(record.stream.as_ref(), record.namespace.map(String::from));
            let Some(&i) = index.get(&descriptor) else {
                return Err(Failure::system(format!("stdin line {line}: a record of stream {descriptor}, which the configured catalog does not have")));
            };
            let (target, columns) = (&targets[i], &targets[i].columns);
            let values = json::fields_by_name(record.data.get(), columns.iter().map(|c| c.property.as_str())).map_err(|e| Failure::system(format!("stdin line {line}: record data of stream {descriptor} is not an object: {e}")))?;
            let changes = json_source_changes(record.meta);
            encode_row(target, &mut batches[i], record.emitted_at, changes, |i, out| layout::encode_raw(out, columns[i].kind, values[i]));
            since_state += 1;
            if batches[i].full() {
                flush(&mut copier, &targets[i], &mut batches[i])?;
            }
            return Ok(());
        }
        let message = parse_message(line, text)?;
        if let Some(status) = message.trace.and_then(|t| t.stream_status) {
            if let Some(&i) = index.get(&status.stream_descriptor) {
                statuses[i] = Some(status.status);
            }
        } else if let Some(state) = message.state {
            for (target, batch) in targets.iter().zip(batches.iter_mut()) {
                flush(&mut copier, target, batch)?;
            }
            copier.commit()?;
            echo_state(out, state, since_state)?;
            since_state = 0;
        }
        Ok(())
    })?;
    for (target, batch) in targets.iter().zip(batches.iter_mut()) {
        flush(&mut copier, target, batch)?;
    }
    end_tail(&mut copier, &statuses)?;
    Ok((copier.finish()?, statuses))
}

/// The rows after the last STATE: committed when every stream that said
/// how it ended said COMPLETE (or none said anything), else rolled back,
/// since the retry resumes before them.
fn end_tail(copier: &mut Copier, statuses: &[Option<StreamStatus>]) -> Result<(), Failure> {
    if statuses.iter().all(|s| matches!(s, None | Some(StreamStatus::Complete))) {
        copier.commit()
    } else {
        copier.rollback()
    }
}

/// Socket mode: a connection per socket, each reading thread copying its
/// own batches and committing them at its partition's STATE in id order,
/// as the kit releases them.
fn write_sockets(
    config: &Config,
    channel: &sluice_protocol::socket::DataChannel,
    catalog: &ConfiguredAirbyteCatalog,
    targets: &[Target],
    out: &mut Output,
) -> Result<Vec<Option<StreamStatus>>, Failure> {
    let connections = (0..channel.socket_paths.len()).map(|_| config.connect().map(|c| Copier::spawn(Db::new(c)))).collect::<Result<Vec<_>, _>>()?;
    // PROTOBUF values are positional: where each of a stream's sorted properties goes.
    let positions = sockets::Streams::of(catalog)
        .properties
        .iter()
        .zip(targets)
        .map(|(properties, target)| properties.iter().map(|p| target.columns.iter().position(|c| &c.property == p)).collect())
        .collect();
    let sink = Tables { targets, positions, connections: Mutex::new(connections), statuses: Mutex::new(vec![None; targets.len()]) };
    let shared = Mutex::new(std::mem::take(out));
    let result = sockets::write(channel, catalog, &sink, &shared);
    *out = shared.into_inner().expect("stdout lock");
    let readers = result?;
    // A source says STARTED on stdout only: a stream that said nothing on
    // the sockets may have been cut off, and is neither finished nor swapped in.
    let statuses: Vec<Option<StreamStatus>> = sink.statuses.into_inner().expect("statuses lock").into_iter().map(|s| s.or(Some(StreamStatus::Incomplete))).collect();
    for mut reader in readers {
        end_tail(&mut reader.copier, &statuses)?;
    }
    Ok(statuses)
}

struct Tables<'a> {
    targets: &'a [Target],
    /// Per stream, for each value of a PROTOBUF record, its column.
    positions: Vec<Vec<Option<usize>>>,
    /// One per socket, taken by its reading thread.
    connections: Mutex<Vec<Copier>>,
    statuses: Mutex<Vec<Option<StreamStatus>>>,
}

/// A reading thread's connection and its batches.
struct Reader {
    copier: Copier,
    batches: Vec<Batch>,
}

impl Sink for Tables<'_> {
    type Local = Reader;

    fn local(&self) -> Reader {
        let copier = self.connections.lock().expect("connections lock").pop().expect("a connection per socket");
        Reader { copier, batches: self.targets.iter().map(|_| Batch::default()).collect() }
    }

    fn record(&self, local: &mut Reader, stream: usize, _properties: &[String], record: &SocketRecord<'_>) -> Result<(), Failure> {
        let (target, batch) = (&self.targets[stream], &mut local.batches[stream]);
        match record {
            SocketRecord::Json(r) => {
                let values = json::fields_by_name(r.data.get(), target.columns.iter().map(|c| c.property.as_str())).map_err(|e| Failure::system(format!("record data of stream {} is not an object: {e}", r.stream)))?;
                let changes = json_source_changes(r.meta);
                encode_row(target, batch, record.emitted_at(), changes, |i, out| layout::encode_raw(out, target.columns[i].kind, values[i]));
            }
            SocketRecord::Proto(r) => {
                // Values come in the order of the stream's sorted properties; the row wants the columns'.
                let positions = &self.positions[stream];
                let mut values: Vec<Option<Scalar>> = vec![None; target.columns.len()];
                let mut count = 0;
                for value in r.values() {
                    let value = value.map_err(|e| Failure::system(format!("a record of stream {} does not decode: {e}", r.stream)))?;
                    if let Some(Some(column)) = positions.get(count) {
                        values[*column] = Some(value);
                    }
                    count += 1;
                }
                if count != positions.len() {
                    return Err(Failure::system(format!(
                        "a record of stream {} has {count} values and the configured catalog {} properties: the source and the catalog disagree",
                        r.stream,
                        positions.len()
                    )));
                }
                let changes = source_changes(if r.has_meta { r.meta().ok().flatten() } else { None });
                encode_row(target, batch, record.emitted_at(), changes, |i, out| layout::encode_scalar(out, target.columns[i].kind, values[i].as_ref().unwrap_or(&Scalar::Null)));
            }
        }
        if batch.full() {
            flush(&mut local.copier, target, batch)?;
        }
        Ok(())
    }

    fn checkpoint(&self, local: &mut Reader) -> Result<(), Failure> {
        for (target, batch) in self.targets.iter().zip(local.batches.iter_mut()) {
            flush(&mut local.copier, target, batch)?;
        }
        Ok(())
    }

    /// What is committed must be what is released: a partition's rows
    /// committed ahead of a lower STATE of another would be read again by
    /// a retry that resumes from the last released one.
    const COMMITS_IN_ID_ORDER: bool = true;

    fn commit(&self, local: &mut Reader) -> Result<(), Failure> {
        local.copier.commit()
    }

    fn status(&self, stream: usize, status: StreamStatus) {
        self.statuses.lock().expect("statuses lock")[stream] = Some(status);
    }
}

/// The changes a source made to a record (its `meta.changes`), which
/// `_airbyte_meta` keeps before the destination's own.
fn source_changes(meta: Option<serde_json::Value>) -> Vec<serde_json::Value> {
    match meta {
        Some(serde_json::Value::Object(mut m)) => match m.remove("changes") {
            Some(serde_json::Value::Array(changes)) => changes,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The same, from a JSON record's `meta` as the source wrote it.
fn json_source_changes(meta: Option<&serde_json::value::RawValue>) -> Vec<serde_json::Value> {
    source_changes(meta.and_then(|m| serde_json::from_str(m.get()).ok()))
}

/// One row of binary `COPY`: the data, each column's field written by
/// `field` (false: the value did not fit, and is NULL), then Airbyte's four
/// columns; `_airbyte_meta` holds the source's `changes` and then ours. A
/// row with nothing to say there, into a table whose default says it, goes
/// to the batch's plain rows without it.
fn encode_row(target: &Target, batch: &mut Batch, emitted_at: i64, changes: Vec<serde_json::Value>, mut field: impl FnMut(usize, &mut Vec<u8>) -> bool) {
    let fields = (target.columns.len() + layout::META_COLUMNS.len()) as i16;
    // Plain first, as most rows are; a row that turns out to need its meta moves.
    let rows = if target.meta_default { &mut batch.plain } else { &mut batch.rows };
    let start = rows.len();
    rows.extend_from_slice(&(fields - i16::from(target.meta_default)).to_be_bytes());
    let mut nulled: Vec<&str> = Vec::new();
    for (i, c) in target.columns.iter().enumerate() {
        if !field(i, rows) {
            nulled.push(&c.property);
        }
    }
    rows.extend_from_slice(&16i32.to_be_bytes());
    rows.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    rows.extend_from_slice(&8i32.to_be_bytes());
    rows.extend_from_slice(&layout::extracted_at_micros(emitted_at).to_be_bytes());
    let clean = nulled.is_empty() && changes.is_empty();
    if target.meta_default && !clean {
        let moved_at = batch.rows.len();
        batch.rows.extend_from_slice(&batch.plain[start..]);
        batch.plain.truncate(start);
        batch.rows[moved_at..moved_at + 2].copy_from_slice(&fields.to_be_bytes());
    }
    let plain = target.meta_default && clean;
    let rows = if plain { &mut batch.plain } else { &mut batch.rows };
    if !plain {
        let meta_at = rows.len();
        rows.extend_from_slice(&[0, 0, 0, 0, 1]);
        if clean {
            rows.extend_from_slice(&target.clean_meta);
        } else {
            serde_json::to_writer(&mut *rows, &layout::meta(target.sync_id, changes, &nulled)).expect("JSON serializes");
        }
        let len = (rows.len() - meta_at - 4) as i32;
        rows[meta_at..meta_at + 4].copy_from_slice(&len.to_be_bytes());
    }
    rows.extend_from_slice(&8i32.to_be_bytes());
    rows.extend_from_slice(&target.generation.to_be_bytes());
    batch.plain_rows += usize::from(plain);
    batch.buffered += 1;
    batch.oldest.get_or_insert_with(Instant::now);
}

/// Hands the batch's rows to the copier, which checks they all went in.
fn flush(copier: &mut Copier, target: &Target, batch: &mut Batch) -> Result<(), Failure> {
    let meta_rows = batch.buffered - batch.plain_rows;
    for (rows, count, with_meta) in [(&mut batch.plain, batch.plain_rows, false), (&mut batch.rows, meta_rows, true)] {
        if count > 0 {
            copier.copy(&target.copy_into, &target.columns, rows, count, with_meta)?;
        }
    }
    batch.plain_rows = 0;
    batch.buffered = 0;
    batch.oldest = None;
    Ok(())
}

/// The end of the input: staged rows merged or swapped in, for the streams
/// that are complete (the source said so, or reports no statuses).
fn finish(db: &mut Db, targets: &[Target], statuses: &[Option<StreamStatus>]) -> Result<(), Failure> {
    for (target, status) in targets.iter().zip(statuses) {
        let complete = matches!(status, None | Some(StreamStatus::Complete));
        match &target.loader {
            Loader::Append => {}
            // Merging is safe whatever the stream's status: what is staged is committed.
            Loader::Dedup { key, cursor } => db.upsert(&target.copy_into, &target.table, &target.columns, key, cursor.as_deref(), target.cdc_deletes)?,
            Loader::Truncate { key } if complete => {
                if let Some((key, cursor)) = key {
                    db.dedup_in_place(&target.copy_into, key, cursor.as_deref(), target.cdc_deletes)?;
                }
                db.swap(&target.copy_into, &target.table)?;
            }
            // Kept for a retry of the same generation; the old table stays whole.
            Loader::Truncate { .. } => {}
        }
    }
    Ok(())
}
