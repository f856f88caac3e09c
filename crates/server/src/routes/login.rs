//! `POST /v1/login`: password login through the guard, with device cookies.

use std::time::{Duration, UNIX_EPOCH};

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::{Outcome, Username};
use portcullis_store::{EventKind, SecurityEvent};
use secrecy::SecretString;

use super::{AppState, ClientIp, Credentials};
use crate::error::ApiError;
use crate::token;

/// Logs in: 200 with a session token; 401 alike for an unknown user and a wrong password (both
/// are counted and hashed the same); 429 with Retry-After when the policy refuses.
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
    let mut matched_account = None;
    let checked = state
        .guard
        .check_password(ip, &username, device.as_ref(), || async {
            let account = state.accounts.find(&username).await?;
            if account.as_ref().is_some_and(|a| a.locked_at.is_some()) {
                return Err(state.locked_error());
            }
            let stored = account.as_ref().map(|a| a.password_hash.clone());
            let matched = state.hasher.verify(password.clone(), stored).await?;
            matched_account = account;
            Ok(matched)
        })
        .await?;
    if checked.permanently_locked {
        state.accounts.lock(&username).await?;
    }
    let account = match (checked.outcome, matched_account) {
        (Outcome::Success, Some(account)) => account,
        _ => return Err(ApiError::InvalidCredentials),
    };
    if state.hasher.needs_rehash(&account.password_hash) {
        rehash(&state, &account.id, password).await;
    }
    let subject = account.id;
    let issued = token::issue()?;
    let session = state
        .sessions
        .create(&issued.digest, &subject, state.session_ttl_ms)
        .await?;
    let mut response = HttpResponse::Ok();
    if device.is_none() {
        response.cookie(new_device_cookie(&state, &username)?);
        state
            .events
            .report(SecurityEvent {
                kind: EventKind::NewDeviceLogin,
                dimension: None,
                key: None,
                subject: Some(subject.clone()),
                until: None,
            })
            .await;
    }
    Ok(response.json(serde_json::json!({
        "token": issued.token,
        "token_type": "Bearer",
        "expires_at": rfc3339(session.expires_at),
    })))
}

/// Rehashes a password whose stored hash used other Argon2 parameters. A failure (a full
/// queue, a database error) costs nothing but the upgrade: the login still succeeds and the next
/// one tries again.
async fn rehash(state: &AppState, account_id: &str, password: SecretString) {
    let result = async {
        let hash = state.hasher.hash(password).await?;
        state.accounts.update_hash(account_id, &hash).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    match result {
        Ok(()) => tracing::info!(
            subject = account_id,
            "password rehashed with current parameters"
        ),
        Err(error) => tracing::warn!(subject = account_id, %error, "password rehash deferred"),
    }
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
