//! Liveness and readiness for load balancers and orchestrators, and metrics for Prometheus.

use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_store::Health;

use super::AppState;
use crate::error::ApiError;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: the database and the attempt store answer, so logins can be served; with a
/// failing shared store, `{"status": "degraded"}` while a fallback serves (local and fail-open
/// modes), 503 in the fail-closed one.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.accounts.ping().await.map_err(ApiError::unavailable)?;
    let status = match state.stores.health().await {
        Health::Ready => "ready",
        Health::Degraded => "degraded",
        Health::Unavailable => {
            return Err(ApiError::unavailable(anyhow::anyhow!(
                "the attempt store is unavailable (store.on_error = fail_closed)"
            )));
        }
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({ "status": status })))
}

/// `GET /metrics`: Prometheus text format (see [`crate::instruments`]); only on the admin
/// listener when `admin.listen` is set.
pub async fn metrics(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if !state.is_ops_request(&request) {
        return Err(ApiError::NotFound);
    }
    let handle = crate::instruments::handle().ok_or_else(|| ApiError::Unavailable {
        retry_after_secs: 60,
        cause: anyhow::anyhow!("no metrics recorder is installed"),
    })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render()))
}
