//! The Config API's request parsing, whole: a method, a path with its
//! query, and a body, sent through the router to a platform on SQLite with
//! a workspace, a source, a destination and a connection to aim at. No
//! input may crash a handler or get a 500.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use serde_json::json;
use sluice_api::{App, Keys, Settings};
use sluice_domain::CronSchedule;
use sluice_store::{Events, JobEvent, Schedules, StoreError};
use sluice_store_sqlite::{FileLogs, FileSecrets, SqliteStore};
use tower::ServiceExt;

struct NoEvents;

#[async_trait]
impl Events for NoEvents {
    async fn publish(&self, _event: JobEvent) {}
}

struct NoSchedules;

#[async_trait]
impl Schedules for NoSchedules {
    async fn put_schedule(&self, _connection_id: &str, _schedule: &CronSchedule) -> Result<(), StoreError> {
        Ok(())
    }
    async fn delete_schedule(&self, _connection_id: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

struct Platform {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    token: String,
    /// `{workspace}`, `{source}` ... in a path or body become these ids.
    ids: Vec<(&'static str, String)>,
}

fn platform() -> &'static Platform {
    static PLATFORM: OnceLock<Platform> = OnceLock::new();
    PLATFORM.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sluice-fuzz-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let store = Arc::new(SqliteStore::open(&dir.join("sluice.db")).expect("the database"));
        // Spec, check and discover wait for a launcher there is none of: give up at once (504).
        let settings = Settings { connector_timeout: Duration::from_millis(1), ..Settings::default() };
        let app = Arc::new(App {
            config: store.clone(),
            jobs: store.clone(),
            workloads: store.clone(),
            queue: store,
            secrets: Arc::new(FileSecrets::open(dir.join("secrets")).expect("secrets")),
            logs: Arc::new(FileLogs::new(dir.join("logs"))),
            schedules: Arc::new(NoSchedules),
            events: Arc::new(NoEvents),
            keys: Keys::new(b"fuzzing key, not a secret".to_vec()),
            settings,
            work_queued: Arc::new(tokio::sync::Notify::new()),
            launch_key: None,
        });
        let router = sluice_api::router(app.clone());
        let (token, ids) = runtime.block_on(async {
            sluice_api::config::builtin::seed(&app).await.expect("built-in definitions");
            let (application, _) = sluice_api::config::new_application(&app, "fuzz").await.expect("an application");
            let token = app.keys.access_token(&sluice_api::auth::Grant::of(&application), i64::MAX / 2);
            let call = |method: &'static str, path: &'static str, body: serde_json::Value| {
                let (router, token) = (router.clone(), token.clone());
                async move {
                    let request = Request::builder().method(method).uri(path).header("authorization", format!("Bearer {token}")).header("content-type", "application/json");
                    let response = router.oneshot(request.body(Body::from(body.to_string())).unwrap()).await.unwrap();
                    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
                    serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default()
                }
            };
            let workspace = call("POST", "/api/public/v1/workspaces", json!({"name": "fuzz"})).await["workspaceId"].as_str().unwrap_or_default().to_owned();
            let source = call("POST", "/api/public/v1/sources", json!({"name": "s", "workspaceId": workspace, "configuration": {"sourceType": "sluice-faker", "count": 10}})).await;
            let source = source["sourceId"].as_str().unwrap_or_default().to_owned();
            let destination = call("POST", "/api/public/v1/destinations", json!({"name": "d", "workspaceId": workspace, "configuration": {"destinationType": "dev-null"}})).await;
            let destination = destination["destinationId"].as_str().unwrap_or_default().to_owned();
            let connection = call("POST", "/api/public/v1/connections", json!({"sourceId": source, "destinationId": destination})).await;
            let connection = connection["connectionId"].as_str().unwrap_or_default().to_owned();
            (token, vec![("{workspace}", workspace), ("{source}", source), ("{destination}", destination), ("{connection}", connection)])
        });
        Platform { runtime, router, token, ids }
    })
}

/// The input is `METHOD /path?query` on its first line, the body after.
pub fn api_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once('\n').unwrap_or((&text, ""));
    let Some((method, target)) = head.split_once(' ') else { return };
    let p = platform();
    let fill = |s: &str| p.ids.iter().fold(s.to_owned(), |s, (name, id)| s.replace(name, id));
    let target = format!("/api/public/v1{}", fill(target));
    let Ok(request) = Request::builder()
        .method(method)
        .uri(&target)
        .header("authorization", format!("Bearer {}", p.token))
        .header("content-type", "application/json")
        .body(Body::from(fill(body)))
    else {
        return;
    };
    let status = p.runtime.block_on(async {
        let response = p.router.clone().oneshot(request).await.expect("the router answers");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await.expect("a body");
        (status, bytes)
    });
    assert!(status.0 != 500, "{method} {target}: 500 {}", String::from_utf8_lossy(&status.1));
}
