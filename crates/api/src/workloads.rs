//! The workload API: what a running task calls about its own workload.
//! Every route takes the workload's credential as a bearer token, and a
//! credential opens only the workload it was made for. Behind API Gateway's
//! IAM auth the Authorization header carries the task role's signature,
//! and ours comes in `X-Sluice-Authorization` instead.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_domain::resources::{ActorKind, ConnectionState, Definition};
use sluice_domain::{FailureReason, StreamStats, SyncStats, Version, Workload, WorkloadEvent, WorkloadStatus, WorkloadType};
use sluice_platform::{workload_event, AttemptEnd, PlatformError};
use sluice_store::{Doc, DocKind, StoreError};

use crate::extract::JsonBody;
use crate::{now, ApiResult, App, Problem};

type AppState = State<Arc<App>>;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/workloads/{id}", get(status))
        .route("/workloads/{id}/claim", post(claim))
        .route("/workloads/{id}/launched", post(launched))
        .route("/workloads/{id}/running", post(running))
        .route("/workloads/{id}/heartbeat", post(heartbeat))
        .route("/workloads/{id}/state", post(commit_state))
        .route("/workloads/{id}/output", post(output))
        .route("/workloads/{id}/config", post(config_update))
        .route("/workloads/{id}/files", get(task_files))
        .route("/workloads/{id}/logs", post(logs))
        .route("/workloads/{id}/success", post(success))
        .route("/workloads/{id}/failure", post(failure))
        .route("/workloads/{id}/cancelled", post(cancelled))
}

/// Our authorization value: `X-Sluice-Authorization` when the call was
/// signed for API Gateway, otherwise `Authorization`.
fn our_authorization<'h>(headers: &'h HeaderMap, scheme: &str) -> Option<&'h str> {
    let value = headers.get("x-sluice-authorization").or_else(|| headers.get(header::AUTHORIZATION))?;
    value.to_str().ok()?.strip_prefix(scheme)
}

/// The workload, if the request carries its credential.
async fn authorized(app: &App, id: &str, headers: &HeaderMap) -> ApiResult<Workload> {
    let token = our_authorization(headers, "Bearer ");
    let Some(token) = token else { return Err(Problem::unauthorized("workload routes need the workload's credential as a bearer token, in Authorization or, on a signed call, X-Sluice-Authorization")) };
    if !app.keys.check_workload_token(id, token.trim()) {
        return Err(Problem::unauthorized(format!("this credential is not workload {id}'s")));
    }
    Ok(app.workloads.get_workload(id).await?)
}

fn workload_json(w: &Workload) -> Value {
    json!({"id": w.id, "type": w.kind.as_str(), "status": w.status.as_str(), "reason": w.reason, "deadline": w.deadline.to_string(), "taskRef": w.task_ref})
}

async fn apply(app: &App, id: &str, event: WorkloadEvent) -> ApiResult<Json<Value>> {
    let w = workload_event(&app.ports(), id, &event, now()).await?;
    Ok(Json(workload_json(&w)))
}

async fn status(State(app): AppState, Path(id): Path<String>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    Ok(Json(workload_json(&authorized(&app, &id, &headers).await?)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Claim {
    launcher_id: String,
}

async fn claim(State(app): AppState, Path(id): Path<String>, headers: HeaderMap, JsonBody(body): JsonBody<Claim>) -> ApiResult<Json<Value>> {
    authorized(&app, &id, &headers).await?;
    apply(&app, &id, WorkloadEvent::Claim { by: body.launcher_id }).await
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Launched {
    #[serde(default)]
    task_ref: Option<String>,
}

async fn launched(State(app): AppState, Path(id): Path<String>, headers: HeaderMap, JsonBody(body): JsonBody<Launched>) -> ApiResult<Json<Value>> {
    authorized(&app, &id, &headers).await?;
    apply(&app, &id, WorkloadEvent::Launched { task_ref: body.task_ref }).await
}

async fn running(State(app): AppState, Path(id): Path<String>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    authorized(&app, &id, &headers).await?;
    apply(&app, &id, WorkloadEvent::Running).await
}

/// Counts as the orchestrator reports them.
#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct Stats {
    pub records_emitted: u64,
    pub bytes_emitted: u64,
    pub records_committed: u64,
    pub bytes_committed: u64,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct StreamCounts {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(flatten)]
    pub stats: Stats,
}

impl From<&Stats> for SyncStats {
    fn from(s: &Stats) -> Self {
        SyncStats { records_emitted: s.records_emitted, bytes_emitted: s.bytes_emitted, records_committed: s.records_committed, bytes_committed: s.bytes_committed }
    }
}

fn stream_stats(streams: &[StreamCounts]) -> Vec<StreamStats> {
    streams.iter().map(|s| StreamStats { namespace: s.namespace.clone(), name: s.name.clone(), stats: (&s.stats).into() }).collect()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Progress {
    stats: Option<Stats>,
    streams: Vec<StreamCounts>,
}

/// Keeps the workload alive and records progress; the answer tells the task
/// whether to stop (its workload was cancelled or failed meanwhile).
async fn heartbeat(State(app): AppState, Path(id): Path<String>, headers: HeaderMap, JsonBody(body): JsonBody<Progress>) -> ApiResult<Json<Value>> {
    let w = authorized(&app, &id, &headers).await?;
    if w.status.is_terminal() {
        return Ok(Json(json!({"status": w.status.as_str(), "stop": true, "reason": w.reason})));
    }
    let w = workload_event(&app.ports(), &id, &WorkloadEvent::Heartbeat, now()).await?;
    if let (Some(stats), Some(job_id)) = (&body.stats, job_of(&w)) {
        // Progress is advisory: a count lost to contention comes again with the next heartbeat.
        match sluice_platform::record_progress(&app.ports(), job_id, &w.id, stats.into(), stream_stats(&body.streams), now()).await {
            Ok(_) | Err(PlatformError::Contended(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(json!({"status": w.status.as_str(), "stop": false})))
}

fn job_of(w: &Workload) -> Option<i64> {
    w.job_attempt().map(|(job, _)| job)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateCommit {
    states: Vec<Value>,
}

/// The destination echoed these states: the connection resumes from them.
/// Only the connection's active sync workload may move its state.
async fn commit_state(State(app): AppState, Path(id): Path<String>, headers: HeaderMap, JsonBody(body): JsonBody<StateCommit>) -> ApiResult<StatusCode> {
    let w = authorized(&app, &id, &headers).await?;
    if w.kind != WorkloadType::Sync || w.status.is_terminal() {
        return Err(Problem::conflict(format!("workload {id} is {}: it can no longer commit state", w.status.as_str())));
    }
    let connection_id = w.mutex_key.clone().ok_or_else(|| Problem::conflict(format!("workload {id} belongs to no connection")))?;
    save_state(&app, &connection_id, body.states).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces a connection's committed state (an empty list clears it),
/// keeping its stream generations.
pub async fn save_state(app: &App, connection_id: &str, states: Vec<Value>) -> ApiResult<()> {
    update_state(app, connection_id, |state| state.states = states.clone()).await
}

/// Stores a connection's whole state record: states and generations.
pub async fn save_connection_state(app: &App, next: &ConnectionState) -> ApiResult<()> {
    update_state(app, &next.connection_id, |state| *state = next.clone()).await
}

async fn update_state(app: &App, connection_id: &str, change: impl Fn(&mut ConnectionState)) -> ApiResult<()> {
    for _ in 0..5 {
        let result = match app.config.get_doc(DocKind::State, connection_id).await {
            Ok(doc) => {
                let mut state: ConnectionState = serde_json::from_value(doc.body.clone())
                    .map_err(|e| Problem::unavailable(format!("the state of connection {connection_id} is unreadable: {e}")))?;
                change(&mut state);
                app.config.update_doc(DocKind::State, &Doc { body: serde_json::to_value(&state).expect("plain data"), ..doc }).await
            }
            Err(StoreError::NotFound { .. }) => {
                let mut state = ConnectionState { connection_id: connection_id.to_owned(), ..Default::default() };
                change(&mut state);
                let body = serde_json::to_value(&state).expect("plain data");
                app.config.insert_doc(DocKind::State, &Doc { id: connection_id.to_owned(), workspace_id: None, body, version: Version::INITIAL }).await
            }
            Err(e) => return Err(e.into()),
        };
        match result {
            Err(StoreError::Conflict { .. } | StoreError::Duplicate { .. }) => continue,
            other => {
                other?;
                return Ok(());
            }
        }
    }
    Err(Problem::conflict(format!("the state of connection {connection_id} kept changing; try again")))
}

/// What a spec, check or discover workload found.
async fn output(State(app): AppState, Path(id): Path<String>, headers: HeaderMap, JsonBody(body): JsonBody<Value>) -> ApiResult<StatusCode> {
    let w = authorized(&app, &id, &headers).await?;
    if w.status.is_terminal() {
        return Err(Problem::conflict(format!("workload {id} is {}", w.status.as_str())));
    }
    store_output(&app, &w, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stores a spec, check or discover workload's output, once, and keeps
/// what it teaches (a source's catalog, a definition's spec) right away:
/// a request that stopped waiting for it finds it when asked again.
pub async fn store_output(app: &App, w: &Workload, body: Value) -> ApiResult<()> {
    let doc = Doc { id: w.id.clone(), workspace_id: None, body, version: Version::INITIAL };
    match app.config.insert_doc(DocKind::Output, &doc).await {
        Ok(_) => {}
        Err(StoreError::Duplicate { .. }) => return Err(Problem::conflict(format!("workload {} already has an output", w.id))),
        Err(e) => return Err(e.into()),
    }
    crate::config::connectors::remember_answer(app, w, &doc.body).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLines {
    text: String,
}

async fn logs(State(app): AppState, Path(id): Path<String>, headers: HeaderMap, JsonBody(body): JsonBody<LogLines>) -> ApiResult<StatusCode> {
    let w = authorized(&app, &id, &headers).await?;
    let Some((job_id, attempt)) = w.job_attempt() else {
        return Err(Problem::conflict(format!("workload {id} has no attempt log")));
    };
    app.logs.append(job_id, attempt, &body.text).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct End {
    stats: Stats,
    streams: Vec<StreamCounts>,
    failure: Option<Failure>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Failure {
    origin: String,
    #[serde(rename = "type")]
    failure_type: String,
    message: String,
    #[serde(default)]
    stream: Option<String>,
}

/// Ends the workload and, for a sync, its attempt: the job then succeeds,
/// retries or fails by the retry policy.
async fn end(app: &App, id: &str, headers: &HeaderMap, event: WorkloadEvent, body: End) -> ApiResult<Json<Value>> {
    authorized(app, id, headers).await?;
    let w = workload_event(&app.ports(), id, &event, now()).await?;
    if let Some(job_id) = job_of(&w) {
        let (stats, streams) = ((&body.stats).into(), stream_stats(&body.streams));
        let attempt_end = match (&event, body.failure) {
            (WorkloadEvent::Succeed, _) => AttemptEnd::Succeeded { stats, streams },
            (_, failure) => {
                let failure = failure.map(|f| FailureReason { origin: f.origin, failure_type: f.failure_type, message: f.message, stream: f.stream });
                let failure = failure.unwrap_or_else(|| FailureReason {
                    origin: "platform".into(),
                    failure_type: "system_error".into(),
                    message: w.reason.clone().unwrap_or_else(|| "the task ended without saying why".into()),
                    stream: None,
                });
                AttemptEnd::Failed { failure, stats, streams }
            }
        };
        // A cancelled job stays cancelled; the attempt's end changes nothing then.
        match sluice_platform::finish_attempt(&app.ports(), job_id, id, &attempt_end, &app.settings.retry, now()).await {
            Ok(job) => {
                if let (sluice_domain::JobStatus::Incomplete, Some(at)) = (job.status, job.retry_at) {
                    app.schedules.retry_at(job.id, job.attempts.len(), at).await?;
                }
            }
            Err(PlatformError::Transition(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // A retry may be due at once, or a slot free for queued work.
    app.work_queued.notify_one();
    Ok(Json(workload_json(&w)))
}

async fn success(State(app): AppState, Path(id): Path<String>, headers: HeaderMap, JsonBody(body): JsonBody<End>) -> ApiResult<Json<Value>> {
    end(&app, &id, &headers, WorkloadEvent::Succeed, body).await
}

async fn failure(State(app): AppState, Path(id): Path<String>, headers: HeaderMap, JsonBody(body): JsonBody<End>) -> ApiResult<Json<Value>> {
    let reason = body.failure.as_ref().map(|f| f.message.clone()).unwrap_or_else(|| "the task failed".into());
    end(&app, &id, &headers, WorkloadEvent::Fail { reason }, body).await
}

async fn cancelled(State(app): AppState, Path(id): Path<String>, headers: HeaderMap, JsonBody(body): JsonBody<End>) -> ApiResult<Json<Value>> {
    end(&app, &id, &headers, WorkloadEvent::Cancel { reason: "the task was stopped".into() }, body).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigUpdate {
    side: String,
    config: Value,
}

/// A connector replaced its configuration (a CONTROL message, e.g. a
/// refreshed OAuth token): keep it, secrets split out as on any write.
async fn config_update(State(app): AppState, Path(id): Path<String>, headers: HeaderMap, JsonBody(mut body): JsonBody<ConfigUpdate>) -> ApiResult<StatusCode> {
    let w = authorized(&app, &id, &headers).await?;
    if w.status.is_terminal() {
        return Err(Problem::conflict(format!("workload {id} is {}", w.status.as_str())));
    }
    let connection_id = w.mutex_key.clone().ok_or_else(|| Problem::conflict(format!("workload {id} belongs to no connection")))?;
    let (connection, _) = crate::config::connections::connection(&app, &connection_id).await?;
    let (kind, actor_id) = match body.side.as_str() {
        "source" => (ActorKind::Source, connection.source_id),
        "destination" => (ActorKind::Destination, connection.destination_id),
        other => return Err(Problem::bad_field("side", format!("`{other}` is not source or destination"))),
    };
    let (mut actor, version) = crate::config::actors::actor(&app, kind, &actor_id).await?;
    let (definition, _) = crate::config::load::<Definition>(&app, DocKind::Definition, &actor.definition_id).await?;
    // The declarative runner echoes the manifest the platform injected
    // (config migrations rewrite the whole config): it is the definition's, not the user's.
    if definition.declarative_manifest.is_some() {
        sluice_domain::registry::strip_injected(&mut body.config);
    }
    let spec = definition.connection_specification.unwrap_or(json!({}));
    let old_refs = sluice_domain::config::secret_refs(&actor.configuration);
    actor.configuration = crate::config::actors::store_config(&app, &actor_id, &spec, &body.config).await?;
    let doc = crate::config::doc(&actor_id, Some(&actor.workspace_id), &actor, version);
    app.config.update_doc(crate::config::actors::doc_kind(kind), &doc).await?;
    crate::config::actors::delete_secrets(&app, old_refs).await;
    Ok(StatusCode::NO_CONTENT)
}

fn task_files_setting(workload_id: &str) -> String {
    format!("task-files:{workload_id}")
}

/// Keeps a task's files (its configs, with secrets, and its credential) in
/// the secrets port until the task's init step fetches them, once.
pub async fn stash_task_files(app: &App, workload_id: &str, files: &std::collections::BTreeMap<String, String>) -> ApiResult<()> {
    let reference = app.secrets.put_secret(&format!("task-files/{workload_id}"), &serde_json::to_string(files).expect("strings")).await?;
    let doc = Doc { id: task_files_setting(workload_id), workspace_id: None, body: json!({"secret": reference}), version: Version::INITIAL };
    app.config.insert_doc(DocKind::Setting, &doc).await?;
    Ok(())
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// A task's init step fetches its files with the launch key: once, while
/// the workload is being launched; the stash is gone afterwards.
async fn task_files(State(app): AppState, Path(id): Path<String>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let Some(expected) = &app.launch_key else {
        return Err(Problem::unauthorized("this platform hands no files to tasks"));
    };
    let given = our_authorization(&headers, "Launch ").unwrap_or("");
    if !same(given.trim().as_bytes(), expected.as_bytes()) {
        return Err(Problem::unauthorized("task files need `Authorization: Launch <launch key>` (or, on a signed call, `X-Sluice-Authorization: Launch <launch key>`)"));
    }
    let w = app.workloads.get_workload(&id).await?;
    if !matches!(w.status, WorkloadStatus::Claimed | WorkloadStatus::Launched) {
        return Err(Problem::conflict(format!("workload {id} is {}: its files are handed out only while it is launched", w.status.as_str())));
    }
    let doc = app.config.get_doc(DocKind::Setting, &task_files_setting(&id)).await.map_err(|e| match e {
        StoreError::NotFound { .. } => Problem::not_found("task files of workload", &id),
        other => other.into(),
    })?;
    let reference = doc.body["secret"].as_str().unwrap_or_default().to_owned();
    // Only the first fetch wins the delete; a second gets a conflict.
    app.config.delete_doc(DocKind::Setting, &doc.id, doc.version).await?;
    let text = app.secrets.get_secret(&reference).await?;
    let _ = app.secrets.delete_secret(&reference).await;
    let files: Value = serde_json::from_str(&text).map_err(|e| Problem::unavailable(format!("the stashed files of workload {id} are unreadable: {e}")))?;
    Ok(Json(json!({ "files": files })))
}
