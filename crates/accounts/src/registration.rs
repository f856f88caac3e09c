//! The registration use case (`POST /v1/users` and the register page). Every request counts,
//! whatever comes of it: the source is admitted like a login's (address, subnet and network
//! limits, a challenge for a risky source) before anything else, for checking a password costs
//! CPU (zxcvbn, about 2.5 ms) and accepting one a hash. Then the username, the address if one
//! is given, and the password rules are checked, the password hashed and the account created;
//! an address gets its verification link ([`crate::addresses`]).
//!
//! Without a password, a registration is a passkey's: [`start_with_passkey`] is admitted alike
//! and answers the options of a passkey ceremony for an account that does not exist yet;
//! [`finish_with_passkey`] verifies the authenticator's answer, then creates the account, with
//! no password, and stores its passkey. The name is taken only then: a registration never
//! finished holds nothing (its ceremony expires in 5 minutes).

use std::net::IpAddr;

use portcullis_core::Username;
use secrecy::{ExposeSecret, SecretString};

use crate::AppState;
use crate::accounts::Account;
use crate::addresses;
use crate::error::Error;
use crate::passkeys::{CreationChallengeResponse, RegisterPublicKeyCredential, Started};

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
    state.guard.remember_network(ip, &username).await;
    Ok(registered(state, account, email).await)
}

/// A new `account`, whose `email`, if any, gets its verification link. The account stands
/// whatever becomes of the link: its owner can ask for another.
async fn registered(state: &AppState, account: Account, email: Option<String>) -> Registered {
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
    Registered { account, email }
}

/// Starts registering `username` (as parsed, or why not) with a passkey and no password, and
/// optional `email`, from `ip` carrying a solved challenge if any: the passkey ceremony's
/// options (409 `username_taken` for a name registered already).
pub async fn start_with_passkey(
    state: &AppState,
    ip: IpAddr,
    username: Result<Username, Error>,
    email: Option<&str>,
    altcha: Option<&str>,
) -> Result<Started<CreationChallengeResponse>, Error> {
    if let Ok(username) = &username {
        state.guard.log_username(username, None);
    }
    state.guard.admit_source(ip, altcha).await?;
    let username = username?;
    let email = email.map(addresses::normalise).transpose()?;
    if state.accounts.find(&username).await?.is_some() {
        return Err(Error::UsernameTaken);
    }
    state.passkeys.start_sign_up(&username, email).await
}

/// Finishes a registration [`start_with_passkey`] began, with the authenticator's answer to
/// its `ceremony`: the account, with no password and this passkey named `name`.
pub async fn finish_with_passkey(
    state: &AppState,
    ceremony: &str,
    name: &str,
    credential: &RegisterPublicKeyCredential,
) -> Result<Registered, Error> {
    let sign_up = state.passkeys.finish_sign_up(ceremony, credential).await?;
    let username = Username::parse(&sign_up.username)
        .map_err(|e| anyhow::anyhow!("a sign-up's username no longer parses: {e}"))?;
    // Another registration may have taken the name since the options: 409 then.
    let account = state
        .accounts
        .create_with_id(&sign_up.account_id, &username, "", None)
        .await?;
    if let Err(error) = state.passkeys.add_signed_up(&account, name, &sign_up).await {
        // Nothing opens an account without its passkey: it goes, and the name is free again.
        state.accounts.delete_unused(&account.id).await?;
        return Err(error);
    }
    tracing::info!(target: "security", event = "account_created", subject = %account.id, passkey = true);
    Ok(registered(state, account, sign_up.email).await)
}
