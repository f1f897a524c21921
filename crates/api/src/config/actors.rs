//! Sources and destinations: one code path, two names. Configs are checked
//! against the connector's spec; secrets go to the secrets port and never
//! into a document or a response.

use std::sync::Arc;

use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_domain::config::{map_refs, mask, restore, secret_refs, split_secrets, validate, MASK, SECRET_REF_KEY};
use sluice_domain::resources::{Actor, ActorKind, Connection, Definition};
use sluice_domain::{ConnectionStatus, Version};
use sluice_store::DocKind;

use super::connectors;
use super::{definition, definitions, doc, list_body, load, new_id, page, require_uuid, workspace, AppState};
use crate::extract::{JsonBody, Params};
use crate::{now, ApiResult, App, Problem};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/sources", get(list_sources).post(create_source))
        .route("/sources/{id}", get(get_source).patch(patch_source).put(put_source).delete(delete_source))
        .route("/sources/{id}/check", post(check_source))
        .route("/destinations", get(list_destinations).post(create_destination))
        .route("/destinations/{id}", get(get_destination).patch(patch_destination).put(put_destination).delete(delete_destination))
        .route("/destinations/{id}/check", post(check_destination))
        .route("/streams", get(streams))
}

pub(crate) fn doc_kind(kind: ActorKind) -> DocKind {
    match kind {
        ActorKind::Source => DocKind::Source,
        ActorKind::Destination => DocKind::Destination,
    }
}

fn id_key(kind: ActorKind) -> &'static str {
    match kind {
        ActorKind::Source => "sourceId",
        ActorKind::Destination => "destinationId",
    }
}

/// The response: the config masked, with the type key the SDK reads back.
async fn actor_json(app: &App, actor: &Actor) -> ApiResult<Value> {
    let (definition, _) = load::<Definition>(app, DocKind::Definition, &actor.definition_id).await?;
    let spec = definition.connection_specification.clone().unwrap_or(json!({}));
    let mut configuration = mask(&spec, &actor.configuration);
    // A reference left by a spec that changed since is a secret all the same.
    configuration = map_refs(configuration, &mut |_| Value::String(MASK.into()));
    if let Value::Object(fields) = &mut configuration {
        fields.insert(actor.kind.type_key().into(), Value::String(definition.type_key.clone()));
    }
    Ok(json!({
        id_key(actor.kind): actor.id,
        "name": actor.name,
        actor.kind.type_key(): definition.type_key,
        "definitionId": actor.definition_id,
        "workspaceId": actor.workspace_id,
        "configuration": configuration,
        "createdAt": actor.created_at,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ActorCreate {
    name: String,
    workspace_id: String,
    configuration: Value,
    #[serde(default)]
    definition_id: Option<String>,
    #[serde(default)]
    secret_id: Option<String>,
    #[serde(default)]
    resource_allocation: Option<Value>,
}

/// The definition a create request means: `definitionId`, or else the
/// `sourceType`/`destinationType` inside the configuration.
async fn resolve_definition(app: &App, kind: ActorKind, workspace_id: &str, id: Option<&str>, configuration: &Value) -> ApiResult<Definition> {
    if let Some(id) = id {
        require_uuid("definitionId", id)?;
        let (d, _) = definition(app, workspace_id, id).await.map_err(|p| {
            if p.status == StatusCode::NOT_FOUND { Problem::bad_field("definitionId", format!("no {} definition {id}", kind.as_str())) } else { p }
        })?;
        if d.kind != kind {
            return Err(Problem::bad_field("definitionId", format!("{id} is a {} definition, not a {} one", d.kind.as_str(), kind.as_str())));
        }
        return Ok(d);
    }
    let key = kind.type_key();
    let Some(type_name) = configuration.get(key).and_then(Value::as_str) else {
        return Err(Problem::bad_field("definitionId", format!("give `definitionId`, or `configuration.{key}` naming the connector")));
    };
    let all = definitions(app, workspace_id, kind).await?;
    let named: Vec<&Definition> = all.iter().filter(|d| d.type_key == type_name).collect();
    match named[..] {
        [one] => Ok(one.clone()),
        [] => {
            let known: Vec<&str> = all.iter().map(|d| d.type_key.as_str()).collect();
            Err(Problem::bad_field(format!("configuration.{key}"), format!("no {} definition is called `{type_name}`; known: {}", kind.as_str(), known.join(", "))))
        }
        // A registry import may bring a second connector of the same name.
        _ => {
            let ids: Vec<String> = named.iter().map(|d| format!("{} ({}, {})", d.id, d.name, d.runtime)).collect();
            Err(Problem::bad_field(format!("configuration.{key}"), format!("{} definitions are called `{type_name}`: {}; give `definitionId`", named.len(), ids.join(", "))))
        }
    }
}

/// Validates a plain config against the spec and stores its secrets;
/// returns the config with references where the secrets were.
pub(crate) async fn store_config(app: &App, actor_id: &str, spec: &Value, plain: &Value) -> ApiResult<Value> {
    // Connector Builder's way: the manifest travels in the config, and with
    // it the spec that says what the config must hold and what is secret.
    let manifest_spec = plain.get(sluice_domain::registry::INJECTED_MANIFEST).and_then(sluice_domain::registry::manifest_spec);
    for spec in std::iter::once(spec).chain(manifest_spec.as_ref()) {
        if let Err(violations) = validate(spec, plain) {
            let fields: Vec<(String, String)> = violations.iter().map(|v| (format!("configuration{}", v.path), v.message.clone())).collect();
            let detail = format!("the configuration does not match the connector's spec: {}", violations.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; "));
            return Err(Problem { status: StatusCode::BAD_REQUEST, title: "Invalid configuration", detail, fields });
        }
    }
    // `split_secrets` marks each secret with a hint; the store hands out the real reference.
    let (stripped, secrets) = split_secrets(manifest_spec.as_ref().unwrap_or(spec), plain, |path| format!("{actor_id}{path}"));
    replace_refs(app, stripped, &secrets).await
}

/// Puts the secrets into the store and the store's references (for the
/// hints `split_secrets` left) into the config.
async fn replace_refs(app: &App, stripped: Value, secrets: &[(String, String)]) -> ApiResult<Value> {
    let mut refs = std::collections::HashMap::new();
    for (hint, value) in secrets {
        refs.insert(hint.clone(), app.secrets.put_secret(hint, value).await?);
    }
    Ok(map_refs(stripped, &mut |hint| json!({ SECRET_REF_KEY: refs.get(hint).map_or(hint, String::as_str) })))
}

/// Deletes secrets a config no longer refers to; one left behind is only clutter.
pub(crate) async fn delete_secrets(app: &App, refs: Vec<String>) {
    for reference in refs {
        let _ = app.secrets.delete_secret(&reference).await;
    }
}

/// A stored config with its secrets put back, for a connector to run with.
pub async fn plain_config(app: &App, stored: &Value) -> ApiResult<Value> {
    let mut values = std::collections::HashMap::new();
    for reference in secret_refs(stored) {
        let value = app.secrets.get_secret(&reference).await?;
        values.insert(reference, value);
    }
    restore(stored, None, &mut |r| values.get(r).cloned()).map_err(|e| Problem::unavailable(format!("a stored config lost a secret: {e}")))
}

fn without_type_key(kind: ActorKind, configuration: &Value) -> ApiResult<Value> {
    let Value::Object(fields) = configuration else { return Err(Problem::bad_field("configuration", "must be a JSON object")) };
    let mut fields = fields.clone();
    fields.remove(kind.type_key());
    Ok(Value::Object(fields))
}

async fn create(app: &App, kind: ActorKind, body: ActorCreate) -> ApiResult<Json<Value>> {
    super::check_name("name", &body.name)?;
    require_uuid("workspaceId", &body.workspace_id)?;
    workspace(app, &body.workspace_id).await.map_err(|p| {
        if p.status == StatusCode::NOT_FOUND { Problem::bad_field("workspaceId", format!("no workspace {}", body.workspace_id)) } else { p }
    })?;
    let _ = (&body.secret_id, &body.resource_allocation);
    let definition = resolve_definition(app, kind, &body.workspace_id, body.definition_id.as_deref(), &body.configuration).await?;
    let plain = without_type_key(kind, &body.configuration)?;
    let spec = connectors::spec(app, &definition).await?;
    let id = new_id();
    let configuration = store_config(app, &id, &spec, &plain).await?;
    let actor = Actor {
        id: id.clone(),
        kind,
        name: body.name,
        workspace_id: body.workspace_id.clone(),
        definition_id: definition.id.clone(),
        configuration,
        created_at: now().as_second(),
    };
    app.config.insert_doc(doc_kind(kind), &doc(&id, Some(&body.workspace_id), &actor, Version::INITIAL)).await?;
    Ok(Json(actor_json(app, &actor).await?))
}

pub async fn actor(app: &App, kind: ActorKind, id: &str) -> ApiResult<(Actor, Version)> {
    load(app, doc_kind(kind), id).await
}

async fn list(app: &App, kind: ActorKind, params: Params, headers: HeaderMap, uri: OriginalUri) -> ApiResult<Json<Value>> {
    let (limit, offset) = page(&params)?;
    let workspaces = params.all("workspaceIds");
    let docs = app.config.list_docs(doc_kind(kind), &workspaces, limit, offset).await?;
    let mut data = Vec::new();
    for d in docs {
        let actor: Actor = serde_json::from_value(d.body).map_err(|e| Problem::unavailable(format!("a stored {} is unreadable: {e}", kind.as_str())))?;
        data.push(actor_json(app, &actor).await?);
    }
    Ok(list_body(&headers, &uri, data, limit, offset))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ActorUpdate {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    configuration: Option<Value>,
    #[serde(default)]
    resource_allocation: Option<Value>,
}

/// PATCH merges the configuration's top-level fields into the stored one;
/// PUT replaces it. A masked value (`**********`) keeps the stored secret.
async fn update(app: &App, kind: ActorKind, id: &str, body: ActorUpdate, replace: bool) -> ApiResult<Json<Value>> {
    let (mut actor, version) = actor(app, kind, id).await?;
    if replace && (body.name.is_none() || body.configuration.is_none()) {
        return Err(Problem::bad_field(if body.name.is_none() { "name" } else { "configuration" }, "PUT replaces the whole resource: give `name` and `configuration`"));
    }
    let _ = &body.resource_allocation;
    if let Some(name) = body.name {
        super::check_name("name", &name)?;
        actor.name = name;
    }
    let mut old_refs = Vec::new();
    if let Some(configuration) = body.configuration {
        let (definition, _) = load::<Definition>(app, DocKind::Definition, &actor.definition_id).await?;
        let spec = connectors::spec(app, &definition).await?;
        let previous = plain_config(app, &actor.configuration).await?;
        let mut given = without_type_key(kind, &configuration)?;
        if !replace {
            let mut merged = previous.as_object().cloned().unwrap_or_default();
            merged.extend(given.as_object().cloned().unwrap_or_default());
            given = Value::Object(merged);
        }
        let plain = restore(&given, Some(&previous), &mut |_| None).map_err(|e| Problem::bad_field("configuration", e))?;
        old_refs = secret_refs(&actor.configuration);
        actor.configuration = store_config(app, id, &spec, &plain).await?;
        // The next discover must see the new config.
        if kind == ActorKind::Source {
            if let Ok(cached) = app.config.get_doc(DocKind::Catalog, id).await {
                let _ = app.config.delete_doc(DocKind::Catalog, id, cached.version).await;
            }
        }
    }
    app.config.update_doc(doc_kind(kind), &doc(id, Some(&actor.workspace_id), &actor, version)).await?;
    delete_secrets(app, old_refs).await;
    Ok(Json(actor_json(app, &actor).await?))
}

/// Deleting a source or destination deprecates the connections using it.
async fn delete(app: &App, kind: ActorKind, id: &str) -> ApiResult<StatusCode> {
    let (actor, version) = actor(app, kind, id).await?;
    let connections = app.config.list_docs(DocKind::Connection, std::slice::from_ref(&actor.workspace_id), 100_000, 0).await?;
    for d in connections {
        let Ok(mut connection) = serde_json::from_value::<Connection>(d.body.clone()) else { continue };
        let uses = match kind {
            ActorKind::Source => connection.source_id == id,
            ActorKind::Destination => connection.destination_id == id,
        };
        if uses && connection.status != ConnectionStatus::Deprecated {
            connection.status = ConnectionStatus::Deprecated;
            app.config.update_doc(DocKind::Connection, &doc(&d.id, d.workspace_id.as_deref(), &connection, d.version)).await?;
        }
    }
    app.config.delete_doc(doc_kind(kind), id, version).await?;
    delete_secrets(app, secret_refs(&actor.configuration)).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_source(State(app): AppState, JsonBody(body): JsonBody<ActorCreate>) -> ApiResult<Json<Value>> {
    create(&app, ActorKind::Source, body).await
}
async fn create_destination(State(app): AppState, JsonBody(body): JsonBody<ActorCreate>) -> ApiResult<Json<Value>> {
    create(&app, ActorKind::Destination, body).await
}
async fn list_sources(State(app): AppState, params: Params, headers: HeaderMap, uri: OriginalUri) -> ApiResult<Json<Value>> {
    list(&app, ActorKind::Source, params, headers, uri).await
}
async fn list_destinations(State(app): AppState, params: Params, headers: HeaderMap, uri: OriginalUri) -> ApiResult<Json<Value>> {
    list(&app, ActorKind::Destination, params, headers, uri).await
}
async fn get_source(State(app): AppState, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(actor_json(&app, &actor(&app, ActorKind::Source, &id).await?.0).await?))
}
async fn get_destination(State(app): AppState, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(actor_json(&app, &actor(&app, ActorKind::Destination, &id).await?.0).await?))
}
async fn patch_source(State(app): AppState, Path(id): Path<String>, JsonBody(body): JsonBody<ActorUpdate>) -> ApiResult<Json<Value>> {
    update(&app, ActorKind::Source, &id, body, false).await
}
async fn put_source(State(app): AppState, Path(id): Path<String>, JsonBody(body): JsonBody<ActorUpdate>) -> ApiResult<Json<Value>> {
    update(&app, ActorKind::Source, &id, body, true).await
}
async fn patch_destination(State(app): AppState, Path(id): Path<String>, JsonBody(body): JsonBody<ActorUpdate>) -> ApiResult<Json<Value>> {
    update(&app, ActorKind::Destination, &id, body, false).await
}
async fn put_destination(State(app): AppState, Path(id): Path<String>, JsonBody(body): JsonBody<ActorUpdate>) -> ApiResult<Json<Value>> {
    update(&app, ActorKind::Destination, &id, body, true).await
}
async fn delete_source(State(app): AppState, Path(id): Path<String>) -> ApiResult<StatusCode> {
    delete(&app, ActorKind::Source, &id).await
}
async fn delete_destination(State(app): AppState, Path(id): Path<String>) -> ApiResult<StatusCode> {
    delete(&app, ActorKind::Destination, &id).await
}
async fn check_source(State(app): AppState, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    actor(&app, ActorKind::Source, &id).await?;
    Ok(Json(connectors::check(&app, ActorKind::Source, &id).await?))
}
async fn check_destination(State(app): AppState, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    actor(&app, ActorKind::Destination, &id).await?;
    Ok(Json(connectors::check(&app, ActorKind::Destination, &id).await?))
}

/// `GET /streams?sourceId=`: the source's streams and what each supports.
async fn streams(State(app): AppState, params: Params) -> ApiResult<Json<Value>> {
    let source_id = params.get("sourceId").ok_or_else(|| Problem::bad_field("sourceId", "is required"))?;
    require_uuid("sourceId", source_id)?;
    actor(&app, ActorKind::Source, source_id).await?;
    if let Some(destination_id) = params.get("destinationId") {
        require_uuid("destinationId", destination_id)?;
        actor(&app, ActorKind::Destination, destination_id).await?;
    }
    let catalog = connectors::catalog(&app, source_id, params.bool("ignoreCache")?).await?;
    let streams: Vec<Value> = catalog
        .streams
        .iter()
        .map(|s| {
            let properties: Vec<Value> = s.json_schema["properties"].as_object().map(|p| p.keys().map(|k| json!([k])).collect()).unwrap_or_default();
            json!({
                "streamName": s.name,
                "streamnamespace": s.namespace,
                "syncModes": sync_modes(s),
                "defaultCursorField": s.default_cursor_field,
                "sourceDefinedCursorField": s.source_defined_cursor.unwrap_or(false),
                "sourceDefinedPrimaryKey": s.source_defined_primary_key,
                "propertyFields": properties,
            })
        })
        .collect();
    Ok(Json(Value::Array(streams)))
}

/// The public API's sync modes a stream supports.
fn sync_modes(stream: &sluice_protocol::AirbyteStream) -> Vec<&'static str> {
    let mut modes = vec!["full_refresh_overwrite", "full_refresh_append"];
    if stream.supported_sync_modes.contains(&sluice_protocol::SyncMode::Incremental) {
        modes.extend(["incremental_append", "incremental_deduped_history"]);
    }
    modes
}
