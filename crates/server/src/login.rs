//! The login use case: every step of a password login, in order, in one place. Routes only
//! translate HTTP to a [`LoginRequest`] and a [`LoggedIn`] (or an error) back.
//!
//! 1. The guard admits the attempt, refuses it (429) or asks for a solved challenge (401
//!    `challenge_required`) before any database or Argon2 work.
//! 2. The account is looked up and the password verified; an unknown name verifies against a
//!    dummy hash and a permanently locked account is verified too, so neither answers sooner
//!    than a wrong password does.
//! 3. The admission is finished with the outcome, or abandoned when the attempt was never
//!    verified (503: hash queue full, database down), so a client retrying on 503 does not
//!    lock itself out.
//! 4. A failure that turned the lockout permanent locks the account in the database, the one
//!    owner of permanent locks.
//! 5. A success gets a session (durable, in the database) and, from a new browser, a device
//!    cookie.

use std::net::IpAddr;

use portcullis_core::{DeviceId, Outcome, Username};
use portcullis_store::{EventKind, SecurityEvent};
use secrecy::SecretString;

use crate::accounts::Account;
use crate::error::ApiError;
use crate::routes::AppState;
use crate::sessions::Session;
use crate::token::{self, IssuedToken};

/// What a login needs from the request.
pub struct LoginRequest<'a> {
    /// The client address (see `client_ip`).
    pub ip: IpAddr,
    /// The normalised username.
    pub username: &'a Username,
    /// The password, length-checked.
    pub password: SecretString,
    /// The trusted device the request's cookie proves, if any.
    pub device: Option<DeviceId>,
    /// The payload of a solved challenge, if the client sent one.
    pub altcha: Option<&'a str>,
}

/// A successful login.
pub struct LoggedIn {
    /// The bearer token, shown to the client once.
    pub token: IssuedToken,
    /// The session it opens.
    pub session: Session,
    /// Whether the login came from a browser without a device cookie (it gets one).
    pub new_device: bool,
}

/// Runs a login from admission to session.
pub async fn login(state: &AppState, request: LoginRequest<'_>) -> Result<LoggedIn, ApiError> {
    let LoginRequest {
        ip,
        username,
        password,
        device,
        altcha,
    } = request;
    let admission = state
        .guard
        .admit(ip, username, device.as_ref(), altcha)
        .await?;
    let verified = async {
        let account = state.accounts.find(username).await?;
        let stored = account.as_ref().map(|a| a.password_hash.clone());
        let matched = state.hasher.verify(password.clone(), stored).await?;
        Ok::<_, ApiError>((account, matched))
    }
    .await;
    let (account, matched) = match verified {
        Ok(verified) => verified,
        Err(error) => {
            admission.abandon().await;
            return Err(error);
        }
    };
    let outcome = if matched {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let finished = admission.finish(outcome).await?;
    if finished.permanently_locked {
        state.accounts.lock(username).await?;
    }
    let account = match account {
        Some(account) if account.locked_at.is_some() => return Err(state.locked_error()),
        Some(account) if matched => account,
        _ => return Err(ApiError::InvalidCredentials),
    };
    if state.hasher.needs_rehash(&account.password_hash) {
        rehash(state, &account, password).await;
    }
    let token = token::issue()?;
    let session = state.sessions.create(&token.digest, &account.id).await?;
    if device.is_none() {
        state
            .events
            .report(SecurityEvent {
                kind: EventKind::NewDeviceLogin,
                dimension: None,
                key: None,
                subject: Some(account.id.clone()),
                until: None,
            })
            .await;
    }
    Ok(LoggedIn {
        token,
        session,
        new_device: device.is_none(),
    })
}

/// Rehashes a password whose stored hash used other Argon2 parameters. A failure (a full
/// queue, a database error) costs nothing but the upgrade: the login still succeeds and the next
/// one tries again.
async fn rehash(state: &AppState, account: &Account, password: SecretString) {
    let result = async {
        let hash = state.hasher.hash(password).await?;
        state.accounts.update_hash(&account.id, &hash).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    match result {
        Ok(()) => tracing::info!(
            subject = account.id,
            "password rehashed with current parameters"
        ),
        Err(error) => tracing::warn!(subject = account.id, %error, "password rehash deferred"),
    }
}
