//! `GET /v1/session` (introspection for other services) and `POST /v1/logout`.

use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::login::rfc3339;
use crate::error::ApiError;
use crate::token;

/// 200 with the session's subject and expiry, 401 for a missing, unknown or expired token.
pub async fn introspect(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let digest = token::bearer_digest(request.headers()).ok_or(ApiError::Unauthenticated)?;
    let session = state
        .sessions
        .get(&digest)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "active": true,
        "subject": session.subject,
        "expires_at": rfc3339(session.expires_at),
    })))
}

/// Revokes the presented session: 204, or 401 when it was not live.
pub async fn logout(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let digest = token::bearer_digest(request.headers()).ok_or(ApiError::Unauthenticated)?;
    let revoked = state.sessions.revoke(&digest).await?;
    if !revoked {
        return Err(ApiError::Unauthenticated);
    }
    Ok(HttpResponse::NoContent().finish())
}
