//! The login use case: every step of a password login, in order, in one place. Routes only
//! translate HTTP to a [`LoginRequest`] and a [`LoggedIn`] (or an error) back.
//!
//! 1. The guard admits the attempt, refuses it (429) or asks for a solved challenge (401
//!    `challenge_required`) before any database or Argon2 work.
//! 2. The account is looked up and the password verified; an unknown name verifies against a
//!    dummy hash and a permanently locked account is verified too, so neither answers sooner
//!    than a wrong password does. An attempt that would be challenged by the time its turn in
//!    the hash queue comes (the service came under attack meanwhile) is challenged then, and
//!    one that would be once its password was checked gets the challenge instead of the answer.
//! 3. The admission is finished with the outcome, or abandoned when the attempt was never
//!    verified (503: hash queue full, database down), so a client retrying on 503 does not
//!    lock itself out.
//! 4. A failure that turned the lockout permanent locks the account in the database, the one
//!    owner of permanent locks; a failure that locked the account tells its owner, with a link
//!    that lifts the lockout.
//! 5. A right password found in the breached filter marks what follows.
//! 6. An account with a second factor (TOTP, or a passkey) gets an `mfa_token` and the methods
//!    it has (401 `mfa_required`), and [`login_second_factor`] takes a code or a passkey's
//!    answer; nothing before this step differs between accounts with and without one, so a
//!    wrong password reveals nothing.
//! 7. A success gets a session (durable, in the database; flagged `password_change_required`
//!    for a breached password) and, from a new browser, a device cookie and a notice to the
//!    owner with a "this wasn't me" link. Under
//!    `passwords.breached_login = "block"` a breached password gets no session: a login that
//!    proved possession beyond it (the account's device cookie, or its second factor) gets a
//!    single-use password-change token; one that proved nothing more gets 403
//!    `password_reset_required` and nothing it could use, for whoever holds the leak can send
//!    that password; a verified address gets a reset link instead.
//!
//! Steps 1 to 4 are [`verify_password`], which every password check goes through (a password
//! change checks the current password with it).
//!
//! A passkey sign-in ([`passkey_options`], then [`login_passkey`]) takes the same path without
//! a password: the guard admits the assertion against its source alone (a passkey cannot be
//! guessed, so nothing counts against the account), the answer is verified against its
//! ceremony, the admission is finished with the outcome, and a success opens a session as in
//! step 7. A user-verified assertion is two factors in one: no second step follows.

use std::net::IpAddr;

use portcullis_core::backoff::Lockout;
use portcullis_core::{DeviceId, Outcome, Username};
use portcullis_store::EventKind;
use secrecy::{ExposeSecret, SecretString};

use crate::AppState;
use crate::accounts::Account;
use crate::error::Error;
use crate::login_tokens::Purpose;
use crate::mfa::Proof;
use crate::notices::Notice;
use crate::passkeys::{Assertion, PublicKeyCredential, RequestChallengeResponse, Started};
use crate::password_reset;
use crate::passwords::Priority;
use crate::sessions::Session;
use crate::settings::BreachedLogin;
use crate::token::{self, IssuedToken};

/// How long a password-change token (`passwords.breached_login = "block"`) lives, in ms.
const PASSWORD_CHANGE_TOKEN_MS: u64 = 10 * 60 * 1_000;

/// What a password check needs from the request.
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
    /// The account's username (a device cookie names it).
    pub username: Username,
    /// Whether the login came from a browser without a device cookie (it gets one).
    pub new_device: bool,
}

/// Runs a password login from admission to session (or to the second factor's step).
pub async fn login(state: &AppState, request: LoginRequest<'_>) -> Result<LoggedIn, Error> {
    let password = request.password.clone();
    let known_device = request.device.is_some();
    let account = verify_password(state, request).await?;
    let breached = state.passwords.is_breached(password.expose_secret());
    if breached {
        state
            .events
            .report_account(EventKind::BreachedPasswordLogin, &account.id)
            .await;
    }
    if account.second_factors.any() {
        let mfa_token = state
            .login_tokens
            .issue(&account.id, Purpose::Mfa, state.mfa_token_ttl_ms, breached)
            .await?;
        return Err(Error::MfaRequired {
            mfa_token,
            methods: account.second_factors,
        });
    }
    let breach = match (breached, known_device) {
        (false, _) => Breach::None,
        (true, true) => Breach::WithPossession,
        (true, false) => Breach::PasswordOnly,
    };
    open_session(state, &account, breach, known_device).await
}

/// Whether the password that logged in was found in a breach, and what else the login proved.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Breach {
    /// Not found in the breached filter.
    None,
    /// Found, and the login proved possession beyond it: the account's device cookie, or its
    /// second factor. Someone holding only the leak cannot be this sender.
    WithPossession,
    /// Found, and nothing but the password proved: anyone holding the leak could be the sender.
    PasswordOnly,
}

/// What the second step of a login proves possession with.
pub enum SecondFactor<'a> {
    /// A TOTP code or a recovery code (throttled per account: codes can be guessed).
    Code(Proof<'a>),
    /// An answer of one of the account's passkeys (options from [`passkey_options`] with the
    /// account's username), checked like a passkey sign-in.
    Passkey {
        /// The ceremony the options named.
        ceremony: &'a str,
        /// The authenticator's answer.
        credential: &'a PublicKeyCredential,
    },
}

/// The second step of a login whose account has a second factor: the `mfa_token` the first
/// step gave and a proof; `device_cookie` is the request's device cookie.
pub async fn login_second_factor(
    state: &AppState,
    mfa_token: &str,
    proof: SecondFactor<'_>,
    device_cookie: Option<&str>,
) -> Result<LoggedIn, Error> {
    let token = state
        .login_tokens
        .find(mfa_token, Purpose::Mfa)
        .await?
        .ok_or(Error::InvalidLoginToken)?;
    match proof {
        SecondFactor::Code(proof) => {
            state
                .mfa
                .verify(
                    &token.account_id,
                    proof,
                    Some((&state.login_tokens, &token)),
                )
                .await?;
        }
        // Not admitted again: the password was, and each answer needs options of its own,
        // which the guard admits. Another account's passkey proves nothing about this one.
        SecondFactor::Passkey {
            ceremony,
            credential,
        } => match state.passkeys.verify(ceremony, credential).await? {
            Assertion::Verified { account_id } if account_id == token.account_id => {}
            _ => return Err(Error::InvalidPasskey),
        },
    }
    // One code, one session: a second right code racing on the same token gets nothing.
    if !state.login_tokens.consume(&token).await? {
        return Err(Error::InvalidLoginToken);
    }
    let account = state
        .accounts
        .find_by_id(&token.account_id)
        .await?
        .ok_or(Error::InvalidLoginToken)?;
    if account.locked_at.is_some() {
        return Err(state.locked_error());
    }
    let known_device = has_device_cookie(state, &account, device_cookie)?;
    let breach = if token.password_change_required {
        Breach::WithPossession
    } else {
        Breach::None
    };
    open_session(state, &account, breach, known_device).await
}

/// Sign-in options for `username`, or discoverable ones without a username (see
/// [`crate::passkeys::Passkeys::sign_in_options`]); counted against the source's limits like a
/// registration, challengeable under attack.
pub async fn passkey_options(
    state: &AppState,
    ip: IpAddr,
    username: Option<&Username>,
    altcha: Option<&str>,
) -> Result<Started<RequestChallengeResponse>, Error> {
    state.guard.admit_source(ip, altcha).await?;
    let account = match username {
        Some(username) => state.accounts.find(username).await?,
        None => None,
    };
    state
        .passkeys
        .sign_in_options(username, account.as_ref())
        .await
}

/// What a passkey sign-in needs from the request.
pub struct PasskeySignIn<'a> {
    /// The client address.
    pub ip: IpAddr,
    /// The ceremony the options named.
    pub ceremony: &'a str,
    /// The authenticator's answer.
    pub credential: &'a PublicKeyCredential,
    /// The request's device cookie, if any.
    pub device_cookie: Option<&'a str>,
    /// The payload of a solved challenge, if any.
    pub altcha: Option<&'a str>,
}

/// Runs a passkey sign-in from admission to session.
pub async fn login_passkey(
    state: &AppState,
    request: PasskeySignIn<'_>,
) -> Result<LoggedIn, Error> {
    let account = verify_passkey(
        state,
        request.ip,
        request.ceremony,
        request.credential,
        request.altcha,
    )
    .await?;
    state
        .events
        .report_account(EventKind::PasskeyLogin, &account.id)
        .await;
    let known_device = has_device_cookie(state, &account, request.device_cookie)?;
    open_session(state, &account, Breach::None, known_device).await
}

/// Whether `cookie` is `account`'s device cookie (a browser it has logged in from).
fn has_device_cookie(
    state: &AppState,
    account: &Account,
    cookie: Option<&str>,
) -> anyhow::Result<bool> {
    let username = account.normalised_username()?;
    Ok(cookie
        .and_then(|cookie| state.device_cookies.verify(cookie, &username))
        .is_some())
}

/// Checks a passkey's answer through the guard: admission against the source, verification
/// against its ceremony, settling. Returns the passkey's account (refused when locked).
async fn verify_passkey(
    state: &AppState,
    ip: IpAddr,
    ceremony: &str,
    credential: &PublicKeyCredential,
    altcha: Option<&str>,
) -> Result<Account, Error> {
    let admission = state
        .guard
        .admit_assertion(ip, credential.get_credential_id(), altcha)
        .await?;
    let assertion = match state.passkeys.verify(ceremony, credential).await {
        Ok(assertion) => assertion,
        Err(error) => {
            admission.abandon().await;
            return Err(error);
        }
    };
    let Assertion::Verified { account_id } = assertion else {
        admission.finish(Outcome::Failure, false, None).await?;
        return Err(Error::InvalidPasskey);
    };
    admission.finish(Outcome::Success, true, None).await?;
    let account = state
        .accounts
        .find_by_id(&account_id)
        .await?
        .ok_or(Error::InvalidPasskey)?;
    if account.locked_at.is_some() {
        return Err(state.locked_error());
    }
    Ok(account)
}

/// What proves a signed-in person is still them.
pub enum StepUp<'a> {
    /// The current password, checked like a login.
    Password(SecretString),
    /// An answer of one of the account's passkeys (options from
    /// [`passkey_options`]), checked like a passkey sign-in.
    Passkey {
        /// The ceremony the options named.
        ceremony: &'a str,
        /// The authenticator's answer.
        credential: &'a PublicKeyCredential,
    },
}

/// A signed-in person proving it is still them before a change: their session, and their
/// current password or one of their passkeys.
pub struct Reauthentication<'a> {
    /// The session token's digest.
    pub session_digest: String,
    /// The client address.
    pub ip: IpAddr,
    /// The proof.
    pub step_up: StepUp<'a>,
    /// The request's device cookie, if any.
    pub device_cookie: Option<&'a str>,
    /// The payload of a solved challenge, if any.
    pub altcha: Option<&'a str>,
}

/// The account of a live session whose step-up checks out through the guard: its current
/// password like any password check (counted, lockable, challengeable), or a passkey of the
/// account like a passkey sign-in. `before_counting` runs on the account first, so input it
/// refuses costs the owner nothing.
pub async fn reauthenticate(
    state: &AppState,
    request: Reauthentication<'_>,
    before_counting: impl FnOnce(&Username) -> Result<(), Error>,
) -> Result<Account, Error> {
    let session = state
        .sessions
        .get(&request.session_digest)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let account = state
        .accounts
        .find_by_id(&session.subject)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let username = account.normalised_username()?;
    before_counting(&username)?;
    match request.step_up {
        StepUp::Password(password) => {
            let device = request
                .device_cookie
                .and_then(|c| state.device_cookies.verify(c, &username));
            verify_password(
                state,
                LoginRequest {
                    ip: request.ip,
                    username: &username,
                    password,
                    device,
                    altcha: request.altcha,
                },
            )
            .await?;
        }
        StepUp::Passkey {
            ceremony,
            credential,
        } => {
            let verified =
                verify_passkey(state, request.ip, ceremony, credential, request.altcha).await?;
            // Another account's passkey proves nothing about this session.
            if verified.id != account.id {
                return Err(Error::InvalidPasskey);
            }
        }
    }
    Ok(account)
}

/// Checks a password through the guard: admission, verification, settling, permanent lock.
/// Returns the account when the password is its own.
pub async fn verify_password(
    state: &AppState,
    request: LoginRequest<'_>,
) -> Result<Account, Error> {
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
    let looked_up = async {
        let account = state.accounts.find(username).await?;
        // An account without a password verifies against the dummy hash, as an unknown name
        // does: a wrong password in every way but the counting, which is a known account's.
        let stored = account
            .as_ref()
            .filter(|a| a.has_password())
            .map(|a| a.password_hash.clone());
        // A trusted device's owner goes ahead of everyone else in the hash queue.
        let priority = if device.is_some() {
            Priority::High
        } else {
            Priority::Low
        };
        let turn = state.hasher.turn(priority).await?;
        Ok::<_, Error>((account, stored, turn))
    }
    .await;
    let (account, stored, turn) = match looked_up {
        Ok(looked_up) => looked_up,
        Err(error) => {
            admission.abandon().await;
            return Err(error);
        }
    };
    // The service may have come under attack while the attempt waited for its turn.
    if let Some(work) = admission.challenge_now() {
        drop(turn);
        return Err(admission.challenge(work).await);
    }
    let matched = match turn.verify(password.clone(), stored).await {
        Ok(matched) => matched,
        Err(error) => {
            admission.abandon().await;
            return Err(error.into());
        }
    };
    // Or while its password was checked: the answer would tell a guess admitted just before the
    // trip what one sent a moment later cannot learn, so it is withheld, right or wrong alike.
    if let Some(work) = admission.challenge_now() {
        return Err(admission.challenge(work).await);
    }
    let outcome = if matched {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let finished = admission
        .finish(outcome, account.is_some(), Some(password.expose_secret()))
        .await?;
    if let Some(lockout) = finished.account_lockout {
        if lockout == Lockout::Permanent {
            state.accounts.lock(username).await?;
        }
        if let Some(account) = &account {
            state.notices.send(account, Notice::AccountLocked).await;
        }
    }
    let account = match account {
        Some(account) if account.locked_at.is_some() => return Err(state.locked_error()),
        Some(account) if matched => account,
        _ => return Err(Error::InvalidCredentials),
    };
    if state.hasher.needs_rehash(&account.password_hash) {
        rehash(state, &account, password).await;
    }
    Ok(account)
}

/// Opens the session of a login that passed every step (`known_device`: from a browser with
/// the account's device cookie).
async fn open_session(
    state: &AppState,
    account: &Account,
    breach: Breach,
    known_device: bool,
) -> Result<LoggedIn, Error> {
    let block = state.breached_login == BreachedLogin::Block;
    if block && breach == Breach::PasswordOnly {
        // The owner hears of it at the verified address, with a way back in; the sender gets
        // nothing to use.
        if let Err(error) = password_reset::queue_link_for(state, account).await {
            tracing::warn!(subject = %account.id, error = format!("{error:#}"), "reset link for a breached login not queued");
        }
        return Err(Error::PasswordResetRequired);
    }
    if block && breach == Breach::WithPossession {
        let password_change_token = state
            .login_tokens
            .issue(
                &account.id,
                Purpose::PasswordChange,
                PASSWORD_CHANGE_TOKEN_MS,
                false,
            )
            .await?;
        return Err(Error::PasswordChangeRequired {
            password_change_token,
        });
    }
    let username = account.normalised_username()?;
    let token = token::issue()?;
    let session = state
        .sessions
        .create(&token.digest, &account.id, breach != Breach::None)
        .await?;
    if !known_device {
        state
            .events
            .report_account(EventKind::NewDeviceLogin, &account.id)
            .await;
        state.notices.send(account, Notice::NewDeviceLogin).await;
    }
    Ok(LoggedIn {
        token,
        session,
        username,
        new_device: !known_device,
    })
}

/// Rehashes a password whose stored hash used other Argon2 parameters. A failure (a full
/// queue, a database error) costs nothing but the upgrade: the login still succeeds and the next
/// one tries again.
async fn rehash(state: &AppState, account: &Account, password: SecretString) {
    let result = async {
        let hash = state.hasher.hash(password).await?;
        state.accounts.update_hash(&account.id, &hash).await?;
        Ok::<_, Error>(())
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
