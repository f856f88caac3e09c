//! Liveness and readiness for load balancers and orchestrators, and metrics for Prometheus.

use actix_web::{HttpResponse, web};

use portcullis_store::OnError;

use super::AppState;
use crate::error::ApiError;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: the database and the attempt store answer, so logins can be served; with a
/// failing shared store, `{"status": "degraded"}` in the local and fail-open modes, 503 in the
/// fail-closed one.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Err(error) = state.accounts.ping().await {
        tracing::warn!(error = format!("{error:#}"), "not ready: database");
        return Err(ApiError::Unavailable {
            retry_after_secs: 1,
        });
    }
    if let Err(error) = state.guard.store_ready().await {
        tracing::warn!(error = %error, "attempt store not answering");
        // Local and fail-open modes still serve logins; fail-closed does not.
        if state.store_on_error == Some(OnError::FailClosed) {
            return Err(ApiError::Unavailable {
                retry_after_secs: 1,
            });
        }
        return Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "degraded" })));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })))
}

/// `GET /metrics`: Prometheus text format (see [`crate::instruments`]).
pub async fn metrics() -> Result<HttpResponse, ApiError> {
    let handle = crate::instruments::handle().ok_or(ApiError::Unavailable {
        retry_after_secs: 60,
    })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render()))
}
