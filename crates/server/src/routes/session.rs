//! `GET /v1/session` (introspection for other services, answered like forward authentication
//! from the replica's session cache), `POST /v1/logout` and `POST /v1/logout/all` (every
//! session of the account).

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use portcullis_accounts::{AppState, Error};
use serde::Serialize;
use utoipa::ToSchema;

use super::bearer_digest;
use super::login::rfc3339;
use super::openapi::{NoSession, Unavailable};
use crate::error::ApiError;

/// A live session.
#[derive(Serialize, ToSchema)]
pub struct SessionInfo {
    /// Always `true` (a session that is not live is a 401).
    active: bool,
    /// The account's public id.
    subject: String,
    /// When the session ends (RFC 3339).
    expires_at: String,
    /// Whether the password was found in a breach and should be changed.
    password_change_required: bool,
}

/// How many sessions ended.
#[derive(Serialize, ToSchema)]
pub struct Revoked {
    /// Sessions revoked, the presented one included.
    revoked: u64,
}

/// 200 with the session's subject and expiry, 401 for a missing, unknown or expired token.
#[utoipa::path(
    tag = "sessions",
    security(("session" = [])),
    responses(
        (status = 200, description = "The session is live", body = SessionInfo),
        NoSession,
        Unavailable,
    )
)]
#[get("/v1/session")]
pub async fn introspect(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let digest = bearer_digest(&request).ok_or(Error::Unauthenticated)?;
    let session = state
        .sessions
        .identify(&digest)
        .await?
        .ok_or(Error::Unauthenticated)?;
    Ok(HttpResponse::Ok().json(SessionInfo {
        active: true,
        subject: session.subject,
        expires_at: rfc3339(session.expires_at),
        password_change_required: session.password_change_required,
    }))
}

/// Revokes the presented session: 204, or 401 when it was not live.
#[utoipa::path(
    tag = "sessions",
    security(("session" = [])),
    responses(
        (status = 204, description = "The session ended"),
        NoSession,
        Unavailable,
    )
)]
#[post("/v1/logout")]
pub async fn logout(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let digest = bearer_digest(&request).ok_or(Error::Unauthenticated)?;
    let revoked = state.sessions.revoke(&digest).await?;
    if !revoked {
        return Err(Error::Unauthenticated.into());
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Revokes every session of the presented session's account ("log out everywhere"):
/// 200 with how many ended, or 401 when the token is not live.
#[utoipa::path(
    tag = "sessions",
    security(("session" = [])),
    responses(
        (status = 200, description = "Every session of the account ended", body = Revoked),
        NoSession,
        Unavailable,
    )
)]
#[post("/v1/logout/all")]
pub async fn logout_all(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let digest = bearer_digest(&request).ok_or(Error::Unauthenticated)?;
    let revoked = state.sessions.revoke_all(&digest).await?;
    if revoked == 0 {
        return Err(Error::Unauthenticated.into());
    }
    Ok(HttpResponse::Ok().json(Revoked { revoked }))
}
