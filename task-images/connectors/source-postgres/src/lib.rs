//! `source-postgres`: PostgreSQL tables and views as streams, read by
//! `COPY (SELECT ...) TO STDOUT (FORMAT binary)`: the server sends each
//! value in its type's binary form, and `values.rs` writes the record's
//! JSON from it; the connector never holds more than one row.
//!
//! - **Full refresh** reads a table by ranges of its pages (`ctid`), all
//!   under one REPEATABLE READ snapshot per attempt; the STATE after each
//!   range names the next page, so a failed attempt resumes mid-table
//!   (Airbyte's resumable full refresh). A table rewritten since (its
//!   filenode changed) is read again from its first page. Views and
//!   partitioned tables have no pages: they are read whole.
//! - **Incremental** reads rows by the cursor column in order, with the
//!   primary key as the tie breaker. The STATE holds the last cursor value,
//!   how many rows at that value were emitted, and the last key: the next
//!   read starts exactly after it, and if rows at that value appeared or
//!   went in the meantime, rows at that value are read again rather than
//!   risk losing one. Without a key a STATE is only taken between two
//!   cursor values.

pub mod client;
pub mod config;
mod cdc;
mod sockets;
pub mod layout;
pub mod pgoutput;
pub mod values;

use std::io::Write;

use serde_json::{json, Value};
use sluice_connector_kit::{read_json, Command, Failure, Output};
use sluice_postgres::quoted;
use sluice_protocol::*;

use client::{Db, Table};
use config::Config;
use sluice_protocol::protobuf::RecordEncoder;
use values::{Row, Wire};

pub const NAME: &str = "source-postgres";

pub fn main(args: &[String]) -> i32 {
    sluice_connector_kit::main(NAME, args, run)
}

fn run(command: Command, out: &mut Output) -> Result<(), Failure> {
    match command {
        Command::Spec => Ok(out.message(&AirbyteMessage::spec(config::spec()))?),
        Command::Check { config } => Ok(out.check_result(Config::load(&config).and_then(|c| config::check(&c)))?),
        Command::Discover { config } => {
            let config = Config::load(&config)?;
            let mut db = Db::new(config.connect()?)?;
            let mut tables = db.tables(&config.schemas)?;
            let cdc = config.cdc()?.is_some();
            if let Some(cdc) = config.cdc()? {
                // CDC reads the tables of the publication.
                let published = db.published(&cdc.publication)?;
                tables.retain(|t| published.iter().any(|(s, n)| *s == t.schema && *n == t.name));
            }
            Ok(out.message(&AirbyteMessage::catalog(catalog(&tables, cdc)))?)
        }
        Command::Read { config, catalog, state } => {
            let config = Config::load(&config)?;
            let catalog: ConfiguredAirbyteCatalog = read_json("catalog", &catalog)?;
            let state: Value = match state {
                Some(path) => read_json("state", &path)?,
                None => Value::Null,
            };
            read(&config, &catalog, &state, out)
        }
        Command::Write { .. } => Err(Failure::config("source-postgres is a source: it does not `write`")),
    }
}

/// Each table or view as a stream named by the table, in its schema's
/// namespace; with `cdc`, with the CDC columns and the LSN as its cursor.
pub fn catalog(tables: &[Table], cdc: bool) -> AirbyteCatalog {
    let streams = tables
        .iter()
        .map(|t| {
            let mut properties: serde_json::Map<String, Value> = t.columns.iter().map(|c| (c.name.clone(), layout::schema(c))).collect();
            if cdc {
                properties.extend(cdc::column_schemas().map(|(name, schema)| (name.to_owned(), schema)));
            }
            let key = (!t.primary_key.is_empty()).then(|| t.primary_key.iter().map(|k| vec![k.clone()]).collect());
            AirbyteStream {
                name: t.name.clone(),
                namespace: Some(t.schema.clone()),
                json_schema: json!({"type": "object", "properties": properties}),
                supported_sync_modes: vec![SyncMode::FullRefresh, SyncMode::Incremental],
                source_defined_cursor: Some(cdc),
                default_cursor_field: Some(if cdc { vec!["_ab_cdc_lsn".to_owned()] } else { Vec::new() }),
                source_defined_primary_key: key,
                is_resumable: Some(t.has_pages()),
                is_file_based: None,
                extra: Extra::new(),
            }
        })
        .collect();
    AirbyteCatalog { streams, extra: Extra::new() }
}

/// The stream's saved state in the incoming state, whatever form it has.
fn saved_state<'a>(state: &'a Value, stream: &StreamDescriptor) -> Option<&'a Value> {
    match state {
        Value::Array(states) => states.iter().find_map(|s| {
            let entry = s.get("stream")?;
            let d = entry.get("stream_descriptor")?;
            let same = d.get("name")?.as_str()? == stream.name && d.get("namespace").and_then(Value::as_str) == stream.namespace.as_deref();
            same.then(|| entry.get("stream_state")).flatten()
        }),
        _ => None,
    }
}

fn read(config: &Config, catalog: &ConfiguredAirbyteCatalog, state: &Value, out: &mut Output) -> Result<(), Failure> {
    let channel = sluice_protocol::socket::DataChannel::from_env().map_err(Failure::config)?;
    let mut db = Db::new(config.connect()?)?;
    if let Some(cdc) = config.cdc()? {
        return cdc::read(config, &cdc, &mut db, catalog, state, channel.as_ref(), out);
    }
    let tables = db.tables(&config.schemas)?;
    // Every stream is checked before any is read: a bad catalog moves nothing.
    let mut plans = Vec::new();
    for configured in &catalog.streams {
        plans.push(plan(configured, &tables, &config.schemas, None)?);
    }
    if let Some(channel) = channel {
        return sockets::read(config, &mut db, &plans, state, &channel, out);
    }
    let emitted_at = now_millis();
    let mut book = Book::Streams;
    for plan in &plans {
        let descriptor = plan.descriptor();
        status(out, &descriptor, StreamStatus::Started)?;
        let mut sink = Stdout { out, book: &mut book };
        let mut emit = Emitter::new(&mut sink, &descriptor, record_prefix(&descriptor, emitted_at, None), config.checkpoint_bytes());
        let saved = saved_state(state, &descriptor);
        match &plan.cursor {
            None => full_refresh(&mut db, plan, saved, &mut emit, json!({}), false)?,
            Some(cursor) => incremental(&mut db, plan, cursor, saved, &mut emit)?,
        }
        status(out, &descriptor, StreamStatus::Complete)?;
    }
    Ok(())
}

/// What a configured stream reads: its table, the selected columns, and
/// for an incremental stream its cursor.
struct Plan<'a> {
    table: &'a Table,
    /// The selected columns, in the table's order.
    columns: Vec<&'a layout::Column>,
    /// The select list: the record's values, as `row` reads them.
    select: String,
    /// The FROM clause: the table as `_sluice_t`.
    from: String,
    row: Row,
    /// PROTOBUF values are positional, one per property of the stream in
    /// sorted order: the row's field each one is.
    positions: Vec<Option<usize>>,
    cursor: Option<String>,
    sync_mode: SyncMode,
    /// The stream as the catalog names it: its records and states say so.
    stream: StreamDescriptor,
}

impl Plan<'_> {
    fn descriptor(&self) -> StreamDescriptor {
        self.stream.clone()
    }

    /// The record's JSON from a row's first fields, into `data`.
    fn record<'d>(&self, fields: &[Option<&[u8]>], data: &'d mut Vec<u8>) -> Result<&'d [u8], Failure> {
        data.clear();
        self.row.write(fields, data).map_err(|e| Failure::system(format!("reading {}.{}: {e}", self.table.schema, self.table.name)))?;
        Ok(data)
    }

    /// The record's PROTOBUF values from a row's first fields.
    fn encode(&self, fields: &[Option<&[u8]>], encoder: &mut RecordEncoder, scratch: &mut Vec<u8>) -> Result<(), Failure> {
        self.row.encode(fields, &self.positions, encoder, scratch).map_err(|e| Failure::system(format!("reading {}.{}: {e}", self.table.schema, self.table.name)))
    }
}

/// `snapshot`: in CDC, when the rows read from the table were read (their
/// CDC columns' values).
fn plan<'a>(configured: &ConfiguredAirbyteStream, tables: &'a [Table], schemas: &[String], snapshot: Option<&str>) -> Result<Plan<'a>, Failure> {
    let stream = &configured.stream;
    // A stream without a namespace is the table of that name in the
    // configured schemas: exactly one, or the catalog is refused.
    let table = match stream.namespace.as_deref() {
        Some(schema) => tables.iter().find(|t| t.name == stream.name && t.schema == schema),
        None => {
            let named: Vec<&Table> = tables.iter().filter(|t| t.name == stream.name).collect();
            if named.len() > 1 {
                let found: Vec<String> = named.iter().map(|t| format!("{}.{}", t.schema, t.name)).collect();
                return Err(Failure::config(format!(
                    "the catalog's stream {} has no namespace, and schemas {schemas:?} have {} tables of that name ({}): give the stream its namespace",
                    stream.name,
                    named.len(),
                    found.join(", ")
                )));
            }
            named.first().copied()
        }
    };
    let table = table.ok_or_else(|| {
        let schema = stream.namespace.as_deref().map_or_else(|| format!("{schemas:?}"), str::to_owned);
        Failure::config(format!("the catalog's stream {}.{} is not a table or view this user may read in schemas {schemas:?} (discover the schema again)", schema, stream.name))
    })?;
    let schema = table.schema.as_str();
    // Field selection: the configured schema's properties, in the table's order.
    let wanted: Vec<&str> = match stream.json_schema.get("properties").and_then(Value::as_object) {
        Some(p) => p.keys().map(String::as_str).filter(|k| !cdc::COLUMNS.contains(k)).collect(),
        None => table.columns.iter().map(|c| c.name.as_str()).collect(),
    };
    if let Some(missing) = wanted.iter().find(|w| !table.columns.iter().any(|c| &c.name == *w)) {
        return Err(Failure::config(format!("stream {schema}.{}: column {missing} is not in the table any more (discover the schema again)", stream.name)));
    }
    let columns: Vec<_> = table.columns.iter().filter(|c| wanted.contains(&c.name.as_str())).collect();
    // Each value: its name in the record, its select-list expression, how it comes.
    let mut selected: Vec<(&str, String, Wire)> = columns
        .iter()
        .map(|c| {
            let (expression, wire) = layout::select(c);
            (c.name.as_str(), expression, wire)
        })
        .collect();
    if let Some(at) = snapshot {
        selected.extend(cdc::snapshot_columns(at));
    }
    let row = Row::new(selected.iter().map(|(name, _, wire)| (*name, *wire)));
    let mut properties: Vec<&str> = stream.json_schema.get("properties").and_then(Value::as_object).map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
    properties.sort_unstable();
    let positions = properties.iter().map(|p| selected.iter().position(|(name, _, _)| name == p)).collect();
    let select = selected.iter().map(|(_, expression, _)| expression.as_str()).collect::<Vec<_>>().join(", ");
    let cursor = match configured.sync_mode {
        SyncMode::FullRefresh => None,
        // Changes come in order from the slot: no cursor column is read.
        SyncMode::Incremental if snapshot.is_some() => None,
        SyncMode::Unknown(ref other) => return Err(Failure::config(format!("stream {schema}.{}: sync_mode {other} is not full_refresh or incremental", stream.name))),
        SyncMode::Incremental => {
            let field = configured.cursor_field.as_ref().filter(|f| !f.is_empty()).ok_or_else(|| {
                Failure::config(format!("stream {schema}.{} is incremental but has no cursor_field: choose a column that grows with each change", stream.name))
            })?;
            if field.len() > 1 {
                return Err(Failure::config(format!("stream {schema}.{}: cursor_field {field:?} is a nested path; a column of the table is needed", stream.name)));
            }
            let column = table.columns.iter().find(|c| c.name == field[0]).ok_or_else(|| {
                Failure::config(format!("stream {schema}.{}: cursor_field {} is not a column of the table", stream.name, field[0]))
            })?;
            if column.element.is_some() || matches!(column.type_name.as_str(), "json" | "jsonb" | "bool" | "bytea" | "xml" | "point") {
                return Err(Failure::config(format!(
                    "stream {schema}.{}: cursor_field {} is of type {}, which has no order to resume by; choose a number, text, date or timestamp column",
                    stream.name, field[0], column.type_name
                )));
            }
            Some(field[0].clone())
        }
    };
    let from = format!("{} _sluice_t", table.sql());
    Ok(Plan { table, columns, select, from, row, positions, cursor, sync_mode: configured.sync_mode.clone(), stream: stream.descriptor() })
}

/// How STATEs are written: per stream, or (CDC) one GLOBAL state holding
/// the slot's position and every stream's own state.
enum Book {
    Streams,
    Global { shared: Value, streams: Vec<(StreamDescriptor, Value)> },
}

impl Book {
    fn message(&mut self, descriptor: &StreamDescriptor, stream_state: Value) -> AirbyteMessage {
        match self {
            Book::Streams => AirbyteMessage::state(AirbyteStateMessage::for_stream(descriptor.clone(), stream_state)),
            Book::Global { streams, .. } => {
                match streams.iter_mut().find(|(d, _)| d == descriptor) {
                    Some(entry) => entry.1 = stream_state,
                    None => streams.push((descriptor.clone(), stream_state)),
                }
                self.global()
            }
        }
    }

    /// The GLOBAL state as it stands.
    fn global(&self) -> AirbyteMessage {
        let Book::Global { shared, streams } = self else { unreachable!("only a global book has a global state") };
        let stream_states: Vec<Value> = streams.iter().map(|(d, s)| json!({"stream_descriptor": d, "stream_state": s})).collect();
        let global = serde_json::from_value(json!({"shared_state": shared, "stream_states": stream_states})).expect("a global state");
        AirbyteMessage::state(AirbyteStateMessage { kind: Some(StateType::Global), global: Some(global), ..Default::default() })
    }
}

/// Where a stream's records and STATEs go: stdout (legacy mode), or a
/// socket with a copy of each STATE on stdout (socket mode).
trait Sink {
    fn record(&mut self, prefix: &[u8], data: &[u8]) -> Result<(), Failure>;
    /// A row's record, written as this sink frames it; returns its size.
    fn row(&mut self, prefix: &[u8], plan: &Plan<'_>, fields: &[Option<&[u8]>], data: &mut Vec<u8>) -> Result<usize, Failure> {
        json_row(self, prefix, plan, fields, data)
    }
    /// A STATE covering the `records` written since the last one.
    fn state(&mut self, descriptor: &StreamDescriptor, stream_state: Value, records: u64) -> Result<(), Failure>;
    fn log(&mut self, level: LogLevel, text: String) -> Result<(), Failure>;
}

/// A row's record as a JSON line through `sink`; returns the data's size.
fn json_row(sink: &mut (impl Sink + ?Sized), prefix: &[u8], plan: &Plan<'_>, fields: &[Option<&[u8]>], data: &mut Vec<u8>) -> Result<usize, Failure> {
    let data = plan.record(fields, data)?;
    sink.record(prefix, data)?;
    Ok(data.len())
}

/// A JSON record line: the prefix, the data, and the two braces that close them.
fn write_record(w: &mut impl Write, prefix: &[u8], data: &[u8]) -> std::io::Result<()> {
    w.write_all(prefix)?;
    w.write_all(data)?;
    w.write_all(b"}}\n")
}

/// A row's PROTOBUF record on a socket, in `partition`; returns its frame's size.
fn proto_row<W: Write>(
    writer: &mut sluice_protocol::socket::FrameWriter<W>,
    plan: &Plan<'_>,
    emitted_at: i64,
    partition: &str,
    fields: &[Option<&[u8]>],
    scratch: &mut Vec<u8>,
) -> Result<std::io::Result<usize>, Failure> {
    let d = &plan.stream;
    let encoder = writer.begin_record(d.namespace.as_deref(), &d.name, emitted_at as u64, partition);
    plan.encode(fields, encoder, scratch)?;
    Ok(writer.end_record())
}

/// Legacy mode: everything on stdout, STATEs as the book writes them.
struct Stdout<'a> {
    out: &'a mut Output,
    book: &'a mut Book,
}

impl Sink for Stdout<'_> {
    fn record(&mut self, prefix: &[u8], data: &[u8]) -> Result<(), Failure> {
        Ok(write_record(self.out.writer(), prefix, data)?)
    }
    fn state(&mut self, descriptor: &StreamDescriptor, stream_state: Value, _records: u64) -> Result<(), Failure> {
        Ok(self.out.message(&self.book.message(descriptor, stream_state))?)
    }
    fn log(&mut self, level: LogLevel, text: String) -> Result<(), Failure> {
        Ok(self.out.log(level, text)?)
    }
}

/// Writes a stream's records to its sink and decides when a STATE is due.
struct Emitter<'a> {
    sink: &'a mut dyn Sink,
    descriptor: &'a StreamDescriptor,
    /// `{"type":"RECORD","record":{"namespace":..,"stream":..,"emitted_at":..,"data":`
    prefix: Vec<u8>,
    checkpoint_bytes: u64,
    since_state: u64,
    records: u64,
    /// A record's JSON.
    data: Vec<u8>,
}

impl<'a> Emitter<'a> {
    fn new(sink: &'a mut dyn Sink, descriptor: &'a StreamDescriptor, prefix: Vec<u8>, checkpoint_bytes: u64) -> Self {
        Emitter { sink, descriptor, prefix, checkpoint_bytes, since_state: 0, records: 0, data: Vec::new() }
    }

    /// A row's record, in the sink's framing.
    fn row(&mut self, plan: &Plan<'_>, fields: &[Option<&[u8]>]) -> Result<(), Failure> {
        self.since_state += self.sink.row(&self.prefix, plan, fields, &mut self.data)? as u64;
        self.records += 1;
        Ok(())
    }

    fn due(&self) -> bool {
        self.since_state >= self.checkpoint_bytes
    }

    fn state(&mut self, stream_state: Value) -> Result<(), Failure> {
        self.sink.state(self.descriptor, stream_state, self.records)?;
        (self.since_state, self.records) = (0, 0);
        Ok(())
    }

    fn log(&mut self, level: LogLevel, text: String) -> Result<(), Failure> {
        self.sink.log(level, text)
    }
}

/// `{"type":"RECORD","record":{"namespace":..,"stream":..,"emitted_at":..,["partition_id":..,]"data":`
fn record_prefix(descriptor: &StreamDescriptor, emitted_at: i64, partition: Option<&str>) -> Vec<u8> {
    let mut prefix = br#"{"type":"RECORD","record":{"#.to_vec();
    if let Some(namespace) = &descriptor.namespace {
        prefix.extend_from_slice(format!(r#""namespace":{},"#, json!(namespace)).as_bytes());
    }
    prefix.extend_from_slice(format!(r#""stream":{},"emitted_at":{emitted_at},"#, json!(descriptor.name)).as_bytes());
    if let Some(partition) = partition {
        prefix.extend_from_slice(format!(r#""partition_id":{},"#, json!(partition)).as_bytes());
    }
    prefix.extend_from_slice(br#""data":"#);
    prefix
}

/// The whole table, by ranges of pages under one snapshot (its own, or
/// with `shared`, the one the connection is already reading under); a
/// STATE after each range, and `done` once the table was read whole.
fn full_refresh(db: &mut Db, plan: &Plan<'_>, saved: Option<&Value>, emit: &mut Emitter<'_>, done: Value, shared: bool) -> Result<(), Failure> {
    let table = plan.table;
    let what = format!("reading {}.{}", table.schema, table.name);
    if !shared {
        db.begin_snapshot(&what)?;
    }
    if !table.has_pages() {
        let select = format!("select {} from {}", plan.select, plan.from);
        db.each_row(&what, &select, |fields| emit.row(plan, fields))?;
        if !shared {
            db.end_snapshot(&what)?;
        }
        return emit.state(done);
    }
    let (pages, filenode) = db.pages_and_filenode(table)?;
    let mut ranges = Ranges::resumed(saved, pages, filenode, emit.checkpoint_bytes, &what, emit.sink)?;
    while let Some(i) = ranges.list.iter().position(|r| !r.read) {
        let select = format!("select {} from {}{}", plan.select, plan.from, ranges.list[i].filter());
        db.each_row(&what, &select, |fields| emit.row(plan, fields))?;
        ranges.list[i].read = true;
        if ranges.list.iter().any(|r| !r.read) {
            emit.state(ranges.state())?;
        }
    }
    if !shared {
        db.end_snapshot(&what)?;
    }
    emit.state(done)
}

/// A range of a table's pages, `from..to` (to the end when `to` is None).
#[derive(Debug, Clone, PartialEq)]
struct PageRange {
    from: i64,
    to: Option<i64>,
    read: bool,
}

impl PageRange {
    fn filter(&self) -> String {
        match self.to {
            Some(to) => format!(" where _sluice_t.ctid >= '({},0)'::tid and _sluice_t.ctid < '({to},0)'::tid", self.from),
            None => format!(" where _sluice_t.ctid >= '({},0)'::tid", self.from),
        }
    }
}

/// A full refresh's ranges, in page order: the ones a state says were
/// read, and the rest cut to a checkpoint's size. Ranges are read in any
/// order (socket mode reads several at once), so the state names the first
/// page not read and every range read after it: a retry reads each page once.
#[derive(Debug, Clone, PartialEq)]
struct Ranges {
    filenode: i64,
    list: Vec<PageRange>,
}

impl Ranges {
    fn resumed(saved: Option<&Value>, pages: i64, filenode: i64, checkpoint_bytes: u64, what: &str, sink: &mut dyn Sink) -> Result<Ranges, Failure> {
        let per_range = (checkpoint_bytes / 8192).max(1) as i64;
        let saved = saved.filter(|s| s.get("state_type").and_then(Value::as_str) == Some("ctid"));
        let first = saved.and_then(|s| s.get("ctid")).and_then(Value::as_str).and_then(page_of);
        let same_file = saved.and_then(|s| s.get("relation_filenode")).and_then(Value::as_i64) == Some(filenode);
        let (first, read) = match (first, same_file) {
            (Some(first), true) => {
                let read: Vec<(i64, Option<i64>)> = saved
                    .and_then(|s| s.get("read"))
                    .and_then(Value::as_array)
                    .map(|list| list.iter().filter_map(|r| Some((r.get(0)?.as_i64()?, r.get(1)?.as_i64()))).collect())
                    .unwrap_or_default();
                sink.log(LogLevel::Info, format!("{what}: resuming at page {first} of {pages}, {} later ranges already read", read.len()))?;
                (first, read)
            }
            (Some(_), false) => {
                sink.log(LogLevel::Warn, format!("{what}: the table was rewritten since the last attempt (VACUUM FULL, CLUSTER or TRUNCATE): reading it again from the start"))?;
                (0, Vec::new())
            }
            (None, _) => (0, Vec::new()),
        };
        Ok(Ranges { filenode, list: Self::cut(first, &read, pages, per_range) })
    }

    /// Ranges from `first`: those `read` as they were, the gaps between them
    /// cut to `per_range` pages; the last is open-ended, so that pages added
    /// since the size was taken are read too.
    fn cut(first: i64, read: &[(i64, Option<i64>)], pages: i64, per_range: i64) -> Vec<PageRange> {
        let mut list = Vec::new();
        let mut at = first;
        let gap = |list: &mut Vec<PageRange>, from: i64, to: Option<i64>| {
            let end = to.unwrap_or(pages.max(from + 1));
            let mut start = from;
            while start < end {
                let next = (start + per_range).min(end);
                let open = to.is_none() && next >= end;
                list.push(PageRange { from: start, to: if open { None } else { Some(next) }, read: false });
                start = next;
            }
        };
        for &(from, to) in read.iter().filter(|(from, _)| *from >= first) {
            if from > at {
                gap(&mut list, at, Some(from));
            }
            list.push(PageRange { from, to, read: true });
            match to {
                Some(to) => at = to,
                None => return list,
            }
        }
        gap(&mut list, at, None);
        list
    }

    /// Where a retry starts: the first page not read, and the ranges read after it.
    fn state(&self) -> Value {
        let Some(first) = self.list.iter().find(|r| !r.read) else { return json!({}) };
        let read: Vec<Value> = self.list.iter().filter(|r| r.read && r.from > first.from).map(|r| json!([r.from, r.to])).collect();
        json!({"state_type": "ctid", "ctid": format!("({},0)", first.from), "relation_filenode": self.filenode, "read": read})
    }
}

/// `(page,tuple)` to its page.
fn page_of(ctid: &str) -> Option<i64> {
    ctid.strip_prefix('(')?.split(',').next()?.parse().ok()
}

/// Where an incremental read left off.
#[derive(Debug, Clone, PartialEq)]
struct Position {
    /// The last cursor value emitted, as text (None: the cursor was null).
    cursor: Option<String>,
    /// Rows emitted at that value.
    count: u64,
    /// The key of the last row emitted, when the table has one.
    key: Option<Vec<Option<String>>>,
}

impl Position {
    fn from_state(state: &Value, cursor_field: &str) -> Option<Position> {
        if state.get("cursor_field").and_then(|f| f.get(0)).and_then(Value::as_str) != Some(cursor_field) {
            return None;
        }
        let cursor = match state.get("cursor")? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        let count = state.get("cursor_record_count").and_then(Value::as_u64).unwrap_or(0);
        let key = state.get("key").and_then(Value::as_array).map(|k| k.iter().map(|v| v.as_str().map(String::from)).collect());
        Some(Position { cursor, count, key })
    }

    fn to_state(&self, cursor_field: &str) -> Value {
        let mut state = json!({"state_type": "cursor_based", "cursor_field": [cursor_field], "cursor": self.cursor, "cursor_record_count": self.count});
        if let Some(key) = &self.key {
            state["key"] = json!(key);
        }
        state
    }
}

/// Rows after the saved position, in cursor order (then key order).
fn incremental(db: &mut Db, plan: &Plan<'_>, cursor: &str, saved: Option<&Value>, emit: &mut Emitter<'_>) -> Result<(), Failure> {
    let table = plan.table;
    let what = format!("reading {}.{} by {cursor}", table.schema, table.name);
    let key = &table.primary_key;
    let cursor_type = table.type_of(cursor).expect("planned").to_owned();
    // Qualified: the record's columns in `r` have the same names.
    let c = format!("_sluice_t.{}", quoted(cursor));
    let mut position = saved.and_then(|s| Position::from_state(s, cursor));
    let mut filter = String::new();
    if let Some(p) = position.as_mut() {
        let exact;
        (filter, exact) = after(db, table, &c, &cursor_type, p, &what)?;
        if !exact {
            emit.log(LogLevel::Info, format!("{what}: rows at the saved cursor value {:?} changed since it was saved; reading them again", p.cursor))?;
            p.count = 0;
        }
    }
    let text = |column: &str| format!("to_json(_sluice_t.{}::text)", quoted(column));
    let mut select = format!("select {}, {}", plan.select, text(cursor));
    for k in key {
        select.push_str(&format!(", {}", text(k)));
    }
    select.push_str(&format!(" from {}{filter} order by {c} nulls first", plan.from));
    for k in key {
        select.push_str(&format!(", _sluice_t.{}", quoted(k)));
    }
    // The last row's cursor and key, as the COPY fields hold them.
    let mut last_cursor: Option<Vec<u8>> = position.as_ref().map(|p| json_text(p.cursor.as_deref()));
    let mut last_key: Vec<Vec<u8>> = Vec::new();
    let mut count = position.as_ref().map_or(0, |p| p.count);
    let keyed = !key.is_empty();
    let here = |cursor: &[u8], count, key: &[Vec<u8>]| Position {
        cursor: text_of(Some(cursor)),
        count,
        key: keyed.then(|| key.iter().map(|k| text_of(Some(k))).collect()),
    };
    let width = plan.row.width();
    let read = db.each_row(&what, &select, |fields| {
        // The record's fields, then the cursor's and the key's text as JSON.
        let (value, key) = (fields[width].unwrap_or_default(), &fields[width + 1..]);
        let changed = last_cursor.as_deref() != Some(value);
        // Without a key a STATE is taken only between two cursor values.
        if changed && !keyed && emit.due() {
            if let Some(last) = &last_cursor {
                emit.state(here(last, count, &[]).to_state(cursor))?;
            }
        }
        if changed {
            last_cursor = Some(value.to_vec());
            count = 0;
        }
        emit.row(plan, fields)?;
        count += 1;
        if keyed {
            last_key.clear();
            last_key.extend(key.iter().map(|k| k.unwrap_or_default().to_vec()));
            if emit.due() {
                emit.state(here(value, count, &last_key).to_state(cursor))?;
            }
        }
        Ok(())
    })?;
    // The final STATE, where the next read starts: after the last row
    // read, or where this read started when it found nothing new.
    let end = match (read, last_cursor, position) {
        (0, _, Some(p)) => Position { count, ..p },
        (0, _, None) | (_, None, _) => return emit.state(json!({"state_type": "cursor_based", "cursor_field": [cursor]})),
        (_, Some(value), _) => here(&value, count, &last_key),
    };
    emit.state(end.to_state(cursor))
}

/// The filter that starts a read after `p`, and whether it is exact:
/// exactly after it when the rows at its cursor value up to its key are
/// the ones it counted, else (false) at that value again.
fn after(db: &mut Db, table: &Table, c: &str, cursor_type: &str, p: &Position, what: &str) -> Result<(String, bool), Failure> {
    let Some(value) = &p.cursor else {
        // The last rows emitted had a null cursor: every non-null row follows.
        return Ok((format!(" where {c} is not null"), true));
    };
    let v = layout::literal(value, cursor_type);
    let at_value = format!("{c} = {v}");
    match &p.key {
        Some(key) if key.len() == table.primary_key.len() && !table.primary_key.is_empty() => {
            let names: Vec<String> = table.primary_key.iter().map(|k| format!("_sluice_t.{}", quoted(k))).collect();
            let types: Vec<&str> = table.primary_key.iter().map(|k| table.type_of(k).expect("key column")).collect();
            let values: Option<Vec<String>> = key.iter().zip(&types).map(|(v, t)| v.as_ref().map(|v| layout::literal(v, t))).collect();
            let Some(values) = values else { return Ok((format!(" where {c} >= {v}"), false)) };
            let tuple = format!("({}) <= ({})", names.join(", "), values.join(", "));
            let seen = db.count(what, &format!("select count(*) from {} _sluice_t where {at_value} and {tuple}", table.sql()))?;
            if seen == p.count {
                let (mut columns, mut literals) = (vec![c.to_owned()], vec![v.clone()]);
                columns.extend(names);
                literals.extend(values);
                Ok((format!(" where ({}) > ({})", columns.join(", "), literals.join(", ")), true))
            } else {
                Ok((format!(" where {c} >= {v}"), false))
            }
        }
        _ => {
            let seen = db.count(what, &format!("select count(*) from {} _sluice_t where {at_value}", table.sql()))?;
            Ok(if seen == p.count { (format!(" where {c} > {v}"), true) } else { (format!(" where {c} >= {v}"), false) })
        }
    }
}

/// A field of `to_json(x::text)`: a JSON string, or empty for null.
fn text_of(field: Option<&[u8]>) -> Option<String> {
    field.filter(|f| !f.is_empty()).and_then(|f| serde_json::from_slice::<String>(f).ok())
}

/// The inverse of `text_of`, to compare raw fields.
fn json_text(value: Option<&str>) -> Vec<u8> {
    value.map(|v| serde_json::to_vec(v).expect("a string")).unwrap_or_default()
}

fn status(out: &mut Output, stream: &StreamDescriptor, status: StreamStatus) -> Result<(), Failure> {
    Ok(out.stream_status(stream, status)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resume_at_the_first_page_not_read_and_skip_those_read_after_it() {
        let cut = Ranges::cut(0, &[], 250, 100);
        assert_eq!(cut.iter().map(|r| (r.from, r.to)).collect::<Vec<_>>(), [(0, Some(100)), (100, Some(200)), (200, None)]);
        let mut ranges = Ranges { filenode: 9, list: cut };
        ranges.list[1].read = true;
        assert_eq!(ranges.state(), json!({"state_type": "ctid", "ctid": "(0,0)", "relation_filenode": 9, "read": [[100, 200]]}));
        // The retry: the range read is skipped, the others read, cut as before.
        let again = Ranges::cut(0, &[(100, Some(200))], 250, 100);
        assert_eq!(again.iter().map(|r| (r.from, r.to, r.read)).collect::<Vec<_>>(), [(0, Some(100), false), (100, Some(200), true), (200, None, false)]);
        // An empty table is one open-ended range.
        assert_eq!(Ranges::cut(0, &[], 0, 100), [PageRange { from: 0, to: None, read: false }]);
        // The open-ended range read: nothing after it.
        assert_eq!(Ranges::cut(0, &[(100, None)], 250, 100).len(), 2);
        ranges.list.iter_mut().for_each(|r| r.read = true);
        assert_eq!(ranges.state(), json!({}));
    }

    #[test]
    fn positions_round_trip_through_state() {
        let p = Position { cursor: Some("2024-01-01 00:00:00".into()), count: 3, key: Some(vec![Some("7".into()), None]) };
        assert_eq!(Position::from_state(&p.to_state("updated"), "updated"), Some(p.clone()));
        // A state of another cursor column starts the read over.
        assert_eq!(Position::from_state(&p.to_state("updated"), "created"), None);
        assert_eq!(page_of("(120,0)"), Some(120));
        assert_eq!(text_of(Some(br#""a\"b""#)), Some("a\"b".into()));
        assert_eq!(text_of(Some(b"")), None);
        assert_eq!(json_text(Some("a\"b")), br#""a\"b""#.to_vec());
    }
}
