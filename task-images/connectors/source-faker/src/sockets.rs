//! Socket mode: each stream's keys are cut into partitions, one per socket
//! at most, and the sockets' threads read partitions off one queue. Every
//! record names its partition; after each `records_per_slice` records of a
//! partition, and at its end, a STATE goes out with the next `id`, the
//! partition, and how many records of the partition it covers: on the
//! partition's socket (for the destination) and on stdout (for the
//! platform).
//!
//! Partitions of one stream finish out of order, so a STATE's cursor is the
//! stream's low-water mark: the cursor below which every partition has
//! checkpointed. Ids are drawn under the same lock as the mark, so a STATE
//! that is released (with every lower id) never claims records that are not
//! stored.

use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::sync::Mutex;

use serde_json::{json, Value};
use sluice_connector_kit::{Failure, Output};
use sluice_protocol::socket::{self, DataChannel, Format, FrameWriter};
use sluice_protocol::time::format_utc;
use sluice_protocol::*;

use crate::{mix, padding, rows, saved_cursor_for, status, Config, Stream};

struct Work {
    stream: usize,
    partition: usize,
    id: String,
    keys: std::ops::RangeInclusive<u64>,
}

/// What is known of one stream's partitions, for the low-water mark.
struct StreamBook {
    stream: Stream,
    resumed_from: Option<i64>,
    /// Per partition, in key order: the cursor at its last STATE, and whether it ended.
    partitions: Vec<(Option<i64>, bool)>,
}

impl StreamBook {
    fn low_water_mark(&self) -> Option<i64> {
        let mut mark = self.resumed_from;
        for &(cursor, finished) in &self.partitions {
            mark = cursor.or(mark);
            if !finished {
                break;
            }
        }
        mark
    }
}

struct Books {
    streams: Vec<StreamBook>,
    next_id: u64,
}

struct Shared<'a> {
    config: &'a Config,
    format: Format,
    emitted_at: i64,
    padding: String,
    queue: Mutex<VecDeque<Work>>,
    books: Mutex<Books>,
    out: Mutex<Output>,
}

pub fn read(config: &Config, catalog: &ConfiguredAirbyteCatalog, state: &Value, channel: &DataChannel, out: &mut Output) -> Result<(), Failure> {
    // Listen on every socket before anything else, so the destination finds them.
    let listeners = channel.socket_paths.iter().map(|p| socket::listen(p)).collect::<std::io::Result<Vec<_>>>()?;
    let salt = sluice_protocol::now_millis() as u64 ^ u64::from(std::process::id()) << 32;
    let mut queue = VecDeque::new();
    let mut streams = Vec::new();
    for (index, configured) in catalog.streams.iter().enumerate() {
        let stream = Stream::named(&configured.stream.name);
        let cursor = saved_cursor_for(configured, state);
        let parts = split(stream.keys(config.count, cursor), listeners.len(), config.records_per_slice);
        for (partition, keys) in parts.iter().cloned().enumerate() {
            let id = format!("{:016x}", mix(salt, index as u64, partition as u64));
            queue.push_back(Work { stream: index, partition, id, keys });
        }
        streams.push(StreamBook { stream, resumed_from: cursor, partitions: vec![(None, false); parts.len()] });
        status(out, &StreamDescriptor::new(stream.name(), None), StreamStatus::Started)?;
        out.log(LogLevel::Info, format!("reading stream {} after cursor {cursor:?} in {} partitions", stream.name(), parts.len()))?;
    }
    out.flush()?;
    let shared = Shared {
        config,
        format: channel.format,
        emitted_at: sluice_protocol::now_millis(),
        padding: padding(config),
        queue: Mutex::new(queue),
        books: Mutex::new(Books { streams, next_id: 1 }),
        out: Mutex::new(std::mem::take(out)),
    };
    let results: Vec<Result<(), Failure>> = std::thread::scope(|scope| {
        let threads: Vec<_> = listeners.into_iter().zip(&channel.socket_paths).map(|(l, path)| scope.spawn(|| serve(l, path, &shared))).collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|_| Err(Failure::system("a socket writer panicked")))).collect()
    });
    *out = shared.out.into_inner().expect("stdout lock");
    results.into_iter().collect()
}

/// Contiguous key ranges: as many as there are sockets, but no more than
/// there are slices of records, and at least one (whose final STATE keeps
/// the cursor when nothing new came).
fn split(keys: std::ops::RangeInclusive<u64>, sockets: usize, per_slice: u64) -> Vec<std::ops::RangeInclusive<u64>> {
    let (first, last) = (*keys.start(), *keys.end());
    let total = if keys.is_empty() { 0 } else { last - first + 1 };
    let parts = (sockets as u64).min(total.div_ceil(per_slice)).max(1);
    let size = total.div_ceil(parts).max(1);
    (0..parts).map(|p| first + p * size..=(first + (p + 1) * size - 1).min(last)).filter(|r| !r.is_empty() || parts == 1).collect()
}

fn serve(listener: UnixListener, path: &std::path::Path, shared: &Shared<'_>) -> Result<(), Failure> {
    let (connection, _) = listener.accept().map_err(|e| Failure::system(format!("socket {}: accept: {e}", path.display())))?;
    let mut writer = FrameWriter::new(connection, shared.format);
    let broken = |e: std::io::Error| Failure::system(format!("socket {}: {e}", path.display()));
    loop {
        let Some(work) = shared.queue.lock().expect("queue lock").pop_front() else { break };
        let (stream, resumed_from) = {
            let books = shared.books.lock().expect("books lock");
            let book = &books.streams[work.stream];
            (book.stream, book.resumed_from)
        };
        let (mut since, mut last) = (0u64, None);
        for row in rows(shared.config.seed, stream, work.keys.clone()) {
            if row.is_before(resumed_from) {
                continue;
            }
            match shared.format {
                Format::Jsonl => {
                    let w = writer.writer();
                    row.write_json(w, shared.emitted_at, &shared.padding, Some(&work.id)).map_err(broken)?;
                    w.write_all(b"\n").map_err(broken)?;
                }
                Format::Protobuf => {
                    let encoder = writer.begin_record(None, stream.name(), shared.emitted_at as u64, &work.id);
                    row.encode(encoder, &shared.padding);
                    writer.end_record().map_err(broken)?;
                }
            }
            since += 1;
            last = row.cursor().or(last);
            if since == shared.config.records_per_slice {
                checkpoint(shared, &mut writer, &work, since, last, false, broken)?;
                since = 0;
                if shared.config.slice_pause_ms > 0 {
                    writer.flush().map_err(broken)?;
                    std::thread::sleep(std::time::Duration::from_millis(shared.config.slice_pause_ms));
                }
            }
        }
        checkpoint(shared, &mut writer, &work, since, last, true, broken)?;
    }
    writer.flush().map_err(broken)
}

/// One STATE of a partition, on stdout and on its socket; after the last
/// partition of a stream, the stream's COMPLETE as well.
fn checkpoint(
    shared: &Shared<'_>,
    writer: &mut FrameWriter<std::os::unix::net::UnixStream>,
    work: &Work,
    records: u64,
    cursor: Option<i64>,
    finished: bool,
    broken: impl Fn(std::io::Error) -> Failure,
) -> Result<(), Failure> {
    let (state, stream, complete) = {
        let mut books = shared.books.lock().expect("books lock");
        let id = books.next_id;
        books.next_id += 1;
        let book = &mut books.streams[work.stream];
        let entry = &mut book.partitions[work.partition];
        entry.0 = cursor.or(entry.0);
        entry.1 |= finished;
        let stream_state = match (book.stream, book.low_water_mark()) {
            (Stream::Products, _) | (_, None) => json!({}),
            (_, Some(mark)) => json!({"updated_at": format_utc(mark)}),
        };
        let mut state = AirbyteStateMessage::for_stream(StreamDescriptor::new(book.stream.name(), None), stream_state);
        state.id = Some(id);
        state.partition_id = Some(work.id.clone());
        state.source_stats = Some(AirbyteStateStats { record_count: Some(records as f64), ..Default::default() });
        (AirbyteMessage::state(state), book.stream, book.partitions.iter().all(|p| p.1) && finished)
    };
    let completed = complete.then(|| {
        let descriptor = StreamDescriptor::new(stream.name(), None);
        AirbyteMessage::trace(AirbyteTraceMessage::stream_status(now_millis() as f64, descriptor, StreamStatus::Complete))
    });
    let messages: Vec<&AirbyteMessage> = std::iter::once(&state).chain(&completed).collect();
    sluice_connector_kit::sockets::send_state(&shared.out, writer, &messages, broken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_at_most_one_partition_per_socket() {
        assert_eq!(split(1..=10, 4, 1), vec![1..=3, 4..=6, 7..=9, 10..=10]);
        assert_eq!(split(1..=10, 4, 100), vec![1..=10]);
        // Nothing past the cursor: one empty partition, whose STATE keeps the cursor.
        let (first, last) = (5, 4);
        assert_eq!(split(first..=last, 8, 10).len(), 1);
    }

    #[test]
    fn the_low_water_mark_waits_for_the_first_unfinished_partition() {
        let mut book = StreamBook { stream: Stream::Users, resumed_from: Some(7), partitions: vec![(None, false), (Some(50), true)] };
        assert_eq!(book.low_water_mark(), Some(7));
        book.partitions[0] = (Some(20), false);
        assert_eq!(book.low_water_mark(), Some(20));
        book.partitions[0].1 = true;
        assert_eq!(book.low_water_mark(), Some(50));
    }
}
