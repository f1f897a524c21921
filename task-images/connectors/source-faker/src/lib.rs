//! `source-faker`: deterministic fake users, purchases and products.
//!
//! The same `seed` and `count` give the same records on every run, so tests can
//! check exactly what arrived. Users and purchases are incremental on
//! `updated_at`, which grows with the id: a second read with the saved state
//! emits only records added since (a larger `count`), and none otherwise.
//! `record_size_bytes` pads users to a fixed size for benchmarks.

use std::io::Write;

use serde::Deserialize;
use serde_json::{json, Value};
use sluice_connector_kit::{read_json, Command, Failure, Output};
use sluice_protocol::time::{format_utc, parse_utc};
use sluice_protocol::*;

mod sockets;

pub const NAME: &str = "source-faker";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// How many users to generate; purchases follow from the users.
    #[serde(default = "default_count")]
    count: u64,
    #[serde(default)]
    seed: u64,
    /// Records between two STATE messages.
    #[serde(default = "default_records_per_slice")]
    records_per_slice: u64,
    /// Pads each user record to about this many bytes of JSON (0: no padding).
    #[serde(default)]
    record_size_bytes: usize,
    /// Milliseconds to pause after each STATE (0: none): a long sync from
    /// few records, for tests that stop a sync in its middle.
    #[serde(default)]
    slice_pause_ms: u64,
}

const fn default_count() -> u64 {
    1000
}
const fn default_records_per_slice() -> u64 {
    100
}

pub fn main(args: &[String]) -> i32 {
    sluice_connector_kit::main(NAME, args, run)
}

fn run(command: Command, out: &mut Output) -> Result<(), Failure> {
    match command {
        Command::Spec => Ok(out.message(&AirbyteMessage::spec(spec()))?),
        Command::Check { config } => Ok(out.check_result(load_config(&config).map(|_| ()))?),
        Command::Discover { config } => {
            load_config(&config)?;
            Ok(out.message(&AirbyteMessage::catalog(catalog()))?)
        }
        Command::Read { config, catalog, state } => {
            let config = load_config(&config)?;
            let catalog: ConfiguredAirbyteCatalog = read_json("catalog", &catalog)?;
            let state: Value = match state {
                Some(path) => read_json("state", &path)?,
                None => Value::Null,
            };
            read(&config, &catalog, &state, out)
        }
        Command::Write { .. } => Err(Failure::config("source-faker is a source: it does not `write`")),
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, Failure> {
    let config: Config = read_json("config", path)?;
    if config.count == 0 {
        return Err(Failure::config("config: `count` must be at least 1"));
    }
    if config.records_per_slice == 0 {
        return Err(Failure::config("config: `records_per_slice` must be at least 1"));
    }
    Ok(config)
}

pub fn spec() -> ConnectorSpecification {
    serde_json::from_value(json!({
        "documentationUrl": "https://docs.airbyte.com/integrations/sources/faker",
        "connectionSpecification": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": "Sluice Faker Spec",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "count": {"type": "integer", "minimum": 1, "default": 1000, "description": "How many users to generate."},
                "seed": {"type": "integer", "minimum": 0, "default": 0, "description": "Seed of the generator; the same seed gives the same records."},
                "records_per_slice": {"type": "integer", "minimum": 1, "default": 100, "description": "Records between two STATE messages."},
                "record_size_bytes": {"type": "integer", "minimum": 0, "default": 0, "description": "Pad each user to about this many bytes (0: no padding)."},
                "slice_pause_ms": {"type": "integer", "minimum": 0, "default": 0, "description": "Milliseconds to pause after each STATE (0: none)."}
            }
        },
        "supportsIncremental": true,
        "protocol_version": "0.5.2"
    }))
    .expect("static spec")
}

fn stream(name: &str, properties: Value, incremental: bool) -> AirbyteStream {
    let modes = if incremental { json!(["full_refresh", "incremental"]) } else { json!(["full_refresh"]) };
    serde_json::from_value(json!({
        "name": name,
        "json_schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": properties},
        "supported_sync_modes": modes,
        "source_defined_cursor": incremental,
        "default_cursor_field": if incremental { json!(["updated_at"]) } else { json!([]) },
        "source_defined_primary_key": [["id"]],
        "is_resumable": incremental
    }))
    .expect("static stream")
}

pub fn catalog() -> AirbyteCatalog {
    let int = json!({"type": "integer"});
    let text = json!({"type": "string"});
    let time = json!({"type": "string", "format": "date-time", "airbyte_type": "timestamp_with_timezone"});
    AirbyteCatalog {
        streams: vec![
            stream(
                "users",
                json!({"id": int, "name": text, "email": text, "age": int, "bio": text, "created_at": time, "updated_at": time}),
                true,
            ),
            stream(
                "purchases",
                json!({"id": int, "user_id": int, "product_id": int, "amount": {"type": "number"}, "created_at": time, "updated_at": time}),
                true,
            ),
            stream("products", json!({"id": int, "make": text, "model": text, "price": {"type": "number"}}), false),
        ],
        extra: Extra::new(),
    }
}

/// The cursor saved for a stream in the incoming state, whatever form it has.
fn saved_cursor(state: &Value, stream: &str) -> Option<i64> {
    let blob = match state {
        Value::Array(states) => states.iter().find_map(|s| {
            let entry = s.get("stream")?;
            (entry.pointer("/stream_descriptor/name")? == stream).then(|| entry.get("stream_state"))?
        }),
        Value::Object(legacy) => legacy.get(stream),
        _ => None,
    }?;
    blob.get("updated_at")?.as_str().and_then(parse_utc)
}

const EPOCH_2020: i64 = 1_577_836_800;
const FIRST_NAMES: [&str; 8] = ["Ada", "Grace", "Linus", "Barbara", "Ken", "Edsger", "Frances", "Dennis"];
const LAST_NAMES: [&str; 8] = ["Lovelace", "Hopper", "Torvalds", "Liskov", "Thompson", "Dijkstra", "Allen", "Ritchie"];
const MAKES: [&str; 5] = ["Audi", "Volvo", "Toyota", "Fiat", "Tesla"];

/// splitmix64: a tiny, fast, well-mixed function of (seed, stream, id).
fn mix(seed: u64, salt: u64, id: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ id.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How many purchases user `id` made: 0, 1 or 2.
fn purchases_of(seed: u64, id: u64) -> u64 {
    mix(seed, 2, id) % 3
}

fn read(config: &Config, catalog: &ConfiguredAirbyteCatalog, state: &Value, out: &mut Output) -> Result<(), Failure> {
    let known = catalog_names();
    for configured in &catalog.streams {
        let name = configured.stream.name.as_str();
        if !known.contains(&name) {
            return Err(Failure::config(format!("catalog names stream `{name}`, which source-faker does not have (it has {known:?})")));
        }
    }
    if let Some(channel) = sluice_protocol::socket::DataChannel::from_env().map_err(Failure::config)? {
        return sockets::read(config, catalog, state, &channel, out);
    }
    let emitted_at = now_millis();
    let padding = padding(config);
    for configured in &catalog.streams {
        let stream = Stream::named(&configured.stream.name);
        let cursor = saved_cursor_for(configured, state);
        let descriptor = StreamDescriptor::new(stream.name(), None);
        status(out, &descriptor, StreamStatus::Started)?;
        out.log(LogLevel::Info, format!("reading stream {} after cursor {cursor:?}", stream.name()))?;
        let pause = std::time::Duration::from_millis(config.slice_pause_ms);
        let mut slice = Slice { out, descriptor: &descriptor, per_slice: config.records_per_slice, in_slice: 0, last: None, pause };
        for row in rows(config.seed, stream, stream.keys(config.count, cursor)) {
            if row.is_before(cursor) {
                continue;
            }
            let w = slice.out.writer();
            row.write_json(w, emitted_at, &padding, None)?;
            w.write_all(b"\n")?;
            match row.cursor() {
                Some(updated) => slice.record(updated)?,
                None => slice.in_slice += 1,
            }
        }
        slice.finish(cursor)?;
        status(out, &descriptor, StreamStatus::Complete)?;
    }
    Ok(())
}

fn padding(config: &Config) -> String {
    "x".repeat(config.record_size_bytes.saturating_sub(245))
}

/// The cursor to resume after, for an incremental stream.
fn saved_cursor_for(configured: &ConfiguredAirbyteStream, state: &Value) -> Option<i64> {
    match configured.sync_mode {
        SyncMode::Incremental => saved_cursor(state, &configured.stream.name),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Users,
    Purchases,
    Products,
}

impl Stream {
    /// Only for names `read` has checked.
    fn named(name: &str) -> Stream {
        match name {
            "users" => Stream::Users,
            "purchases" => Stream::Purchases,
            _ => Stream::Products,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stream::Users => "users",
            Stream::Purchases => "purchases",
            Stream::Products => "products",
        }
    }

    /// The keys a read goes through: user ids for users and purchases
    /// (purchases follow their user), product ids for products. A cursor
    /// skips the users whose records are all at or before it.
    fn keys(self, count: u64, cursor: Option<i64>) -> std::ops::RangeInclusive<u64> {
        let first = cursor.map_or(1, |c| ((c - EPOCH_2020).max(0) / 60) as u64).max(1);
        match self {
            Stream::Products => 1..=10,
            _ => first..=count,
        }
    }
}

/// One record, computed from the seed and its key.
enum Row {
    User { id: u64, first: &'static str, last: &'static str, age: u64, updated: i64 },
    Purchase { id: u64, user: u64, product: u64, cents: u64, updated: i64 },
    Product { id: u64, make: &'static str, model: u64, price: u64 },
}

/// The rows of a stream for a range of keys, in key order.
fn rows(seed: u64, stream: Stream, keys: std::ops::RangeInclusive<u64>) -> Box<dyn Iterator<Item = Row> + Send> {
    match stream {
        Stream::Users => Box::new(keys.map(move |id| {
            let r = mix(seed, 1, id);
            let updated = EPOCH_2020 + id as i64 * 60;
            Row::User { id, first: FIRST_NAMES[(r % 8) as usize], last: LAST_NAMES[((r >> 8) % 8) as usize], age: 18 + (r >> 16) % 70, updated }
        })),
        Stream::Purchases => {
            // Purchase ids count every purchase of the users before the range.
            let mut purchase_id: u64 = (1..*keys.start()).map(|user| purchases_of(seed, user)).sum();
            Box::new(keys.flat_map(move |user| (0..purchases_of(seed, user)).map(move |n| (user, n))).map(move |(user, n)| {
                purchase_id += 1;
                let r = mix(seed, 3, purchase_id);
                let cents = (5 + (r >> 8) % 500) * 100 + (r >> 20) % 100;
                Row::Purchase { id: purchase_id, user, product: 1 + r % 10, cents, updated: EPOCH_2020 + user as i64 * 60 + n as i64 + 1 }
            }))
        }
        Stream::Products => Box::new(keys.map(move |id| {
            let r = mix(seed, 4, id);
            Row::Product { id, make: MAKES[(r % 5) as usize], model: r % 1000, price: 10 + (r >> 10) % 90 }
        })),
    }
}

impl Row {
    fn cursor(&self) -> Option<i64> {
        match self {
            Row::User { updated, .. } | Row::Purchase { updated, .. } => Some(*updated),
            Row::Product { .. } => None,
        }
    }

    fn is_before(&self, cursor: Option<i64>) -> bool {
        matches!((self.cursor(), cursor), (Some(updated), Some(c)) if updated <= c)
    }

    /// The whole RECORD message as one JSON line (without its newline);
    /// in socket mode the record names its partition.
    fn write_json(&self, w: &mut impl Write, emitted_at: i64, padding: &str, partition: Option<&str>) -> std::io::Result<()> {
        let stream = match self {
            Row::User { .. } => "users",
            Row::Purchase { .. } => "purchases",
            Row::Product { .. } => "products",
        };
        write!(w, r#"{{"type":"RECORD","record":{{"stream":"{stream}","emitted_at":{emitted_at},"#)?;
        if let Some(partition) = partition {
            write!(w, r#""partition_id":"{partition}","#)?;
        }
        match self {
            Row::User { id, first, last, age, updated } => write!(
                w,
                r#""data":{{"id":{id},"name":"{first} {last}","email":"{}.{}{id}@example.com","age":{age},"bio":"{padding}","created_at":"{}","updated_at":"{}"}}}}}}"#,
                first.to_lowercase(),
                last.to_lowercase(),
                format_utc(updated - 3600),
                format_utc(*updated),
            ),
            Row::Purchase { id, user, product, cents, updated } => write!(
                w,
                r#""data":{{"id":{id},"user_id":{user},"product_id":{product},"amount":{}.{:02},"created_at":"{}","updated_at":"{}"}}}}}}"#,
                cents / 100,
                cents % 100,
                format_utc(updated - 60),
                format_utc(*updated),
            ),
            Row::Product { id, make, model, price } => {
                write!(w, r#""data":{{"id":{id},"make":"{make}","model":"M{model}","price":{price}.99}}}}}}"#)
            }
        }
    }

    /// PROTOBUF values, in alphabetical order of the stream's properties.
    fn encode(&self, e: &mut sluice_protocol::protobuf::RecordEncoder, padding: &str) {
        match self {
            Row::User { id, first, last, age, updated } => {
                e.integer(*age as i64);
                e.string(padding);
                e.timestamp_with_timezone(updated - 3600, 0, 0);
                e.string(&format!("{}.{}{id}@example.com", first.to_lowercase(), last.to_lowercase()));
                e.integer(*id as i64);
                e.string(&format!("{first} {last}"));
                e.timestamp_with_timezone(*updated, 0, 0);
            }
            Row::Purchase { id, user, product, cents, updated } => {
                // Both exact integers: the division rounds to the double that "d.cc" parses to.
                e.number(*cents as f64 / 100.0);
                e.timestamp_with_timezone(updated - 60, 0, 0);
                e.integer(*id as i64);
                e.integer(*product as i64);
                e.timestamp_with_timezone(*updated, 0, 0);
                e.integer(*user as i64);
            }
            Row::Product { id, make, model, price } => {
                e.integer(*id as i64);
                e.string(make);
                e.string(&format!("M{model}"));
                e.number((price * 100 + 99) as f64 / 100.0);
            }
        }
    }
}

fn catalog_names() -> [&'static str; 3] {
    ["users", "purchases", "products"]
}

/// Counts records into slices and emits a STATE at the end of each.
struct Slice<'a> {
    out: &'a mut Output,
    descriptor: &'a StreamDescriptor,
    per_slice: u64,
    in_slice: u64,
    last: Option<i64>,
    pause: std::time::Duration,
}

impl Slice<'_> {
    fn record(&mut self, updated: i64) -> Result<(), Failure> {
        self.in_slice += 1;
        self.last = Some(updated);
        if self.in_slice == self.per_slice {
            self.state(updated)?;
        }
        Ok(())
    }

    fn state(&mut self, cursor: i64) -> Result<(), Failure> {
        let state = AirbyteStateMessage::for_stream(self.descriptor.clone(), json!({"updated_at": format_utc(cursor)}));
        self.out.message(&AirbyteMessage::state(state))?;
        self.in_slice = 0;
        if !self.pause.is_zero() {
            self.out.flush()?;
            std::thread::sleep(self.pause);
        }
        Ok(())
    }

    /// The final STATE of an incremental stream keeps the cursor even when nothing new came.
    fn finish(mut self, previous: Option<i64>) -> Result<(), Failure> {
        if self.in_slice > 0 || self.last.is_none() {
            if let Some(cursor) = self.last.or(previous) {
                self.state(cursor)?;
            }
        }
        Ok(())
    }
}

fn status(out: &mut Output, stream: &StreamDescriptor, status: StreamStatus) -> Result<(), Failure> {
    Ok(out.stream_status(stream, status)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_is_found_in_every_state_form() {
        let list = json!([{"type": "STREAM", "stream": {"stream_descriptor": {"name": "users"}, "stream_state": {"updated_at": "2020-01-01T00:01:00+00:00"}}}]);
        assert_eq!(saved_cursor(&list, "users"), Some(EPOCH_2020 + 60));
        assert_eq!(saved_cursor(&list, "purchases"), None);
        let legacy = json!({"users": {"updated_at": "2020-01-01T00:02:00+00:00"}});
        assert_eq!(saved_cursor(&legacy, "users"), Some(EPOCH_2020 + 120));
    }
}
