//! `GET /v1/session` (introspection for other services), `POST /v1/logout` and
//! `POST /v1/logout/all` (every session of the account).

use actix_web::{HttpRequest, HttpResponse, web};

use super::login::rfc3339;
use super::{AppState, live_session};
use crate::error::ApiError;
use crate::token;

/// 200 with the session's subject and expiry, 401 for a missing, unknown or expired token.
pub async fn introspect(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let session = live_session(&state, &request).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "active": true,
        "subject": session.subject,
        "expires_at": rfc3339(session.expires_at),
        "password_change_required": session.password_change_required,
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

/// Revokes every session of the presented session's account ("log out everywhere"):
/// 200 with how many ended, or 401 when the token is not live.
pub async fn logout_all(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let digest = token::bearer_digest(request.headers()).ok_or(ApiError::Unauthenticated)?;
    let revoked = state.sessions.revoke_all(&digest).await?;
    if revoked == 0 {
        return Err(ApiError::Unauthenticated);
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "revoked": revoked })))
}
