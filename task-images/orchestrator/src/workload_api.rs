//! Reporting to the platform's workload API: heartbeats with progress (the
//! answer may tell us to stop), committed state, CONTROL configs, and the
//! attempt's end. The attempt log still goes to stderr, where the task's
//! log driver (a file locally, awslogs on ECS) collects it.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_protocol::{AirbyteStateMessage, LogLevel};

use crate::aws_iam::Signer;
use crate::ledger::StreamSummary;
use crate::report::{utc_now, Progress, Reporter};
use crate::{AttemptStatus, Outcome, Side};

/// How long the task goes on without a successful heartbeat before it
/// stops itself, as Airbyte's does: the platform has surely failed it by then.
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// One workload's routes on the workload API.
pub struct WorkloadApi {
    base: String,
    token: String,
    agent: ureq::Agent,
    signer: Option<Signer>,
}

/// One call to the workload API: `(status, body)`, or why no answer came.
/// `authorization` is ours (the workload's credential or the launch key);
/// when the call is signed for API Gateway's IAM auth, the signature takes
/// the Authorization header and ours moves to `X-Sluice-Authorization`.
pub fn call(agent: &ureq::Agent, signer: Option<&Signer>, method: &str, url: &str, authorization: &str, body: &str) -> Result<(u16, String), String> {
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    match signer {
        None => request = request.header("authorization", authorization),
        Some(signer) => {
            request = request.header("x-sluice-authorization", authorization);
            for (name, value) in signer.headers(method, url, body.as_bytes())? {
                request = request.header(name, value);
            }
        }
    }
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(body.to_owned()).map_err(|e| format!("{url}: {e}"))?;
    let mut response = agent.run(request).map_err(|e| format!("{url}: {e}"))?;
    let text = response.body_mut().read_to_string().map_err(|e| format!("{url}: {e}"))?;
    Ok((response.status().as_u16(), text))
}

impl WorkloadApi {
    /// `url` is the workload API's root, e.g. `http://127.0.0.1:8000/api/internal/v1`.
    pub fn new(url: &str, workload_id: &str, token: String, signer: Option<Signer>) -> Self {
        let config = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(30))).http_status_as_error(false).build();
        WorkloadApi { base: format!("{}/workloads/{workload_id}", url.trim_end_matches('/')), token, agent: config.into(), signer }
    }

    /// POSTs `body` to a route; retries transport errors and 5xx a few
    /// times, since losing a state commit to a blip would cost a re-sync.
    pub fn post(&self, route: &str, body: &Value) -> Result<Value, String> {
        let url = format!("{}/{route}", self.base);
        let mut pause = Duration::from_millis(250);
        let mut last_error = String::new();
        let (authorization, body) = (format!("Bearer {}", self.token), body.to_string());
        for _ in 0..4 {
            match call(&self.agent, self.signer.as_ref(), "POST", &url, &authorization, &body) {
                Ok((status, text)) => {
                    if (200..300).contains(&status) {
                        return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
                    }
                    last_error = format!("{url} answered {status}: {text}");
                    if status < 500 {
                        return Err(last_error);
                    }
                }
                Err(e) => last_error = e,
            }
            std::thread::sleep(pause);
            pause *= 2;
        }
        Err(last_error)
    }

    /// Reports the attempt's end: success, failure with its reason, or cancelled.
    pub fn report_end(&self, outcome: &Outcome) -> Result<(), String> {
        let (stats, streams) = counts(&outcome.streams);
        let mut body = json!({"stats": stats, "streams": streams});
        let route = match outcome.status {
            AttemptStatus::Succeeded => "success",
            AttemptStatus::Cancelled => "cancelled",
            AttemptStatus::Failed => {
                if let Some(f) = &outcome.failure {
                    let failure_type = f.failure_type.as_ref().map(|t| t.as_str().to_owned()).unwrap_or_else(|| format!("{:?}", f.kind));
                    body["failure"] = json!({"origin": f.side.to_string(), "type": failure_type, "message": f.to_string(), "stream": f.stream});
                }
                "failure"
            }
        };
        self.post(route, &body).map(|_| ())
    }
}

/// Totals and per-stream counts in the workload API's shape.
fn counts(streams: &[StreamSummary]) -> (Value, Vec<Value>) {
    let mut total = [0u64; 4];
    let per_stream = streams
        .iter()
        .map(|s| {
            let c = [s.emitted.records, s.emitted.bytes, s.committed.records, s.committed.bytes];
            for (t, v) in total.iter_mut().zip(c) {
                *t += v;
            }
            json!({"name": s.stream.name, "namespace": s.stream.namespace,
                   "recordsEmitted": c[0], "bytesEmitted": c[1], "recordsCommitted": c[2], "bytesCommitted": c[3]})
        })
        .collect();
    let stats = json!({"recordsEmitted": total[0], "bytesEmitted": total[1], "recordsCommitted": total[2], "bytesCommitted": total[3]});
    (stats, per_stream)
}

/// The reporter of a task run by the platform.
pub struct ApiReporter {
    pub api: WorkloadApi,
    pub log: Box<dyn Write + Send>,
    /// Set when the platform says stop (the job was cancelled).
    pub cancel: Arc<AtomicBool>,
    pub heartbeat_every: Duration,
    last_beat: Instant,
    last_success: Instant,
}

impl ApiReporter {
    pub fn new(api: WorkloadApi, log: Box<dyn Write + Send>, cancel: Arc<AtomicBool>, heartbeat_every: Duration) -> Self {
        let now = Instant::now();
        ApiReporter { api, log, cancel, heartbeat_every, last_beat: now, last_success: now }
    }

    fn note(&mut self, message: &str) {
        let _ = writeln!(self.log, "{} WARN  orchestrator: {message}", utc_now());
    }
}

impl Reporter for ApiReporter {
    fn log(&mut self, side: Side, connector: &str, level: &LogLevel, message: &str) {
        let _ = writeln!(self.log, "{} {level:<5} {side} {connector}: {message}", utc_now());
    }

    fn state_committed(&mut self, state: &[AirbyteStateMessage]) -> io::Result<()> {
        self.api.post("state", &json!({ "states": state })).map(|_| ()).map_err(io::Error::other)
    }

    fn config_updated(&mut self, side: Side, _connector: &str, config: &Value) -> io::Result<()> {
        self.api.post("config", &json!({"side": side.to_string(), "config": config})).map(|_| ()).map_err(io::Error::other)
    }

    fn progress(&mut self, progress: &Progress<'_>) {
        if self.last_beat.elapsed() < self.heartbeat_every {
            return;
        }
        self.last_beat = Instant::now();
        let (stats, streams) = counts(progress.streams);
        match self.api.post("heartbeat", &json!({"stats": stats, "streams": streams})) {
            Ok(answer) => {
                self.last_success = Instant::now();
                if answer["stop"] == true {
                    let why = answer["reason"].as_str().unwrap_or("the workload ended").to_owned();
                    self.note(&format!("the platform says stop: {why}"));
                    self.cancel.store(true, Ordering::SeqCst);
                }
            }
            Err(e) => {
                self.note(&format!("heartbeat failed: {e}"));
                if self.last_success.elapsed() > GIVE_UP_AFTER {
                    self.note("no heartbeat got through for 10 minutes: stopping");
                    self.cancel.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}
