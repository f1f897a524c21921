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

use std::collections::HashMap;
use std::io::Write;

use serde_json::{json, Value};
use sluice_connector_kit::{Failure, Output};
use sluice_postgres::quoted;
use sluice_protocol::*;

use crate::client::{Db, Replication, Table};
use crate::config::{Cdc, Config};
use crate::pgoutput::{self, Datum, Message};
use crate::values::Wire;
use crate::{full_refresh, plan, record_prefix, status, Book, Emitter, Plan, Stdout};

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

pub fn read(config: &Config, cdc: &Cdc, db: &mut Db, tables: &[Table], catalog: &ConfiguredAirbyteCatalog, state: &Value, out: &mut Output) -> Result<(), Failure> {
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

    let mut book = Book::Global {
        shared: json!({"state_type": "cdc", "lsn": pgoutput::lsn_text(position), "slot": slot}),
        streams: if fresh { Vec::new() } else { saved.streams },
    };
    let Book::Global { streams: known, .. } = &book else { unreachable!() };
    let known = known.clone();
    let emitted_at = now_millis();

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
        status(out, &descriptor, StreamStatus::Started)?;
        let mut sink = Stdout { out, book: &mut book };
        let mut emit = Emitter::new(&mut sink, &descriptor, record_prefix(&descriptor, emitted_at, None), config.checkpoint_bytes());
        if p.sync_mode == SyncMode::Incremental {
            let marked = plan(configured, tables, &config.schemas, Some(&started))?;
            emit.log(LogLevel::Info, format!("snapshot of {}.{} before the changes after {}", p.table.schema, p.table.name, pgoutput::lsn_text(position)))?;
            full_refresh(db, &marked, own, &mut emit, json!({"state_type": "cdc"}), shared)?;
        } else {
            full_refresh(db, p, own, &mut emit, json!({}), shared)?;
            status(out, &descriptor, StreamStatus::Complete)?;
        }
    }

    if let Some((replication, _)) = exported.take() {
        db.end_snapshot("ending the slot's snapshot")?;
        drop(replication);
    }

    // Changes: every CDC stream, from the position up to the flushed WAL.
    let mut changes = Changes::new(&changing, emitted_at, config.checkpoint_bytes());
    for p in &changing {
        if known.iter().any(|(d, s)| *d == p.descriptor() && s.get("state_type").and_then(Value::as_str) == Some("cdc")) {
            status(out, &p.descriptor(), StreamStatus::Started)?;
        }
    }
    if !changing.is_empty() {
        db.each_change(slot, publication, upto, |lsn, data| {
            let message = pgoutput::decode(data).map_err(|e| Failure::system(format!("replication slot {slot}: a pgoutput message at {} cannot be read: {}", pgoutput::lsn_text(lsn), e.0)))?;
            if let Some(end) = changes.apply(lsn, message, out)? {
                if changes.due() {
                    changes.since_state = 0;
                    let Book::Global { shared, .. } = &mut book else { unreachable!() };
                    shared["lsn"] = json!(pgoutput::lsn_text(end));
                    out.message(&book.global())?;
                }
            }
            Ok(())
        })?;
    }
    // Everything that committed before `upto` is out: the next sync starts there.
    let Book::Global { shared, .. } = &mut book else { unreachable!() };
    shared["lsn"] = json!(pgoutput::lsn_text(upto));
    out.message(&book.global())?;
    for p in &changing {
        status(out, &p.descriptor(), StreamStatus::Complete)?;
    }
    if changes.warned_unchanged {
        out.log(LogLevel::Warn, "some updates left large (TOASTed) values out; those fields are null with a SOURCE_RETRIEVAL_ERROR change in the record's meta. ALTER TABLE ... REPLICA IDENTITY FULL sends them")?;
    }
    Ok(())
}

/// A table of the slot's changes that a stream reads.
struct Target<'p> {
    plan: &'p Plan<'p>,
    prefix: Vec<u8>,
    /// For each column of the relation as the slot sends it, the selected column it is.
    columns: Vec<Option<&'p crate::layout::Column>>,
}

/// Turns the slot's messages into records, and says where STATEs may go.
struct Changes<'p> {
    plans: HashMap<(String, String), &'p Plan<'p>>,
    emitted_at: i64,
    relations: HashMap<u32, Option<Target<'p>>>,
    commit_at: String,
    checkpoint_bytes: u64,
    since_state: u64,
    warned_unchanged: bool,
    data: Vec<u8>,
}

impl<'p> Changes<'p> {
    fn new(plans: &[&'p Plan<'p>], emitted_at: i64, checkpoint_bytes: u64) -> Self {
        Changes {
            plans: plans.iter().map(|p| ((p.table.schema.clone(), p.table.name.clone()), *p)).collect(),
            emitted_at,
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
    fn apply(&mut self, lsn: u64, message: Message<'_>, out: &mut Output) -> Result<Option<u64>, Failure> {
        let (relation, tuple, old, deleted) = match message {
            Message::Begin { commit_micros, .. } => {
                self.commit_at = micros_text(commit_micros);
                return Ok(None);
            }
            Message::Commit { end_lsn, .. } => return Ok(Some(end_lsn)),
            Message::Relation { id, schema, name, columns, .. } => {
                let target = self.plans.get(&(schema, name)).map(|p| Target {
                    plan: p,
                    prefix: record_prefix(&p.descriptor(), self.emitted_at, None),
                    columns: columns.iter().map(|c| p.columns.iter().copied().find(|s| s.name == c.name)).collect(),
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
                    out.log(LogLevel::Warn, format!("TRUNCATE of {} at {} is not a change CDC carries: the destination keeps those rows until the stream is read again", names.join(", "), pgoutput::lsn_text(lsn)))?;
                }
                return Ok(None);
            }
            Message::Other(_) => return Ok(None),
        };
        let Some(Some(target)) = self.relations.get(&relation) else { return Ok(None) };
        let data = &mut self.data;
        data.clear();
        data.push(b'{');
        let mut unavailable = Vec::new();
        for (i, (datum, column)) in tuple.iter().zip(&target.columns).enumerate() {
            let Some(column) = column else { continue };
            serde_json::to_writer(&mut *data, &column.name).expect("a name serializes");
            data.push(b':');
            // An unchanged TOASTed value is not sent; the old row has it when the identity is FULL.
            let datum = match datum {
                Datum::Unchanged => old.as_ref().and_then(|o| o.get(i)).filter(|d| matches!(d, Datum::Text(_))).unwrap_or(datum),
                other => other,
            };
            match datum {
                Datum::Text(text) => crate::layout::write_text_value(column, text, data),
                Datum::Null => data.extend_from_slice(b"null"),
                Datum::Unchanged => {
                    data.extend_from_slice(b"null");
                    unavailable.push(column.name.as_str());
                }
            }
            data.push(b',');
        }
        let at = json!(self.commit_at);
        write!(data, "\"_ab_cdc_lsn\":{lsn},\"_ab_cdc_updated_at\":{at},\"_ab_cdc_deleted_at\":{}}}", if deleted { at.to_string() } else { "null".into() })?;
        let w = out.writer();
        w.write_all(&target.prefix)?;
        w.write_all(data)?;
        if unavailable.is_empty() {
            w.write_all(b"}}\n")?;
        } else {
            self.warned_unchanged = true;
            let changes: Vec<Value> = unavailable.iter().map(|f| json!({"field": f, "change": "NULLED", "reason": "SOURCE_RETRIEVAL_ERROR"})).collect();
            writeln!(w, ",\"meta\":{}}}}}", json!({"changes": changes}))?;
        }
        self.since_state += data.len() as u64;
        Ok(None)
    }
}

/// Microseconds since 2000-01-01 (PostgreSQL's epoch) as an ISO instant.
fn micros_text(micros: i64) -> String {
    const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
    jiff::Timestamp::from_microsecond(micros + POSTGRES_EPOCH_MICROS).map(|t| t.to_string()).unwrap_or_default()
}
