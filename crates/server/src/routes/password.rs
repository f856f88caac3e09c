//! `POST /v1/password`: HTTP in and out of the password change use case (see
//! [`crate::password_change`]).

use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::SecretString;
use serde::Deserialize;

use super::{AppState, ClientIp, checked_password};
use crate::error::ApiError;
use crate::password_change::{self, Authority};
use crate::token;

/// `{"current_password", "new_password", "altcha"?}` with a session, or
/// `{"password_change_token", "new_password"}` without one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: Option<SecretString>,
    new_password: SecretString,
    password_change_token: Option<String>,
    altcha: Option<String>,
}

/// Changes the password: 200 `{"revoked_sessions": n}`; 400 `weak_password` /
/// `breached_password`; 401 for a wrong current password (counted like a login), a missing
/// session or an invalid token; 429 / 401 challenge as for a login.
pub async fn change(
    state: web::Data<AppState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    body: web::Json<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let new_password = checked_password(body.new_password, "new_password")?;
    let cookie = request.cookie(&state.device.cookie_name);
    let authority = match (body.password_change_token.as_deref(), body.current_password) {
        (Some(token), None) => Authority::Token(token),
        (None, Some(current)) => Authority::Session {
            digest: token::bearer_digest(request.headers()).ok_or(ApiError::Unauthenticated)?,
            ip,
            current_password: checked_password(current, "current_password")?,
            device_cookie: cookie.as_ref().map(|c| c.value()),
            altcha: body.altcha.as_deref(),
        },
        _ => {
            return Err(ApiError::bad_request(
                "send `current_password` (with a session) or `password_change_token`, not both",
            ));
        }
    };
    let revoked = password_change::change_password(&state, authority, new_password).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "revoked_sessions": revoked })))
}
