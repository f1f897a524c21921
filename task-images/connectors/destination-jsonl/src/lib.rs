//! `destination-jsonl`: one JSON-lines file per stream under a directory.
//!
//! Each line is `{"_airbyte_extracted_at": ms, "_airbyte_data": {...}}`.
//! `append` adds to the stream's file. `overwrite` writes a new file beside
//! it and replaces the old one only once the stream is complete: the source
//! said so (a STREAM_STATUS COMPLETE, which the platform passes on) or, for
//! sources that report no statuses, the input ended. A failed sync leaves the
//! previous data whole; a retry of the same sync (`sync_id`) goes on with the
//! new file. The `_dedup` modes keep one line per primary
//! key (the greatest cursor, or the last to arrive) when the sync ends. A
//! STATE is echoed only after every record before it is on disk.
//!
//! In socket mode it reads every socket in parallel, each thread appending
//! its own buffered lines to the stream's file, and releases a STATE (in id
//! order) once the records it covers are on disk.

use std::collections::HashMap;
use std::sync::Mutex;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};
use sluice_connector_kit::sockets::{self, Sink};
use sluice_connector_kit::{each_input_message, echo_state, read_json, Command, Failure, Output};
use sluice_protocol::socket::{self, SocketRecord};
use sluice_protocol::*;

pub const NAME: &str = "destination-jsonl";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The directory that receives one `<stream>.jsonl` file per stream.
    destination_path: PathBuf,
}

pub fn main(args: &[String]) -> i32 {
    sluice_connector_kit::main(NAME, args, run)
}

fn run(command: Command, out: &mut Output) -> Result<(), Failure> {
    match command {
        Command::Spec => Ok(out.message(&AirbyteMessage::spec(spec()))?),
        Command::Check { config } => Ok(out.check_result(load_config(&config).and_then(|c| check_writable(&c.destination_path)))?),
        Command::Write { config, catalog } => {
            let config = load_config(&config)?;
            let catalog: ConfiguredAirbyteCatalog = read_json("catalog", &catalog)?;
            write(&config, &catalog, out)
        }
        Command::Discover { .. } | Command::Read { .. } => {
            Err(Failure::config("destination-jsonl is a destination: it only runs spec, check and write"))
        }
    }
}

fn spec() -> ConnectorSpecification {
    serde_json::from_value(json!({
        "documentationUrl": "https://docs.airbyte.com/integrations/destinations/local-json",
        "connectionSpecification": {
            "type": "object",
            "title": "JSON lines files",
            "required": ["destination_path"],
            "additionalProperties": false,
            "properties": {
                "destination_path": {"type": "string", "description": "Directory that receives one <stream>.jsonl file per stream."}
            }
        },
        "supported_destination_sync_modes": ["append", "overwrite", "append_dedup"],
        "protocol_version": "0.5.2"
    }))
    .expect("static spec")
}

/// One writer per directory, held until the process ends: a destination of
/// an earlier attempt still draining its input (its supervisor killed)
/// must not interleave lines with this one's, so this one waits for it.
fn one_writer(dir: &Path, out: &mut Output) -> Result<File, Failure> {
    let path = dir.join(".destination-jsonl.lock");
    let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&path)
        .map_err(|e| Failure::system(format!("cannot open the lock {}: {e}", path.display())))?;
    match lock.try_lock() {
        Ok(()) => return Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(e)) => return Err(Failure::system(format!("cannot lock {}: {e}", path.display()))),
    }
    out.log(LogLevel::Warn, format!("another destination-jsonl is writing to {}; waiting for it to finish", dir.display()))?;
    out.flush()?;
    lock.lock().map_err(|e| Failure::system(format!("cannot lock {}: {e}", path.display())))?;
    Ok(lock)
}

fn load_config(path: &Path) -> Result<Config, Failure> {
    read_json("config", path)
}

fn check_writable(dir: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(dir).map_err(|e| Failure::config(format!("cannot create {}: {e}", dir.display())))?;
    let probe = dir.join(".sluice-check");
    File::create(&probe).map_err(|e| Failure::config(format!("cannot write in {}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// The file a stream is written to; names are kept to safe characters.
pub fn stream_file(dir: &Path, stream: &StreamDescriptor) -> PathBuf {
    let clean = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_".contains(c) { c } else { '_' }).collect::<String>();
    match &stream.namespace {
        Some(namespace) => dir.join(format!("{}.{}.jsonl", clean(namespace), clean(&stream.name))),
        None => dir.join(format!("{}.jsonl", clean(&stream.name))),
    }
}

struct Target {
    descriptor: StreamDescriptor,
    /// The stream's file.
    path: PathBuf,
    /// Where records go: the stream's file, or for an overwrite the new file that will replace it.
    writing: PathBuf,
    file: BufWriter<File>,
    dedup: Option<Dedup>,
    /// The last stream status the source reported, if any.
    status: Option<StreamStatus>,
}

/// How a `_dedup` stream picks one line per key when the sync ends.
struct Dedup {
    primary_key: Vec<Vec<String>>,
    cursor: Option<Vec<String>>,
}

fn write(config: &Config, catalog: &ConfiguredAirbyteCatalog, out: &mut Output) -> Result<(), Failure> {
    check_writable(&config.destination_path)?;
    let _writer = one_writer(&config.destination_path, out)?;
    let mut targets = open_targets(config, catalog)?;
    match socket::DataChannel::from_env().map_err(Failure::config)? {
        Some(channel) => {
            let sink = Files { targets: targets.into_iter().map(Mutex::new).collect() };
            let shared = Mutex::new(std::mem::take(out));
            let result = sockets::write(&channel, catalog, &sink, &shared);
            *out = shared.into_inner().expect("stdout lock");
            result?;
            targets = sink.targets.into_iter().map(|t| t.into_inner().expect("target lock")).collect();
        }
        None => write_stdin(&mut targets, out)?,
    }
    finish(targets)
}

fn open_targets(config: &Config, catalog: &ConfiguredAirbyteCatalog) -> Result<Vec<Target>, Failure> {
    let mut targets = Vec::new();
    for configured in &catalog.streams {
        let descriptor = configured.stream.descriptor();
        let path = stream_file(&config.destination_path, &descriptor);
        let mode = &configured.destination_sync_mode;
        let replace = match mode {
            DestinationSyncMode::Overwrite | DestinationSyncMode::OverwriteDedup => true,
            DestinationSyncMode::Append | DestinationSyncMode::AppendDedup => false,
            other => return Err(Failure::config(format!("stream {descriptor}: destination sync mode `{other}` is not supported"))),
        };
        let dedup = matches!(mode, DestinationSyncMode::AppendDedup | DestinationSyncMode::OverwriteDedup);
        let dedup = if dedup {
            let key = configured.primary_key.clone().filter(|k| !k.is_empty()).ok_or_else(|| {
                Failure::config(format!("stream {descriptor}: `{mode}` needs a primary key in the configured catalog"))
            })?;
            Some(Dedup { primary_key: key, cursor: configured.cursor_field.clone().filter(|c| !c.is_empty()) })
        } else {
            None
        };
        let writing = if replace {
            let generation = configured.sync_id.map(|id| id.to_string()).unwrap_or_else(|| "new".into());
            let staged = path.with_extension(format!("jsonl.{generation}.tmp"));
            if configured.sync_id.is_none() {
                let _ = std::fs::remove_file(&staged);
            }
            staged
        } else {
            path.clone()
        };
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&writing)
            .map_err(|e| Failure::system(format!("cannot open {}: {e}", writing.display())))?;
        cut_partial_line(&file).map_err(|e| Failure::system(format!("cannot repair {}: {e}", writing.display())))?;
        targets.push(Target { descriptor, path, writing, file: BufWriter::with_capacity(128 * 1024, file), dedup, status: None });
    }
    Ok(targets)
}

/// A write that died mid-line left a partial last line. No STATE covers it
/// (a STATE is released only after complete lines are on disk), so it goes.
fn cut_partial_line(file: &File) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut tail = [0u8; 1];
    if len == 0 || (file.read_at(&mut tail, len - 1)? == 1 && tail[0] == b'\n') {
        return Ok(());
    }
    let mut block = vec![0u8; 64 * 1024];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(newline) = chunk.iter().rposition(|&b| b == b'\n') {
            return file.set_len(start + newline as u64 + 1);
        }
        end = start;
    }
    file.set_len(0)
}

/// Legacy mode: every message on stdin, in order.
fn write_stdin(targets: &mut [Target], out: &mut Output) -> Result<(), Failure> {
    let index: HashMap<StreamDescriptor, usize> = targets.iter().enumerate().map(|(i, t)| (t.descriptor.clone(), i)).collect();
    let mut since_state = 0u64;
    each_input_message(|line, message| {
        if let Some(record) = message.record {
            let descriptor = StreamDescriptor::new(record.stream, record.namespace);
            let target = index.get(&descriptor).map(|&i| &mut targets[i]).ok_or_else(|| {
                Failure::system(format!("stdin line {line}: a record of stream {descriptor}, which the configured catalog does not have"))
            })?;
            if !record.data.is_object() {
                return Err(Failure::system(format!("stdin line {line}: record data of stream {descriptor} is not an object")));
            }
            serde_json::to_writer(&mut target.file, &json!({"_airbyte_extracted_at": record.emitted_at, "_airbyte_data": record.data}))
                .map_err(|e| Failure::system(format!("writing {}: {e}", target.path.display())))?;
            target.file.write_all(b"\n")?;
            since_state += 1;
        } else if let Some(status) = message.trace.and_then(|t| t.stream_status) {
            if let Some(&i) = index.get(&status.stream_descriptor) {
                targets[i].status = Some(status.status);
            }
        } else if let Some(state) = message.state {
            for target in targets.iter_mut() {
                target.file.flush()?;
                target.file.get_ref().sync_data()?;
            }
            echo_state(out, state, since_state)?;
            since_state = 0;
        }
        Ok(())
    })
}

/// Socket mode: each reading thread fills its own buffer per stream and
/// appends it to the stream's file in one locked write.
struct Files {
    targets: Vec<Mutex<Target>>,
}

const SOCKET_BUFFER: usize = 256 * 1024;

impl Files {
    fn append(&self, stream: usize, buffer: &mut Vec<u8>) -> Result<(), Failure> {
        let mut target = self.targets[stream].lock().expect("target lock");
        target.file.write_all(buffer).map_err(|e| Failure::system(format!("writing {}: {e}", target.path.display())))?;
        buffer.clear();
        Ok(())
    }
}

impl Sink for Files {
    /// Lines not yet appended, and whether the stream's file has unsynced data, per stream.
    type Local = Vec<(Vec<u8>, bool)>;

    fn local(&self) -> Self::Local {
        vec![(Vec::new(), false); self.targets.len()]
    }

    fn record(&self, local: &mut Self::Local, stream: usize, properties: &[String], record: &SocketRecord<'_>) -> Result<(), Failure> {
        let (buffer, dirty) = &mut local[stream];
        let start = buffer.len();
        write!(buffer, r#"{{"_airbyte_extracted_at":{},"_airbyte_data":"#, record.emitted_at())?;
        let data_at = buffer.len();
        record.write_data(properties, buffer).map_err(|e| Failure::system(e.to_string()))?;
        if buffer.get(data_at) != Some(&b'{') {
            buffer.truncate(start);
            return Err(Failure::system(format!("record data of stream {} is not an object", record.stream())));
        }
        buffer.extend_from_slice(b"}\n");
        *dirty = true;
        if buffer.len() >= SOCKET_BUFFER {
            self.append(stream, buffer)?;
        }
        Ok(())
    }

    fn checkpoint(&self, local: &mut Self::Local) -> Result<(), Failure> {
        for (stream, (buffer, dirty)) in local.iter_mut().enumerate() {
            if !*dirty {
                continue;
            }
            self.append(stream, buffer)?;
            let mut target = self.targets[stream].lock().expect("target lock");
            target.file.flush()?;
            target.file.get_ref().sync_data()?;
            *dirty = false;
        }
        Ok(())
    }

    fn status(&self, stream: usize, status: StreamStatus) {
        self.targets[stream].lock().expect("target lock").status = Some(status);
    }
}

/// The end of a sync: overwrites replace the old file once their stream is
/// complete, and `_dedup` streams keep one line per key.
fn finish(targets: Vec<Target>) -> Result<(), Failure> {
    for target in targets {
        let file = target.file.into_inner().map_err(|e| Failure::system(format!("flushing {}: {e}", target.writing.display())))?;
        file.sync_all()?;
        let complete = matches!(target.status, None | Some(StreamStatus::Complete));
        if target.writing != target.path {
            if !complete {
                // Kept for a retry of the same sync; the old data stays in place.
                continue;
            }
            std::fs::rename(&target.writing, &target.path)?;
        }
        if let Some(dedup) = &target.dedup {
            dedup_file(&target.path, &dedup.primary_key, dedup.cursor.as_deref())?;
        }
    }
    Ok(())
}

/// Rewrites a stream's file keeping one line per primary key, in the order
/// keys first appeared; the kept line has the greatest cursor (the later
/// line on a tie or without a cursor).
fn dedup_file(path: &Path, key: &[Vec<String>], cursor: Option<&[String]>) -> Result<(), Failure> {
    let reader = BufReader::new(File::open(path)?);
    let mut order: Vec<String> = Vec::new();
    let mut kept: HashMap<String, Value> = HashMap::new();
    for (n, line) in reader.lines().enumerate() {
        let row: Value = serde_json::from_str(&line?)
            .map_err(|e| Failure::system(format!("{} line {} is not JSON: {e}", path.display(), n + 1)))?;
        let pick = |fields: &[String]| fields.iter().try_fold(&row["_airbyte_data"], |v, f| v.get(f)).cloned().unwrap_or(Value::Null);
        let id = serde_json::to_string(&key.iter().map(|k| pick(k)).collect::<Vec<_>>()).expect("values serialize");
        match kept.get(&id) {
            None => {
                order.push(id.clone());
                kept.insert(id, row);
            }
            Some(old) => {
                let older = |c: &[String]| {
                    let at = |v: &Value| c.iter().try_fold(&v["_airbyte_data"], |v, f| v.get(f)).cloned().unwrap_or(Value::Null);
                    cursor_less(&at(&row), &at(old))
                };
                if !cursor.is_some_and(older) {
                    kept.insert(id, row);
                }
            }
        }
    }
    let tmp = path.with_extension("jsonl.dedup");
    let mut out = BufWriter::new(File::create(&tmp)?);
    for id in &order {
        serde_json::to_writer(&mut out, &kept[id]).expect("values serialize");
        out.write_all(b"\n")?;
    }
    out.into_inner().map_err(|e| Failure::system(e.to_string()))?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn cursor_less(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x < y,
            _ => x.as_f64() < y.as_f64(),
        },
        (Value::String(x), Value::String(y)) => x < y,
        _ => false,
    }
}
