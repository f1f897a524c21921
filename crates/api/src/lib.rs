//! Sluice's HTTP surface, one axum router for `sluice up` and the Lambda
//! functions alike:
//! - the Config API: Airbyte's public API v1 under `/api/public/v1` and `/v1`
//!   ([`config`]), behind bearer tokens from `/applications/token` ([`auth`]);
//! - the workload API under `/api/internal/v1/workloads` ([`workloads`]),
//!   which a running task calls with its own workload's credential;
//! - the web app at `/` ([`web`]), served wherever the Config API is.
//!
//! Handlers only translate HTTP to the platform's services and back.

pub mod access;
pub mod auth;
pub mod config;
mod extract;
pub mod openapi;
pub mod problem;
mod web;
pub mod workloads;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use jiff::Timestamp;
use sluice_domain::RetryPolicy;
use sluice_platform::Ports;
use sluice_store::{AttemptLogs, ConfigStore, Events, JobStore, Schedules, SecretStore, WorkloadQueue, WorkloadStore};

pub use auth::Keys;
pub use problem::{ApiResult, Problem};

/// Everything a handler may touch: the ports, the signing keys, settings.
pub struct App {
    pub config: Arc<dyn ConfigStore>,
    pub jobs: Arc<dyn JobStore>,
    pub workloads: Arc<dyn WorkloadStore>,
    pub queue: Arc<dyn WorkloadQueue>,
    pub secrets: Arc<dyn SecretStore>,
    pub logs: Arc<dyn AttemptLogs>,
    pub schedules: Arc<dyn Schedules>,
    pub events: Arc<dyn Events>,
    pub keys: Keys,
    pub settings: Settings,
    /// Told whenever work is queued, so an in-process launcher starts at once.
    pub work_queued: Arc<tokio::sync::Notify>,
    /// What a task's init step presents to fetch its files, where tasks do
    /// (ECS); `None` where files reach tasks another way.
    pub launch_key: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub retry: RetryPolicy,
    /// How long an access token lives.
    pub token_ttl: Duration,
    /// How long a request waits for a spec, check or discover workload.
    pub connector_timeout: Duration,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    pub deadlines: sluice_domain::Deadlines,
    /// Each container's limits in a task (Airbyte's
    /// JOB_MAIN_CONTAINER_CPU_LIMIT and _MEMORY_LIMIT): CPU in thousandths, memory in MiB.
    pub container_cpu_millis: u32,
    pub container_memory_mib: u32,
    /// Whether connectors may run custom Python code (manifest components),
    /// as Airbyte's `AIRBYTE_ENABLE_UNSAFE_CODE`. Off by default.
    pub custom_code: bool,
    /// How old a connection's last schema check may be before a sync checks
    /// again (Airbyte's default for self-managed instances: 24 hours).
    pub schema_refresh: Duration,
    /// Whether the web app's files are sent gzipped to clients that take it
    /// (off where a gateway in front compresses).
    pub gzip_app: bool,
    /// At most this many jobs run at once; more wait, pending (None: no limit).
    pub max_running_jobs: Option<usize>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            retry: RetryPolicy::default(),
            token_ttl: Duration::from_secs(15 * 60),
            connector_timeout: Duration::from_secs(600),
            max_body_bytes: 2 * 1024 * 1024,
            deadlines: Default::default(),
            container_cpu_millis: 1000,
            container_memory_mib: 2048,
            custom_code: false,
            schema_refresh: Duration::from_secs(24 * 3600),
            gzip_app: true,
            max_running_jobs: None,
        }
    }
}

impl App {
    pub fn ports(&self) -> Ports<'_> {
        Ports {
            jobs: &*self.jobs,
            workloads: &*self.workloads,
            queue: &*self.queue,
            deadlines: self.settings.deadlines,
            events: &*self.events,
            max_running_jobs: self.settings.max_running_jobs,
        }
    }
}

pub fn now() -> Timestamp {
    Timestamp::now()
}

/// The whole HTTP surface: `sluice up` serves it from one process.
pub fn router(app: Arc<App>) -> Router {
    surface(app, true, true)
}

/// The Config API alone (the `config-api` function).
pub fn config_router(app: Arc<App>) -> Router {
    surface(app, true, false)
}

/// The workload API alone (the `workload-api` function).
pub fn workload_router(app: Arc<App>) -> Router {
    surface(app, false, true)
}

fn surface(app: Arc<App>, config_api: bool, workload_api: bool) -> Router {
    let mut router = Router::new();
    if config_api {
        let public = config::routes().route_layer(axum::middleware::from_fn_with_state(app.clone(), require_token));
        let api = config::open_routes().merge(public);
        router = router.nest("/api/public/v1", api.clone()).nest("/v1", api).merge(web::routes());
    }
    if workload_api {
        router = router.nest("/api/internal/v1", workloads::routes());
    }
    router
        .fallback(|| async { Problem::new(axum::http::StatusCode::NOT_FOUND, "Not found", "no such route; see /api/public/v1/openapi.json") })
        .layer(axum::middleware::map_response(problems_everywhere))
        .layer(axum::extract::DefaultBodyLimit::max(app.settings.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(app.clone(), read_body_first))
        .with_state(app)
}

/// hyper ends a connection when a response goes out before its request's
/// body was read (it cannot find where the next request starts), and it
/// does not always say so in time with `Connection: close`. A client that
/// pooled the connection then fails its next call with "peer disconnected".
/// Refusals (401, 403, the 404 of another workspace) answer before any
/// handler reads the body, so every body is read here first; the limit is
/// the same as the handlers'.
async fn read_body_first(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let limit = app.settings.max_body_bytes;
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let read = if declared.is_some_and(|n| n > limit as u64) { Err(true) } else { axum::body::to_bytes(body, limit).await.map_err(|e| over_limit(&e)) };
    let refusal = match read {
        Ok(bytes) => return next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Err(true) => Problem::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            format!("the request body is larger than this server accepts ({limit} bytes)"),
        ),
        Err(false) => Problem::bad_field("body", "the request body was cut short"),
    };
    // The rest of the body may still be on the wire: this connection cannot go on.
    let mut response = refusal.into_response();
    response.headers_mut().insert(header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    response
}

fn over_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Errors that axum produces itself (a path that is not UTF-8, a method a
/// route does not have, a body over the limit on a form route) come as plain
/// text; clients of this API get every error as problem+json.
async fn problems_everywhere(response: Response) -> Response {
    let status = response.status();
    let is_problem = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let detail = if text.trim().is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
    let mut rebuilt = Problem::new(status, status.canonical_reason().unwrap_or("Error"), detail).into_response();
    // Keep what the original said besides its body (e.g. `Allow` on a 405).
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rebuilt.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rebuilt
}

/// Every Config API route but `/health`, `/openapi.json` and the token
/// endpoint needs a bearer token this server issued, still valid, whose
/// role and workspace allow the operation (`access.rs`). The handler finds
/// the caller's [`auth::Grant`] in the request's extensions.
async fn require_token(State(app): State<Arc<App>>, matched: MatchedPath, request: Request, next: Next) -> Result<Response, Problem> {
    let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return Err(Problem::unauthorized("this route needs `Authorization: Bearer <token>`; get a token from POST /applications/token"));
    };
    let grant = app.keys.check_access_token(token.trim(), now().as_second()).map_err(Problem::unauthorized)?;
    let route = matched.as_str().strip_prefix("/api/public/v1").or_else(|| matched.as_str().strip_prefix("/v1")).unwrap_or(matched.as_str());
    let mut request = access::authorize(&app, &grant, route, request).await?;
    request.extensions_mut().insert(grant);
    Ok(next.run(request).await)
}
