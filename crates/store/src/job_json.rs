//! A job's attempts as JSON, as every adapter stores them (a column in
//! SQLite, an attribute in DynamoDB): domain types do not know how they are stored.

use jiff::Timestamp;
use serde_json::{json, Value};
use sluice_domain::{Attempt, AttemptStatus, FailureReason, StreamStats, SyncStats};

fn stats_to_json(s: &SyncStats) -> Value {
    json!([s.records_emitted, s.bytes_emitted, s.records_committed, s.bytes_committed])
}

fn stats_from_json(v: &Value) -> Result<SyncStats, String> {
    let n = |i: usize| v.get(i).and_then(Value::as_u64).ok_or_else(|| format!("stats field {i} missing"));
    Ok(SyncStats { records_emitted: n(0)?, bytes_emitted: n(1)?, records_committed: n(2)?, bytes_committed: n(3)? })
}

fn time(v: &Value) -> Result<Timestamp, String> {
    v.as_str().ok_or("timestamp missing")?.parse().map_err(|e: jiff::Error| e.to_string())
}

pub fn attempts_to_json(attempts: &[Attempt]) -> String {
    let rows: Vec<Value> = attempts
        .iter()
        .map(|a| {
            json!({
                "number": a.number,
                "status": a.status.as_str(),
                "started_at": a.started_at.to_string(),
                "ended_at": a.ended_at.map(|t| t.to_string()),
                "workload_id": a.workload_id,
                "stats": stats_to_json(&a.stats),
                "streams": a.streams.iter().map(|s| json!({"namespace": s.namespace, "name": s.name, "stats": stats_to_json(&s.stats)})).collect::<Vec<_>>(),
                "failure": a.failure.as_ref().map(|f| json!({"origin": f.origin, "failure_type": f.failure_type, "message": f.message, "stream": f.stream})),
                "data_channel": a.data_channel,
            })
        })
        .collect();
    Value::Array(rows).to_string()
}

pub fn attempts_from_json(text: &str) -> Result<Vec<Attempt>, String> {
    let rows: Vec<Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let string = |v: &Value, key: &str| v[key].as_str().map(String::from).ok_or_else(|| format!("attempt field {key} missing"));
    let optional = |v: &Value, key: &str| v[key].as_str().map(String::from);
    rows.iter()
        .map(|a| {
            let status = match a["status"].as_str() {
                Some("running") => AttemptStatus::Running,
                Some("failed") => AttemptStatus::Failed,
                Some("succeeded") => AttemptStatus::Succeeded,
                other => return Err(format!("unknown attempt status {other:?}")),
            };
            let streams = a["streams"]
                .as_array()
                .ok_or("attempt streams missing")?
                .iter()
                .map(|s| Ok(StreamStats { namespace: optional(s, "namespace"), name: string(s, "name")?, stats: stats_from_json(&s["stats"])? }))
                .collect::<Result<Vec<_>, String>>()?;
            let failure = match &a["failure"] {
                Value::Null => None,
                f => Some(FailureReason {
                    origin: string(f, "origin")?,
                    failure_type: string(f, "failure_type")?,
                    message: string(f, "message")?,
                    stream: optional(f, "stream"),
                }),
            };
            Ok(Attempt {
                number: a["number"].as_u64().ok_or("attempt number missing")? as u32,
                status,
                started_at: time(&a["started_at"])?,
                ended_at: match &a["ended_at"] {
                    Value::Null => None,
                    t => Some(time(t)?),
                },
                workload_id: string(a, "workload_id")?,
                stats: stats_from_json(&a["stats"])?,
                streams,
                failure,
                // Absent in attempts stored before socket mode.
                data_channel: match &a["data_channel"] {
                    Value::Null => None,
                    v => Some(serde_json::from_value(v.clone()).map_err(|e| format!("attempt data_channel: {e}"))?),
                },
            })
        })
        .collect()
}
