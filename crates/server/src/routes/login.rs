//! `POST /v1/login`: HTTP in and out of the login use case (see [`crate::login`]).

use std::time::{Duration, UNIX_EPOCH};

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::Username;

use super::{AppState, ClientIp, Credentials};
use crate::error::ApiError;
use crate::login::{self, LoginRequest};

/// Logs in: 200 with a session token; 401 alike for an unknown user and a wrong password (both
/// are counted and hashed the same); 401 `challenge_required` / `challenge_failed` with a
/// challenge when the policy asks for proof of work; 429 with Retry-After when it refuses.
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
    let mut response = HttpResponse::Ok();
    if logged_in.new_device {
        response.cookie(new_device_cookie(&state, &username)?);
    }
    Ok(response.json(serde_json::json!({
        "token": logged_in.token.token,
        "token_type": "Bearer",
        "expires_at": rfc3339(logged_in.session.expires_at),
    })))
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
