//! The web app (`ui/`, embedded by `sluice-ui`) at `/`: static files whose
//! script calls the public API v1 like any other client. Vite names every
//! asset by its content's hash, so assets are cached for good and only
//! `index.html` is asked for again.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// AJV compiles the forms' JSON Schemas into functions, hence `unsafe-eval`;
/// nothing else is loaded from anywhere but this origin.
const CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub fn routes() -> Router<Arc<crate::App>> {
    Router::new().route("/", get(index)).route("/assets/{*file}", get(asset))
}

async fn index(State(app): State<Arc<crate::App>>, headers: HeaderMap) -> Response {
    if !sluice_ui::built() {
        return page(StatusCode::OK, sluice_ui::NOT_BUILT.as_bytes(), "text/html; charset=utf-8", None, "no-cache");
    }
    serve(&app, &headers, "index.html", "no-cache")
}

async fn asset(State(app): State<Arc<crate::App>>, headers: HeaderMap, Path(file): Path<String>) -> Response {
    serve(&app, &headers, &format!("assets/{file}"), "public, max-age=31536000, immutable")
}

fn serve(app: &crate::App, headers: &HeaderMap, path: &str, cache: &'static str) -> Response {
    let Some(asset) = sluice_ui::asset(path) else {
        return crate::Problem::not_found("file", &format!("/{path}")).into_response();
    };
    let gzip_ok = app.settings.gzip_app && headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    match asset.gzip {
        Some(gz) if gzip_ok => page(StatusCode::OK, gz, asset.content_type, Some("gzip"), cache),
        _ => page(StatusCode::OK, asset.body, asset.content_type, None, cache),
    }
}

fn page(status: StatusCode, body: &'static [u8], content_type: &'static str, encoding: Option<&'static str>, cache: &'static str) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if content_type.starts_with("text/html") {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    if let Some(encoding) = encoding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    response
}
