//! Workspaces kept apart: which role each Config API operation needs, and
//! which workspace its resource lives in.
//!
//! A workspace role sees its own workspace only: another workspace's
//! resource answers 404, exactly as one that does not exist (so ids cannot
//! be probed), and a list is narrowed to its workspace. Within it, a reader
//! may read, an editor may also write, and an admin may also change the
//! workspace and its applications. Creating workspaces and changing the
//! instance's definitions is for the instance's admins.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use serde_json::Value;
use sluice_domain::resources::Role;
use sluice_store::{DocKind, StoreError};

use crate::auth::Grant;
use crate::{App, Problem};

/// What an operation needs of its caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Read,
    Write,
    WorkspaceAdmin,
    InstanceAdmin,
}

/// Where an operation's workspace comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Nothing of a workspace (or the instance's own, for instance admins).
    Unscoped,
    /// A list: narrowed to the caller's workspace by `workspaceIds`.
    List,
    /// The `{id}` in the path is a workspace.
    Workspace,
    /// The `{id}` in the path is a document of this kind.
    Doc(DocKind),
    /// The `{id}` in the path is a job (its connection's workspace).
    Job,
    /// Ids in the JSON body, of these kinds; a list with `workspaceIds` otherwise.
    Body(&'static [(&'static str, DocKind)]),
    /// Ids in the query, of these kinds; a list with `workspaceIds` otherwise.
    Query(&'static [(&'static str, DocKind)]),
}

/// The rule of an operation of the Config API (the path as the router
/// matched it, below `/api/public/v1`), or None for one it does not know.
pub fn rule(method: &Method, route: &str) -> Option<(Needs, Scope)> {
    use DocKind::*;
    use Needs::*;
    let write = if method == Method::GET { Read } else { Write };
    Some(match (method.as_str(), route) {
        ("GET", "/applications") | ("POST", "/applications") => (WorkspaceAdmin, Scope::Unscoped),
        ("GET", "/workspaces") => (Read, Scope::List),
        ("POST", "/workspaces") => (InstanceAdmin, Scope::Unscoped),
        ("GET", "/workspaces/{id}") => (Read, Scope::Workspace),
        ("PATCH" | "DELETE", "/workspaces/{id}") => (WorkspaceAdmin, Scope::Workspace),
        // A workspace's own connectors are its admins' to choose; manifests
        // (run by Airbyte's runner, custom code only where the instance allows) its editors'.
        ("POST", "/workspaces/{id}/definitions/sources" | "/workspaces/{id}/definitions/destinations")
        | ("PUT" | "DELETE", "/workspaces/{id}/definitions/sources/{definition}" | "/workspaces/{id}/definitions/destinations/{definition}") => {
            (WorkspaceAdmin, Scope::Workspace)
        }
        (
            "GET" | "POST",
            "/workspaces/{id}/definitions/sources" | "/workspaces/{id}/definitions/destinations" | "/workspaces/{id}/definitions/declarative_sources",
        )
        | (
            "GET" | "PUT" | "DELETE",
            "/workspaces/{id}/definitions/sources/{definition}"
            | "/workspaces/{id}/definitions/destinations/{definition}"
            | "/workspaces/{id}/definitions/declarative_sources/{definition}",
        ) => (write, Scope::Workspace),
        ("GET", "/workspaces/{id}/definitions/sources/{definition}/specification" | "/workspaces/{id}/definitions/destinations/{definition}/specification") => {
            (Read, Scope::Workspace)
        }
        ("GET", "/schedules/preview") => (Read, Scope::Unscoped),
        ("POST", "/definitions/import" | "/definitions/{id}/version") => (InstanceAdmin, Scope::Unscoped),
        ("GET", "/sources" | "/destinations" | "/connections") => (Read, Scope::List),
        ("POST", "/sources" | "/destinations") => (Write, Scope::Body(&[("workspaceId", Workspace)])),
        ("GET" | "PATCH" | "PUT" | "DELETE", "/sources/{id}") | ("POST", "/sources/{id}/check") => (write, Scope::Doc(Source)),
        ("GET" | "PATCH" | "PUT" | "DELETE", "/destinations/{id}") | ("POST", "/destinations/{id}/check") => (write, Scope::Doc(Destination)),
        ("GET", "/streams") => (Read, Scope::Query(&[("sourceId", Source), ("destinationId", Destination)])),
        ("POST", "/connections") => (Write, Scope::Body(&[("sourceId", Source), ("destinationId", Destination)])),
        ("GET" | "PATCH" | "DELETE", "/connections/{id}")
        | ("GET", "/connections/{id}/state" | "/connections/{id}/schema")
        | ("POST", "/connections/{id}/schema/refresh") => (write, Scope::Doc(Connection)),
        ("GET", "/jobs") => (Read, Scope::Query(&[("connectionId", Connection)])),
        ("POST", "/jobs") => (Write, Scope::Body(&[("connectionId", Connection)])),
        ("GET" | "DELETE", "/jobs/{id}") | ("GET", "/jobs/{id}/attempts" | "/jobs/{id}/attempts/{attempt}/logs") => (write, Scope::Job),
        _ => return None,
    })
}

pub fn role_allows(role: Role, needs: Needs) -> bool {
    match needs {
        Needs::Read => true,
        Needs::Write => role.covers(Role::WorkspaceEditor),
        Needs::WorkspaceAdmin => role.covers(Role::WorkspaceAdmin),
        Needs::InstanceAdmin => role == Role::InstanceAdmin,
    }
}

fn forbidden(grant: &Grant, needs: Needs) -> Problem {
    let may = match grant.role {
        Role::WorkspaceReader => "read",
        Role::WorkspaceEditor => "read and change its sources, destinations, connections and jobs",
        _ => "administer its workspace",
    };
    let needed = match needs {
        Needs::InstanceAdmin => "an instance_admin application",
        Needs::WorkspaceAdmin => "a workspace_admin (or instance_admin) application",
        _ => "a workspace_editor, workspace_admin or instance_admin application",
    };
    Problem::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!("this application ({}) may only {may}; this needs {needed}", grant.role.as_str()),
    )
}

/// Decides a request, before its handler: Ok (the request, its query or
/// body left as they were, a list's query narrowed), or the refusal.
pub async fn authorize(app: &App, grant: &Grant, route: &str, request: Request) -> Result<Request, Problem> {
    let Some((needs, scope)) = rule(request.method(), route) else {
        // A route without a rule is for instance admins alone: a new route
        // must say who may use it before anyone else can.
        return if grant.role == Role::InstanceAdmin { Ok(request) } else { Err(forbidden(grant, Needs::InstanceAdmin)) };
    };
    let Some(own) = grant.workspace.clone().filter(|_| grant.role != Role::InstanceAdmin) else {
        return if role_allows(grant.role, needs) { Ok(request) } else { Err(forbidden(grant, needs)) };
    };
    let (request, named) = match scope {
        Scope::Unscoped => (request, Vec::new()),
        Scope::List => (narrow_list(request, &own)?, Vec::new()),
        Scope::Workspace => {
            let id = path_id(route, request.uri().path());
            (request, vec![(DocKind::Workspace, id)])
        }
        Scope::Doc(kind) => {
            let id = path_id(route, request.uri().path());
            (request, vec![(kind, id)])
        }
        Scope::Job => {
            let id = path_id(route, request.uri().path());
            let connection = match id.parse::<i64>() {
                Ok(job) => match app.jobs.get_job(job).await {
                    Ok(job) => Some(job.connection_id),
                    Err(StoreError::NotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                },
                Err(_) => None,
            };
            match connection {
                Some(c) if workspace_of(app, DocKind::Connection, &c).await?.as_deref() != Some(own.as_str()) => {
                    return Err(StoreError::NotFound { entity: "job", id }.into())
                }
                _ => (request, Vec::new()),
            }
        }
        Scope::Query(fields) => {
            let query: Vec<(String, String)> = form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
            let named: Vec<(DocKind, String)> =
                fields.iter().filter_map(|(field, kind)| query.iter().find(|(k, _)| k == field).map(|(_, v)| (*kind, v.clone()))).collect();
            if named.is_empty() {
                (narrow_list(request, &own)?, named)
            } else {
                (request, named)
            }
        }
        Scope::Body(fields) => {
            let (parts, body) = request.into_parts();
            let bytes = axum::body::to_bytes(body, app.settings.max_body_bytes)
                .await
                .map_err(|e| Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large", format!("the body could not be read: {e}")))?;
            let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let named: Vec<(DocKind, String)> =
                fields.iter().filter_map(|(field, kind)| parsed.get(field).and_then(Value::as_str).map(|v| (*kind, v.to_owned()))).collect();
            (Request::from_parts(parts, Body::from(bytes)), named)
        }
    };
    for (kind, id) in named {
        let workspace = match kind {
            DocKind::Workspace => Some(id.clone()),
            kind => workspace_of(app, kind, &id).await?,
        };
        // Another workspace's resource is no resource at all; one that does
        // not exist is left to the handler, which says so in the same words.
        if workspace.as_deref().is_some_and(|w| w != own) {
            return Err(StoreError::NotFound { entity: kind.as_str(), id }.into());
        }
    }
    if role_allows(grant.role, needs) {
        Ok(request)
    } else {
        Err(forbidden(grant, needs))
    }
}

/// The workspace a document belongs to (None if there is no such document).
async fn workspace_of(app: &App, kind: DocKind, id: &str) -> Result<Option<String>, Problem> {
    match app.config.get_doc(kind, id).await {
        Ok(doc) => Ok(doc.workspace_id),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The `{id}` segment of `path`, by its place in `route`.
fn path_id(route: &str, path: &str) -> String {
    let at = route.split('/').position(|s| s == "{id}").unwrap_or(0);
    let segments: Vec<&str> = path.split('/').collect();
    // The path has the mount's prefix (`/api/public/v1`) before the route.
    let offset = segments.len().saturating_sub(route.split('/').count());
    let raw = segments.get(offset + at).copied().unwrap_or("");
    percent_decode(raw)
}

fn percent_decode(text: &str) -> String {
    form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// A list for a workspace role: `workspaceIds` set to its workspace, or
/// refused when it names another one.
fn narrow_list(mut request: Request, own: &str) -> Result<Request, Problem> {
    let query: Vec<(String, String)> = form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let named: Vec<String> = query.iter().filter(|(k, _)| k == "workspaceIds").flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>()).collect();
    if let Some(other) = named.iter().find(|w| w.as_str() != own) {
        return Err(StoreError::NotFound { entity: "workspace", id: other.clone() }.into());
    }
    let mut narrowed = form_urlencoded::Serializer::new(String::new());
    for (k, v) in query.iter().filter(|(k, _)| k != "workspaceIds") {
        narrowed.append_pair(k, v);
    }
    narrowed.append_pair("workspaceIds", own);
    let uri = format!("{}?{}", request.uri().path(), narrowed.finish());
    *request.uri_mut() = uri.parse().map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "Bad request", format!("the query could not be narrowed: {e}")))?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation of the OpenAPI document has a rule (a new route
    /// must say who may use it), and every rule an operation.
    #[test]
    fn every_operation_of_the_document_has_a_rule() {
        let document: Value = serde_json::from_str(include_str!("openapi.json")).unwrap();
        let open = ["/health", "/openapi.json", "/applications/token"];
        let mut missing = Vec::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys().filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str())) {
                if open.contains(&path.as_str()) {
                    continue;
                }
                let template = generic(path);
                if rule(&method.to_uppercase().parse().unwrap(), &template).is_none() {
                    missing.push(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        assert!(missing.is_empty(), "operations without a rule: {missing:?}");
    }

    /// The document names path parameters (`{sourceId}`); the router's
    /// templates call the first one `{id}`.
    fn generic(path: &str) -> String {
        let mut seen = 0;
        path.split('/')
            .map(|s| {
                if s.starts_with('{') {
                    seen += 1;
                    match (seen, s) {
                        (1, _) => "{id}".to_owned(),
                        (_, "{attemptNumber}" | "{attempt}") => "{attempt}".to_owned(),
                        _ => "{definition}".to_owned(),
                    }
                } else {
                    s.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn roles_form_a_line() {
        assert!(role_allows(Role::WorkspaceReader, Needs::Read));
        assert!(!role_allows(Role::WorkspaceReader, Needs::Write));
        assert!(role_allows(Role::WorkspaceEditor, Needs::Write));
        assert!(!role_allows(Role::WorkspaceEditor, Needs::WorkspaceAdmin));
        assert!(role_allows(Role::WorkspaceAdmin, Needs::WorkspaceAdmin));
        assert!(!role_allows(Role::WorkspaceAdmin, Needs::InstanceAdmin));
        assert!(role_allows(Role::InstanceAdmin, Needs::InstanceAdmin));
    }

    #[test]
    fn the_id_is_read_at_its_place_below_the_mount() {
        assert_eq!(path_id("/sources/{id}/check", "/api/public/v1/sources/abc/check"), "abc");
        assert_eq!(path_id("/jobs/{id}/attempts/{attempt}/logs", "/v1/jobs/12/attempts/0/logs"), "12");
        assert_eq!(path_id("/workspaces/{id}", "/api/public/v1/workspaces/a%20b"), "a b");
    }
}
