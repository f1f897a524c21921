//! Fuzz targets: every parser of input from outside Sluice, each a function
//! of bytes that panics when a property breaks.
//!
//! `fuzz/` runs them under libFuzzer (`fuzz/run`, long); [`short_run`]
//! runs each for a moment in the tests with a small mutator of our own, so
//! that they keep building and the seeds keep passing. Seeds are files
//! under `fuzz/seeds/<target>/`, taken from the tests' inputs; a crash found
//! is fixed and its input kept there as a regression seed.

use std::io::Cursor;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_protocol::socket::{Format, FrameReader, SocketFrame, SocketRecord};
use sluice_protocol::{AirbyteMessage, LineReader};

mod api;

pub use api::api_request;

pub type Target = fn(&[u8]);

/// Every target, by the name its seeds directory and `cargo fuzz` use.
pub const TARGETS: &[(&str, Target)] = &[
    ("protocol_line", protocol_line),
    ("line_reader", line_reader),
    ("socket_jsonl", socket_jsonl),
    ("socket_protobuf", socket_protobuf),
    ("protobuf_round_trip", protobuf_round_trip),
    ("cron", cron),
    ("config_secrets", config_secrets),
    ("sigv4", sigv4),
    ("api_request", api_request),
];

/// One protocol line: `peek` agrees with the full parse, and a parsed
/// message re-serialized parses to itself and keeps every field it had
/// (unknown ones included).
pub fn protocol_line(data: &[u8]) {
    let peeked = sluice_protocol::peek(data);
    if std::str::from_utf8(data).is_err() {
        // serde skips unknown fields without checking their UTF-8; the data plane refuses the line.
        assert!(matches!(peeked, Err(sluice_protocol::PeekError::NotUtf8(_))), "peek took a line that is not UTF-8");
        return;
    }
    let Ok(message) = serde_json::from_slice::<AirbyteMessage>(data) else { return };
    if message.kind == sluice_protocol::MessageType::Record && message.record.is_none() {
        // The full parse leaves it to the reader; peek, on the data plane, refuses it.
        assert_eq!(peeked.err(), Some(sluice_protocol::PeekError::RecordWithoutStream));
        return;
    }
    let head = peeked.unwrap_or_else(|e| panic!("peek refused a line the full parse took: {e}"));
    let text = serde_json::to_vec(&message).expect("a parsed message serializes");
    let again: AirbyteMessage = serde_json::from_slice(&text).expect("a serialized message parses");
    assert_eq!(serde_json::to_value(&again).unwrap(), serde_json::to_value(&message).unwrap(), "the round trip changed the message");
    let original: Value = serde_json::from_slice(data).expect("it parsed as a message");
    let kept: Value = serde_json::from_slice(&text).unwrap();
    for key in original.as_object().into_iter().flat_map(|o| o.keys()) {
        // `null` optional fields may be dropped; any other field must stay.
        assert!(kept.get(key).is_some() || original[key].is_null(), "the round trip lost the field {key}");
    }
    if let (sluice_protocol::Kind::Record, Some(record)) = (head.kind, &message.record) {
        let (stream, namespace) = head.stream.expect("a RECORD's head has its stream");
        assert_eq!(stream, record.stream.as_str());
        assert_eq!(namespace.as_deref(), record.namespace.as_deref());
    }
}

/// The line reader over any bytes and a small limit: every line it gives is
/// within the limit and is one of the input's, numbered as in the input
/// (blank lines are skipped, and counted).
pub fn line_reader(data: &[u8]) {
    let limit = 1 + data.first().copied().unwrap_or(0) as usize;
    let input = data.get(1..).unwrap_or_default();
    let mut reader = LineReader::new(Cursor::new(input), limit);
    let mut last = 0u64;
    while let Ok(Some((number, line))) = reader.next_line(|| Ok(())) {
        assert!(line.len() <= limit, "a line of {} bytes passed a limit of {limit}", line.len());
        assert!(number > last, "line {number} came after line {last}");
        assert!(number as usize <= input.iter().filter(|b| **b == b'\n').count() + 1, "line {number} is past the input's lines");
        last = number;
        let at = input.windows(line.len().max(1)).position(|w| w == line);
        assert!(line.is_empty() || at.is_some(), "a line that is not in the input");
    }
}

fn frames(format: Format, data: &[u8]) {
    let properties: Vec<String> = ["a", "b", "c", "id"].map(String::from).to_vec();
    let mut reader = FrameReader::new(Cursor::new(data), format, 4096);
    for _ in 0..10_000 {
        match reader.read_frame() {
            Ok(Some(SocketFrame::Record(record))) => {
                let _ = (record.stream(), record.namespace(), record.partition_id(), record.emitted_at(), record.data_len());
                let mut out = Vec::new();
                if record.write_data(&properties, &mut out).is_ok() {
                    // JSON syntax; numbers of any size (1e400 is JSON, and is passed on as written).
                    serde_json::from_slice::<Box<serde_json::value::RawValue>>(&out).expect("write_data writes JSON");
                }
                if let SocketRecord::Proto(record) = &record {
                    let _ = record.values().count();
                    let _ = record.meta();
                }
            }
            Ok(Some(SocketFrame::Message(line))) => {
                let _ = sluice_protocol::peek(line);
            }
            Ok(Some(SocketFrame::Probe)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// JSONL frames, cut or garbled.
pub fn socket_jsonl(data: &[u8]) {
    frames(Format::Jsonl, data)
}

/// PROTOBUF frames, cut or garbled: the hand-written decoder never panics
/// nor loops.
pub fn socket_protobuf(data: &[u8]) {
    frames(Format::Protobuf, data);
    let _ = sluice_protocol::protobuf::decode_value(data);
}

/// Values made from the input, encoded as a record frame and read back: the
/// same values, in order.
pub fn protobuf_round_trip(data: &[u8]) {
    use sluice_protocol::protobuf::{RecordEncoder, Scalar};
    let mut encoder = RecordEncoder::default();
    let mut expected = Vec::new();
    encoder.begin(None, "s", 1, "p");
    let mut rest = data;
    while let Some((&tag, tail)) = rest.split_first() {
        let take = |n: usize, tail: &[u8]| -> ([u8; 8], usize) {
            let mut b = [0u8; 8];
            let n = n.min(tail.len());
            b[..n].copy_from_slice(&tail[..n]);
            (b, n)
        };
        rest = match tag % 5 {
            0 => {
                encoder.null();
                expected.push(Value::Null);
                tail
            }
            1 => {
                encoder.boolean(tag & 0x80 != 0);
                expected.push(Value::Bool(tag & 0x80 != 0));
                tail
            }
            2 => {
                let (b, n) = take(8, tail);
                let v = i64::from_le_bytes(b);
                encoder.integer(v);
                expected.push(Value::from(v));
                &tail[n..]
            }
            3 => {
                let (b, n) = take(8, tail);
                let v = f64::from_le_bytes(b);
                if v.is_finite() {
                    encoder.number(v);
                    expected.push(Value::from(v));
                }
                &tail[n..]
            }
            _ => {
                let n = (tag as usize / 5).min(tail.len());
                let text = String::from_utf8_lossy(&tail[..n]).into_owned();
                encoder.string(&text);
                expected.push(Value::String(text));
                &tail[n..]
            }
        };
    }
    let mut frame = Vec::new();
    encoder.finish(&mut frame);
    let mut reader = FrameReader::new(Cursor::new(&frame), Format::Protobuf, frame.len() + 16);
    let Some(SocketFrame::Record(SocketRecord::Proto(record))) = reader.read_frame().expect("our own frame reads") else { panic!("our own frame is no record") };
    let got: Vec<Value> = record
        .values()
        .map(|v| match v.expect("our own values decode") {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Integer(i) => Value::from(i),
            Scalar::Number(f) => Value::from(f),
            Scalar::String(s) => Value::String(s.to_owned()),
            other => panic!("an unexpected kind of value: {}", std::any::type_name_of_val(&other)),
        })
        .collect();
    assert_eq!(got, expected);
}

/// A Quartz expression and a time zone: parsing never panics; fire times
/// only go forward; EventBridge's form of an expression that converts
/// parses again.
pub fn cron(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (expression, zone) = text.split_once('\n').unwrap_or((&text, "UTC"));
    let _ = sluice_domain::to_eventbridge(expression);
    let Ok(schedule) = sluice_domain::CronSchedule::new(expression, zone.trim()) else { return };
    let _ = schedule.fires_on_whole_minutes();
    let mut at = jiff::Timestamp::from_second(1_700_000_000).unwrap();
    for _ in 0..5 {
        let Some(next) = schedule.next_after(at) else { break };
        assert!(next > at, "{expression} in {zone}: the next fire time {next} is not after {at}");
        at = next;
    }
}

/// A spec and a config: validation never panics; splitting out the
/// secrets and restoring them gives the config back; masking leaves no
/// secret value in sight.
pub fn config_secrets(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (spec, config) = text.split_once('\n').unwrap_or((&text, "{}"));
    let (Ok(spec), Ok(config)) = (serde_json::from_str::<Value>(spec), serde_json::from_str::<Value>(config)) else { return };
    let _ = sluice_domain::config::validate(&spec, &config);
    let mut n = 0;
    let (stripped, secrets) = sluice_domain::config::split_secrets(&spec, &config, |_| {
        n += 1;
        format!("ref-{n}")
    });
    let masked = sluice_domain::config::mask(&spec, &config);
    if secrets.iter().any(|(_, s)| s == sluice_domain::config::MASK) || contains_mask_or_ref(&config) {
        // A config that already holds masks or references is not a plain one to round trip.
        return;
    }
    let restored = sluice_domain::config::restore(&stripped, None, &mut |id| secrets.iter().find(|(r, _)| r == id).map(|(_, s)| s.clone()))
        .unwrap_or_else(|e| panic!("restoring what was just split failed: {e}"));
    assert_eq!(normalize_secrets(&restored), normalize_secrets(&config), "split then restore changed the config");
    for (_, secret) in &secrets {
        if secret.len() >= 8 {
            assert!(!masked.to_string().contains(&serde_json::to_string(secret).unwrap()), "the masked config shows a secret");
        }
    }
}

fn contains_mask_or_ref(v: &Value) -> bool {
    match v {
        Value::String(s) => s == sluice_domain::config::MASK,
        Value::Object(o) => o.contains_key("_secret") || o.values().any(contains_mask_or_ref),
        Value::Array(a) => a.iter().any(contains_mask_or_ref),
        _ => false,
    }
}

/// Secrets come back as strings (a secret number is kept as its text), so
/// compare with every scalar as text.
fn normalize_secrets(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), normalize_secrets(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(normalize_secrets).collect()),
        Value::String(s) => Value::String(s.clone()),
        other => Value::String(other.to_string()),
    }
}

/// Our SigV4 signature of any request equals the AWS SDK's (aws-sigv4).
pub fn sigv4(data: &[u8]) {
    use sluice_orchestrator::aws_iam::{sign, Credentials, Request};
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (method, target, body) = (parts.next().unwrap_or("GET"), parts.next().unwrap_or("/"), parts.next().unwrap_or(""));
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || !target.starts_with('/') {
        return;
    }
    let url = format!("https://api.example.com{target}");
    // Only what both take: an http URI (the SDK refuses others).
    let Ok(uri) = url.parse::<axum::http::Uri>() else { return };
    let credentials = Credentials { access_key_id: "AKIDEXAMPLE".into(), secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(), session_token: None, expires_at: None };
    let now = 1_440_938_160;
    let Ok(ours) = sign(&Request { method, url: &uri.to_string(), body: body.as_bytes() }, &credentials, "us-east-1", "execute-api", now) else { return };
    let ours = ours.iter().find(|(n, _)| *n == "authorization").map(|(_, v)| v.rsplit("Signature=").next().unwrap_or("").to_owned()).unwrap_or_default();

    let identity = aws_credential_types::Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None, None, "fuzz").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("execute-api")
        .time(std::time::UNIX_EPOCH + Duration::from_secs(now as u64))
        .settings(aws_sigv4::http_request::SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = [("host", "api.example.com")];
    let Ok(request) = aws_sigv4::http_request::SignableRequest::new(method, uri.to_string(), headers.into_iter(), aws_sigv4::http_request::SignableBody::Bytes(body.as_bytes())) else { return };
    let Ok(theirs) = aws_sigv4::http_request::sign(request, &params) else { return };
    assert_eq!(ours, theirs.signature(), "{method} {target}: our signature differs from the SDK's");
}

/// The seeds of a target: the files under `fuzz/seeds/<target>/`.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = seeds_dir().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

pub fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds")
}

/// What a short run did.
#[derive(Debug)]
pub struct ShortRun {
    pub executions: u64,
    /// The input that broke a property, and the panic's message.
    pub crash: Option<(Vec<u8>, String)>,
}

/// Runs `target` on each seed, then on mutations of them, for `budget`.
/// A small mutator (byte flips, inserts, deletes, splices, tokens from the
/// seeds): no coverage guidance, which is what `fuzz/run` adds.
pub fn short_run(target: Target, seeds: &[Vec<u8>], budget: Duration, seed: u64) -> ShortRun {
    let started = Instant::now();
    let mut random = seed | 1;
    let mut next = move || {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random
    };
    let mut executions = 0;
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut run = |input: &[u8]| -> Option<(Vec<u8>, String)> {
        executions += 1;
        std::panic::catch_unwind(AssertUnwindSafe(|| target(input))).err().map(|e| {
            let why = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            (input.to_vec(), why)
        })
    };
    let mut crash = seeds.iter().find_map(|s| run(s));
    let pool: Vec<Vec<u8>> = if seeds.is_empty() { vec![Vec::new()] } else { seeds.to_vec() };
    while crash.is_none() && started.elapsed() < budget {
        let mut input = pool[next() as usize % pool.len()].clone();
        for _ in 0..1 + next() % 4 {
            let at = if input.is_empty() { 0 } else { next() as usize % input.len() };
            match next() % 6 {
                0 if !input.is_empty() => input[at] ^= 1 << (next() % 8),
                1 => input.insert(at, next() as u8),
                2 if !input.is_empty() => {
                    input.remove(at);
                }
                3 => {
                    // A piece of another seed, spliced in.
                    let other = &pool[next() as usize % pool.len()];
                    if !other.is_empty() {
                        let from = next() as usize % other.len();
                        let len = (next() as usize % 32).min(other.len() - from);
                        input.splice(at..at, other[from..from + len].iter().copied());
                    }
                }
                4 if !input.is_empty() => input.truncate(at),
                _ => {
                    let interesting = [0u8, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'}', b'[', b'\n', b'*', b'?', b'-', b'/', b'%'];
                    input.insert(at, interesting[next() as usize % interesting.len()]);
                }
            }
        }
        crash = run(&input);
    }
    std::panic::set_hook(hook);
    ShortRun { executions, crash }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each target for a moment on its seeds and their mutations; a crash
    /// prints its input, to add as a seed once fixed.
    #[test]
    fn every_target_holds_on_its_seeds_and_a_short_run() {
        let budget = Duration::from_millis(std::env::var("SLUICE_FUZZ_MILLIS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500));
        let mut failures = Vec::new();
        for (name, target) in TARGETS {
            let seeds = seeds(name);
            assert!(!seeds.is_empty(), "no seeds for {name} under {}", seeds_dir().display());
            let run = short_run(*target, &seeds, budget, 0x5eed ^ name.len() as u64);
            eprintln!("fuzz {name}: {} executions", run.executions);
            if let Some((input, why)) = run.crash {
                failures.push(format!("{name}: {why}\n  input: {:?}", String::from_utf8_lossy(&input)));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
