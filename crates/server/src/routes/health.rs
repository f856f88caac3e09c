//! Liveness and readiness for load balancers and orchestrators, and metrics for Prometheus.

use actix_web::{HttpRequest, HttpResponse, get, web};
use portcullis_accounts::{AppState, Error, instruments};
use portcullis_store::Health;
use serde::Serialize;
use utoipa::ToSchema;

use super::HttpState;
use super::openapi::Unavailable;
use crate::error::{ApiError, Problem};

/// How the replica is.
#[derive(Serialize, ToSchema)]
pub struct Status {
    /// `ok` (healthz); `ready` or `degraded` (readyz: a fallback serves while Redis fails).
    status: &'static str,
}

/// `GET /healthz`: the process answers.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "The process answers", body = Status))
)]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok" })
}

/// `GET /readyz`: the database and the attempt store answer, so logins can be served; with a
/// failing shared store, `{"status": "degraded"}` while a fallback serves (local and fail-open
/// modes), 503 in the fail-closed one. 503 too while the replica drains before it stops
/// (`server.drain_secs`): it still serves, but a load balancer should send elsewhere.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "Logins can be served", body = Status),
        Unavailable,
    )
)]
#[get("/readyz")]
pub async fn readyz(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    if http.drain.is_draining() {
        return Err(Error::unavailable(anyhow::anyhow!(
            "the replica is shutting down (server.drain_secs)"
        ))
        .into());
    }
    state.accounts.ping().await.map_err(Error::unavailable)?;
    let status = match state.stores.health().await {
        Health::Ready => "ready",
        Health::Degraded => "degraded",
        Health::Unavailable => {
            return Err(Error::unavailable(anyhow::anyhow!(
                "the attempt store is unavailable (store.on_error = fail_closed)"
            ))
            .into());
        }
    };
    Ok(HttpResponse::Ok().json(Status { status }))
}

/// `GET /metrics`: Prometheus text format (see [`portcullis_accounts::instruments`]); only on the admin
/// listener when `admin.listen` is set.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format (docs/monitoring.md)", body = String, content_type = "text/plain"),
        (status = 404, description = "`not_found`: asked off the operations listener", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: no metrics recorder", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
#[get("/metrics")]
pub async fn metrics(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if !http.is_ops_request(&request) {
        return Err(ApiError::NotFound);
    }
    let handle = instruments::handle().ok_or_else(|| Error::Unavailable {
        retry_after_secs: 60,
        cause: anyhow::anyhow!("no metrics recorder is installed"),
    })?;
    // What is read as of the scrape: the signal's detectors, the log lines dropped.
    if let Some(assessment) = state.stores.attempts.attack_signal() {
        instruments::attack_signal(&assessment);
    }
    instruments::log_lines_dropped(crate::telemetry::dropped_lines());
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render()))
}
