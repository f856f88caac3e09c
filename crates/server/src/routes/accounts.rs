//! `POST /v1/users`: registration.

use actix_web::{HttpResponse, web};
use secrecy::ExposeSecret;

use super::{AppState, ClientIp, Credentials};
use crate::error::ApiError;

/// Registers an account: 201, 409 for a taken normalised username or a look-alike of one (same
/// confusable skeleton), 400 for bad input or a password the rules refuse (`weak_password`,
/// `breached_password`), checked before anything is counted.
/// Registrations count against the client's address, subnet and network limits (each costs a
/// hash), and a risky source must solve a challenge first, as for a login.
pub async fn register(
    state: web::Data<AppState>,
    ClientIp(ip): ClientIp,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let username = body.username()?;
    let password = body.password()?;
    state
        .passwords
        .check_new(password.expose_secret(), &username)?;
    state.guard.log_username(&username, None);
    state.guard.admit_source(ip, body.altcha()).await?;
    let hash = state.hasher.hash(password).await?;
    let account = state.accounts.create(&username, &hash).await?;
    tracing::info!(target: "security", event = "account_created", subject = %account.id);
    Ok(HttpResponse::Created().json(serde_json::json!({
        "id": account.id,
        "username": account.username,
    })))
}
