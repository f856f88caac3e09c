//! The registration use case (`POST /v1/users` and the register page). Every request counts,
//! whatever comes of it: the source is admitted like a login's (address, subnet and network
//! limits, a challenge for a risky source) before anything else, for checking a password costs
//! CPU (zxcvbn, about 2.5 ms) and accepting one a hash. Then the username and the password
//! rules are checked, the password hashed and the account created.

use std::net::IpAddr;

use portcullis_core::Username;
use secrecy::{ExposeSecret, SecretString};

use crate::AppState;
use crate::accounts::Account;
use crate::error::Error;

/// Registers the request's `credentials` (its username and password as parsed, or why they
/// could not be) from `ip`, carrying a solved challenge if any.
pub async fn register(
    state: &AppState,
    ip: IpAddr,
    credentials: Result<(Username, SecretString), Error>,
    altcha: Option<&str>,
) -> Result<Account, Error> {
    if let Ok((username, _)) = &credentials {
        state.guard.log_username(username, None);
    }
    state.guard.admit_source(ip, altcha).await?;
    let (username, password) = credentials?;
    state
        .passwords
        .check_new(password.expose_secret(), &username)?;
    let hash = state.hasher.hash(password).await?;
    let account = state.accounts.create(&username, &hash).await?;
    tracing::info!(target: "security", event = "account_created", subject = %account.id);
    Ok(account)
}
