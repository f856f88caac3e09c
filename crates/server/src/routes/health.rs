//! Liveness and readiness for load balancers and orchestrators, and metrics for Prometheus.

use actix_web::{HttpResponse, web};

use super::AppState;
use crate::error::ApiError;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: the database and the attempt store answer, so logins can be served.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Err(error) = state.accounts.ping().await {
        tracing::warn!(error = format!("{error:#}"), "not ready: database");
        return Err(ApiError::Unavailable {
            retry_after_secs: 1,
        });
    }
    state.guard.store_ready().await?;
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
