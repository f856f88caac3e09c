//! `POST /v1/login` and `POST /v1/login/mfa`: HTTP in and out of the login use case (see
//! [`crate::login`]).

use std::time::{Duration, UNIX_EPOCH};

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::Username;

use serde::Deserialize;

use super::{AppState, ClientIp, Credentials};
use crate::error::ApiError;
use crate::login::{self, LoggedIn, LoginRequest};
use crate::mfa::Proof;

/// Logs in: 200 with a session token; 401 alike for an unknown user and a wrong password (both
/// are counted and hashed the same); 401 `challenge_required` / `challenge_failed` with a
/// challenge when the policy asks for proof of work; 429 with Retry-After when it refuses;
/// 401 `mfa_required` with an `mfa_token` after a right password when the account has a second
/// factor; 403 `password_change_required` for a breached password under `breached_login =
/// "block"`.
pub async fn login(
    state: web::Data<AppState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let username = body.username()?;
    let password = body.password()?;
    let device = request
        .cookie(&state.device.cookie_name)
        .and_then(|cookie| state.device_cookies.verify(cookie.value(), &username));
    let logged_in = login::login(
        &state,
        LoginRequest {
            ip,
            username: &username,
            password,
            device,
            altcha: body.altcha(),
        },
    )
    .await?;
    logged_in_response(&state, &logged_in)
}

/// `{"mfa_token", "code"}` or `{"mfa_token", "recovery_code"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondFactor {
    mfa_token: String,
    code: Option<String>,
    recovery_code: Option<String>,
}

/// The second step of a login: 200 like a login; 400 `malformed_code`; 401 `invalid_token`,
/// `invalid_code` or `code_replayed`; 429 `mfa_throttled` with Retry-After.
pub async fn login_mfa(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Json<SecondFactor>,
) -> Result<HttpResponse, ApiError> {
    let proof = Proof::parse(body.code.as_deref(), body.recovery_code.as_deref())?;
    let cookie = request.cookie(&state.device.cookie_name);
    let logged_in = login::login_second_factor(
        &state,
        &body.mfa_token,
        proof,
        cookie.as_ref().map(|c| c.value()),
    )
    .await?;
    logged_in_response(&state, &logged_in)
}

/// The 200 answer of a finished login, with a device cookie for a new browser and, when
/// `tokens.access.enabled`, a JWT access token.
fn logged_in_response(state: &AppState, logged_in: &LoggedIn) -> Result<HttpResponse, ApiError> {
    let mut response = HttpResponse::Ok();
    if logged_in.new_device {
        response.cookie(new_device_cookie(state, &logged_in.username)?);
    }
    let mut body = serde_json::json!({
        "token": logged_in.token.token,
        "token_type": "Bearer",
        "expires_at": rfc3339(logged_in.session.expires_at),
        "password_change_required": logged_in.session.password_change_required,
    });
    if let Some(tokens) = &state.access_tokens {
        let access = tokens.issue(&logged_in.session.subject)?;
        body["access_token"] = access.jwt.into();
        body["access_token_expires_in"] = access.expires_in.into();
    }
    Ok(response.json(body))
}

/// A device cookie marking this browser as a trusted device of `username`.
fn new_device_cookie(state: &AppState, username: &Username) -> Result<Cookie<'static>, ApiError> {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no entropy source: {e}"))?;
    Ok(Cookie::build(
        state.device.cookie_name.clone(),
        state.device_cookies.issue(username, random),
    )
    .path("/")
    .http_only(true)
    .secure(state.device.secure_cookie)
    .same_site(SameSite::Strict)
    .max_age(CookieDuration::days(i64::from(state.device.max_age_days)))
    .finish())
}

/// Formats Unix milliseconds as an RFC 3339 UTC timestamp (second precision).
pub(super) fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}
