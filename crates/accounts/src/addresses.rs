//! Verified addresses: the only addresses mail about an account goes to.
//!
//! `POST /v1/email` (a session and the current password, checked through the login guard like
//! any password check) writes a verification link's digest and the mail carrying the link in one
//! transaction. The link has 256 random bits, lives [`LINK_TTL_MS`], is used once, and only its
//! digest is stored; a newer request replaces an older link. Following it makes the address the
//! account's verified one, unless another account's verified address it is already (409,
//! nothing changes), and tells the old address, if any, in the same transaction.

use portcullis_core::Username;
use sqlx::Row;

use crate::AppState;
use crate::accounts::{db_error, from_sql, to_sql};
use crate::error::Error;
use crate::login::{self, Reauthentication};
use crate::mail::{Mail, outbox};
use crate::notices::{Notice, Recipient};
use crate::token;

/// How long a verification link lives.
pub const LINK_TTL_MS: u64 = 24 * 3_600_000;
/// Verification links one address is sent per hour at most, whichever accounts ask.
pub const LINKS_PER_ADDRESS_HOUR: u64 = 3;
const HOUR_MS: u64 = 3_600_000;
/// The longest address (RFC 5321's path limit, less its brackets).
const MAX_ADDRESS_CHARS: usize = 254;

/// `address` as stored and compared: trimmed and lower-cased, refused unless it is one plain
/// address.
pub fn normalise(address: &str) -> Result<String, Error> {
    let address = address.trim().to_lowercase();
    let refuse = || Error::BadRequest {
        code: "invalid_email",
        detail: "`email` must be one address, like name@example.com".to_owned(),
    };
    if address.chars().count() > MAX_ADDRESS_CHARS {
        return Err(refuse());
    }
    let parsed: lettre::Address = address.parse().map_err(|_| refuse())?;
    if parsed.domain().contains('[') {
        return Err(refuse());
    }
    Ok(address)
}

/// Sends a verification link to `address` for the request's account; returns the address as
/// stored ([`normalise`]).
pub async fn request(
    state: &AppState,
    request: Reauthentication<'_>,
    address: &str,
) -> Result<String, Error> {
    let address = normalise(address)?;
    let account = login::reauthenticate(state, request, |_| Ok(())).await?;
    send_link(state, &account.id, &account.username, &address).await?;
    Ok(address)
}

/// Sends a new verification link for the pending address of `username`'s account at an
/// operator's request (the owner's may have expired or gone astray); returns the address.
pub async fn resend_link(state: &AppState, username: &Username) -> Result<String, Error> {
    let account = state
        .accounts
        .find(username)
        .await?
        .ok_or(Error::UnknownAccount)?;
    let pending = sqlx::query("SELECT email FROM email_verifications WHERE account_id = $1")
        .bind(account.id.as_str())
        .fetch_optional(&state.accounts.pool())
        .await
        .map_err(|e| db_error(e, "reading a pending address"))?
        .ok_or(Error::NoAddress)?;
    let address: String = pending
        .try_get("email")
        .map_err(|e| db_error(e, "reading a pending address"))?;
    send_link(state, &account.id, &account.username, &address).await?;
    Ok(address)
}

/// Writes a verification link for `address` (as [`normalise`] made it) and the mail carrying it,
/// in one transaction, replacing the account's older link. An address that had
/// [`LINKS_PER_ADDRESS_HOUR`] links in the last hour gets no more for now (429): whoever types it,
/// nobody mail-bombs a stranger's mailbox through this service.
pub async fn send_link(
    state: &AppState,
    account_id: &str,
    username: &str,
    address: &str,
) -> Result<(), Error> {
    let link = token::issue()?;
    let mail = Mail::VerifyAddress {
        username: username.to_owned(),
        token: link.token,
    };
    let now = state.outbox.now();
    let mut tx = state.accounts.begin().await?;
    let recent = sqlx::query(
        "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox \
         WHERE recipient = $1 AND kind = $2 AND created_at > $3",
    )
    .bind(address)
    .bind(mail.kind())
    .bind(to_sql(now.saturating_sub(HOUR_MS)))
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| db_error(e, "counting verification links"))?;
    let sent: i64 = recent
        .try_get("n")
        .map_err(|e| db_error(e, "counting verification links"))?;
    if from_sql(sent) >= LINKS_PER_ADDRESS_HOUR {
        let oldest: Option<i64> = recent
            .try_get("oldest")
            .map_err(|e| db_error(e, "counting verification links"))?;
        let again_at = from_sql(oldest.unwrap_or_default()).saturating_add(HOUR_MS);
        tracing::info!(target: "security", event = "email_verification_capped", subject = %account_id);
        return Err(Error::Throttled {
            retry_after_secs: again_at.saturating_sub(now).div_ceil(1_000).max(1),
        });
    }
    sqlx::query("DELETE FROM email_verifications WHERE account_id = $1 OR expires_at <= $2")
        .bind(account_id)
        .bind(to_sql(now))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(e, "replacing a verification link"))?;
    sqlx::query(
        "INSERT INTO email_verifications (token_digest, account_id, email, expires_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(link.digest.as_str())
    .bind(account_id)
    .bind(address)
    .bind(to_sql(now.saturating_add(LINK_TTL_MS)))
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(e, "storing a verification link"))?;
    outbox::enqueue(&mut tx, address, &mail, now).await?;
    tx.commit()
        .await
        .map_err(|e| db_error(e, "committing a verification"))?;
    tracing::info!(target: "security", event = "email_verification_sent", subject = %account_id);
    Ok(())
}

/// Follows a verification link: the address becomes the account's verified one; returns it.
pub async fn verify(state: &AppState, link: &str) -> Result<String, Error> {
    let invalid = Error::invalid_link;
    let digest = token::digest_of_value(link.trim()).ok_or_else(invalid)?;
    let now = state.outbox.now();
    let mut tx = state.accounts.begin().await?;
    // Deleting is consuming: of two clicks at once, one gets the row.
    let row = sqlx::query(
        "DELETE FROM email_verifications WHERE token_digest = $1 AND expires_at > $2 \
         RETURNING account_id, email",
    )
    .bind(digest.as_str())
    .bind(to_sql(now))
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| db_error(e, "consuming a verification link"))?
    .ok_or_else(invalid)?;
    let account_id: String = row
        .try_get("account_id")
        .map_err(|e| db_error(e, "reading a link"))?;
    let address: String = row
        .try_get("email")
        .map_err(|e| db_error(e, "reading a link"))?;
    let account = sqlx::query("SELECT username, email FROM accounts WHERE id = $1")
        .bind(account_id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error(e, "reading the account of a link"))?
        .ok_or_else(invalid)?;
    let username: String = account
        .try_get("username")
        .map_err(|e| db_error(e, "reading an account"))?;
    let old: Option<String> = account
        .try_get("email")
        .map_err(|e| db_error(e, "reading an account"))?;
    let updated = sqlx::query("UPDATE accounts SET email = $1 WHERE id = $2")
        .bind(address.as_str())
        .bind(account_id.as_str())
        .execute(&mut *tx)
        .await;
    match updated {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(Error::EmailTaken),
        Err(e) => return Err(db_error(e, "setting a verified address").into()),
    }
    if let Some(old) = old.filter(|old| *old != address) {
        let to = Recipient {
            account_id: &account_id,
            username: &username,
            address: &old,
        };
        state
            .notices
            .queue(&mut tx, &to, Notice::AddressChanged)
            .await?;
    }
    tx.commit()
        .await
        .map_err(|e| db_error(e, "committing a verified address"))?;
    tracing::info!(target: "security", event = "email_verified", subject = %account_id);
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_trimmed_and_lower_cased_and_anything_else_is_refused() {
        assert_eq!(
            normalise("  Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "alice@example.com, bob@example.com",
            "Alice <alice@example.com>",
            "alice@[127.0.0.1]",
            "alice@example.com\r\nBcc: eve@example.com",
        ] {
            assert!(normalise(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(normalise(&long).is_err());
    }
}
