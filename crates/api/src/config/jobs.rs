//! Jobs: start (sync, reset, clear, refresh), read, list, cancel; and our
//! additions, a job's attempts and their logs.

use std::sync::Arc;

use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_domain::{Job, JobStatus, JobType};
use sluice_platform::PlatformError;
use sluice_store::{JobFilter, StoreError};

use super::connections::connection;
use super::{list_body, page, require_uuid, AppState};
use crate::extract::{JsonBody, Params};
use crate::{now, ApiResult, App, Problem};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/jobs", get(list_jobs).post(create_job))
        .route("/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/jobs/{id}/attempts", get(attempts))
        .route("/jobs/{id}/attempts/{attempt}/logs", get(logs))
}

/// ISO 8601, as the API reports durations: `PT1M5S`, `PT0S`.
pub fn iso_duration(d: SignedDuration) -> String {
    let total = d.as_secs().max(0);
    let (h, m, s) = (total / 3600, total % 3600 / 60, total % 60);
    let mut out = String::from("PT");
    if h > 0 {
        out.push_str(&format!("{h}H"));
    }
    if m > 0 {
        out.push_str(&format!("{m}M"));
    }
    if s > 0 || (h == 0 && m == 0) {
        out.push_str(&format!("{s}S"));
    }
    out
}

pub(crate) fn job_json(job: &Job) -> Value {
    let (rows, bytes) = job.total_committed();
    json!({
        "jobId": job.id,
        "status": job.status.as_str(),
        "jobType": job.job_type.as_str(),
        "startTime": job.created_at.to_string(),
        "connectionId": job.connection_id,
        "lastUpdatedAt": job.updated_at.to_string(),
        "duration": iso_duration(job.duration()),
        "bytesSynced": bytes,
        "rowsSynced": rows,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JobCreate {
    connection_id: String,
    job_type: String,
    /// Ours: the streams a reset, clear or refresh concerns (all if empty).
    #[serde(default)]
    streams: Vec<String>,
}

async fn create_job(State(app): AppState, JsonBody(body): JsonBody<JobCreate>) -> ApiResult<Json<Value>> {
    require_uuid("connectionId", &body.connection_id)?;
    let job_type = JobType::parse(&body.job_type)
        .ok_or_else(|| Problem::bad_field("jobType", format!("`{}` is not one of sync, reset, clear, refresh", body.job_type)))?;
    let (c, _) = connection(&app, &body.connection_id).await.map_err(|p| {
        if p.status == StatusCode::NOT_FOUND { Problem::bad_field("connectionId", format!("no connection {}", body.connection_id)) } else { p }
    })?;
    if !c.status.can_run_jobs() {
        return Err(Problem::conflict(format!("connection {} is {}: only active connections run jobs", c.connection_id, c.status.as_str())));
    }
    for (i, name) in body.streams.iter().enumerate() {
        if !c.streams.iter().any(|s| &s.name == name) {
            return Err(Problem::bad_field(format!("streams[{i}]"), format!("the connection has no stream `{name}`")));
        }
    }
    let job = start(&app, &c.connection_id, job_type, body.streams).await?;
    Ok(Json(job_json(&job)))
}

/// Starts a job and wakes the launcher; a running job is a 409 naming it.
pub async fn start(app: &App, connection_id: &str, job_type: JobType, streams: Vec<String>) -> ApiResult<Job> {
    match sluice_platform::start_job(&app.ports(), connection_id, job_type, streams, now()).await {
        Ok(job) => {
            app.work_queued.notify_one();
            Ok(job)
        }
        Err(PlatformError::Store(StoreError::JobRunning { connection_id, job_id })) => {
            Err(Problem::conflict(format!("a sync is already running for connection {connection_id}: job {job_id}; cancel it or wait for it to end")))
        }
        Err(e) => Err(e.into()),
    }
}

fn job_id(text: &str) -> ApiResult<i64> {
    text.parse().map_err(|_| Problem::bad_field("jobId", format!("`{text}` is not an integer job id")))
}

async fn get_job(State(app): AppState, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(job_json(&app.jobs.get_job(job_id(&id)?).await?)))
}

async fn cancel_job(State(app): AppState, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let job = sluice_platform::cancel_job(&app.ports(), job_id(&id)?, now()).await?;
    Ok(Json(job_json(&job)))
}

fn timestamp(params: &Params, name: &str) -> ApiResult<Option<Timestamp>> {
    params
        .get(name)
        .map(|t| t.parse::<Timestamp>().map_err(|_| Problem::bad_field(name, format!("`{t}` is not an RFC 3339 timestamp, e.g. 2026-01-01T00:00:00Z"))))
        .transpose()
}

async fn list_jobs(State(app): AppState, params: Params, headers: HeaderMap, uri: OriginalUri) -> ApiResult<Json<Value>> {
    let (limit, offset) = page(&params)?;
    let status = params
        .get("status")
        .map(|s| JobStatus::parse(s).ok_or_else(|| Problem::bad_field("status", format!("`{s}` is not a job status"))))
        .transpose()?;
    let job_type = params
        .get("jobType")
        .map(|s| JobType::parse(s).ok_or_else(|| Problem::bad_field("jobType", format!("`{s}` is not one of sync, reset, clear, refresh"))))
        .transpose()?;
    let oldest_first = match params.get("orderBy") {
        None => false,
        Some(order) => match order.split_once('|') {
            Some(("createdAt" | "updatedAt", "ASC")) => true,
            Some(("createdAt" | "updatedAt", "DESC")) => false,
            _ => return Err(Problem::bad_field("orderBy", format!("`{order}` is not `createdAt|ASC` or `createdAt|DESC`"))),
        },
    };
    let connection_id = params.get("connectionId").map(str::to_owned);
    if let Some(id) = &connection_id {
        require_uuid("connectionId", id)?;
    }
    let mut filter = JobFilter {
        connection_id,
        status,
        job_type,
        created_at_start: timestamp(&params, "createdAtStart")?,
        created_at_end: timestamp(&params, "createdAtEnd")?,
        limit,
        offset,
        oldest_first,
    };
    let workspaces = params.all("workspaceIds");
    let jobs = if workspaces.is_empty() {
        app.jobs.list_jobs(&filter).await?
    } else {
        // Jobs know their connection only: keep those of the workspaces' connections.
        filter.limit = usize::MAX / 2;
        filter.offset = 0;
        let connections = app.config.list_docs(sluice_store::DocKind::Connection, &workspaces, 100_000, 0).await?;
        let ids: std::collections::HashSet<String> = connections.into_iter().map(|d| d.id).collect();
        app.jobs.list_jobs(&filter).await?.into_iter().filter(|j| ids.contains(&j.connection_id)).skip(offset).take(limit).collect()
    };
    Ok(list_body(&headers, &uri, jobs.iter().map(job_json).collect(), limit, offset))
}

async fn attempts(State(app): AppState, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let job = app.jobs.get_job(job_id(&id)?).await?;
    let attempts: Vec<Value> = job
        .attempts
        .iter()
        .map(|a| {
            json!({
                "attempt": a.number,
                "status": a.status.as_str(),
                "startedAt": a.started_at.to_string(),
                "endedAt": a.ended_at.map(|t| t.to_string()),
                "recordsEmitted": a.stats.records_emitted,
                "bytesEmitted": a.stats.bytes_emitted,
                "recordsCommitted": a.stats.records_committed,
                "bytesCommitted": a.stats.bytes_committed,
                "streams": a.streams.iter().map(|s| json!({
                    "name": s.name, "namespace": s.namespace,
                    "recordsEmitted": s.stats.records_emitted, "recordsCommitted": s.stats.records_committed,
                    "bytesEmitted": s.stats.bytes_emitted, "bytesCommitted": s.stats.bytes_committed,
                })).collect::<Vec<_>>(),
                "failure": a.failure.as_ref().map(|f| json!({
                    "origin": f.origin, "type": f.failure_type, "message": f.message, "stream": f.stream,
                })),
                "dataChannel": a.data_channel,
            })
        })
        .collect();
    Ok(Json(json!({"jobId": job.id, "status": job.status.as_str(), "attempts": attempts})))
}

/// A slice of an attempt's log from `offset`, for following it as it grows.
async fn logs(State(app): AppState, Path((id, attempt)): Path<(String, String)>, params: Params) -> ApiResult<Json<Value>> {
    let job = app.jobs.get_job(job_id(&id)?).await?;
    let attempt: u32 = attempt.parse().map_err(|_| Problem::bad_field("attempt", format!("`{attempt}` is not an attempt number")))?;
    let Some(a) = job.attempts.get(attempt as usize) else {
        return Err(Problem::not_found("attempt", &format!("{attempt} of job {}", job.id)));
    };
    let offset = params.int("offset", 0, 0, i64::MAX / 2)? as u64;
    let (text, next) = app.logs.read(job.id, attempt, offset, 1 << 20).await?;
    Ok(Json(json!({"text": text, "nextOffset": next, "attemptStatus": a.status.as_str(), "jobStatus": job.status.as_str()})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_iso_8601() {
        assert_eq!(iso_duration(SignedDuration::from_secs(0)), "PT0S");
        assert_eq!(iso_duration(SignedDuration::from_secs(65)), "PT1M5S");
        assert_eq!(iso_duration(SignedDuration::from_secs(7200)), "PT2H");
    }
}
