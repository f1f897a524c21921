//! Errors as `application/problem+json` (RFC 9457), each naming what was
//! wrong and, where one field was, which.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sluice_platform::PlatformError;
use sluice_store::StoreError;

#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub title: &'static str,
    pub detail: String,
    /// (JSON pointer or parameter name, message) for each bad field.
    pub fields: Vec<(String, String)>,
}

impl Problem {
    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Problem { status, title, detail: detail.into(), fields: Vec::new() }
    }
    pub fn bad_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let (field, message) = (field.into(), message.into());
        Problem { status: StatusCode::BAD_REQUEST, title: "Bad request", detail: format!("{field}: {message}"), fields: vec![(field, message)] }
    }
    pub fn not_found(what: &str, id: &str) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "Not found", format!("{what} {id} does not exist"))
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail)
    }
    pub fn conflict(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, "Conflict", detail)
    }
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable", detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("https://sluice.dev/problems/{}", self.status.as_u16()),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if !self.fields.is_empty() {
            body["errors"] = self.fields.iter().map(|(field, message)| json!({"field": field, "message": message})).collect();
        }
        (self.status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response()
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound { entity, id } => Problem::not_found(entity, id),
            StoreError::Conflict { .. } | StoreError::Duplicate { .. } | StoreError::JobRunning { .. } => Problem::conflict(e.to_string()),
            StoreError::Unavailable(_) => Problem::unavailable(format!("{e}; try again")),
        }
    }
}

impl From<PlatformError> for Problem {
    fn from(e: PlatformError) -> Self {
        match e {
            PlatformError::Store(s) => s.into(),
            PlatformError::Transition(t) => Problem::conflict(t.to_string()),
            PlatformError::Contended(_) => Problem::conflict(format!("{e}")),
        }
    }
}

pub type ApiResult<T> = Result<T, Problem>;
