//! The password change use case (`POST /v1/password`), authorised one of two ways:
//!
//! - a session and a step-up ([`crate::login::reauthenticate`]): the current password, checked
//!   through the login guard like any other password check (counted, lockable,
//!   challengeable), or one of the account's passkeys;
//! - a password-change token from a login refused for a breached password
//!   (`passwords.breached_login = "block"`), single use.
//!
//! The new password must pass the rules before anything is counted or consumed. On success the
//! password is rehashed, every other session of the account ends, a `password_changed`
//! security event is reported and the owner told.
//!
//! [`remove_password`] (`DELETE /v1/password`) takes the password away after a passkey
//! step-up: nothing is left to stuff.

use portcullis_core::Username;
use portcullis_store::EventKind;
use secrecy::{ExposeSecret, SecretString};

use crate::AppState;
use crate::accounts::Account;
use crate::error::Error;
use crate::login::{self, Reauthentication, StepUp};
use crate::login_tokens::Purpose;
use crate::notices::Notice;

/// What authorises a password change.
pub enum Authority<'a> {
    /// A live session and the current password.
    Session(Reauthentication<'a>),
    /// A password-change token.
    Token(&'a str),
}

/// Changes an account's password; returns how many other sessions ended.
pub async fn change_password(
    state: &AppState,
    authority: Authority<'_>,
    new_password: SecretString,
) -> Result<u64, Error> {
    let (account, keep) = match authority {
        Authority::Session(request) => {
            let keep = request.session_digest.clone();
            let account = login::reauthenticate(state, request, |username| {
                Ok(state
                    .passwords
                    .check_new(new_password.expose_secret(), username)?)
            })
            .await?;
            (account, Some(keep))
        }
        Authority::Token(value) => {
            let token = state
                .login_tokens
                .find(value, Purpose::PasswordChange)
                .await?
                .ok_or(Error::InvalidLoginToken)?;
            let (account, _) = checked_change(
                state,
                &token.account_id,
                &new_password,
                Error::InvalidLoginToken,
            )
            .await?;
            if !state.login_tokens.consume(&token).await? {
                return Err(Error::InvalidLoginToken);
            }
            (account, None)
        }
    };
    let hash = state.hasher.hash(new_password).await?;
    state.accounts.update_hash(&account.id, &hash).await?;
    let revoked = state
        .sessions
        .after_password_change(&account.id, keep.as_deref())
        .await?;
    state
        .events
        .report_account(EventKind::PasswordChanged, &account.id)
        .await;
    state.notices.send(&account, Notice::PasswordChanged).await;
    Ok(revoked)
}

/// Takes the password of the account a session stepped up for with one of its passkeys
/// (`request.step_up` must be a passkey: a password proves nothing a leak cannot).
pub async fn remove_password(state: &AppState, request: Reauthentication<'_>) -> Result<(), Error> {
    if matches!(request.step_up, StepUp::Password(_)) {
        return Err(Error::bad_request(
            "removing the password takes a passkey's answer (`ceremony`, `credential`)",
        ));
    }
    let account = login::reauthenticate(state, request, |_| Ok(())).await?;
    state.accounts.remove_password(&account.id).await?;
    state
        .events
        .report_account(EventKind::PasswordRemoved, &account.id)
        .await;
    state.notices.send(&account, Notice::PasswordChanged).await;
    Ok(())
}

/// The account `account_id` and its username, with `new_password` checked against the rules
/// (before anything is counted or consumed); `missing` answers an account that is gone.
async fn checked_change(
    state: &AppState,
    account_id: &str,
    new_password: &SecretString,
    missing: Error,
) -> Result<(Account, Username), Error> {
    let account = state
        .accounts
        .find_by_id(account_id)
        .await?
        .ok_or(missing)?;
    let username = account.normalised_username()?;
    state
        .passwords
        .check_new(new_password.expose_secret(), &username)?;
    Ok((account, username))
}
