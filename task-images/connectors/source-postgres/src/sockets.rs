//! Socket mode (Standard replication, JSONL or PROTOBUF frames): each table is cut
//! into partitions, ranges of its pages as wide as a checkpoint, and the
//! sockets' threads take partitions off one queue, each on its own
//! connection. Every connection reads under the same snapshot, exported by
//! the first one and imported by the others, so the partitions of a table
//! read in parallel see it as of one moment, as the stdio read does.
//!
//! A partition ends with a STATE (its `id`, the partition, and how many
//! records it covers) on its socket, for the destination, and on stdout,
//! for the platform. Partitions of one table end out of order, so the
//! table's state names the first page not read and every range read after
//! it (`Ranges`). Ids are drawn under the same lock as the ranges are
//! marked, so a STATE released with every lower id never claims a range
//! that is not stored, and a retry reads each range once.
//! An incremental stream is one partition, read in cursor order, with its
//! own STATEs as in stdio; a view is one partition.

use std::collections::VecDeque;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Mutex;

use serde_json::Value;
use sluice_connector_kit::sockets::send_state;
use sluice_connector_kit::{Failure, Output};
use sluice_protocol::socket::{self, DataChannel, Format, FrameWriter};
use sluice_protocol::*;

use crate::client::Db;
use crate::config::Config;
use crate::{incremental, record_prefix, saved_state, status, Emitter, Plan, Ranges, Sink};

enum Kind {
    /// The range of that index in the stream's `Ranges`.
    Pages(usize),
    Whole,
    Cursor,
}

struct Work {
    stream: usize,
    id: String,
    kind: Kind,
}

struct Books {
    /// Per stream, its page ranges (none for a view or an incremental stream).
    streams: Vec<Ranges>,
    next_id: u64,
}

struct Shared<'a> {
    config: &'a Config,
    plans: &'a [Plan<'a>],
    state: &'a Value,
    snapshot: String,
    format: Format,
    emitted_at: i64,
    queue: Mutex<VecDeque<Work>>,
    books: Mutex<Books>,
    out: Mutex<Output>,
}

pub fn read(config: &Config, db: &mut Db, plans: &[Plan<'_>], state: &Value, channel: &DataChannel, out: &mut Output) -> Result<(), Failure> {
    // Listen on every socket before anything else, so the destination finds them.
    let listeners = channel.socket_paths.iter().map(|p| socket::listen(p)).collect::<std::io::Result<Vec<_>>>()?;
    let snapshot = db.export_snapshot()?;
    let salt = now_millis() as u64 ^ (u64::from(std::process::id()) << 32);
    let mut queue = VecDeque::new();
    let mut books = Vec::new();
    for (index, plan) in plans.iter().enumerate() {
        let descriptor = plan.descriptor();
        let mut ranges = Ranges { filenode: 0, list: Vec::new() };
        let kinds = match (&plan.cursor, plan.table.has_pages()) {
            (Some(_), _) => vec![Kind::Cursor],
            (None, false) => vec![Kind::Whole],
            (None, true) => {
                let (pages, filenode) = db.pages_and_filenode(plan.table)?;
                let what = format!("reading {}.{}", plan.table.schema, plan.table.name);
                ranges = Ranges::resumed(saved_state(state, &descriptor), pages, filenode, config.checkpoint_bytes(), &what, &mut StdoutLog(out))?;
                ranges.list.iter().enumerate().filter(|(_, r)| !r.read).map(|(i, _)| Kind::Pages(i)).collect()
            }
        };
        for (partition, kind) in kinds.into_iter().enumerate() {
            let id = format!("{:016x}", salt ^ ((index as u64) << 40) ^ partition as u64);
            queue.push_back(Work { stream: index, id, kind });
        }
        books.push(ranges);
        status(out, &descriptor, StreamStatus::Started)?;
    }
    out.flush()?;
    let shared = Shared {
        config,
        plans,
        state,
        snapshot,
        format: channel.format,
        emitted_at: now_millis(),
        queue: Mutex::new(queue),
        books: Mutex::new(Books { streams: books, next_id: 1 }),
        out: Mutex::new(std::mem::take(out)),
    };
    let results: Vec<Result<(), Failure>> = std::thread::scope(|scope| {
        let threads: Vec<_> = listeners.into_iter().zip(&channel.socket_paths).map(|(l, path)| scope.spawn(|| serve(l, path, &shared))).collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|_| Err(Failure::system("a socket writer panicked")))).collect()
    });
    *out = shared.out.into_inner().expect("stdout lock");
    results.into_iter().collect::<Result<(), Failure>>()?;
    db.end_snapshot("ending the exported snapshot")
}

/// Logs on stdout while the coordinator still holds it.
struct StdoutLog<'a>(&'a mut Output);

impl Sink for StdoutLog<'_> {
    fn record(&mut self, _: &[u8], _: &[u8]) -> Result<(), Failure> {
        unreachable!("only logs go here")
    }
    fn state(&mut self, _: &StreamDescriptor, _: Value, _: u64) -> Result<(), Failure> {
        unreachable!("only logs go here")
    }
    fn log(&mut self, level: LogLevel, text: String) -> Result<(), Failure> {
        Ok(self.0.log(level, text)?)
    }
}

fn serve(listener: UnixListener, path: &std::path::Path, shared: &Shared<'_>) -> Result<(), Failure> {
    let (connection, _) = listener.accept().map_err(|e| Failure::system(format!("socket {}: accept: {e}", path.display())))?;
    let mut writer = FrameWriter::new(connection, shared.format);
    let mut db = Db::new(shared.config.connect()?)?;
    db.import_snapshot(&shared.snapshot)?;
    let broken = |e: std::io::Error| socket_error(path, e);
    loop {
        let Some(work) = shared.queue.lock().expect("queue lock").pop_front() else { break };
        let plan = &shared.plans[work.stream];
        let descriptor = plan.descriptor();
        let prefix = record_prefix(&descriptor, shared.emitted_at, Some(&work.id));
        let what = format!("reading {}.{}", plan.table.schema, plan.table.name);
        let mut sink = Socket { writer: &mut writer, shared, work: &work, path };
        match work.kind {
            Kind::Cursor => {
                let cursor = plan.cursor.as_deref().expect("a cursor partition");
                let mut emit = Emitter::new(&mut sink, &descriptor, prefix, shared.config.checkpoint_bytes());
                incremental(&mut db, plan, cursor, saved_state(shared.state, &descriptor), &mut emit)?;
            }
            Kind::Whole | Kind::Pages(_) => {
                let range = match work.kind {
                    Kind::Pages(i) => shared.books.lock().expect("books lock").streams[work.stream].list[i].filter(),
                    _ => String::new(),
                };
                let select = format!("select {} from {}{range}", plan.select, plan.from);
                let mut data = Vec::new();
                let records = db.each_row(&what, &select, |fields| sink.row(&prefix, plan, fields, &mut data).map(drop))?;
                if !sink.finish(records)? {
                    continue;
                }
            }
        }
        // The stream's last partition is read: its COMPLETE follows its last STATE.
        let complete = AirbyteMessage::trace(AirbyteTraceMessage::stream_status(now_millis() as f64, descriptor, StreamStatus::Complete));
        send_state(&shared.out, &mut writer, &[&complete], broken)?;
    }
    writer.flush().map_err(broken)
}

pub(crate) fn socket_error(path: &std::path::Path, e: std::io::Error) -> Failure {
    Failure::system(format!("socket {}: {e}", path.display()))
}

/// One partition's records on its socket; its STATEs on stdout and there.
struct Socket<'s, 'a> {
    writer: &'s mut FrameWriter<UnixStream>,
    shared: &'s Shared<'a>,
    work: &'s Work,
    path: &'s std::path::Path,
}

impl Socket<'_, '_> {
    /// A page range or a view read whole: its one STATE, with the
    /// stream's low-water mark; true when it was the stream's last.
    fn finish(&mut self, records: u64) -> Result<bool, Failure> {
        let descriptor = self.shared.plans[self.work.stream].descriptor();
        let (state, last) = {
            // Marked read, the mark taken and the id drawn under one lock:
            // a STATE with a higher id never holds a lower mark.
            let mut books = self.shared.books.lock().expect("books lock");
            let ranges = &mut books.streams[self.work.stream];
            if let Kind::Pages(i) = self.work.kind {
                ranges.list[i].read = true;
            }
            // Each range is marked once, so one partition sees the last one read.
            let last = ranges.list.iter().all(|r| r.read);
            let stream_state = ranges.state();
            (self.stamped(&mut books, &descriptor, stream_state, records), last)
        };
        self.send(&state)?;
        Ok(last)
    }

    /// The STATE with the next id, this partition, and its record count.
    fn stamped(&self, books: &mut Books, descriptor: &StreamDescriptor, stream_state: Value, records: u64) -> AirbyteMessage {
        let id = books.next_id;
        books.next_id += 1;
        let mut state = AirbyteStateMessage::for_stream(descriptor.clone(), stream_state);
        state.id = Some(id);
        state.partition_id = Some(self.work.id.clone());
        state.source_stats = Some(AirbyteStateStats { record_count: Some(records as f64), ..Default::default() });
        AirbyteMessage::state(state)
    }

    fn send(&mut self, state: &AirbyteMessage) -> Result<(), Failure> {
        let path = self.path;
        send_state(&self.shared.out, self.writer, &[state], |e| socket_error(path, e))
    }

    fn broken(&self, e: std::io::Error) -> Failure {
        socket_error(self.path, e)
    }
}

impl Sink for Socket<'_, '_> {
    fn record(&mut self, prefix: &[u8], data: &[u8]) -> Result<(), Failure> {
        crate::write_record(self.writer.writer(), prefix, data).map_err(|e| self.broken(e))
    }

    fn row(&mut self, prefix: &[u8], plan: &Plan<'_>, fields: &[Option<&[u8]>], data: &mut Vec<u8>) -> Result<usize, Failure> {
        if self.writer.format == Format::Jsonl {
            return crate::json_row(self, prefix, plan, fields, data);
        }
        crate::proto_row(self.writer, plan, self.shared.emitted_at, &self.work.id, fields, data)?.map_err(|e| self.broken(e))
    }

    /// An incremental stream's STATE: its one partition says where it is.
    fn state(&mut self, descriptor: &StreamDescriptor, stream_state: Value, records: u64) -> Result<(), Failure> {
        let state = self.stamped(&mut self.shared.books.lock().expect("books lock"), descriptor, stream_state, records);
        self.send(&state)
    }

    fn log(&mut self, level: LogLevel, text: String) -> Result<(), Failure> {
        Ok(self.shared.out.lock().expect("stdout lock").log(level, text)?)
    }
}
