//! The OpenAPI 3 document of what this server serves.

use axum::Json;
use serde_json::Value;

pub async fn document() -> Json<Value> {
    Json(serde_json::from_str(include_str!("openapi.json")).expect("the bundled OpenAPI document is JSON"))
}
