//! `POST /v1/login`: password login through the guard.

use std::time::{Duration, UNIX_EPOCH};

use actix_web::{HttpResponse, web};
use portcullis_core::Outcome;

use super::{AppState, ClientIp, Credentials};
use crate::error::ApiError;
use crate::token;

/// Logs in: 200 with a session token; 401 alike for an unknown user and a wrong password (both
/// are counted and hashed the same); 429 with Retry-After when the policy refuses.
pub async fn login(
    state: web::Data<AppState>,
    ClientIp(ip): ClientIp,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let username = body.username()?;
    let password = body.password()?;
    let mut subject = None;
    let outcome = state
        .guard
        .check_password(ip, &username, || async {
            let account = state.accounts.find(&username).await?;
            let stored = account.as_ref().map(|a| a.password_hash.clone());
            let matched = state.hasher.verify(password, stored).await?;
            subject = account.map(|a| a.id);
            Ok(matched)
        })
        .await?;
    let subject = match (outcome, subject) {
        (Outcome::Success, Some(subject)) => subject,
        _ => return Err(ApiError::InvalidCredentials),
    };
    let issued = token::issue()?;
    let session = state
        .sessions
        .create(&issued.digest, &subject, state.session_ttl_ms)
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "token": issued.token,
        "token_type": "Bearer",
        "expires_at": rfc3339(session.expires_at),
    })))
}

/// Formats Unix milliseconds as an RFC 3339 UTC timestamp (second precision).
pub(super) fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}
