//! The registration use case (`POST /v1/users` and the register page): the new password must
//! pass the rules before anything is counted; then the source is admitted like a login's
//! (address, subnet and network limits, a challenge for a risky source), since each
//! registration costs a hash; then the account is created.

use std::net::IpAddr;

use portcullis_core::Username;
use secrecy::{ExposeSecret, SecretString};

use crate::AppState;
use crate::accounts::Account;
use crate::error::Error;

/// Registers `username` with `password` from `ip`, carrying a solved challenge if any.
pub async fn register(
    state: &AppState,
    ip: IpAddr,
    username: &Username,
    password: SecretString,
    altcha: Option<&str>,
) -> Result<Account, Error> {
    state
        .passwords
        .check_new(password.expose_secret(), username)?;
    state.guard.log_username(username, None);
    state.guard.admit_source(ip, altcha).await?;
    let hash = state.hasher.hash(password).await?;
    let account = state.accounts.create(username, &hash).await?;
    tracing::info!(target: "security", event = "account_created", subject = %account.id);
    Ok(account)
}
