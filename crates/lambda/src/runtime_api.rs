//! The Lambda Runtime API on 127.0.0.1, so that a function's real binary
//! runs on one machine: start it with `AWS_LAMBDA_RUNTIME_API` set to
//! [`LocalRuntime::address`], then [`LocalRuntime::invoke`] hands it an
//! event and waits for its answer, as Lambda would.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use tokio::sync::{Mutex, Notify};

/// What the function answered: its response, or the error it reported.
pub type Answer = Result<Value, Value>;

#[derive(Default)]
struct Shared {
    events: Mutex<VecDeque<(String, Value)>>,
    answers: Mutex<HashMap<String, Answer>>,
    init_error: Mutex<Option<Value>>,
    event_ready: Notify,
    answered: Notify,
    /// When a function first asked for an event: its init was done.
    first_poll: std::sync::Mutex<Option<std::time::Instant>>,
}

pub struct LocalRuntime {
    address: String,
    shared: Arc<Shared>,
    next_id: std::sync::atomic::AtomicU64,
}

impl LocalRuntime {
    pub async fn start() -> std::io::Result<LocalRuntime> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let shared = Arc::new(Shared::default());
        let routes = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, routes).await });
        Ok(LocalRuntime { address, shared, next_id: Default::default() })
    }

    /// When a function first asked for an event (its init done), if one has.
    pub fn first_poll(&self) -> Option<std::time::Instant> {
        *self.shared.first_poll.lock().expect("not poisoned")
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Hands `event` to the function and waits for its answer.
    pub async fn invoke(&self, event: Value, timeout: Duration) -> Result<Answer, String> {
        let id = format!("req-{}", self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        self.shared.events.lock().await.push_back((id.clone(), event));
        self.shared.event_ready.notify_one();
        let wait = async {
            loop {
                let answered = self.shared.answered.notified();
                if let Some(answer) = self.shared.answers.lock().await.remove(&id) {
                    return Ok(answer);
                }
                if let Some(e) = self.shared.init_error.lock().await.clone() {
                    return Err(format!("the function failed to start: {e}"));
                }
                answered.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| format!("no answer to {id} within {timeout:?}"))?
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    shared.first_poll.lock().expect("not poisoned").get_or_insert_with(std::time::Instant::now);
    loop {
        let ready = shared.event_ready.notified();
        if let Some((id, event)) = shared.events.lock().await.pop_front() {
            let mut headers = HeaderMap::new();
            let deadline = jiff::Timestamp::now().as_millisecond() + 900_000;
            headers.insert("lambda-runtime-aws-request-id", HeaderValue::from_str(&id).expect("ascii"));
            headers.insert("lambda-runtime-deadline-ms", HeaderValue::from(deadline));
            headers.insert("lambda-runtime-invoked-function-arn", HeaderValue::from_static("arn:aws:lambda:us-east-1:000000000000:function:local"));
            headers.insert("lambda-runtime-trace-id", HeaderValue::from_static("Root=1-00000000-000000000000000000000000"));
            return (StatusCode::OK, headers, Json(event)).into_response();
        }
        ready.await;
    }
}

async fn answer(shared: &Shared, id: String, answer: Answer) -> StatusCode {
    shared.answers.lock().await.insert(id, answer);
    shared.answered.notify_waiters();
    StatusCode::ACCEPTED
}

async fn response(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: axum::body::Bytes) -> StatusCode {
    answer(&shared, id, Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))).await
}

async fn error(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: axum::body::Bytes) -> StatusCode {
    answer(&shared, id, Err(serde_json::from_slice(&body).unwrap_or(Value::Null))).await
}

async fn init_error(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> StatusCode {
    *shared.init_error.lock().await = Some(serde_json::from_slice(&body).unwrap_or(Value::Null));
    shared.answered.notify_waiters();
    StatusCode::ACCEPTED
}

impl LocalRuntime {
    /// A function binary set up as Lambda starts it, pointed at this runtime.
    pub fn function(&self, binary: &str, name: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(binary);
        command
            .env("AWS_LAMBDA_RUNTIME_API", &self.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true")
            .kill_on_drop(true);
        command
    }
}
