//! CDC: a snapshot of each new table, then the changes of every table
//! read from a logical replication slot (pgoutput), in commit order.
//!
//! The slot is read with `pg_logical_slot_peek_binary_changes`, which never
//! consumes it: the slot moves only when a sync starts, and only to the
//! position in the state the platform passes in, which it saved because the
//! destination committed everything before it. So WAL is released after
//! every successful sync and never before, and a failed attempt reads the
//! same changes again. Each sync reads up to the WAL flushed when it
//! started, and its last STATE is that position whether or not any table
//! of ours changed: a slot on a database whose other tables are busy does
//! not hold WAL for them.
//!
//! Phases, per sync: check (slot, publication, tables, keys) -> position
//! (the saved LSN against the slot's) -> snapshots of the streams that have
//! none yet (by ctid ranges, resumable, their rows marked with the slot's
//! position) -> changes up to the flushed LSN. The shared LSN in the
//! GLOBAL state only moves forward, at a commit or at the end.
//!
//! In socket mode the same sequence goes on the first socket as one
//! partition, each STATE numbered and counting its records, with a copy on
//! stdout for the platform; the other sockets are closed at once. One
//! partition keeps the changes in the slot's order, which is the order a
//! destination must apply them in.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use serde_json::{json, Value};
use sluice_connector_kit::{Failure, Output};
use sluice_postgres::quoted;
use sluice_protocol::socket::{self, DataChannel, Format, FrameWriter};
use sluice_protocol::*;

use crate::client::{Db, Replication};
use crate::config::{Cdc, Config};
use crate::pgoutput::{self, Datum, Message};
use crate::values::Wire;
use crate::{full_refresh, plan, record_prefix, Book, Emitter, Plan, Sink};

/// The columns CDC adds to every stream, as Airbyte's database sources name them.
pub const COLUMNS: [&str; 3] = ["_ab_cdc_lsn", "_ab_cdc_updated_at", "_ab_cdc_deleted_at"];

/// Their JSON Schema, for discover.
pub fn column_schemas() -> [(&'static str, Value); 3] {
    let time = json!({"type": ["null", "string"], "format": "date-time", "airbyte_type": "timestamp_with_timezone"});
    [("_ab_cdc_lsn", json!({"type": ["null", "number"]})), ("_ab_cdc_updated_at", time.clone()), ("_ab_cdc_deleted_at", time)]
}

/// The CDC columns of a row read in a snapshot: when it was read, and no
/// LSN. A replayed change must win over the snapshot's row in a dedup
/// destination (which orders by the cursor, nulls last), and a change of a
/// transaction that spanned the slot's position can have an LSN below it:
/// no LSN is below every change.
pub fn snapshot_columns(at: &str) -> [(&'static str, String, Wire); 3] {
    let [lsn, updated, deleted] = COLUMNS;
    [
        (lsn, format!("null::numeric as {}", quoted(lsn)), Wire::Numeric),
        (updated, format!("'{at}'::text as {}", quoted(updated)), Wire::Text),
        (deleted, format!("null::text as {}", quoted(deleted)), Wire::Text),
    ]
}

/// What the incoming state says of CDC: the shared position and each stream's own state.
struct Saved {
    lsn: Option<u64>,
    streams: Vec<(StreamDescriptor, Value)>,
}

fn saved(state: &Value) -> Saved {
    let global = state.as_array().and_then(|list| list.iter().find(|s| s.get("type").and_then(Value::as_str) == Some("GLOBAL"))).and_then(|s| s.get("global"));
    let lsn = global.and_then(|g| g.pointer("/shared_state/lsn")).and_then(Value::as_str).and_then(pgoutput::parse_lsn);
    let streams = global
        .and_then(|g| g.get("stream_states"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|s| Some((serde_json::from_value(s.get("stream_descriptor")?.clone()).ok()?, s.get("stream_state").cloned().unwrap_or(Value::Null))))
                .collect()
        })
        .unwrap_or_default();
    Saved { lsn, streams }
}

pub fn read(config: &Config, cdc: &Cdc, db: &mut Db, catalog: &ConfiguredAirbyteCatalog, state: &Value, channel: Option<&DataChannel>, out: &mut Output) -> Result<(), Failure> {
    // Listen before anything else, so the destination finds the sockets.
    let listeners = match channel {
        Some(c) => c.socket_paths.iter().map(|p| socket::listen(p).map(|l| (l, p.clone()))).collect::<std::io::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let tables = db.tables(&config.schemas)?;
    let tables = tables.as_slice();
    let (slot, publication) = (&cdc.slot, &cdc.publication);
    // Check: everything that would stop a sync midway is found before anything moves.
    if db.setting("wal_level")? != "logical" {
        return Err(Failure::config("CDC needs the server's wal_level = logical (ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)"));
    }
    if !db.publication_exists(publication)? {
        return Err(Failure::config(format!("publication {publication} does not exist: CREATE PUBLICATION {} FOR TABLE <the tables to read>", quoted(publication))));
    }
    let published = db.published(publication)?;
    let started = jiff::Timestamp::now().to_string();
    let mut plans = Vec::new();
    for configured in &catalog.streams {
        // The snapshot's CDC columns are filled in below, once the position is known.
        let p = plan(configured, tables, &config.schemas, Some(""))?;
        if p.sync_mode == SyncMode::Incremental {
            let t = p.table;
            let name = format!("{}.{}", t.schema, t.name);
            if !published.iter().any(|(s, n)| *s == t.schema && *n == t.name) {
                return Err(Failure::config(format!(
                    "table {name} is not in publication {publication}: ALTER PUBLICATION {} ADD TABLE {}, or sync it in full_refresh mode",
                    quoted(publication),
                    t.sql()
                )));
            }
            if t.primary_key.is_empty() {
                return Err(Failure::config(format!("table {name} has no primary key, which CDC needs to apply updates and deletes: add one, or sync it in full_refresh mode")));
            }
            if db.replica_identity(t)? == "n" {
                return Err(Failure::config(format!(
                    "table {name} has REPLICA IDENTITY NOTHING, so its deletes and updates carry no key: ALTER TABLE {} REPLICA IDENTITY DEFAULT",
                    t.sql()
                )));
            }
        }
        plans.push((configured, p));
    }

    // Position: where the changes of this sync start.
    let saved = saved(state);
    let mut fresh = false;
    // A slot made here comes with a snapshot of the moment it starts at:
    // the tables read under it and the changes after it meet exactly.
    let mut exported: Option<(Replication, String)> = None;
    let position = match (db.slot(slot)?, saved.lsn) {
        (None, Some(lsn)) => {
            return Err(Failure::config(format!(
                "replication slot {slot} does not exist any more, and the changes since the last sync (at {}) went with it: create it again (SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')) and reset the connection to read every table again",
                pgoutput::lsn_text(lsn)
            )))
        }
        (None, None) => {
            let mut replication = Replication::connect(&config.server)?;
            let (lsn, snapshot) = replication.create_slot_with_snapshot(slot)?;
            out.log(LogLevel::Info, format!("created replication slot {slot} (pgoutput) at {}, with snapshot {snapshot}", pgoutput::lsn_text(lsn)))?;
            exported = Some((replication, snapshot));
            fresh = true;
            lsn
        }
        (Some(s), _) if s.kind != "logical" || s.plugin != "pgoutput" => {
            return Err(Failure::config(format!("replication slot {slot} is a {} slot of plugin {:?}; CDC reads a logical slot of plugin pgoutput", s.kind, s.plugin)))
        }
        (Some(s), _) if s.database != config.server.database => {
            return Err(Failure::config(format!("replication slot {slot} belongs to database {}, not {}: a logical slot reads one database", s.database, config.server.database)))
        }
        (Some(s), None) => {
            fresh = true;
            s.confirmed
        }
        (Some(s), Some(lsn)) if lsn < s.confirmed => {
            let (saved_text, slot_text) = (pgoutput::lsn_text(lsn), pgoutput::lsn_text(s.confirmed));
            if !cdc.resync_when_behind {
                return Err(Failure::config(format!(
                    "the saved position {saved_text} is no longer in replication slot {slot}, which is at {slot_text}: the changes between them are gone. Reset the connection to read every table again, or set invalid_cdc_cursor_position_behavior to \"Re-sync data\""
                )));
            }
            out.log(LogLevel::Warn, format!("the saved position {saved_text} is no longer in replication slot {slot} (at {slot_text}): reading every table again"))?;
            fresh = true;
            s.confirmed
        }
        (Some(s), Some(lsn)) => {
            // The platform saved `lsn` after the destination committed
            // everything before it: the slot may let that WAL go.
            if lsn > s.confirmed {
                db.advance_slot(slot, lsn)?;
            }
            out.log(LogLevel::Info, format!("replication slot {slot}: reading changes after {}; it held {} bytes of WAL before this sync", pgoutput::lsn_text(lsn), s.held_bytes))?;
            lsn
        }
    };
    let upto = db.flushed_lsn()?.max(position);

    let known = if fresh { Vec::new() } else { saved.streams };
    let book = Book::Global { shared: json!({"state_type": "cdc", "lsn": pgoutput::lsn_text(position), "slot": slot}), streams: known.clone() };
    let socket = match (channel, listeners.is_empty()) {
        (Some(c), false) => Some(Leg::accept(listeners, c.format)?),
        _ => None,
    };
    let mut sink = CdcSink { out, book, socket, emitted_at: now_millis(), records: 0 };

    // Snapshots: full refresh streams, and CDC streams not read whole yet,
    // under the slot's own snapshot when it was made now.
    if let Some((_, snapshot)) = &exported {
        db.import_snapshot(snapshot)?;
    }
    let shared = exported.is_some();
    let mut changing = Vec::new();
    for (configured, p) in &plans {
        let descriptor = p.descriptor();
        let own = known.iter().find(|(d, _)| *d == descriptor).map(|(_, s)| s);
        let done = own.and_then(|s| s.get("state_type")).and_then(Value::as_str) == Some("cdc");
        if p.sync_mode == SyncMode::Incremental {
            changing.push(p);
            if done {
                continue;
            }
        }
        sink.out.stream_status(&descriptor, StreamStatus::Started)?;
        let prefix = sink.prefix(&descriptor);
        let mut emit = Emitter::new(&mut sink, &descriptor, prefix, config.checkpoint_bytes());
        if p.sync_mode == SyncMode::Incremental {
            let marked = plan(configured, tables, &config.schemas, Some(&started))?;
            emit.log(LogLevel::Info, format!("snapshot of {}.{} before the changes after {}", p.table.schema, p.table.name, pgoutput::lsn_text(position)))?;
            full_refresh(db, &marked, own, &mut emit, json!({"state_type": "cdc"}), shared)?;
        } else {
            full_refresh(db, p, own, &mut emit, json!({}), shared)?;
            sink.complete(&descriptor)?;
        }
    }

    if let Some((replication, _)) = exported.take() {
        db.end_snapshot("ending the slot's snapshot")?;
        drop(replication);
    }

    // Changes: every CDC stream, from the position up to the flushed WAL.
    let mut changes = Changes::new(&changing, config.checkpoint_bytes());
    for p in &changing {
        if known.iter().any(|(d, s)| *d == p.descriptor() && s.get("state_type").and_then(Value::as_str) == Some("cdc")) {
            sink.out.stream_status(&p.descriptor(), StreamStatus::Started)?;
        }
    }
    if !changing.is_empty() {
        db.each_change(slot, publication, upto, |lsn, data| {
            let message = pgoutput::decode(data).map_err(|e| Failure::system(format!("replication slot {slot}: a pgoutput message at {} cannot be read: {}", pgoutput::lsn_text(lsn), e.0)))?;
            if let Some(end) = changes.apply(lsn, message, &mut sink)? {
                if changes.due() {
                    changes.since_state = 0;
                    sink.position(end)?;
                }
            }
            Ok(())
        })?;
    }
    // Everything that committed before `upto` is out: the next sync starts there.
    sink.position(upto)?;
    for p in &changing {
        sink.complete(&p.descriptor())?;
    }
    if changes.warned_unchanged {
        sink.out.log(LogLevel::Warn, "some updates left large (TOASTed) values out; those fields are null with a SOURCE_RETRIEVAL_ERROR change in the record's meta. ALTER TABLE ... REPLICA IDENTITY FULL sends them")?;
    }
    sink.finish()
}

/// Where a CDC read writes: stdout, or in socket mode the first socket,
/// with each STATE and COMPLETE copied to stdout first for the platform.
struct CdcSink<'o> {
    out: &'o mut Output,
    book: Book,
    socket: Option<Leg>,
    emitted_at: i64,
    /// Socket mode: records since the last STATE, which it counts.
    records: u64,
}

/// Socket mode: the one socket a CDC read sends on.
struct Leg {
    writer: FrameWriter<UnixStream>,
    path: PathBuf,
    partition: String,
    next_id: u64,
}

impl Leg {
    /// Takes the destination's connection on the first socket, and ends the
    /// others at once: it reads them to their end and finds nothing.
    fn accept(listeners: Vec<(std::os::unix::net::UnixListener, PathBuf)>, format: Format) -> Result<Leg, Failure> {
        let mut first = None;
        for (listener, path) in listeners {
            let (connection, _) = listener.accept().map_err(|e| Failure::system(format!("socket {}: accept: {e}", path.display())))?;
            if first.is_none() {
                first = Some((connection, path));
            }
        }
        let (connection, path) = first.expect("socket mode has a socket");
        let partition = format!("cdc-{:x}", now_millis() as u64 ^ (u64::from(std::process::id()) << 32));
        Ok(Leg { writer: FrameWriter::new(connection, format), path, partition, next_id: 1 })
    }

    fn broken(&self, e: std::io::Error) -> Failure {
        crate::sockets::socket_error(&self.path, e)
    }
}

impl CdcSink<'_> {
    /// A stream's record prefix, naming the socket's partition in socket mode.
    fn prefix(&self, descriptor: &StreamDescriptor) -> Vec<u8> {
        record_prefix(descriptor, self.emitted_at, self.socket.as_ref().map(|l| l.partition.as_str()))
    }

    /// A change's record, written as this sink frames it; returns its size.
    fn change(&mut self, prefix: &[u8], plan: &Plan<'_>, change: &Change<'_>, data: &mut Vec<u8>) -> Result<usize, Failure> {
        let Some(leg) = self.socket.as_mut().filter(|l| l.writer.format == Format::Protobuf) else {
            write_json(plan, change, data)?;
            self.record(prefix, data)?;
            return Ok(data.len());
        };
        self.records += 1;
        let d = &plan.stream;
        let encoder = leg.writer.begin_record(d.namespace.as_deref(), &d.name, self.emitted_at as u64, &leg.partition);
        encode(plan, change, encoder, data);
        leg.writer.end_record().map_err(|e| leg.broken(e))
    }

    /// A STATE or COMPLETE: on stdout, and in socket mode then on the
    /// socket; a STATE there numbered and counting the records since the last.
    fn send(&mut self, mut message: AirbyteMessage) -> Result<(), Failure> {
        let Some(leg) = &mut self.socket else { return Ok(self.out.message(&message)?) };
        if let Some(state) = &mut message.state {
            state.id = Some(leg.next_id);
            state.partition_id = Some(leg.partition.clone());
            state.source_stats = Some(AirbyteStateStats { record_count: Some(self.records as f64), ..Default::default() });
            leg.next_id += 1;
            self.records = 0;
        }
        // The platform's copy first: the destination may release it at once.
        self.out.message(&message)?;
        self.out.flush()?;
        leg.writer.message(&message).map_err(|e| leg.broken(e))?;
        leg.writer.flush().map_err(|e| leg.broken(e))
    }

    /// The GLOBAL state, its shared position moved to `lsn`.
    fn position(&mut self, lsn: u64) -> Result<(), Failure> {
        let Book::Global { shared, .. } = &mut self.book else { unreachable!("CDC keeps a global book") };
        shared["lsn"] = json!(pgoutput::lsn_text(lsn));
        let state = self.book.global();
        self.send(state)
    }

    fn complete(&mut self, descriptor: &StreamDescriptor) -> Result<(), Failure> {
        self.send(AirbyteMessage::trace(AirbyteTraceMessage::stream_status(now_millis() as f64, descriptor.clone(), StreamStatus::Complete)))
    }

    fn finish(self) -> Result<(), Failure> {
        match self.socket {
            Some(mut leg) => leg.writer.flush().map_err(|e| leg.broken(e)),
            None => Ok(()),
        }
    }
}

impl Sink for CdcSink<'_> {
    fn record(&mut self, prefix: &[u8], data: &[u8]) -> Result<(), Failure> {
        let Some(leg) = &mut self.socket else { return Ok(crate::write_record(self.out.writer(), prefix, data)?) };
        self.records += 1;
        crate::write_record(leg.writer.writer(), prefix, data).map_err(|e| leg.broken(e))
    }

    fn row(&mut self, prefix: &[u8], plan: &Plan<'_>, fields: &[Option<&[u8]>], data: &mut Vec<u8>) -> Result<usize, Failure> {
        let Some(leg) = self.socket.as_mut().filter(|l| l.writer.format == Format::Protobuf) else { return crate::json_row(self, prefix, plan, fields, data) };
        self.records += 1;
        crate::proto_row(&mut leg.writer, plan, self.emitted_at, &leg.partition, fields, data)?.map_err(|e| leg.broken(e))
    }

    fn state(&mut self, descriptor: &StreamDescriptor, stream_state: Value, _records: u64) -> Result<(), Failure> {
        let state = self.book.message(descriptor, stream_state);
        self.send(state)
    }

    fn log(&mut self, level: LogLevel, text: String) -> Result<(), Failure> {
        Ok(self.out.log(level, text)?)
    }
}

/// One change of a row, as the slot sent it.
struct Change<'a> {
    /// Each selected column's text (the plan's order); None is null.
    values: Vec<Option<&'a [u8]>>,
    lsn: u64,
    /// When its transaction committed.
    at: &'a str,
    deleted: bool,
    /// Selected columns the slot left out (unchanged TOASTed values), sent as null.
    nulled: Vec<&'a str>,
}

/// The change's record data as JSON, as a snapshot's row reads, with its
/// `meta` after it when a value was left out.
fn write_json(plan: &Plan<'_>, change: &Change<'_>, data: &mut Vec<u8>) -> Result<(), Failure> {
    data.clear();
    data.push(b'{');
    for (column, value) in plan.columns.iter().zip(&change.values) {
        serde_json::to_writer(&mut *data, &column.name).expect("a name serializes");
        data.push(b':');
        match value {
            Some(text) => crate::layout::write_text_value(column, text, data),
            None => data.extend_from_slice(b"null"),
        }
        data.push(b',');
    }
    let at = json!(change.at);
    write!(data, "\"_ab_cdc_lsn\":{},\"_ab_cdc_updated_at\":{at},\"_ab_cdc_deleted_at\":{}}}", change.lsn, if change.deleted { at.to_string() } else { "null".into() })?;
    if !change.nulled.is_empty() {
        let changes: Vec<Value> = change.nulled.iter().map(|f| json!({"field": f, "change": "NULLED", "reason": "SOURCE_RETRIEVAL_ERROR"})).collect();
        write!(data, ",\"meta\":{}", json!({"changes": changes}))?;
    }
    Ok(())
}

/// The change's PROTOBUF values, by the stream's properties in sorted order.
fn encode(plan: &Plan<'_>, change: &Change<'_>, e: &mut protobuf::RecordEncoder, scratch: &mut Vec<u8>) {
    let selected = plan.columns.len();
    for position in &plan.positions {
        match *position {
            Some(i) if i < selected => match change.values[i] {
                Some(text) => crate::layout::encode_text_value(plan.columns[i], text, e, scratch),
                None => e.null(),
            },
            // The CDC columns follow the selected ones, in COLUMNS' order.
            Some(i) if i == selected => e.integer(change.lsn as i64),
            Some(i) if i == selected + 1 => e.string(change.at),
            Some(i) if i == selected + 2 && change.deleted => e.string(change.at),
            _ => e.null(),
        }
    }
    if !change.nulled.is_empty() {
        e.nulled(&change.nulled, "SOURCE_RETRIEVAL_ERROR");
    }
}

/// A table of the slot's changes that a stream reads.
struct Target<'p> {
    plan: &'p Plan<'p>,
    prefix: Vec<u8>,
    /// For each column of the relation as the slot sends it, the selected column it is.
    columns: Vec<Option<usize>>,
}

/// Turns the slot's messages into records, and says where STATEs may go.
struct Changes<'p> {
    plans: HashMap<(String, String), &'p Plan<'p>>,
    relations: HashMap<u32, Option<Target<'p>>>,
    commit_at: String,
    checkpoint_bytes: u64,
    since_state: u64,
    warned_unchanged: bool,
    data: Vec<u8>,
}

impl<'p> Changes<'p> {
    fn new(plans: &[&'p Plan<'p>], checkpoint_bytes: u64) -> Self {
        Changes {
            plans: plans.iter().map(|p| ((p.table.schema.clone(), p.table.name.clone()), *p)).collect(),
            relations: HashMap::new(),
            commit_at: String::new(),
            checkpoint_bytes,
            since_state: 0,
            warned_unchanged: false,
            data: Vec::with_capacity(64 << 10),
        }
    }

    fn due(&self) -> bool {
        self.since_state >= self.checkpoint_bytes
    }

    /// Writes the record a change makes; returns a commit's end LSN.
    fn apply(&mut self, lsn: u64, message: Message<'_>, sink: &mut CdcSink<'_>) -> Result<Option<u64>, Failure> {
        let (relation, tuple, old, deleted) = match message {
            Message::Begin { commit_micros, .. } => {
                self.commit_at = micros_text(commit_micros);
                return Ok(None);
            }
            Message::Commit { end_lsn, .. } => return Ok(Some(end_lsn)),
            Message::Relation { id, schema, name, columns, .. } => {
                let target = self.plans.get(&(schema, name)).map(|p| Target {
                    plan: p,
                    prefix: sink.prefix(&p.descriptor()),
                    columns: columns.iter().map(|c| p.columns.iter().position(|s| s.name == c.name)).collect(),
                });
                self.relations.insert(id, target);
                return Ok(None);
            }
            Message::Insert { relation, new } => (relation, new, None, false),
            Message::Update { relation, old, new } => (relation, new, old, false),
            Message::Delete { relation, old } => (relation, old, None, true),
            Message::Truncate { relations } => {
                let names: Vec<String> = relations.iter().filter_map(|r| self.relations.get(r).and_then(Option::as_ref)).map(|t| format!("{}.{}", t.plan.table.schema, t.plan.table.name)).collect();
                if !names.is_empty() {
                    sink.log(LogLevel::Warn, format!("TRUNCATE of {} at {} is not a change CDC carries: the destination keeps those rows until the stream is read again", names.join(", "), pgoutput::lsn_text(lsn)))?;
                }
                return Ok(None);
            }
            Message::Other(_) => return Ok(None),
        };
        let Some(Some(target)) = self.relations.get(&relation) else { return Ok(None) };
        let mut change = Change { values: vec![None; target.plan.columns.len()], lsn, at: &self.commit_at, deleted, nulled: Vec::new() };
        for (i, (datum, column)) in tuple.iter().zip(&target.columns).enumerate() {
            let Some(column) = *column else { continue };
            // An unchanged TOASTed value is not sent; the old row has it when the identity is FULL.
            let datum = match datum {
                Datum::Unchanged => old.as_ref().and_then(|o| o.get(i)).filter(|d| matches!(d, Datum::Text(_))).unwrap_or(datum),
                other => other,
            };
            match datum {
                Datum::Text(text) => change.values[column] = Some(text),
                Datum::Null => {}
                Datum::Unchanged => change.nulled.push(target.plan.columns[column].name.as_str()),
            }
        }
        self.warned_unchanged |= !change.nulled.is_empty();
        self.since_state += sink.change(&target.prefix, target.plan, &change, &mut self.data)? as u64;
        Ok(None)
    }
}

/// Microseconds since 2000-01-01 (PostgreSQL's epoch) as an ISO instant.
fn micros_text(micros: i64) -> String {
    const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
    jiff::Timestamp::from_microsecond(micros + POSTGRES_EPOCH_MICROS).map(|t| t.to_string()).unwrap_or_default()
}
