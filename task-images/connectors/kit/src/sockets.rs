//! A destination's side of socket mode: connect to every socket, read them
//! in parallel, and release the source's STATEs in `id` order once every
//! record they cover is stored. (A source's side has one rule here too:
//! [`send_state`], the platform's copy of a STATE before the destination's.)
//!
//! Each STATE carries its partition and how many records of that partition
//! came since the partition's previous STATE (`sourceStats.recordCount`).
//! A partition travels on one socket, so the thread reading that socket
//! holds all of them when the STATE arrives: it checks the count, stores
//! what it buffered (`Sink::checkpoint`) and hands the STATE to the
//! [`Releaser`], which prints STATEs on stdout strictly in `id` order.
//!
//! A sink that commits (a database) commits in `id` order too
//! ([`Sink::COMMITS_IN_ID_ORDER`]): a reader whose STATE is not yet next
//! waits for its turn, so what is committed is always what is released,
//! and a retry from the last released STATE reads nothing twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use sluice_protocol::socket::{self, DataChannel, FrameReader, FrameWriter, SocketFrame, SocketRecord};
use sluice_protocol::{AirbyteMessage, AirbyteRecordMessage, AirbyteStateMessage, AirbyteStateStats, ConfiguredAirbyteCatalog, Extra, StreamDescriptor, StreamStatus};

use crate::{Failure, Output, MAX_INPUT_LINE_BYTES};

/// What a destination does with the records of one socket.
pub trait Sink: Sync {
    /// A reading thread's own buffers.
    type Local: Send;
    fn local(&self) -> Self::Local;
    /// `stream` indexes the configured catalog; `properties` are its schema's, sorted.
    fn record(&self, local: &mut Self::Local, stream: usize, properties: &[String], record: &SocketRecord<'_>) -> Result<(), Failure>;
    /// Stores everything this thread buffered: a STATE is about to be released.
    fn checkpoint(&self, local: &mut Self::Local) -> Result<(), Failure>;
    /// Whether [`Sink::commit`] must run in STATE id order.
    const COMMITS_IN_ID_ORDER: bool = false;
    /// Makes what `checkpoint` stored durable, just before its STATE is
    /// released; with `COMMITS_IN_ID_ORDER`, only once every lower id is.
    /// Not called after the last STATE of a socket: what follows it is the
    /// caller's to commit or drop when [`write`] returns the locals.
    fn commit(&self, _local: &mut Self::Local) -> Result<(), Failure> {
        Ok(())
    }
    /// For a sink whose checkpoints become durable later than `commit`
    /// (object storage: once the objects holding their records are
    /// complete): how many of this reader's checkpoints are durable now.
    /// Its STATEs wait for that. `None`: each is durable when `commit` returns.
    fn durable_checkpoints(&self, _local: &Self::Local) -> Option<u64> {
        None
    }
    /// The socket's input ended: make every checkpoint durable.
    fn end(&self, _local: &mut Self::Local) -> Result<(), Failure> {
        Ok(())
    }
    fn status(&self, stream: usize, status: StreamStatus);
}

/// The configured streams, and each one's properties in the positional
/// order of PROTOBUF values.
pub struct Streams {
    pub descriptors: Vec<StreamDescriptor>,
    pub properties: Vec<Vec<String>>,
}

impl Streams {
    pub fn of(catalog: &ConfiguredAirbyteCatalog) -> Streams {
        let descriptors = catalog.streams.iter().map(|s| s.stream.descriptor()).collect();
        let properties = catalog
            .streams
            .iter()
            .map(|s| {
                let mut names: Vec<String> =
                    s.stream.json_schema.get("properties").and_then(|p| p.as_object()).map(|p| p.keys().cloned().collect()).unwrap_or_default();
                names.sort();
                names
            })
            .collect();
        Streams { descriptors, properties }
    }

    fn index(&self, namespace: Option<&str>, name: &str) -> Option<usize> {
        self.descriptors.iter().position(|d| d.name == name && d.namespace.as_deref() == namespace)
    }
}

/// Counts per stream, cumulative, for the stats-only RECORDs.
struct Emitted {
    records: Vec<u64>,
    bytes: Vec<u64>,
}

impl Emitted {
    fn add(&mut self, counts: &[(u64, u64)]) {
        for (i, (records, bytes)) in counts.iter().enumerate() {
            self.records[i] += records;
            self.bytes[i] += bytes;
        }
    }
}

/// Prints STATEs in `id` order: the next one goes out only when every lower
/// id has.
pub struct Releaser<'a> {
    out: &'a Mutex<Output>,
    inner: Mutex<Pending>,
    turn: Condvar,
}

struct Pending {
    waiting: BTreeMap<u64, AirbyteStateMessage>,
    next: u64,
    emitted: Emitted,
    last_stats: Instant,
    /// Readers still reading, and those of them waiting for their turn.
    readers: usize,
    in_line: BTreeSet<u64>,
    /// Readers that failed, first first: the first says why.
    failed: Vec<usize>,
}

const STATS_EVERY: Duration = Duration::from_secs(1);

/// How long a reader waits for its turn to commit before it commits out of
/// order (at-least-once, never a hang): a source that holds a lower STATE
/// in a buffer while it blocks on this reader's socket would otherwise
/// wait on us forever.
const TURN_PATIENCE: Duration = Duration::from_secs(60);

/// What a reader's wait for its turn ended in.
#[derive(Debug, PartialEq)]
enum Turn {
    Mine,
    /// Every other reader ended or waits too: the lower id never comes.
    Never { missing: u64 },
    /// Waited `TURN_PATIENCE`: go on out of order.
    TooLong { missing: u64 },
}

impl<'a> Releaser<'a> {
    fn new(out: &'a Mutex<Output>, streams: usize, readers: usize) -> Self {
        let emitted = Emitted { records: vec![0; streams], bytes: vec![0; streams] };
        let pending = Pending { waiting: BTreeMap::new(), next: 1, emitted, last_stats: Instant::now(), readers, in_line: BTreeSet::new(), failed: Vec::new() };
        Releaser { out, inner: Mutex::new(pending), turn: Condvar::new() }
    }

    /// Waits until every id below `id` is released.
    fn wait_turn(&self, id: u64) -> Turn {
        let started = Instant::now();
        let mut pending = self.inner.lock().expect("releaser lock");
        pending.in_line.insert(id);
        let turn = loop {
            if id <= pending.next {
                break Turn::Mine;
            }
            // Everyone still reading waits, and none of them is next.
            let stuck = pending.in_line.len() == pending.readers && pending.in_line.first().is_some_and(|&low| low > pending.next);
            if stuck {
                self.turn.notify_all();
                break Turn::Never { missing: pending.next };
            }
            let left = TURN_PATIENCE.saturating_sub(started.elapsed());
            if left.is_zero() {
                break Turn::TooLong { missing: pending.next };
            }
            pending = self.turn.wait_timeout(pending, left).expect("releaser lock").0;
        };
        pending.in_line.remove(&id);
        turn
    }

    fn warn(&self, text: String) -> Result<(), Failure> {
        let mut out = self.out.lock().expect("stdout lock");
        out.log(sluice_protocol::LogLevel::Warn, text)?;
        Ok(out.flush()?)
    }

    /// A reader stopped reading: those waiting may now be waiting for nothing.
    fn reader_done(&self, reader: usize, failed: bool) {
        let mut pending = self.inner.lock().expect("releaser lock");
        pending.readers -= 1;
        if failed {
            pending.failed.push(reader);
        }
        self.turn.notify_all();
    }

    fn ready(&self, state: AirbyteStateMessage, id: u64, counts: &mut [(u64, u64)], streams: &Streams) -> Result<(), Failure> {
        let mut pending = self.inner.lock().expect("releaser lock");
        pending.emitted.add(counts);
        counts.iter_mut().for_each(|c| *c = (0, 0));
        pending.waiting.insert(id, state);
        let mut out = self.out.lock().expect("stdout lock");
        while let Some(state) = pending.waiting.first_key_value().filter(|(id, _)| **id <= pending.next).map(|(id, _)| *id) {
            let state = pending.waiting.remove(&state).expect("present");
            pending.next = pending.next.max(state.id.unwrap_or(0) + 1);
            out.message(&AirbyteMessage::state(state))?;
        }
        self.turn.notify_all();
        if pending.last_stats.elapsed() >= STATS_EVERY {
            pending.last_stats = Instant::now();
            stats(&mut out, &pending.emitted, streams)?;
        }
        out.flush()?;
        Ok(())
    }

    /// The input ended: the last counts. A STATE still waiting sits behind
    /// an id that never came (lost with a crashed source), so it stays
    /// unreleased, as `ready` would have kept it.
    fn finish(&self, streams: &Streams, counts: &[(u64, u64)]) -> Result<(), Failure> {
        let mut pending = self.inner.lock().expect("releaser lock");
        pending.emitted.add(counts);
        let mut out = self.out.lock().expect("stdout lock");
        stats(&mut out, &pending.emitted, streams)?;
        out.flush()?;
        Ok(())
    }
}

/// Airbyte's stats-only RECORD: no data, the stream's emitted counts so far.
fn stats(out: &mut Output, emitted: &Emitted, streams: &Streams) -> std::io::Result<()> {
    for (i, descriptor) in streams.descriptors.iter().enumerate() {
        if emitted.records[i] == 0 {
            continue;
        }
        let mut extra = Extra::new();
        extra.insert("isDummyStatsMessage".into(), true.into());
        extra.insert("emittedRecordsCount".into(), emitted.records[i].into());
        extra.insert("emittedBytesCount".into(), emitted.bytes[i].into());
        let record = AirbyteRecordMessage {
            namespace: descriptor.namespace.clone(),
            stream: descriptor.name.clone(),
            data: serde_json::json!({}),
            emitted_at: sluice_protocol::now_millis(),
            meta: None,
            extra,
        };
        out.message(&AirbyteMessage::record(record))?;
    }
    Ok(())
}

/// Reads every socket of `channel` into `sink` and releases the STATEs.
/// Returns each reader's local, checkpointed but not committed past its
/// last STATE: the caller commits that tail only if the input ended well.
/// A source's STATE in socket mode, with what follows it (its stream's
/// COMPLETE): on stdout for the platform first, then on the partition's
/// socket for the destination. In that order: a STATE the destination
/// released while its copy never reached the platform (the source killed
/// in between) would hold back every later one, and the retry would read
/// again what the destination had committed. `broken` names the socket in
/// its errors.
pub fn send_state<W: std::io::Write>(out: &Mutex<Output>, socket: &mut FrameWriter<W>, messages: &[&AirbyteMessage], broken: impl Fn(std::io::Error) -> Failure) -> Result<(), Failure> {
    {
        let mut out = out.lock().expect("stdout lock");
        for message in messages {
            out.message(message)?;
        }
        out.flush()?;
    }
    for message in messages {
        socket.message(message).map_err(&broken)?;
    }
    socket.flush().map_err(broken)
}

pub fn write<S: Sink>(channel: &DataChannel, catalog: &ConfiguredAirbyteCatalog, sink: &S, out: &Mutex<Output>) -> Result<Vec<S::Local>, Failure> {
    let streams = Streams::of(catalog);
    let releaser = Releaser::new(out, streams.descriptors.len(), channel.socket_paths.len());
    let results: Vec<Result<Read<S::Local>, Failure>> = std::thread::scope(|scope| {
        let readers: Vec<_> = channel
            .socket_paths
            .iter()
            .enumerate()
            .map(|(reader, path)| {
                let (streams, releaser) = (&streams, &releaser);
                scope.spawn(move || {
                    let read = read_socket(path, channel.format, streams, sink, releaser);
                    releaser.reader_done(reader, read.is_err());
                    read
                })
            })
            .collect();
        readers.into_iter().map(|r| r.join().unwrap_or_else(|_| Err(Failure::system("a socket reader panicked")))).collect()
    });
    // The first reader to fail says why; the others may only have waited for it.
    let first_failed = releaser.inner.lock().expect("releaser lock").failed.first().copied();
    let mut left = vec![(0, 0); streams.descriptors.len()];
    let mut locals = Vec::with_capacity(results.len());
    let mut failures = Vec::new();
    for (reader, result) in results.into_iter().enumerate() {
        match result {
            Ok((counts, local)) => {
                for (total, (records, bytes)) in left.iter_mut().zip(counts) {
                    total.0 += records;
                    total.1 += bytes;
                }
                locals.push(local);
            }
            Err(failure) => failures.push((reader, failure)),
        }
    }
    if !failures.is_empty() {
        let first = failures.iter().position(|(reader, _)| Some(*reader) == first_failed).unwrap_or(0);
        return Err(failures.swap_remove(first).1);
    }
    releaser.finish(&streams, &left)?;
    Ok(locals)
}

/// What a socket's reader ends with: records and bytes per stream since
/// its last release, and its sink's local.
type Read<L> = (Vec<(u64, u64)>, L);

fn read_socket<S: Sink>(
    path: &std::path::Path,
    format: socket::Format,
    streams: &Streams,
    sink: &S,
    releaser: &Releaser<'_>,
) -> Result<Read<S::Local>, Failure> {
    let name = path.display();
    let stream = socket::connect(path, socket::CONNECT_GIVE_UP).map_err(|e| Failure::system(e.to_string()))?;
    let mut reader = FrameReader::new(stream, format, MAX_INPUT_LINE_BYTES);
    let mut local = sink.local();
    // Records per partition since its last STATE, and per stream since the last release.
    let mut partitions: HashMap<String, u64> = HashMap::new();
    let mut counts = vec![(0u64, 0u64); streams.descriptors.len()];
    // STATEs stored but not yet durable, with the checkpoint each waits for.
    let mut held: std::collections::VecDeque<(u64, AirbyteStateMessage, u64)> = std::collections::VecDeque::new();
    let mut checkpoints = 0u64;
    let release_durable = |local: &S::Local, held: &mut std::collections::VecDeque<(u64, AirbyteStateMessage, u64)>, counts: &mut [(u64, u64)]| -> Result<(), Failure> {
        let durable = sink.durable_checkpoints(local).unwrap_or(u64::MAX);
        while held.front().is_some_and(|(checkpoint, _, _)| *checkpoint <= durable) {
            let (_, state, id) = held.pop_front().expect("not empty");
            releaser.ready(state, id, counts, streams)?;
        }
        Ok(())
    };
    let mut at = 0u64;
    loop {
        at += 1;
        let frame = match reader.read_frame() {
            // The source stopped mid-message (it crashed): no STATE can cover
            // that record, so nothing released is lost; the platform sees why.
            Err(socket::FrameError::Truncated) => break,
            other => other.map_err(|e| Failure::system(format!("socket {name} frame {at}: {e}")))?,
        };
        match frame {
            None => break,
            Some(SocketFrame::Probe) => {}
            Some(SocketFrame::Record(record)) => {
                let index = streams.index(record.namespace(), record.stream()).ok_or_else(|| {
                    let stream = StreamDescriptor::new(record.stream(), record.namespace().map(String::from));
                    Failure::system(format!("socket {name} frame {at}: a record of stream {stream}, which the configured catalog does not have"))
                })?;
                let partition = record.partition_id().ok_or_else(|| Failure::system(format!("socket {name} frame {at}: a record without partition_id")))?;
                match partitions.get_mut(partition) {
                    Some(n) => *n += 1,
                    None => {
                        partitions.insert(partition.to_owned(), 1);
                    }
                }
                counts[index].0 += 1;
                counts[index].1 += record.data_len() as u64;
                sink.record(&mut local, index, &streams.properties[index], &record)
                    .map_err(|f| Failure { message: format!("socket {name} frame {at}: {}", f.message), ..f })?;
                if !held.is_empty() {
                    release_durable(&local, &mut held, &mut counts)?;
                }
            }
            Some(SocketFrame::Message(json)) => {
                let message: AirbyteMessage = serde_json::from_slice(json)
                    .map_err(|e| Failure::system(format!("socket {name} frame {at} is not a protocol message: {e}")))?;
                if let Some(mut state) = message.state {
                    let id = state.id.ok_or_else(|| Failure::system(format!("socket {name} frame {at}: a STATE without id")))?;
                    let partition = state.partition_id.clone().unwrap_or_default();
                    let arrived = partitions.remove(&partition).unwrap_or(0);
                    let claimed = state.source_stats.as_ref().and_then(|s| s.record_count).unwrap_or(0.0) as u64;
                    if arrived != claimed {
                        return Err(Failure::system(format!(
                            "socket {name}: STATE id {id} of partition {partition:?} covers {claimed} records, but {arrived} arrived; it is not released"
                        )));
                    }
                    sink.checkpoint(&mut local)?;
                    checkpoints += 1;
                    if S::COMMITS_IN_ID_ORDER {
                        match releaser.wait_turn(id) {
                            Turn::Mine => {}
                            Turn::Never { missing } => {
                                return Err(Failure::system(format!(
                                    "socket {name}: STATE id {id} cannot be released: STATE id {missing} never came on any socket (the source stopped before sending it)"
                                )))
                            }
                            Turn::TooLong { missing } => releaser.warn(format!(
                                "socket {name}: STATE id {id} waited {}s for STATE id {missing}; committing it out of order (a retry may read its rows again)",
                                TURN_PATIENCE.as_secs()
                            ))?,
                        }
                    }
                    sink.commit(&mut local)?;
                    state.destination_stats = Some(AirbyteStateStats { record_count: Some(arrived as f64), ..Default::default() });
                    held.push_back((checkpoints, state, id));
                    release_durable(&local, &mut held, &mut counts)?;
                } else if let Some(status) = message.trace.and_then(|t| t.stream_status) {
                    let d = &status.stream_descriptor;
                    if let Some(index) = streams.index(d.namespace.as_deref(), &d.name) {
                        sink.status(index, status.status);
                    }
                }
            }
        }
    }
    sink.checkpoint(&mut local)?;
    sink.end(&mut local)?;
    release_durable(&local, &mut held, &mut counts)?;
    Ok((counts, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: u64) -> AirbyteStateMessage {
        let mut state = AirbyteStateMessage::for_stream(StreamDescriptor::new("s", None), serde_json::json!({}));
        state.id = Some(id);
        state
    }

    #[test]
    fn a_reader_commits_only_once_every_lower_id_is_released() {
        let out = Mutex::new(Output::new());
        let releaser = Releaser::new(&out, 1, 2);
        let streams = Streams { descriptors: vec![StreamDescriptor::new("s", None)], properties: vec![vec![]] };
        let released_first = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            scope.spawn(|| {
                assert_eq!(releaser.wait_turn(2), Turn::Mine);
                released_first.lock().unwrap().push(2);
                releaser.ready(state(2), 2, &mut [(0, 0)], &streams).unwrap();
            });
            std::thread::sleep(Duration::from_millis(100));
            assert!(released_first.lock().unwrap().is_empty(), "id 2 waits for id 1");
            assert_eq!(releaser.wait_turn(1), Turn::Mine);
            released_first.lock().unwrap().push(1);
            releaser.ready(state(1), 1, &mut [(0, 0)], &streams).unwrap();
        });
        assert_eq!(*released_first.lock().unwrap(), [1, 2]);
        assert_eq!(releaser.inner.lock().unwrap().next, 3);
    }

    #[test]
    fn a_reader_waiting_for_an_id_no_reader_can_bring_gives_up_at_once() {
        let out = Mutex::new(Output::new());
        let releaser = Releaser::new(&out, 1, 2);
        let started = Instant::now();
        std::thread::scope(|scope| {
            let waiting = scope.spawn(|| releaser.wait_turn(3));
            std::thread::sleep(Duration::from_millis(100));
            // The other reader ends without ids 1 and 2 (its source crashed).
            releaser.reader_done(1, false);
            assert_eq!(waiting.join().unwrap(), Turn::Never { missing: 1 });
        });
        assert!(started.elapsed() < TURN_PATIENCE / 2);
    }
}
