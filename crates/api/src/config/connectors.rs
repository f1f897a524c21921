//! Asking a connector something (spec, check, discover) through a workload,
//! as the platform runs everything: the request queues it, a launcher runs
//! it, and the request waits for its output.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};
use sluice_domain::resources::{Definition, ActorKind};
use sluice_domain::{Version, Workload, WorkloadType};
use sluice_protocol::AirbyteCatalog;
use sluice_store::{DocKind, StoreError};

use super::{doc, load, new_id};
use crate::{now, ApiResult, App, Problem};

/// Queues a `kind` workload with `input`, waits for it to end, and returns
/// its output, or a problem with the connector's own explanation.
///
/// Requests that ask the same question (`key`: the definition's spec, the
/// source's catalog) while one is running wait for that one's answer.
pub async fn run(app: &App, kind: WorkloadType, input: Value, key: &str) -> ApiResult<Value> {
    run_waiting(app, kind, input, key, app.settings.connector_timeout).await
}

/// [`run`], waiting at most `wait` for the answer.
pub async fn run_waiting(app: &App, kind: WorkloadType, input: Value, key: &str, wait: Duration) -> ApiResult<Value> {
    let key = format!("{}:{key}", kind.as_str());
    let id = match app.workloads.active_workloads(&key).await?.into_iter().next() {
        Some(running) => running.id,
        None => {
            let id = format!("{}_{}", kind.as_str(), new_id());
            let workload = Workload::new(id.clone(), kind, Some(key), input.to_string(), now());
            app.workloads.insert_workload(&workload).await?;
            app.queue.enqueue(&id, now()).await?;
            app.work_queued.notify_one();
            id
        }
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(20);
    loop {
        let current = app.workloads.get_workload(&id).await?;
        if current.status.is_terminal() {
            let output = match app.config.get_doc(DocKind::Output, &id).await {
                Ok(doc) => Some(doc.body),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            return match (current.status, output) {
                (sluice_domain::WorkloadStatus::Success, Some(output)) => Ok(output),
                (_, output) => {
                    let why = output
                        .as_ref()
                        .and_then(|o| o["message"].as_str().map(str::to_owned))
                        .or(current.reason)
                        .unwrap_or_else(|| "no reason given".into());
                    Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Connector failed", format!("{} failed: {why}", kind.as_str())))
                }
            };
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "Connector timed out",
                format!(
                    "{} workload {id} has not finished after {:?}; it goes on, and asking again waits for it or finds its answer (is a launcher running?)",
                    kind.as_str(),
                    wait
                ),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// The definition's `connectionSpecification`, learnt from the connector's
/// `spec` the first time it is needed and kept on the definition.
pub async fn spec(app: &App, definition: &Definition) -> ApiResult<Value> {
    if let Some(spec) = &definition.connection_specification {
        return Ok(spec.clone());
    }
    let output = run(app, WorkloadType::Spec, json!({"definitionId": definition.id}), &definition.id).await?;
    let spec = output["spec"]["connectionSpecification"].clone();
    if !spec.is_object() {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Connector failed", format!("{} gave a spec without connectionSpecification", definition.name)));
    }
    Ok(spec)
}

/// The source's catalog: the cached one, or a new discover.
pub async fn catalog(app: &App, source_id: &str, ignore_cache: bool) -> ApiResult<AirbyteCatalog> {
    if !ignore_cache {
        match app.config.get_doc(DocKind::Catalog, source_id).await {
            Ok(doc) => return parse_catalog(doc.body["catalog"].clone()),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let output = run(app, WorkloadType::Discover, json!({"sourceId": source_id}), source_id).await?;
    parse_catalog(output["catalog"].clone())
}

/// The source's cached catalog if it was discovered at or after `since`.
pub async fn catalog_since(app: &App, source_id: &str, since: jiff::Timestamp) -> ApiResult<Option<AirbyteCatalog>> {
    let doc = match app.config.get_doc(DocKind::Catalog, source_id).await {
        Ok(doc) => doc,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let at: Option<jiff::Timestamp> = doc.body["discoveredAt"].as_str().and_then(|t| t.parse().ok());
    match at {
        Some(at) if at >= since => Ok(Some(parse_catalog(doc.body["catalog"].clone())?)),
        _ => Ok(None),
    }
}

/// Discovers the source's catalog now, waiting at most `wait`; the answer
/// also becomes the source's cached catalog.
pub async fn discover_now(app: &App, source_id: &str, wait: Duration) -> ApiResult<AirbyteCatalog> {
    let output = run_waiting(app, WorkloadType::Discover, json!({"sourceId": source_id}), source_id, wait).await?;
    parse_catalog(output["catalog"].clone())
}

/// Keeps what a spec or discover answered, whoever asked: the spec (and
/// its IPC options) on the definition, the catalog as the source's cached
/// one. Concurrent learners write the same, so a lost race is fine.
pub async fn remember_answer(app: &App, w: &Workload, output: &Value) -> ApiResult<()> {
    let input: Value = serde_json::from_str(&w.input).unwrap_or(Value::Null);
    match w.kind {
        WorkloadType::Spec if output["spec"]["connectionSpecification"].is_object() => {
            let Some(id) = input["definitionId"].as_str() else { return Ok(()) };
            if let Ok((mut stored, version)) = load::<Definition>(app, DocKind::Definition, id).await {
                stored.connection_specification = Some(output["spec"]["connectionSpecification"].clone());
                stored.connector_ipc_options = stored.connector_ipc_options.or_else(|| output["spec"].get("connectorIPCOptions").cloned());
                let _ = app.config.update_doc(DocKind::Definition, &doc(id, stored.workspace_id.as_deref(), &stored, version)).await;
            }
        }
        WorkloadType::Discover if output["catalog"].is_object() => {
            let Some(source_id) = input["sourceId"].as_str() else { return Ok(()) };
            let body = json!({"catalog": output["catalog"], "discoveredAt": now().to_string()});
            let cached = sluice_store::Doc { id: source_id.to_owned(), workspace_id: None, body, version: Version::INITIAL };
            match app.config.get_doc(DocKind::Catalog, source_id).await {
                Ok(old) => {
                    let _ = app.config.update_doc(DocKind::Catalog, &sluice_store::Doc { version: old.version, ..cached }).await;
                }
                Err(StoreError::NotFound { .. }) => {
                    let _ = app.config.insert_doc(DocKind::Catalog, &cached).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        _ => {}
    }
    Ok(())
}

fn parse_catalog(value: Value) -> ApiResult<AirbyteCatalog> {
    serde_json::from_value(value).map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Connector failed", format!("the source's catalog is unreadable: {e}")))
}

/// Runs the connector's `check` on a stored source or destination.
pub async fn check(app: &App, kind: ActorKind, actor_id: &str) -> ApiResult<Value> {
    let output = run(app, WorkloadType::Check, json!({"actorKind": kind.as_str(), "actorId": actor_id}), actor_id).await?;
    Ok(output["connectionStatus"].clone())
}
