//! A connector's one-answer commands: `spec`, `check` and `discover`.
//!
//! [`answer_or_reason`] reads the answer out of a connector's stdout, for
//! every executor. [`ask`] is the orchestrator container's part in a task that
//! asks such a question on ECS: the connector runs in its own container on
//! the shared volume's pipes, and this reads its output, keeps the workload
//! alive with heartbeats, and reports the answer (or why there is none) to
//! the workload API.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_protocol::AirbyteMessage;

use crate::config::{ConnectorConfig, Launch};
use crate::connector;
use crate::workload_api::WorkloadApi;

/// Which command was asked, and so which message answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    Spec,
    Check,
    Discover,
}

impl Question {
    pub fn parse(text: &str) -> Option<Question> {
        match text {
            "spec" => Some(Question::Spec),
            "check" => Some(Question::Check),
            "discover" => Some(Question::Discover),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Question::Spec => "spec",
            Question::Check => "check",
            Question::Discover => "discover",
        }
    }
}

/// The answer on a connector's stdout, as the platform stores it
/// (`{"spec": ...}`, `{"connectionStatus": ...}`, `{"catalog": ...}`), and
/// the TRACE errors it reported before (or instead of) answering.
fn find_answer(question: Question, stdout: &[u8]) -> (Option<Value>, Vec<String>) {
    let mut errors = Vec::new();
    for line in stdout.split(|&b| b == b'\n').filter(|l| !l.trim_ascii().is_empty()) {
        let Ok(message) = serde_json::from_slice::<AirbyteMessage>(line) else { continue };
        let found = match question {
            Question::Spec => message.spec.map(|s| json!({"spec": s})),
            Question::Check => message.connection_status.map(|s| json!({"connectionStatus": s})),
            Question::Discover => message.catalog.map(|c| json!({"catalog": c})),
        };
        if found.is_some() {
            return (found, errors);
        }
        if let Some(error) = message.trace.and_then(|t| t.error) {
            errors.push(error.message);
        }
    }
    (None, errors)
}

/// The answer to store, or the message saying why there is none.
pub fn answer_or_reason(question: Question, name: &str, stdout: &[u8], stderr_tail: &str, exit: &str) -> Result<Value, String> {
    let (found, errors) = find_answer(question, stdout);
    found.ok_or_else(|| {
        let why = if errors.is_empty() { stderr_tail.to_owned() } else { errors.join("; ") };
        format!("{name} {} gave no answer ({exit}): {why}", question.as_str())
    })
}

/// A catalog of thousands of streams is tens of megabytes; past this the
/// connector is not answering but flooding.
const MAX_OUTPUT: u64 = 256 << 20;
const STDERR_TAIL_LINES: usize = 10;

/// Runs on the task's orchestrator container: attaches to the connector
/// through `dir`'s pipes, and reports its answer to the workload API.
/// Returns whether the connector answered.
pub fn ask(question: Question, name: &str, dir: &Path, api: WorkloadApi, heartbeat_every: Duration) -> Result<bool, String> {
    api.post("running", &json!({}))?;
    let connector = ConnectorConfig { name: name.to_owned(), launch: Launch::Attach { dir: dir.to_path_buf() }, config: Value::Null };
    let running = connector::start(&connector, question.as_str(), &[], false).map_err(|e| e.to_string())?;
    let api = Arc::new(api);
    let done = Arc::new(AtomicBool::new(false));

    // While it works: heartbeats, and a stop when the platform says so.
    let beats = {
        let (api, done, stopper) = (api.clone(), done.clone(), running.stopper.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                std::thread::park_timeout(heartbeat_every);
                if done.load(Ordering::SeqCst) {
                    break;
                }
                match api.post("heartbeat", &json!({})) {
                    Ok(answer) if answer["stop"] == true => {
                        sluice_protocol::say!("orchestrator: the platform says stop: {}", answer["reason"].as_str().unwrap_or("the workload ended"));
                        stopper.terminate();
                    }
                    Ok(_) => {}
                    Err(e) => sluice_protocol::say!("orchestrator: heartbeat failed: {e}"),
                }
            }
        })
    };
    // Its log goes on to ours (the task's log), and its tail into the reason of a failure.
    let stderr = {
        let name = name.to_owned();
        let source = running.stderr;
        std::thread::spawn(move || {
            let mut tail = std::collections::VecDeque::new();
            for line in BufReader::new(source).lines().map_while(Result::ok) {
                let _ = writeln!(std::io::stderr(), "{name}: {line}");
                tail.push_back(line);
                if tail.len() > STDERR_TAIL_LINES {
                    tail.pop_front();
                }
            }
            Vec::from(tail).join(" | ")
        })
    };
    let mut stdout = Vec::new();
    let read = running.stdout.take(MAX_OUTPUT + 1).read_to_end(&mut stdout);
    let flooded = stdout.len() as u64 > MAX_OUTPUT;
    if flooded {
        running.stopper.kill();
    }
    let exit = running.exit.wait();
    done.store(true, Ordering::SeqCst);
    beats.thread().unpark();
    let _ = beats.join();
    let tail = stderr.join().unwrap_or_default();

    let answer = match read {
        Err(e) => Err(format!("reading {name}'s output: {e}")),
        Ok(_) if flooded => Err(format!("{name} {} printed more than {} MiB without an answer", question.as_str(), MAX_OUTPUT >> 20)),
        Ok(_) => answer_or_reason(question, name, &stdout, &tail, &exit.to_string()),
    };
    match answer {
        Ok(body) => {
            api.post("output", &body)?;
            api.post("success", &json!({}))?;
            Ok(true)
        }
        Err(message) => {
            sluice_protocol::say!("orchestrator: {message}");
            api.post("output", &json!({"message": message}))?;
            api.post("failure", &json!({"failure": {"origin": "connector", "type": "system_error", "message": message}}))?;
            Ok(false)
        }
    }
}
