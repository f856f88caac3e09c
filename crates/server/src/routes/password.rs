//! `POST /v1/password`, `DELETE /v1/password`, `POST /v1/password/reset` and
//! `POST /v1/password/reset/confirm`: HTTP in and out of the password change and reset use cases (see
//! [`portcullis_accounts::password_change`], [`portcullis_accounts::password_reset`]).

use actix_web::{HttpRequest, HttpResponse, delete, post, web};
use portcullis_accounts::login::{Reauthentication, StepUp};
use portcullis_accounts::password_change::{self, Authority};
use portcullis_accounts::password_reset;
use portcullis_accounts::{AppState, Error};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::alternatives;
use super::openapi::{BodyRefused, Throttled, Unavailable};
use super::{
    ClientIp, HttpState, JsonObject, SessionDigest, StepUpBody, bearer_digest, checked_password,
    parse_username,
};
use crate::error::{ApiError, Problem};

/// `{"current_password", "new_password", "altcha"?}` with a session, or
/// `{"password_change_token", "new_password"}` without one; its schema is
/// [`alternatives::password_change`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// With a session: the password now (checked like a login).
    current_password: Option<SecretString>,
    /// The new password (the rules of docs/defences.md).
    new_password: SecretString,
    /// Without a session: the token of a `password_change_required` answer.
    password_change_token: Option<String>,
    /// The payload of a solved challenge, when one was asked.
    altcha: Option<String>,
}

alternatives::written_schema!(PasswordChange, alternatives::password_change);

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
        (None, Some(current)) => Authority::Session(Reauthentication {
            session_digest: bearer_digest(&request).ok_or(Error::Unauthenticated)?,
            ip,
            step_up: StepUp::Password(checked_password(current, "current_password")?),
            device_cookie: cookie.as_ref().map(|c| c.value()),
            altcha: body.altcha.as_deref(),
        }),
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

/// Takes the account's password away after a passkey's step-up (`{"ceremony", "credential"}`
/// from `POST /v1/login/passkey/options`): 204; the account signs in with its passkeys only, and
/// a password login to it fails as a wrong password does. A reset gives it a password again.
#[utoipa::path(
    tag = "accounts",
    request_body = StepUpBody,
    security(("session" = [])),
    responses(
        (status = 204, description = "The password is gone"),
        (status = 400, description = "`bad_request` (a password is no step-up for this), `invalid_forwarded_header`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthenticated`, `invalid_passkey` (counted against the source), `challenge_required` / `challenge_failed`", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        Throttled,
        Unavailable,
    )
)]
#[delete("/v1/password")]
pub async fn remove_password(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    session: SessionDigest,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    let step_up = StepUpBody::read(body.into_inner(), &request, &http, session, ip)?;
    password_change::remove_password(&state, step_up.reauthentication()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `{"username", "altcha"?}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// The account's username.
    #[schema(min_length = 1, max_length = 256)]
    username: String,
    /// The payload of a solved challenge, when one was asked.
    altcha: Option<String>,
}

/// The one answer to every reset request.
#[derive(Serialize, ToSchema)]
pub struct ResetRequested {
    /// What happens now, the same for every account and none.
    detail: &'static str,
}

/// What every admitted reset request is told.
pub const RESET_REQUESTED: &str =
    "If this account has a verified address, a link to reset its password is on its way.";

/// Asks for a password-reset link: 202, the same answer whether the account exists, has a
/// verified address, or neither (the lookup and the mail happen after the answer). Counted
/// against the source's limits like a registration; challengeable under attack.
#[utoipa::path(
    tag = "accounts",
    request_body = ResetRequest,
    responses(
        (status = 202, description = "Accepted, whatever the account", body = ResetRequested),
        (status = 400, description = "`bad_request`, `invalid_username`, `invalid_forwarded_header`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`challenge_required` / `challenge_failed` (with `challenge`)", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        Throttled,
        Unavailable,
    )
)]
#[post("/v1/password/reset")]
pub async fn request_reset(
    state: web::Data<AppState>,
    ClientIp(ip): ClientIp,
    body: web::Json<ResetRequest>,
) -> Result<HttpResponse, ApiError> {
    let username = parse_username(&body.username);
    password_reset::request(state.into_inner(), ip, username, body.altcha.as_deref()).await?;
    Ok(HttpResponse::Accepted().json(ResetRequested {
        detail: RESET_REQUESTED,
    }))
}

/// `{"token", "new_password"}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirm {
    /// The reset link's `token` parameter.
    #[schema(min_length = 43, max_length = 43)]
    token: String,
    /// The new password (the rules of docs/defences.md).
    #[schema(value_type = String, min_length = 1, max_length = 1024)]
    new_password: SecretString,
}

/// Sets a new password with a reset link: 200 `{"revoked_sessions": n}` (every session ends;
/// the account's lockout is lifted; nobody is logged in); 400 `weak_password` /
/// `breached_password` (the link still works) or `invalid_link`.
#[utoipa::path(
    tag = "accounts",
    request_body = ResetConfirm,
    responses(
        (status = 200, description = "Reset; every session of the account ended", body = PasswordChanged),
        (status = 400, description = "`bad_request`, `weak_password` / `breached_password` (with `reason`), `invalid_link`", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        Unavailable,
    )
)]
#[post("/v1/password/reset/confirm")]
pub async fn confirm_reset(
    state: web::Data<AppState>,
    body: web::Json<ResetConfirm>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let new_password = checked_password(body.new_password, "new_password")?;
    let revoked = password_reset::confirm(&state, &body.token, new_password).await?;
    Ok(HttpResponse::Ok().json(PasswordChanged {
        revoked_sessions: revoked,
    }))
}
