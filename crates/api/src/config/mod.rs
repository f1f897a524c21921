//! The Config API: Airbyte's public API v1, plus a few routes of ours
//! where Airbyte has none (checks, attempts, logs). Documents are stored in
//! the API's own shape; secrets are split out on write and masked on read.

pub mod actors;
pub mod builtin;
pub mod connections;
pub mod connectors;
pub mod jobs;
pub mod registry;
pub mod schema;

use std::sync::Arc;

use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sluice_domain::resources::{ActorKind, Application, Definition, Role, Workspace};
use crate::auth::Grant;
use sluice_domain::ConnectionStatus;
use sluice_domain::Version;
use sluice_store::{Doc, DocKind, StoreError};

use crate::extract::{parse_json, JsonBody, Params};
use crate::{now, ApiResult, App, Problem};

type AppState = State<Arc<App>>;

/// Routes that need no token.
pub fn open_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/health", get(|| async { Json(json!({"available": true})) }))
        .route("/openapi.json", get(crate::openapi::document))
        .route("/applications/token", post(token))
}

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/applications", get(list_applications).post(create_application))
        .route("/workspaces", get(list_workspaces).post(create_workspace))
        .route("/workspaces/{id}", get(get_workspace).patch(update_workspace).delete(delete_workspace))
        .route("/workspaces/{id}/definitions/sources", get(list_source_definitions).post(create_source_definition))
        .route("/workspaces/{id}/definitions/destinations", get(list_destination_definitions).post(create_destination_definition))
        .route(
            "/workspaces/{id}/definitions/sources/{definition}",
            get(get_definition).put(update_definition).delete(delete_definition),
        )
        .route(
            "/workspaces/{id}/definitions/destinations/{definition}",
            get(get_definition).put(update_definition).delete(delete_definition),
        )
        .route("/workspaces/{id}/definitions/sources/{definition}/specification", get(get_specification))
        .route("/workspaces/{id}/definitions/destinations/{definition}/specification", get(get_specification))
        .route("/schedules/preview", get(preview_schedule))
        .merge(registry::routes())
        .merge(schema::routes())
        .merge(actors::routes())
        .merge(connections::routes())
        .merge(jobs::routes())
}

// ---- shared helpers ---------------------------------------------------------

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A document decoded into its type, with the version it was read at.
pub async fn load<T: DeserializeOwned>(app: &App, kind: DocKind, id: &str) -> ApiResult<(T, Version)> {
    let doc = app.config.get_doc(kind, id).await?;
    let value = serde_json::from_value(doc.body).map_err(|e| Problem::unavailable(format!("stored {} {id} is unreadable: {e}", kind.as_str())))?;
    Ok((value, doc.version))
}

pub(crate) fn doc<T: Serialize>(id: &str, workspace_id: Option<&str>, value: &T, version: Version) -> Doc {
    Doc { id: id.to_owned(), workspace_id: workspace_id.map(str::to_owned), body: serde_json::to_value(value).expect("plain data"), version }
}

pub(crate) fn require_uuid(field: &str, value: &str) -> ApiResult<()> {
    uuid::Uuid::parse_str(value).map(|_| ()).map_err(|_| Problem::bad_field(field, format!("`{value}` is not a UUID")))
}

/// `limit` (1..100, default 20) and `offset` as Airbyte's lists take them.
pub(crate) fn page(params: &Params) -> ApiResult<(usize, usize)> {
    Ok((params.int("limit", 20, 1, 100)? as usize, params.int("offset", 0, 0, i64::MAX / 2)? as usize))
}

/// `{data, next, previous}` with full URLs, as the SDK follows them.
pub(crate) fn list_body(headers: &HeaderMap, uri: &OriginalUri, data: Vec<Value>, limit: usize, offset: usize) -> Json<Value> {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let scheme = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("http");
    let path = uri.0.path();
    let other: Vec<(String, String)> =
        form_urlencoded::parse(uri.0.query().unwrap_or("").as_bytes()).into_owned().filter(|(k, _)| k != "limit" && k != "offset").collect();
    let link = |offset: usize| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &other {
            query.append_pair(k, v);
        }
        query.append_pair("limit", &limit.to_string()).append_pair("offset", &offset.to_string());
        format!("{scheme}://{host}{path}?{}", query.finish())
    };
    let full = data.len() == limit;
    let mut body = json!({ "data": data });
    if full {
        body["next"] = Value::String(link(offset + limit));
    }
    if offset > 0 {
        body["previous"] = Value::String(link(offset.saturating_sub(limit)));
    }
    Json(body)
}

// ---- applications and tokens ------------------------------------------------

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    client_id: String,
    client_secret: String,
}

/// `POST /applications/token`: client credentials, as a form (the SDK) or JSON.
async fn token(State(app): AppState, headers: HeaderMap, body: axum::body::Bytes) -> ApiResult<Json<Value>> {
    let is_json = headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
    let request: TokenRequest = if is_json {
        parse_json(&body)?
    } else {
        let fields: std::collections::HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
        let field = |name: &str| fields.get(name).cloned().ok_or_else(|| Problem::bad_field(name, "is required"));
        TokenRequest { grant_type: fields.get("grant_type").cloned(), client_id: field("client_id")?, client_secret: field("client_secret")? }
    };
    if request.grant_type.as_deref().is_some_and(|g| g != "client_credentials") {
        return Err(Problem::bad_field("grant_type", "only `client_credentials` is supported"));
    }
    let refused = || Problem::unauthorized("unknown client_id or wrong client_secret");
    let application = find_application(&app, &request.client_id).await?.ok_or_else(refused)?;
    if !app.keys.check_secret(&request.client_secret, &application.secret_hash) {
        return Err(refused());
    }
    let ttl = app.settings.token_ttl.as_secs() as i64;
    let token = app.keys.access_token(&crate::auth::Grant::of(&application), now().as_second() + ttl);
    Ok(Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl})))
}

async fn find_application(app: &App, client_id: &str) -> ApiResult<Option<Application>> {
    match load::<Application>(app, DocKind::Application, client_id).await {
        Ok((a, _)) => Ok(Some(a)),
        Err(p) if p.status == StatusCode::NOT_FOUND => Ok(None),
        Err(p) => Err(p),
    }
}

/// Creates an application; the client secret is returned this once only.
/// A new instance admin application (the first one `sluice up` makes).
pub async fn new_application(app: &App, name: &str) -> Result<(Application, String), StoreError> {
    new_application_with(app, name, Role::InstanceAdmin, None).await
}

/// A new application with a role: `workspace` for the `workspace_*` ones.
pub async fn new_application_with(app: &App, name: &str, role: Role, workspace: Option<String>) -> Result<(Application, String), StoreError> {
    let client_id = new_id();
    let secret = crate::auth::hex(&crate::auth::random_bytes::<24>());
    let application = Application {
        id: client_id.clone(),
        name: name.to_owned(),
        client_id: client_id.clone(),
        secret_hash: app.keys.secret_hash(&secret),
        created_at: now().as_second(),
        permission_type: role,
        workspace_id: workspace.clone(),
    };
    app.config.insert_doc(DocKind::Application, &doc(&client_id, workspace.as_deref(), &application, Version::INITIAL)).await?;
    Ok((application, secret))
}

fn application_json(a: &Application) -> Value {
    json!({"id": a.id, "name": a.name, "clientId": a.client_id, "createdAt": a.created_at,
           "permissionType": a.permission_type.as_str(), "workspaceId": a.workspace_id})
}

/// An instance admin sees every application; a workspace admin those of its workspace.
async fn list_applications(State(app): AppState, Extension(caller): Extension<Grant>) -> ApiResult<Json<Value>> {
    let scope: Vec<String> = caller.workspace.iter().filter(|_| caller.role != Role::InstanceAdmin).cloned().collect();
    let docs = app.config.list_docs(DocKind::Application, &scope, 1000, 0).await?;
    let apps: Vec<Value> =
        docs.into_iter().filter_map(|d| serde_json::from_value::<Application>(d.body).ok()).map(|a| application_json(&a)).collect();
    Ok(Json(json!({ "applications": apps })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApplicationCreate {
    name: String,
    /// `instance_admin`, `workspace_admin`, `workspace_editor` or
    /// `workspace_reader`; by default the creator's own.
    #[serde(default)]
    permission_type: Option<String>,
    #[serde(default)]
    workspace_id: Option<String>,
}

/// An application gets at most its creator's powers: a workspace admin
/// makes applications of its own workspace only.
async fn create_application(State(app): AppState, Extension(caller): Extension<Grant>, JsonBody(body): JsonBody<ApplicationCreate>) -> ApiResult<impl IntoResponse> {
    check_name("name", &body.name)?;
    let role = match body.permission_type.as_deref() {
        None => caller.role,
        Some(text) => Role::parse(text).ok_or_else(|| {
            Problem::bad_field("permissionType", format!("`{text}` is not one of instance_admin, workspace_admin, workspace_editor, workspace_reader"))
        })?,
    };
    let refused = || {
        Problem::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("this application ({}) may make applications of its own workspace, with at most its own role", caller.role.as_str()),
        )
    };
    if !caller.role.covers(role) {
        return Err(refused());
    }
    let workspace = match (role, body.workspace_id.or_else(|| caller.workspace.clone())) {
        (Role::InstanceAdmin, None) => None,
        (Role::InstanceAdmin, Some(_)) => return Err(Problem::bad_field("workspaceId", "an instance_admin application has no workspace")),
        (_, None) => return Err(Problem::bad_field("workspaceId", format!("a {} application needs the workspace it belongs to", role.as_str()))),
        (_, Some(w)) => Some(w),
    };
    if caller.role != Role::InstanceAdmin && workspace != caller.workspace {
        return Err(refused());
    }
    if let Some(w) = &workspace {
        require_uuid("workspaceId", w)?;
        load::<Workspace>(&app, DocKind::Workspace, w).await.map_err(|p| if p.status == StatusCode::NOT_FOUND { Problem::bad_field("workspaceId", format!("workspace {w} does not exist")) } else { p })?;
    }
    let (application, secret) = new_application_with(&app, &body.name, role, workspace).await?;
    let mut out = application_json(&application);
    out["clientSecret"] = Value::String(secret);
    Ok((StatusCode::OK, Json(out)))
}

// ---- workspaces -------------------------------------------------------------

fn workspace_json(w: &Workspace) -> Value {
    let mut value = serde_json::to_value(w).expect("plain data");
    value["notifications"] = json!({});
    value
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkspaceCreate {
    name: String,
    #[serde(default)]
    data_residency: Option<String>,
    #[serde(default)]
    notifications: Option<Value>,
    #[serde(default)]
    organization_id: Option<String>,
    /// Our addition: webhook URLs for job events.
    #[serde(default)]
    notification_urls: Vec<String>,
}

pub(crate) fn check_name(field: &str, name: &str) -> ApiResult<()> {
    if name.trim().is_empty() {
        return Err(Problem::bad_field(field, "must not be empty"));
    }
    if name.chars().count() > 256 {
        return Err(Problem::bad_field(field, "must be at most 256 characters"));
    }
    Ok(())
}

fn check_urls(urls: &[String]) -> ApiResult<()> {
    for (i, url) in urls.iter().enumerate() {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Problem::bad_field(format!("notificationUrls[{i}]"), format!("`{url}` is not an http(s) URL")));
        }
    }
    Ok(())
}

async fn create_workspace(State(app): AppState, JsonBody(body): JsonBody<WorkspaceCreate>) -> ApiResult<Json<Value>> {
    check_name("name", &body.name)?;
    check_urls(&body.notification_urls)?;
    let _ = (body.notifications, body.organization_id);
    let workspace = Workspace {
        workspace_id: new_id(),
        name: body.name,
        data_residency: body.data_residency.unwrap_or_else(|| "auto".into()),
        notification_urls: body.notification_urls,
    };
    app.config.insert_doc(DocKind::Workspace, &doc(&workspace.workspace_id, None, &workspace, Version::INITIAL)).await?;
    Ok(Json(workspace_json(&workspace)))
}

async fn list_workspaces(State(app): AppState, params: Params, headers: HeaderMap, uri: OriginalUri) -> ApiResult<Json<Value>> {
    let (limit, offset) = page(&params)?;
    let wanted = params.all("workspaceIds");
    let data: Vec<Value> = if wanted.is_empty() {
        let docs = app.config.list_docs(DocKind::Workspace, &[], limit, offset).await?;
        docs.into_iter().filter_map(|d| serde_json::from_value::<Workspace>(d.body).ok()).map(|w| workspace_json(&w)).collect()
    } else {
        let mut found = Vec::new();
        for id in wanted.iter().skip(offset).take(limit) {
            match load::<Workspace>(&app, DocKind::Workspace, id).await {
                Ok((w, _)) => found.push(workspace_json(&w)),
                Err(p) if p.status == StatusCode::NOT_FOUND => {}
                Err(p) => return Err(p),
            }
        }
        found
    };
    Ok(list_body(&headers, &uri, data, limit, offset))
}

pub(crate) async fn workspace(app: &App, id: &str) -> ApiResult<(Workspace, Version)> {
    load(app, DocKind::Workspace, id).await
}

async fn get_workspace(State(app): AppState, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(workspace_json(&workspace(&app, &id).await?.0)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkspaceUpdate {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    data_residency: Option<String>,
    #[serde(default)]
    notifications: Option<Value>,
    #[serde(default)]
    notification_urls: Option<Vec<String>>,
}

async fn update_workspace(State(app): AppState, Path(id): Path<String>, JsonBody(body): JsonBody<WorkspaceUpdate>) -> ApiResult<Json<Value>> {
    let (mut w, version) = workspace(&app, &id).await?;
    if let Some(name) = body.name {
        check_name("name", &name)?;
        w.name = name;
    }
    if let Some(residency) = body.data_residency {
        w.data_residency = residency;
    }
    if let Some(urls) = body.notification_urls {
        check_urls(&urls)?;
        w.notification_urls = urls;
    }
    let _ = body.notifications;
    app.config.update_doc(DocKind::Workspace, &doc(&id, None, &w, version)).await?;
    Ok(Json(workspace_json(&w)))
}

async fn delete_workspace(State(app): AppState, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let (_, version) = workspace(&app, &id).await?;
    let ws = [id.clone()];
    // A deleted connection stays, deprecated, for its jobs' history: it does not count.
    let deprecated = ConnectionStatus::Deprecated.as_str();
    for kind in [DocKind::Connection, DocKind::Source, DocKind::Destination] {
        let docs = app.config.list_docs(kind, &ws, 100_000, 0).await?;
        if docs.iter().any(|d| kind != DocKind::Connection || d.body["status"] != deprecated) {
            return Err(Problem::conflict(format!("workspace {id} still has {}s; delete them first", kind.as_str())));
        }
    }
    app.config.delete_doc(DocKind::Workspace, &id, version).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- definitions ------------------------------------------------------------

fn definition_json(d: &Definition) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "dockerRepository": d.docker_repository,
        "dockerImageTag": d.docker_image_tag,
        "documentationUrl": Value::Null,
        "sourceType": if d.kind == ActorKind::Source { Value::String(d.type_key.clone()) } else { Value::Null },
        "destinationType": if d.kind == ActorKind::Destination { Value::String(d.type_key.clone()) } else { Value::Null },
        "runtime": d.runtime,
        "protocolVersion": d.protocol_version,
        "connectorIPCOptions": d.connector_ipc_options,
        "language": d.registry.as_ref().and_then(|r| r.language.clone()),
        "supportLevel": d.registry.as_ref().and_then(|r| r.support_level.clone()),
        "custom": d.workspace_id.is_some(),
    })
}

/// Every definition a workspace may use: the built-in ones and its own.
pub(crate) async fn definitions(app: &App, workspace_id: &str, kind: ActorKind) -> ApiResult<Vec<Definition>> {
    let docs = app.config.list_docs(DocKind::Definition, &[], 10_000, 0).await?;
    Ok(docs
        .into_iter()
        .filter_map(|d| serde_json::from_value::<Definition>(d.body).ok())
        .filter(|d| d.kind == kind && d.workspace_id.as_deref().is_none_or(|w| w == workspace_id))
        .collect())
}

async fn list_definitions(app: &App, workspace_id: &str, kind: ActorKind) -> ApiResult<Json<Value>> {
    workspace(app, workspace_id).await?;
    let data: Vec<Value> = definitions(app, workspace_id, kind).await?.iter().map(definition_json).collect();
    Ok(Json(json!({ "data": data })))
}

async fn list_source_definitions(State(app): AppState, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    list_definitions(&app, &id, ActorKind::Source).await
}

async fn list_destination_definitions(State(app): AppState, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    list_definitions(&app, &id, ActorKind::Destination).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DefinitionCreate {
    name: String,
    #[serde(default)]
    docker_repository: Option<String>,
    #[serde(default)]
    docker_image_tag: Option<String>,
    #[serde(default)]
    documentation_url: Option<String>,
    /// Ours: how to run it when not from an image (a path, `pypi:<package>`).
    #[serde(default)]
    runtime: Option<String>,
    /// Ours: the `sourceType`/`destinationType` key; the name by default.
    #[serde(default)]
    type_key: Option<String>,
}

/// A definition whose connector runs on this machine outside a container (a
/// PyPI package, a program) runs whatever it likes here: only the
/// instance's admins may make one.
fn may_run(caller: &Grant, runtime: &str) -> ApiResult<()> {
    if caller.role == Role::InstanceAdmin || runtime.starts_with("image:") {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "`{runtime}` would run on this machine outside a container: a definition of a PyPI package or a program needs an instance_admin application; use dockerRepository and dockerImageTag"
        ),
    ))
}

fn runtime_of(body: &DefinitionCreate) -> ApiResult<String> {
    let word = |field: &str, value: &str| {
        if value.is_empty() || value.chars().any(char::is_whitespace) {
            Err(Problem::bad_field(field, format!("`{value}` is empty or holds a space")))
        } else {
            Ok(())
        }
    };
    for (field, value) in [("runtime", &body.runtime), ("dockerRepository", &body.docker_repository), ("dockerImageTag", &body.docker_image_tag)] {
        value.as_deref().map(|v| word(field, v)).transpose()?;
    }
    match (&body.runtime, &body.docker_repository) {
        (Some(runtime), _) => Ok(runtime.clone()),
        (None, Some(repo)) => Ok(format!("image:{repo}:{}", body.docker_image_tag.as_deref().unwrap_or("latest"))),
        (None, None) => Err(Problem::bad_field("dockerRepository", "a definition needs `dockerRepository` (or our `runtime`)")),
    }
}

async fn create_definition(app: &App, caller: &Grant, workspace_id: &str, kind: ActorKind, body: DefinitionCreate) -> ApiResult<Json<Value>> {
    workspace(app, workspace_id).await?;
    check_name("name", &body.name)?;
    let runtime = runtime_of(&body)?;
    may_run(caller, &runtime)?;
    let _ = &body.documentation_url;
    let definition = Definition {
        id: new_id(),
        kind,
        type_key: body.type_key.clone().unwrap_or_else(|| body.name.to_lowercase().replace(' ', "-")),
        name: body.name,
        runtime,
        docker_repository: body.docker_repository.unwrap_or_default(),
        docker_image_tag: body.docker_image_tag.unwrap_or_default(),
        protocol_version: "0.2.0".into(),
        connector_ipc_options: None,
        connection_specification: None,
        workspace_id: Some(workspace_id.to_owned()),
        declarative_manifest: None,
        manifest_version: 0,
        registry: None,
    };
    app.config.insert_doc(DocKind::Definition, &doc(&definition.id, Some(workspace_id), &definition, Version::INITIAL)).await?;
    Ok(Json(definition_json(&definition)))
}

async fn create_source_definition(
    State(app): AppState,
    Extension(caller): Extension<Grant>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DefinitionCreate>,
) -> ApiResult<Json<Value>> {
    create_definition(&app, &caller, &id, ActorKind::Source, body).await
}

async fn create_destination_definition(
    State(app): AppState,
    Extension(caller): Extension<Grant>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DefinitionCreate>,
) -> ApiResult<Json<Value>> {
    create_definition(&app, &caller, &id, ActorKind::Destination, body).await
}

/// A definition visible to the workspace, by id.
pub(crate) async fn definition(app: &App, workspace_id: &str, id: &str) -> ApiResult<(Definition, Version)> {
    let (d, version): (Definition, Version) = load(app, DocKind::Definition, id).await?;
    if d.workspace_id.as_deref().is_some_and(|w| w != workspace_id) {
        return Err(Problem::not_found("definition", id));
    }
    Ok((d, version))
}

/// The definition a `/workspaces/{ws}/definitions/{sources|destinations}/{id}`
/// path names: the workspace must exist and the kind must match.
async fn definition_at(app: &App, uri: &OriginalUri, workspace_id: &str, id: &str) -> ApiResult<(Definition, Version)> {
    workspace(app, workspace_id).await?;
    let kind = if uri.0.path().contains("/definitions/destinations/") { ActorKind::Destination } else { ActorKind::Source };
    let found = definition(app, workspace_id, id).await?;
    if found.0.kind != kind {
        return Err(Problem::not_found(&format!("{} definition", kind.as_str()), id));
    }
    Ok(found)
}

async fn get_definition(State(app): AppState, uri: OriginalUri, Path((ws, id)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    Ok(Json(definition_json(&definition_at(&app, &uri, &ws, &id).await?.0)))
}

/// Ours: the definition's `connectionSpecification`, for clients that
/// build a form from it (the web app does), learnt by running the
/// connector's `spec` the first time.
async fn get_specification(State(app): AppState, uri: OriginalUri, Path((ws, id)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let (d, _) = definition_at(&app, &uri, &ws, &id).await?;
    let spec = connectors::spec(&app, &d).await?;
    Ok(Json(json!({"definitionId": d.id, "connectionSpecification": spec})))
}

/// Ours: the next times a cron schedule fires, so a client can show them
/// before it saves the schedule. The expression is checked as a
/// connection's would be.
async fn preview_schedule(params: Params) -> ApiResult<Json<Value>> {
    let expression = params.get("cronExpression").ok_or_else(|| Problem::bad_field("cronExpression", "is required"))?;
    let time_zone = params.get("cronTimeZone").unwrap_or("UTC");
    let count = params.get("count").map(|c| c.parse::<usize>().ok().filter(|n| (1..=20).contains(n))).unwrap_or(Some(5));
    let count = count.ok_or_else(|| Problem::bad_field("count", "must be a whole number from 1 to 20"))?;
    let schedule = sluice_domain::CronSchedule::new(expression, time_zone).map_err(|e| match e {
        sluice_domain::CronError::TimeZone(_) => Problem::bad_field("cronTimeZone", e.to_string()),
        _ => Problem::bad_field("cronExpression", e.to_string()),
    })?;
    let mut runs = Vec::with_capacity(count);
    let mut after = now();
    while runs.len() < count {
        let Some(next) = schedule.next_after(after) else { break };
        runs.push(json!(next.to_string()));
        after = next;
    }
    Ok(Json(json!({"cronExpression": expression, "cronTimeZone": time_zone, "nextRuns": runs})))
}

async fn update_definition(
    State(app): AppState,
    Extension(caller): Extension<Grant>,
    uri: OriginalUri,
    Path((ws, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<DefinitionCreate>,
) -> ApiResult<Json<Value>> {
    let (mut d, version) = definition_at(&app, &uri, &ws, &id).await?;
    if d.workspace_id.is_none() {
        return Err(Problem::conflict(format!("definition {id} is built in and cannot be changed; create your own")));
    }
    check_name("name", &body.name)?;
    d.runtime = runtime_of(&body)?;
    may_run(&caller, &d.runtime)?;
    d.name = body.name;
    d.docker_repository = body.docker_repository.unwrap_or_default();
    d.docker_image_tag = body.docker_image_tag.unwrap_or_default();
    // A new version of the connector may have a new spec: learn it again.
    d.connection_specification = None;
    app.config.update_doc(DocKind::Definition, &doc(&id, Some(&ws), &d, version)).await?;
    Ok(Json(definition_json(&d)))
}

async fn delete_definition(State(app): AppState, uri: OriginalUri, Path((ws, id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let (d, version) = definition_at(&app, &uri, &ws, &id).await?;
    if d.workspace_id.is_none() {
        return Err(Problem::conflict(format!("definition {id} is built in and cannot be deleted")));
    }
    remove_definition(&app, &ws, &d, version).await
}

/// Deletes a workspace's own definition that no source or destination uses.
pub(crate) async fn remove_definition(app: &App, ws: &str, d: &Definition, version: Version) -> ApiResult<StatusCode> {
    let kind = if d.kind == ActorKind::Source { DocKind::Source } else { DocKind::Destination };
    let in_use = app.config.list_docs(kind, &[ws.to_owned()], 10_000, 0).await?.iter().any(|doc| doc.body["definitionId"] == d.id.as_str());
    if in_use {
        return Err(Problem::conflict(format!("definition {} is used by a {}; delete that first", d.id, kind.as_str())));
    }
    app.config.delete_doc(DocKind::Definition, &d.id, version).await?;
    Ok(StatusCode::NO_CONTENT)
}
