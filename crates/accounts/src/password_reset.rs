//! Password reset by mail, after OWASP's Forgot Password Cheat Sheet.
//!
//! - [`request`] (`POST /v1/password/reset`): the guard admits it like a registration (the
//!   source's address and network limits, a challenge under attack); then it answers at once,
//!   the same whatever the account: looking the account up and queueing its link happen off the
//!   request, so neither the answer nor its timing says whether the name exists or has a
//!   verified address. An account with a verified address gets a link (256 random bits, stored
//!   as its digest, [`LINK_TTL_MS`], used once), at most [`LINKS_PER_HOUR`] an hour.
//! - [`confirm`] (`POST /v1/password/reset/confirm`): the new password meets the rules before
//!   anything is used up; then, in one transaction, the link is used (and the account's other
//!   links with it), the password rehashed, any permanent lock lifted (the owner proved the
//!   mailbox), every session ended, every passkey removed (the way back for whoever lost
//!   theirs, and the way out for one an intruder added) and a notice queued for the verified
//!   address. Then the
//!   account's lockout is lifted and a `password_reset` event reported. It does not log in.

use std::net::IpAddr;
use std::sync::Arc;

use portcullis_core::Username;
use portcullis_store::{EventKind, Invalidation};
use secrecy::{ExposeSecret, SecretString};
use sqlx::Row;

use crate::AppState;
use crate::accounts::Account;
use crate::accounts::{db_error, from_sql, to_sql};
use crate::error::Error;
use crate::mail::{Mail, outbox};
use crate::notices::{Notice, Recipient};
use crate::token;

/// How long a reset link lives.
pub const LINK_TTL_MS: u64 = 30 * 60_000;
/// Reset links an account is sent per hour at most; further requests still answer alike.
pub const LINKS_PER_HOUR: u64 = 3;
const HOUR_MS: u64 = 3_600_000;

/// Asks for a reset link for `username` (as parsed, or why not) from `ip`, carrying a solved
/// challenge if any. Returns once the request is admitted: the link, if any, is queued after.
pub async fn request(
    state: Arc<AppState>,
    ip: IpAddr,
    username: Result<Username, Error>,
    altcha: Option<&str>,
) -> Result<(), Error> {
    state.guard.admit_source(ip, altcha).await?;
    let username = username?;
    tokio::spawn(async move {
        if let Err(error) = queue_link(&state, &username).await {
            tracing::warn!(error = format!("{error:#}"), "reset link not queued");
        }
    });
    Ok(())
}

/// Queues a reset link for `username`'s account, if it exists (see [`queue_link_for`]).
async fn queue_link(state: &AppState, username: &Username) -> anyhow::Result<()> {
    match state.accounts.find(username).await? {
        Some(account) => queue_link_for(state, &account).await.map(drop),
        None => Ok(()),
    }
}

/// Sends a reset link to the verified address of `username`'s account at an operator's
/// request; returns whether it was queued (not when [`LINKS_PER_HOUR`] were sent already).
pub async fn send_for_operator(state: &AppState, username: &Username) -> Result<bool, Error> {
    let account = state
        .accounts
        .find(username)
        .await?
        .ok_or(Error::UnknownAccount)?;
    if account.email.is_none() {
        return Err(Error::NoAddress);
    }
    Ok(queue_link_for(state, &account).await?)
}

/// Queues a reset link for `account`, if it has a verified address and has not been sent
/// [`LINKS_PER_HOUR`] in the last hour; returns whether it did.
pub async fn queue_link_for(state: &AppState, account: &Account) -> anyhow::Result<bool> {
    let Some(email) = &account.email else {
        return Ok(false);
    };
    let now = state.outbox.now();
    let mut tx = state.accounts.begin().await?;
    let sent: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM password_resets WHERE account_id = $1 AND created_at > $2",
    )
    .bind(account.id.as_str())
    .bind(to_sql(now.saturating_sub(HOUR_MS)))
    .fetch_one(&mut *tx)
    .await
    .and_then(|row| row.try_get("n"))
    .map_err(|e| db_error(e, "counting reset links"))?;
    if from_sql(sent) >= LINKS_PER_HOUR {
        tracing::info!(target: "security", event = "password_reset_capped", subject = %account.id);
        return Ok(false);
    }
    let link = token::issue()?;
    // Links that expired go with each new one.
    sqlx::query("DELETE FROM password_resets WHERE account_id = $1 AND expires_at <= $2")
        .bind(account.id.as_str())
        .bind(to_sql(now.saturating_sub(HOUR_MS)))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(e, "removing expired reset links"))?;
    sqlx::query(
        "INSERT INTO password_resets (token_digest, account_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(link.digest.as_str())
    .bind(account.id.as_str())
    .bind(to_sql(now))
    .bind(to_sql(now.saturating_add(LINK_TTL_MS)))
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(e, "storing a reset link"))?;
    let mail = Mail::ResetPassword {
        username: account.username.clone(),
        token: link.token,
    };
    outbox::enqueue(&mut tx, email, &mail, now).await?;
    tx.commit()
        .await
        .map_err(|e| db_error(e, "committing a reset link"))?;
    tracing::info!(target: "security", event = "password_reset_sent", subject = %account.id);
    Ok(true)
}

/// Sets a new password with a reset link's `token`; returns how many sessions ended.
pub async fn confirm(
    state: &AppState,
    token: &str,
    new_password: SecretString,
) -> Result<u64, Error> {
    let digest = token::digest_of_value(token.trim()).ok_or_else(Error::invalid_link)?;
    let now = state.outbox.now();
    let row = sqlx::query(
        "SELECT account_id FROM password_resets \
         WHERE token_digest = $1 AND used_at = 0 AND expires_at > $2",
    )
    .bind(digest.as_str())
    .bind(to_sql(now))
    .fetch_optional(&state.accounts.pool())
    .await
    .map_err(|e| db_error(e, "looking up a reset link"))?
    .ok_or_else(Error::invalid_link)?;
    let account_id: String = row
        .try_get("account_id")
        .map_err(|e| db_error(e, "reading a reset link"))?;
    let account = state
        .accounts
        .find_by_id(&account_id)
        .await?
        .ok_or_else(Error::invalid_link)?;
    let username = account.normalised_username()?;
    state
        .passwords
        .check_new(new_password.expose_secret(), &username)?;
    let hash = state.hasher.hash(new_password).await?;
    let mut tx = state.accounts.begin().await?;
    // Used once: of two confirmations at once, one moves the row.
    let used = sqlx::query(
        "UPDATE password_resets SET used_at = $1 \
         WHERE token_digest = $2 AND used_at = 0 AND expires_at > $1",
    )
    .bind(to_sql(now))
    .bind(digest.as_str())
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(e, "using a reset link"))?;
    if used.rows_affected() != 1 {
        return Err(Error::invalid_link());
    }
    sqlx::query("UPDATE password_resets SET used_at = $1 WHERE account_id = $2 AND used_at = 0")
        .bind(to_sql(now))
        .bind(account.id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(e, "outdating the account's other reset links"))?;
    // The owner proved the mailbox: a permanent lock goes with the old password.
    sqlx::query("UPDATE accounts SET password_hash = $1, locked_at = 0 WHERE id = $2")
        .bind(hash.as_str())
        .bind(account.id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(e, "setting the new password"))?;
    let revoked = state.sessions.end_all_in(&mut tx, &account.id).await?;
    let passkeys_removed = state.passkeys.remove_all_in(&mut tx, &account.id).await?;
    if let Some(address) = &account.email {
        let to = Recipient {
            account_id: &account.id,
            username: &account.username,
            address,
        };
        state
            .notices
            .queue(&mut tx, &to, Notice::PasswordReset)
            .await?;
    }
    tx.commit()
        .await
        .map_err(|e| db_error(e, "committing a password reset"))?;
    state.sessions.ended(&account.id).await;
    // And the account's lockout. The reset stands if the store cannot answer: the lockout then
    // ends on its own.
    let keys = [state.guard.deriver().username_key(&username)];
    if let Err(error) = state.stores.admin.clear(&keys).await {
        tracing::warn!(subject = %account.id, %error, "lockout not lifted after a password reset");
    }
    state.announce(Invalidation::Unlock).await;
    state
        .events
        .report_account(EventKind::PasswordReset, &account.id)
        .await;
    if passkeys_removed > 0 {
        state
            .events
            .report_account(EventKind::PasskeyRemoved, &account.id)
            .await;
    }
    Ok(revoked)
}
