//! Schema change detection for connections, as Airbyte's platform does it:
//! each connection keeps the catalog it was configured from; before a sync
//! (at most once per `schema_refresh`) and whenever asked, the source is
//! discovered again, diffed against it, and the connection's
//! `nonBreakingSchemaUpdatesBehavior` decides what is applied. A breaking
//! change disables the connection whatever the setting.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use jiff::Timestamp;
use serde_json::{json, Value};
use sluice_domain::resources::Connection;
use sluice_domain::{ConnectionStatus, Job, Version};
use sluice_platform::schema::{self, Behavior, Outcome, SchemaChange};
use sluice_protocol::AirbyteCatalog;
use sluice_store::{Doc, DocKind, JobEvent, JobEventKind, StoreError};

use super::connections::{connection, connection_json};
use super::{connectors, doc, AppState};
use crate::{now, ApiResult, App, Problem};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/connections/{id}/schema", get(get_schema))
        .route("/connections/{id}/schema/refresh", post(refresh_schema))
}

/// The catalog a connection runs on, kept beside it (a catalog document
/// keyed by the connection's id), with when it was last checked and the
/// change found then and not applied.
#[derive(Debug, Clone)]
pub struct ConnectionCatalog {
    pub catalog: AirbyteCatalog,
    pub checked_at: Timestamp,
    pub pending: Option<Value>,
    version: Version,
}

pub async fn connection_catalog(app: &App, connection_id: &str) -> ApiResult<Option<ConnectionCatalog>> {
    let doc = match app.config.get_doc(DocKind::Catalog, connection_id).await {
        Ok(doc) => doc,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let catalog = serde_json::from_value(doc.body["catalog"].clone())
        .map_err(|e| Problem::unavailable(format!("the catalog of connection {connection_id} is unreadable: {e}")))?;
    let checked_at = doc.body["checkedAt"].as_str().and_then(|t| t.parse().ok()).unwrap_or(Timestamp::UNIX_EPOCH);
    let pending = doc.body.get("catalogDiff").filter(|d| !d.is_null()).cloned();
    Ok(Some(ConnectionCatalog { catalog, checked_at, pending, version: doc.version }))
}

async fn save_catalog(app: &App, connection_id: &str, catalog: &AirbyteCatalog, pending: Option<&Value>, previous: Option<Version>) -> ApiResult<()> {
    let body = json!({"catalog": catalog, "checkedAt": now().to_string(), "catalogDiff": pending});
    let stored = Doc { id: connection_id.to_owned(), workspace_id: None, body, version: previous.unwrap_or(Version::INITIAL) };
    match previous {
        Some(_) => app.config.update_doc(DocKind::Catalog, &stored).await?,
        None => app.config.insert_doc(DocKind::Catalog, &stored).await?,
    };
    Ok(())
}

/// The connection now runs on the source's current catalog (it was just
/// created or its streams were just set against it): nothing is pending.
pub async fn adopt_source_catalog(app: &App, c: &Connection) -> ApiResult<AirbyteCatalog> {
    let catalog = connectors::catalog(app, &c.source_id, false).await?;
    let previous = connection_catalog(app, &c.connection_id).await?.map(|k| k.version);
    save_catalog(app, &c.connection_id, &catalog, None, previous).await?;
    Ok(catalog)
}

/// What a schema check found and did.
#[derive(Debug, Clone)]
pub struct Checked {
    pub connection: Connection,
    pub catalog: AirbyteCatalog,
    pub change: SchemaChange,
    pub diff: Value,
    /// `unchanged`, `applied`, `pending` or `disabled`.
    pub action: &'static str,
    pub disabled: Option<String>,
}

/// Discovers the source again (unless its catalog was discovered at or
/// after `fresh_since`) and applies the connection's setting to what
/// changed. `job`: the sync it runs before, named in the event if the
/// connection is disabled.
pub async fn check(app: &App, connection_id: &str, job: Option<&Job>, fresh_since: Option<Timestamp>) -> ApiResult<Checked> {
    let (c, _) = connection(app, connection_id).await?;
    let cached = match fresh_since {
        Some(since) => connectors::catalog_since(app, &c.source_id, since).await?,
        None => None,
    };
    let new = match cached {
        Some(catalog) => catalog,
        // On Lambda the wait ends before a Fargate task may answer: the
        // discover goes on, and the attempt's retry finds its answer.
        None => connectors::discover_now(app, &c.source_id, app.settings.connector_timeout).await?,
    };
    let stored = connection_catalog(app, connection_id).await?;
    let old = match &stored {
        Some(k) => k.catalog.clone(),
        // Never checked (configured before connections kept their catalog): a baseline.
        None => new.clone(),
    };
    let diff = schema::diff(&old, &new, &c.streams);
    let change = diff.change();
    let diff_json = serde_json::to_value(&diff).expect("plain data");
    let outcome = schema::apply(&diff, Behavior::parse(&c.non_breaking_schema_updates_behavior), &old, &new, &c.streams);
    let previous = stored.as_ref().map(|k| k.version);
    let (action, catalog, disabled) = match &outcome {
        Outcome::Unchanged { catalog } => ("unchanged", catalog.clone(), None),
        Outcome::Applied { catalog, .. } => ("applied", catalog.clone(), None),
        Outcome::Pending => ("pending", old.clone(), None),
        Outcome::Disabled { reason } => ("disabled", old.clone(), Some(reason.clone())),
    };
    let pending = matches!(outcome, Outcome::Pending | Outcome::Disabled { .. }).then_some(&diff_json);
    save_catalog(app, connection_id, &catalog, pending, previous).await?;
    let connection = update_connection(app, connection_id, &outcome, change).await?;
    if let Some(reason) = &disabled {
        let event = JobEvent { kind: JobEventKind::ConnectionDisabled, connection_id: connection_id.to_owned(), job: job.cloned(), reason: Some(reason.clone()) };
        app.events.publish(event).await;
    }
    Ok(Checked { connection, catalog, change, diff: diff_json, action, disabled })
}

/// Writes what the outcome changes on the connection: its streams, its
/// status, its `schemaChange`; a lost race is read again.
async fn update_connection(app: &App, id: &str, outcome: &Outcome, change: SchemaChange) -> ApiResult<Connection> {
    for _ in 0..5 {
        let (mut c, version) = connection(app, id).await?;
        match outcome {
            Outcome::Applied { streams, .. } => {
                c.streams = streams.clone();
                c.schema_change = SchemaChange::NoChange.as_str().into();
            }
            Outcome::Unchanged { .. } => c.schema_change = SchemaChange::NoChange.as_str().into(),
            Outcome::Pending => c.schema_change = change.as_str().into(),
            Outcome::Disabled { .. } => {
                c.schema_change = change.as_str().into();
                if c.status == ConnectionStatus::Active {
                    c.status = ConnectionStatus::Inactive;
                }
            }
        }
        match app.config.update_doc(DocKind::Connection, &doc(id, Some(&c.workspace_id), &c, version)).await {
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {
                if matches!(outcome, Outcome::Disabled { .. }) {
                    app.schedules.delete_schedule(id).await?;
                }
                return Ok(c);
            }
        }
    }
    Err(Problem::unavailable(format!("connection {id} kept changing; try again")))
}

/// Before a sync: the connection and the catalog it syncs with, checked
/// first when its last check is older than `schema_refresh` and the job
/// reads the source (a sync or a refresh). `Err` with
/// the reason when the check disabled the connection.
pub async fn before_sync(app: &App, c: Connection, job: &Job) -> ApiResult<Result<(Connection, AirbyteCatalog), String>> {
    let Some(stored) = connection_catalog(app, &c.connection_id).await? else {
        // Configured before connections kept their catalog: it was
        // configured against the source's cached one, which it adopts.
        let catalog = adopt_source_catalog(app, &c).await?;
        return Ok(Ok((c, catalog)));
    };
    let refresh = jiff::SignedDuration::try_from(app.settings.schema_refresh).unwrap_or(jiff::SignedDuration::MAX);
    let oldest_fresh = now().checked_sub(refresh).unwrap_or(Timestamp::MIN);
    // A reset or clear reads nothing from the source: its schema can wait.
    let reads = matches!(job.job_type, sluice_domain::JobType::Sync | sluice_domain::JobType::Refresh);
    if stored.checked_at > oldest_fresh || !reads {
        return Ok(Ok((c, stored.catalog)));
    }
    // A discover newer than both the last check and the refresh window
    // (another connection's check, or an earlier attempt's) is fresh enough.
    let fresh_since = stored.checked_at.max(oldest_fresh);
    let checked = check(app, &c.connection_id, Some(job), Some(fresh_since)).await?;
    Ok(match checked.disabled {
        Some(reason) => Err(reason),
        None => Ok((checked.connection, checked.catalog)),
    })
}

fn schema_json(c: &Connection, stored: Option<&ConnectionCatalog>) -> Value {
    json!({
        "connectionId": c.connection_id,
        "schemaChange": c.schema_change,
        "catalogDiff": stored.and_then(|k| k.pending.clone()).unwrap_or(json!({"transforms": []})),
        "checkedAt": stored.map(|k| k.checked_at.to_string()),
        "nonBreakingSchemaUpdatesBehavior": c.non_breaking_schema_updates_behavior,
        "status": c.status.as_str(),
    })
}

/// `GET /connections/{id}/schema`: the connection's `schemaChange` and the
/// change found at its last check that was not applied.
async fn get_schema(State(app): AppState, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let (c, _) = connection(&app, &id).await?;
    let stored = connection_catalog(&app, &id).await?;
    Ok(Json(schema_json(&c, stored.as_ref())))
}

/// `POST /connections/{id}/schema/refresh`: checks now, as a sync would.
async fn refresh_schema(State(app): AppState, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let (c, _) = connection(&app, &id).await?;
    if c.status == ConnectionStatus::Deprecated {
        return Err(Problem::conflict(format!("connection {id} is deleted")));
    }
    let checked = check(&app, &id, None, None).await?;
    let mut out = schema_json(&checked.connection, None);
    out["catalogDiff"] = checked.diff;
    out["schemaChange"] = json!(checked.change.as_str());
    out["action"] = json!(checked.action);
    out["disabledReason"] = json!(checked.disabled);
    out["connection"] = connection_json(&checked.connection);
    Ok(Json(out))
}

/// The status a connection may be given back: not active while a breaking
/// change is unresolved (set its streams against the new schema first).
pub fn may_activate(c: &Connection) -> ApiResult<()> {
    if c.schema_change == SchemaChange::Breaking.as_str() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "connection {} has a breaking schema change (see GET /connections/{}/schema); set its streams (configurations) against the source's new schema, then enable it",
                c.connection_id, c.connection_id
            ),
        ));
    }
    Ok(())
}
