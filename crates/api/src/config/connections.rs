//! Connections: a source, a destination, the streams between them and when
//! they sync. Streams are checked against the source's catalog on write, so
//! a sync never starts with a configuration the source cannot serve.

use std::sync::Arc;

use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use sluice_domain::channel::ChannelSetting;
use serde_json::{json, Value};
use sluice_domain::resources::{ActorKind, Connection, ScheduleConfig, StreamConfiguration};
use sluice_domain::{ConnectionStatus, Schedule, Version};
use sluice_store::DocKind;

use super::actors::actor;
use super::{connectors, doc, list_body, load, new_id, page, require_uuid, AppState};
use crate::extract::{JsonBody, Params};
use crate::{now, ApiResult, App, Problem};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/connections", get(list_connections).post(create_connection))
        .route("/connections/{id}", get(get_connection).patch(update_connection).delete(delete_connection))
        .route("/connections/{id}/state", get(get_state))
}

pub(crate) fn connection_json(c: &Connection) -> Value {
    json!({
        "connectionId": c.connection_id,
        "name": c.name,
        "sourceId": c.source_id,
        "destinationId": c.destination_id,
        "workspaceId": c.workspace_id,
        "status": c.status.as_str(),
        "schedule": c.schedule,
        "dataResidency": "auto",
        "namespaceDefinition": c.namespace_definition,
        "namespaceFormat": c.namespace_format,
        "prefix": c.prefix,
        "nonBreakingSchemaUpdatesBehavior": c.non_breaking_schema_updates_behavior,
        "configurations": { "streams": c.streams },
        "createdAt": c.created_at,
        "tags": [],
        "dataChannel": c.data_channel,
        "schemaChange": c.schema_change,
    })
}

pub async fn connection(app: &App, id: &str) -> ApiResult<(Connection, Version)> {
    load(app, DocKind::Connection, id).await
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StreamConfigurations {
    #[serde(default)]
    streams: Vec<StreamConfiguration>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConnectionCreate {
    source_id: String,
    destination_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    configurations: Option<StreamConfigurations>,
    #[serde(default)]
    schedule: Option<ScheduleConfig>,
    #[serde(default)]
    data_residency: Option<String>,
    #[serde(default)]
    namespace_definition: Option<String>,
    #[serde(default)]
    namespace_format: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    non_breaking_schema_updates_behavior: Option<String>,
    #[serde(default)]
    tags: Option<Value>,
    #[serde(default)]
    data_channel: Option<ChannelSetting>,
}

const NAMESPACE_DEFINITIONS: [&str; 3] = ["source", "destination", "custom_format"];
const SCHEMA_BEHAVIORS: [&str; 4] = ["ignore", "disable_connection", "propagate_columns", "propagate_fully"];

fn one_of(field: &str, value: &str, allowed: &[&str]) -> ApiResult<()> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(Problem::bad_field(field, format!("`{value}` is not one of {}", allowed.join(", "))))
    }
}

fn status(text: &str) -> ApiResult<ConnectionStatus> {
    ConnectionStatus::parse(text).ok_or_else(|| Problem::bad_field("status", format!("`{text}` is not one of active, inactive, deprecated")))
}

fn schedule(config: &ScheduleConfig) -> ApiResult<Schedule> {
    config.schedule().map_err(|e| Problem::bad_field(if config.cron_expression.is_some() { "schedule.cronExpression" } else { "schedule" }, e))
}

/// Checks the streams against the source's catalog (discovering it if
/// needed); no streams given means every stream with its defaults.
async fn checked_streams(app: &App, source_id: &str, streams: Vec<StreamConfiguration>) -> ApiResult<Vec<StreamConfiguration>> {
    let catalog = connectors::catalog(app, source_id, false).await?;
    let streams = if streams.is_empty() { sluice_platform::catalog::default_streams(&catalog) } else { streams };
    sluice_platform::catalog::configure(&streams, &catalog).map_err(|errors| Problem {
        status: StatusCode::BAD_REQUEST,
        title: "Invalid stream configuration",
        detail: errors.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "),
        fields: errors,
    })?;
    Ok(streams)
}

/// The schedule, if this platform's schedules port can run it.
fn runnable(app: &App, config: &ScheduleConfig) -> ApiResult<()> {
    if let Schedule::Cron(cron) = schedule(config)? {
        if let Some(why) = app.schedules.refuse(&cron) {
            return Err(Problem::bad_field("schedule.cronExpression", why));
        }
    }
    Ok(())
}

/// Keeps the schedules port in step with a connection.
async fn sync_schedule(app: &App, c: &Connection) -> ApiResult<()> {
    match (c.status, schedule(&c.schedule)?) {
        (ConnectionStatus::Active, Schedule::Cron(cron)) => app.schedules.put_schedule(&c.connection_id, &cron).await?,
        _ => app.schedules.delete_schedule(&c.connection_id).await?,
    }
    Ok(())
}

async fn create_connection(State(app): AppState, JsonBody(body): JsonBody<ConnectionCreate>) -> ApiResult<Json<Value>> {
    require_uuid("sourceId", &body.source_id)?;
    require_uuid("destinationId", &body.destination_id)?;
    let missing = |field: &'static str, id: String| move |p: Problem| if p.status == StatusCode::NOT_FOUND { Problem::bad_field(field, format!("no such {field}: {id}")) } else { p };
    let (source, _) = actor(&app, ActorKind::Source, &body.source_id).await.map_err(missing("sourceId", body.source_id.clone()))?;
    let (destination, _) = actor(&app, ActorKind::Destination, &body.destination_id).await.map_err(missing("destinationId", body.destination_id.clone()))?;
    if source.workspace_id != destination.workspace_id {
        return Err(Problem::bad_field("destinationId", "the source and the destination are in different workspaces"));
    }
    let schedule_config = body.schedule.unwrap_or_else(ScheduleConfig::manual);
    runnable(&app, &schedule_config)?;
    let namespace_definition = body.namespace_definition.unwrap_or_else(|| "destination".into());
    one_of("namespaceDefinition", &namespace_definition, &NAMESPACE_DEFINITIONS)?;
    let behavior = body.non_breaking_schema_updates_behavior.unwrap_or_else(|| "ignore".into());
    one_of("nonBreakingSchemaUpdatesBehavior", &behavior, &SCHEMA_BEHAVIORS)?;
    let status = status(body.status.as_deref().unwrap_or("active"))?;
    if let Some(name) = &body.name {
        super::check_name("name", name)?;
    }
    let _ = (body.data_residency, body.tags);
    let streams = checked_streams(&app, &source.id, body.configurations.unwrap_or_default().streams).await?;
    let connection = Connection {
        connection_id: new_id(),
        name: body.name.unwrap_or_else(|| format!("{} → {}", source.name, destination.name)),
        workspace_id: source.workspace_id.clone(),
        source_id: source.id,
        destination_id: destination.id,
        streams,
        schedule: schedule_config,
        status,
        namespace_definition,
        namespace_format: body.namespace_format,
        prefix: body.prefix.unwrap_or_default(),
        non_breaking_schema_updates_behavior: behavior,
        created_at: now().as_second(),
        data_channel: checked_channel(body.data_channel.unwrap_or_default())?,
        schema_change: "no_change".into(),
    };
    app.config.insert_doc(DocKind::Connection, &doc(&connection.connection_id, Some(&connection.workspace_id), &connection, Version::INITIAL)).await?;
    super::schema::adopt_source_catalog(&app, &connection).await?;
    sync_schedule(&app, &connection).await?;
    Ok(Json(connection_json(&connection)))
}

async fn list_connections(State(app): AppState, params: Params, headers: HeaderMap, uri: OriginalUri) -> ApiResult<Json<Value>> {
    let (limit, offset) = page(&params)?;
    let include_deleted = params.bool("includeDeleted")?;
    let workspaces = params.all("workspaceIds");
    // Deprecated connections are skipped unless asked for, so page over the kept ones.
    let mut data = Vec::new();
    let mut skipped = 0;
    let mut cursor = 0;
    loop {
        let page_size = (offset + limit).clamp(1, 200);
        let docs = app.config.list_docs(DocKind::Connection, &workspaces, page_size, cursor).await?;
        cursor += docs.len();
        for d in &docs {
            let c = Connection::deserialize(&d.body).map_err(|e| Problem::unavailable(format!("connection {} is unreadable: {e}", d.id)))?;
            if c.status == ConnectionStatus::Deprecated && !include_deleted {
                continue;
            }
            if skipped < offset {
                skipped += 1;
                continue;
            }
            if data.len() < limit {
                data.push(connection_json(&c));
            }
        }
        if docs.len() < page_size || data.len() >= limit {
            break;
        }
    }
    Ok(list_body(&headers, &uri, data, limit, offset))
}

async fn get_connection(State(app): AppState, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(connection_json(&connection(&app, &id).await?.0)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConnectionUpdate {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    configurations: Option<StreamConfigurations>,
    #[serde(default)]
    schedule: Option<ScheduleConfig>,
    #[serde(default)]
    data_residency: Option<String>,
    #[serde(default)]
    namespace_definition: Option<String>,
    #[serde(default)]
    namespace_format: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    non_breaking_schema_updates_behavior: Option<String>,
    #[serde(default)]
    tags: Option<Value>,
    #[serde(default)]
    data_channel: Option<ChannelSetting>,
}

fn checked_channel(setting: ChannelSetting) -> ApiResult<ChannelSetting> {
    setting.check().map_err(|e| Problem::bad_field("dataChannel.socketCount", e))?;
    Ok(setting)
}

async fn update_connection(State(app): AppState, Path(id): Path<String>, JsonBody(body): JsonBody<ConnectionUpdate>) -> ApiResult<Json<Value>> {
    let (mut c, version) = connection(&app, &id).await?;
    if let Some(name) = body.name {
        super::check_name("name", &name)?;
        c.name = name;
    }
    if let Some(config) = body.schedule {
        runnable(&app, &config)?;
        c.schedule = config;
    }
    if let Some(ns) = body.namespace_definition {
        one_of("namespaceDefinition", &ns, &NAMESPACE_DEFINITIONS)?;
        c.namespace_definition = ns;
    }
    if let Some(format) = body.namespace_format {
        c.namespace_format = Some(format);
    }
    if let Some(prefix) = body.prefix {
        c.prefix = prefix;
    }
    if let Some(behavior) = body.non_breaking_schema_updates_behavior {
        one_of("nonBreakingSchemaUpdatesBehavior", &behavior, &SCHEMA_BEHAVIORS)?;
        c.non_breaking_schema_updates_behavior = behavior;
    }
    // Streams set now are set against the source's current schema: any
    // change found earlier is thereby reviewed.
    let streams_set = body.configurations.is_some();
    if let Some(configurations) = body.configurations {
        c.streams = checked_streams(&app, &c.source_id, configurations.streams).await?;
        c.schema_change = "no_change".into();
    }
    if let Some(text) = body.status {
        let wanted = status(&text)?;
        if wanted == ConnectionStatus::Active && c.status != ConnectionStatus::Active {
            super::schema::may_activate(&c)?;
        }
        c.status = c.status.change_to(wanted, &id).map_err(|e| Problem::conflict(e.to_string()))?;
    }
    if let Some(setting) = body.data_channel {
        c.data_channel = checked_channel(setting)?;
    }
    let _ = (body.data_residency, body.tags);
    app.config.update_doc(DocKind::Connection, &doc(&id, Some(&c.workspace_id), &c, version)).await?;
    if streams_set {
        super::schema::adopt_source_catalog(&app, &c).await?;
    }
    sync_schedule(&app, &c).await?;
    Ok(Json(connection_json(&c)))
}

/// Airbyte keeps a deleted connection's history: it becomes deprecated.
async fn delete_connection(State(app): AppState, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let (mut c, version) = connection(&app, &id).await?;
    c.status = ConnectionStatus::Deprecated;
    app.config.update_doc(DocKind::Connection, &doc(&id, Some(&c.workspace_id), &c, version)).await?;
    app.schedules.delete_schedule(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ours: the state the connection resumes from (what its destination last echoed).
async fn get_state(State(app): AppState, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    connection(&app, &id).await?;
    let states = match load::<sluice_domain::resources::ConnectionState>(&app, DocKind::State, &id).await {
        Ok((state, _)) => state.states,
        Err(p) if p.status == StatusCode::NOT_FOUND => Vec::new(),
        Err(p) => return Err(p),
    };
    Ok(Json(json!({"connectionId": id, "states": states})))
}
