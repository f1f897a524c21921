//! Airbyte's catalogue: definitions imported from its registry format
//! (instance-wide, pinned to the entry's version), a registry definition's
//! version changed, and the public API's declarative source definitions:
//! a workspace's own low-code connectors, made from a manifest.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_domain::registry::{self as reg, Entry, MANIFEST_RUNTIME};
use sluice_domain::resources::{ActorKind, Definition};
use sluice_domain::Version;
use sluice_store::DocKind;

use super::{check_name, doc, load, new_id, workspace};
use crate::extract::JsonBody;
use crate::{ApiResult, App, Problem};

type AppState = State<Arc<App>>;


pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/definitions/import", post(import))
        .route("/definitions/{id}/version", post(change_version))
        .route("/workspaces/{id}/definitions/declarative_sources", get(list_declarative).post(create_declarative))
        .route(
            "/workspaces/{id}/definitions/declarative_sources/{definition}",
            get(get_declarative).put(update_declarative).delete(delete_declarative),
        )
}

// ---- registry import ----------------------------------------------------------

/// `POST /definitions/import`: a registry document (`{sources, destinations}`,
/// Airbyte's `oss_registry.json` format), plus our `manifests`: the
/// manifest of each manifest-only connector, by connector name
/// (`source-pokeapi`), as PyAirbyte would download it. Nothing is imported
/// when an entry is unusable: every such entry is named.
async fn import(State(app): AppState, JsonBody(body): JsonBody<Value>) -> ApiResult<Json<Value>> {
    let (entries, errors) = reg::read(&body);
    let mut problems: Vec<(String, String)> = errors;
    let manifests = match body.get("manifests") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(Problem::bad_field("manifests", "must be an object: connector name -> manifest")),
    };
    for (name, manifest) in &manifests {
        if let Err(why) = reg::check_manifest(manifest) {
            problems.push((format!("manifests.{name}"), why));
        }
        if !entries.iter().any(|e| e.connector_name() == name) {
            problems.push((format!("manifests.{name}"), "no entry of the registry has this connector name".into()));
        }
    }
    if !problems.is_empty() {
        let detail: Vec<String> = problems.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        return Err(Problem { fields: problems, ..Problem::new(StatusCode::BAD_REQUEST, "Bad request", format!("nothing was imported: {}", detail.join("; "))) });
    }
    let mut report = Vec::new();
    for entry in &entries {
        report.push(import_entry(&app, entry, manifests.get(entry.connector_name())).await?);
    }
    Ok(Json(json!({ "definitions": report })))
}

/// Creates or updates the definition of one entry; says what it did.
async fn import_entry(app: &App, entry: &Entry, manifest: Option<&Value>) -> ApiResult<Value> {
    let (runtime, why) = entry.runtime(manifest.is_some());
    let wanted = definition_of(entry, runtime.clone(), manifest);
    let mut line = json!({
        "id": entry.id, "name": entry.name, "kind": entry.kind.as_str(), "runtime": runtime, "runtimeReason": why,
        "version": entry.docker_image_tag,
    });
    if entry.facts.tombstone {
        line["note"] = json!("the registry marks it removed (tombstone): existing sources keep running, new ones should not use it");
    }
    match load::<Definition>(app, DocKind::Definition, &entry.id).await {
        Err(p) if p.status == StatusCode::NOT_FOUND => {
            app.config.insert_doc(DocKind::Definition, &doc(&entry.id, None, &wanted, Version::INITIAL)).await?;
            line["action"] = json!("created");
        }
        Err(p) => return Err(p),
        Ok((current, _)) if current.registry.is_none() => {
            line["action"] = json!("kept");
            line["note"] = json!(format!("{} is {}; the registry does not replace it", current.name, if current.workspace_id.is_some() { "a workspace's own definition" } else { "built in" }));
        }
        Ok((current, version)) => {
            let crossed = reg::breaking_between(&entry.facts.breaking_changes, &current.docker_image_tag, &wanted.docker_image_tag);
            line["previousVersion"] = json!(current.docker_image_tag);
            line["breakingChanges"] = json!(crossed);
            // An entry without a spec leaves the one learnt since in place: no change.
            let spec = wanted.connection_specification.clone().or_else(|| current.connection_specification.clone());
            if current == (Definition { connection_specification: spec, ..wanted.clone() }) {
                line["action"] = json!("unchanged");
            } else {
                app.config.update_doc(DocKind::Definition, &doc(&entry.id, None, &wanted, version)).await?;
                line["action"] = json!("updated");
            }
        }
    }
    Ok(line)
}

fn definition_of(entry: &Entry, runtime: String, manifest: Option<&Value>) -> Definition {
    // A manifest-only connector's spec is its manifest's; else the registry's.
    let spec = manifest.and_then(reg::manifest_spec).or_else(|| entry.spec.as_ref().map(|s| s["connectionSpecification"].clone()));
    let ipc = entry.connector_ipc_options.clone().or_else(|| entry.spec.as_ref().and_then(|s| s.get("connectorIPCOptions").cloned()));
    Definition {
        id: entry.id.clone(),
        kind: entry.kind,
        name: entry.name.clone(),
        type_key: type_key(entry),
        runtime: runtime.clone(),
        docker_repository: entry.docker_repository.clone(),
        docker_image_tag: entry.docker_image_tag.clone(),
        protocol_version: entry.spec.as_ref().and_then(|s| s["protocol_version"].as_str()).unwrap_or("0.2.0").to_owned(),
        connector_ipc_options: ipc,
        connection_specification: spec,
        workspace_id: None,
        declarative_manifest: (runtime == MANIFEST_RUNTIME).then(|| manifest.cloned()).flatten(),
        manifest_version: 0,
        registry: Some(entry.facts.clone()),
    }
}

/// The `sourceType` a configuration names it by: the connector name
/// without its kind (`pokeapi` for `airbyte/source-pokeapi`), as Airbyte's SDK does.
fn type_key(entry: &Entry) -> String {
    let name = entry.connector_name();
    let prefix = format!("{}-", entry.kind.as_str());
    name.strip_prefix(&prefix).unwrap_or(name).to_owned()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VersionChange {
    version: String,
    /// For a manifest-only connector: that version's manifest.
    #[serde(default)]
    manifest: Option<Value>,
}

/// `POST /definitions/{id}/version`: pins an imported definition to
/// another version; the answer lists the breaking changes the registry
/// marks between the two.
async fn change_version(State(app): AppState, Path(id): Path<String>, JsonBody(body): JsonBody<VersionChange>) -> ApiResult<Json<Value>> {
    let (mut d, version) = load::<Definition>(&app, DocKind::Definition, &id).await?;
    let Some(facts) = d.registry.clone() else {
        return Err(Problem::conflict(format!("definition {id} was not imported from a registry; change a workspace's own definition with PUT")));
    };
    if body.version.is_empty() || !body.version.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(Problem::bad_field("version", format!("`{}` is not a version", body.version)));
    }
    let from = d.docker_image_tag.clone();
    let crossed = reg::breaking_between(&facts.breaking_changes, &from, &body.version);
    d.docker_image_tag = body.version.clone();
    if d.runtime == MANIFEST_RUNTIME || body.manifest.is_some() {
        let manifest = body.manifest.ok_or_else(|| {
            Problem::bad_field("manifest", format!("{} is manifest-only: give version {}'s manifest (Airbyte publishes it as manifest.yaml)", d.name, body.version))
        })?;
        reg::check_manifest(&manifest).map_err(|why| Problem::bad_field("manifest", why))?;
        d.connection_specification = reg::manifest_spec(&manifest);
        d.declarative_manifest = Some(manifest);
        d.runtime = MANIFEST_RUNTIME.into();
    } else if let Some(package) = d.runtime.strip_prefix("pypi:") {
        let package = package.split("==").next().unwrap_or(package).to_owned();
        d.runtime = format!("pypi:{package}=={}", body.version);
        d.connection_specification = None;
    } else {
        d.runtime = format!("image:{}:{}", d.docker_repository, body.version);
        d.connection_specification = None;
    }
    app.config.update_doc(DocKind::Definition, &doc(&id, None, &d, version)).await?;
    Ok(Json(json!({"id": id, "previousVersion": from, "version": body.version, "runtime": d.runtime, "breakingChanges": crossed})))
}

// ---- declarative source definitions (public API v1) --------------------------

fn declarative_json(d: &Definition) -> Value {
    json!({"id": d.id, "name": d.name, "manifest": d.declarative_manifest, "version": d.manifest_version})
}

/// One of the workspace's declarative source definitions.
async fn declarative(app: &App, workspace_id: &str, id: &str) -> ApiResult<(Definition, Version)> {
    workspace(app, workspace_id).await?;
    let found: (Definition, Version) = load(app, DocKind::Definition, id).await?;
    if found.0.workspace_id.as_deref() != Some(workspace_id) || found.0.declarative_manifest.is_none() {
        return Err(Problem::not_found("declarative source definition", id));
    }
    Ok(found)
}

fn checked_manifest(manifest: Value) -> ApiResult<Value> {
    reg::check_manifest(&manifest).map_err(|why| Problem::bad_field("manifest", why))?;
    Ok(manifest)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeclarativeCreate {
    name: String,
    manifest: Value,
    #[serde(default)]
    description: Option<String>,
}

async fn create_declarative(State(app): AppState, Path(ws): Path<String>, JsonBody(body): JsonBody<DeclarativeCreate>) -> ApiResult<Json<Value>> {
    workspace(&app, &ws).await?;
    check_name("name", &body.name)?;
    let manifest = checked_manifest(body.manifest)?;
    let _ = body.description;
    let definition = Definition {
        id: new_id(),
        kind: ActorKind::Source,
        type_key: body.name.to_lowercase().replace(' ', "-"),
        name: body.name,
        runtime: MANIFEST_RUNTIME.into(),
        docker_repository: "airbyte/source-declarative-manifest".into(),
        docker_image_tag: reg::RUNNER_VERSION.into(),
        protocol_version: "0.2.0".into(),
        connector_ipc_options: None,
        connection_specification: reg::manifest_spec(&manifest),
        workspace_id: Some(ws.clone()),
        declarative_manifest: Some(manifest),
        manifest_version: 1,
        registry: None,
    };
    app.config.insert_doc(DocKind::Definition, &doc(&definition.id, Some(&ws), &definition, Version::INITIAL)).await?;
    Ok(Json(declarative_json(&definition)))
}

async fn list_declarative(State(app): AppState, Path(ws): Path<String>) -> ApiResult<Json<Value>> {
    workspace(&app, &ws).await?;
    let data: Vec<Value> = super::definitions(&app, &ws, ActorKind::Source)
        .await?
        .iter()
        .filter(|d| d.workspace_id.is_some() && d.declarative_manifest.is_some())
        .map(declarative_json)
        .collect();
    Ok(Json(json!({ "data": data })))
}

async fn get_declarative(State(app): AppState, Path((ws, id)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    Ok(Json(declarative_json(&declarative(&app, &ws, &id).await?.0)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeclarativeUpdate {
    manifest: Value,
}

/// A new manifest: a new version of the connector, whose spec may differ.
async fn update_declarative(State(app): AppState, Path((ws, id)): Path<(String, String)>, JsonBody(body): JsonBody<DeclarativeUpdate>) -> ApiResult<Json<Value>> {
    let (mut d, version) = declarative(&app, &ws, &id).await?;
    let manifest = checked_manifest(body.manifest)?;
    d.connection_specification = reg::manifest_spec(&manifest);
    d.declarative_manifest = Some(manifest);
    d.manifest_version += 1;
    app.config.update_doc(DocKind::Definition, &doc(&id, Some(&ws), &d, version)).await?;
    Ok(Json(declarative_json(&d)))
}

async fn delete_declarative(State(app): AppState, Path((ws, id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let (d, version) = declarative(&app, &ws, &id).await?;
    super::remove_definition(&app, &ws, &d, version).await
}
