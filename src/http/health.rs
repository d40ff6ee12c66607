//! Liveness, readiness, and the answer for paths that do not exist.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::HttpState;

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers and the MQTT broker runs.
pub async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let database = match state.authority.ready().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("readiness: database: {e:#}");
            false
        }
    };
    let broker = (state.broker_ready)();
    let status = if database && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
        "database": if database { "ok" } else { "unreachable" },
        "broker": if broker { "ok" } else { "stopped" },
    });
    (status, Json(body))
}

pub async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "not_found", "error_description": "no such endpoint" })),
    )
}
