//! The registration use case (`POST /v1/users` and the register page). Every request counts,
//! whatever comes of it: the source is admitted like a login's (address, subnet and network
//! limits, a challenge for a risky source) before anything else, for checking a password costs
//! CPU (zxcvbn, about 2.5 ms) and accepting one a hash. Then the username, the address if one
//! is given, and the password rules are checked, the password hashed and the account created;
//! an address gets its verification link ([`crate::addresses`]).

use std::net::IpAddr;

use portcullis_core::Username;
use secrecy::{ExposeSecret, SecretString};

use crate::AppState;
use crate::accounts::Account;
use crate::addresses;
use crate::error::Error;

/// A new account.
pub struct Registered {
    /// The account.
    pub account: Account,
    /// The address a verification link went to, if one was given.
    pub email: Option<String>,
}

/// Registers the request's `credentials` (its username and password as parsed, or why they
/// could not be) and optional `email` from `ip`, carrying a solved challenge if any.
pub async fn register(
    state: &AppState,
    ip: IpAddr,
    credentials: Result<(Username, SecretString), Error>,
    email: Option<&str>,
    altcha: Option<&str>,
) -> Result<Registered, Error> {
    if let Ok((username, _)) = &credentials {
        state.guard.log_username(username, None);
    }
    state.guard.admit_source(ip, altcha).await?;
    let (username, password) = credentials?;
    let email = email.map(addresses::normalise).transpose()?;
    state
        .passwords
        .check_new(password.expose_secret(), &username)?;
    let hash = state.hasher.hash(password).await?;
    let account = state.accounts.create(&username, &hash, None).await?;
    tracing::info!(target: "security", event = "account_created", subject = %account.id);
    // The account stands whatever becomes of the link: its owner can ask for another.
    let email = match email {
        Some(email) => {
            match addresses::send_link(state, &account.id, &account.username, &email).await {
                Ok(()) => Some(email),
                Err(error) => {
                    tracing::warn!(subject = %account.id, %error, "verification link not queued at registration");
                    None
                }
            }
        }
        None => None,
    };
    Ok(Registered { account, email })
}
