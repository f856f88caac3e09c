//! `POST /v1/password`: HTTP in and out of the password change use case (see
//! [`portcullis_accounts::password_change`]).

use actix_web::{HttpRequest, HttpResponse, post, web};
use portcullis_accounts::password_change::{self, Authority};
use portcullis_accounts::{AppState, Error};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::{BodyRefused, Throttled, Unavailable};
use super::{ClientIp, HttpState, bearer_digest, checked_password};
use crate::error::{ApiError, Problem};

/// `{"current_password", "new_password", "altcha"?}` with a session, or
/// `{"password_change_token", "new_password"}` without one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// With a session: the password now (checked like a login).
    #[schema(value_type = Option<String>)]
    current_password: Option<SecretString>,
    /// The new password (the rules of docs/defences.md).
    #[schema(value_type = String)]
    new_password: SecretString,
    /// Without a session: the token of a `password_change_required` answer.
    password_change_token: Option<String>,
    /// The payload of a solved challenge, when one was asked.
    altcha: Option<String>,
}

/// A changed password.
#[derive(Serialize, ToSchema)]
pub struct PasswordChanged {
    /// Other sessions of the account that ended.
    revoked_sessions: u64,
}

/// Changes the password: 200 `{"revoked_sessions": n}`; 400 `weak_password` /
/// `breached_password`; 401 for a wrong current password (counted like a login), a missing
/// session or an invalid token; 429 / 401 challenge as for a login.
#[utoipa::path(
    tag = "accounts",
    request_body = PasswordChange,
    security((), ("session" = [])),
    responses(
        (status = 200, description = "Changed; every other session of the account ended", body = PasswordChanged),
        (status = 400, description = "`bad_request`, `weak_password` / `breached_password` (with `reason`), `invalid_forwarded_header`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`invalid_credentials` (wrong current password, counted like a login), `unauthenticated`, `invalid_token`, `challenge_required` / `challenge_failed`", body = Problem, content_type = "application/problem+json"),
        (status = 423, description = "`locked` (only with `responses.disclose_lockouts`)", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        Throttled,
        Unavailable,
    )
)]
#[post("/v1/password")]
pub async fn change(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    body: web::Json<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let new_password = checked_password(body.new_password, "new_password")?;
    let cookie = request.cookie(&http.device.cookie_name);
    let authority = match (body.password_change_token.as_deref(), body.current_password) {
        (Some(token), None) => Authority::Token(token),
        (None, Some(current)) => Authority::Session {
            digest: bearer_digest(&request).ok_or(Error::Unauthenticated)?,
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
    Ok(HttpResponse::Ok().json(PasswordChanged {
        revoked_sessions: revoked,
    }))
}
