//! Notices to the account's owner at its verified address: what happened to the account, told
//! to the one person a login answer may not reach.
//!
//! Each kind has a setting (`mail.notices.*`, on by default) and a cap: an account gets at most
//! `mail.notices.per_hour` of one kind an hour, counted in the outbox, so nobody can mail-bomb an
//! owner by guessing (lockouts) or logging in (new devices), and one kind's flood never uses up
//! another's budget. A concurrent pair may both pass the count: the cap is "about", never
//! "unbounded".
//!
//! Two notices carry a single-use link ([`LinkPurpose`], stored as its digest in `owner_links`):
//! - a new-device login: "this wasn't me" ([`disown_login`]) ends every session, locks the
//!   account until a reset (whoever logged in holds the password) and mails a reset link;
//! - a lockout: "unlock" ([`unlock`]) lifts the account's lockout, temporary or permanent
//!   (never a ban on a source: those were earned by the sources).
//!
//! Neither link can help someone holding only the leaked password: they reach the mailbox.

use std::sync::Arc;

use portcullis_core::UnixMillis;
use portcullis_store::{Clock, EventKind, Invalidation};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::AppState;
use crate::accounts::{Account, db_error, from_sql, to_sql};
use crate::error::Error;
use crate::mail::{Mail, outbox};
use crate::password_reset;
use crate::settings::NoticeSettings;
use crate::token;

/// How long a "this wasn't me" link lives: a notice may be read days later.
pub const NOT_ME_TTL_MS: u64 = 7 * 24 * 3_600_000;
/// How long an unlock link lives.
pub const UNLOCK_TTL_MS: u64 = 24 * 3_600_000;
const HOUR_MS: u64 = 3_600_000;

/// What a notice tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A login from a browser without the account's device cookie.
    NewDeviceLogin,
    /// Failed logins locked the account.
    AccountLocked,
    /// The password was changed in band.
    PasswordChanged,
    /// The password was reset by mail.
    PasswordReset,
    /// A second factor was added.
    SecondFactorAdded,
    /// The second factor was removed.
    SecondFactorRemoved,
    /// A passkey was added.
    PasskeyAdded,
    /// A passkey was removed.
    PasskeyRemoved,
    /// The verified address changed (sent to the old one).
    AddressChanged,
}

/// What a notice's link does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkPurpose {
    /// Ends every session and mails a reset link.
    NotMe,
    /// Lifts the account's lockout.
    Unlock,
}

impl LinkPurpose {
    fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::NotMe => "not_me",
            LinkPurpose::Unlock => "unlock",
        }
    }

    fn ttl_ms(self) -> u64 {
        match self {
            LinkPurpose::NotMe => NOT_ME_TTL_MS,
            LinkPurpose::Unlock => UNLOCK_TTL_MS,
        }
    }
}

impl Notice {
    /// The link the notice carries, if any.
    fn link(self) -> Option<LinkPurpose> {
        match self {
            Notice::NewDeviceLogin => Some(LinkPurpose::NotMe),
            Notice::AccountLocked => Some(LinkPurpose::Unlock),
            _ => None,
        }
    }

    /// The message, carrying `token` when the notice has a link.
    fn mail(self, username: String, token: String) -> Mail {
        match self {
            Notice::NewDeviceLogin => Mail::NewDeviceLogin { username, token },
            Notice::AccountLocked => Mail::AccountLocked { username, token },
            Notice::PasswordChanged => Mail::PasswordChanged { username },
            Notice::PasswordReset => Mail::PasswordReset { username },
            Notice::SecondFactorAdded => Mail::SecondFactorAdded { username },
            Notice::SecondFactorRemoved => Mail::SecondFactorRemoved { username },
            Notice::PasskeyAdded => Mail::PasskeyAdded { username },
            Notice::PasskeyRemoved => Mail::PasskeyRemoved { username },
            Notice::AddressChanged => Mail::AddressChanged { username },
        }
    }
}

/// The account a notice is about.
pub struct Recipient<'a> {
    /// The account's id.
    pub account_id: &'a str,
    /// The account's username.
    pub username: &'a str,
    /// Where the notice goes: the verified address (the old one for an address change).
    pub address: &'a str,
}

/// Queues notices and follows their links.
#[derive(Clone)]
pub struct Notices {
    pool: AnyPool,
    settings: NoticeSettings,
    clock: Arc<dyn Clock>,
}

impl Notices {
    /// Notices written to the outbox in `pool`, as `settings` say, on `clock`'s time.
    pub fn new(pool: AnyPool, settings: NoticeSettings, clock: Arc<dyn Clock>) -> Self {
        Self {
            pool,
            settings,
            clock,
        }
    }

    fn wanted(&self, notice: Notice) -> bool {
        let s = &self.settings;
        match notice {
            Notice::NewDeviceLogin => s.new_device,
            Notice::AccountLocked => s.lockout,
            Notice::PasswordChanged | Notice::PasswordReset => s.password_changed,
            Notice::SecondFactorAdded | Notice::SecondFactorRemoved => s.second_factor,
            Notice::PasskeyAdded | Notice::PasskeyRemoved => s.passkeys,
            Notice::AddressChanged => s.address_changed,
        }
    }

    /// Queues `notice` to `to` on `conn` (the transaction of the change it tells of), unless its
    /// setting is off or the account had its hourly share of this kind; returns whether it was
    /// queued.
    pub async fn queue(
        &self,
        conn: &mut AnyConnection,
        to: &Recipient<'_>,
        notice: Notice,
    ) -> anyhow::Result<bool> {
        if !self.wanted(notice) {
            return Ok(false);
        }
        let now = self.clock.now();
        let link = token::issue()?;
        let mail = notice.mail(to.username.to_owned(), link.token);
        let recent: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM outbox WHERE recipient = $1 AND kind = $2 AND created_at > $3",
        )
        .bind(to.address)
        .bind(mail.kind())
        .bind(to_sql(now.saturating_sub(HOUR_MS)))
        .fetch_one(&mut *conn)
        .await
        .and_then(|row| row.try_get("n"))
        .map_err(|e| db_error(e, "counting notices"))?;
        if from_sql(recent) >= self.settings.per_hour {
            tracing::info!(target: "security", event = "notice_capped", kind = mail.kind(), subject = %to.account_id);
            return Ok(false);
        }
        if let Some(purpose) = notice.link() {
            store_link(conn, to.account_id, purpose, &link.digest, now).await?;
        }
        outbox::enqueue(conn, to.address, &mail, now).await?;
        Ok(true)
    }

    /// Queues `notice` about `account` (as loaded by the caller: no lookup here) in a
    /// transaction of its own, for a change already committed. Nothing is read or written when
    /// the notice is off or the account has no verified address. Never fails the caller: the
    /// change stands, and a notice that cannot be written is logged.
    pub async fn send(&self, account: &Account, notice: Notice) {
        let Some(address) = account.email.as_deref().filter(|_| self.wanted(notice)) else {
            return;
        };
        let to = Recipient {
            account_id: &account.id,
            username: &account.username,
            address,
        };
        let result = async {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(|e| db_error(e, "beginning a notice"))?;
            if self.queue(&mut tx, &to, notice).await? {
                tx.commit()
                    .await
                    .map_err(|e| db_error(e, "committing a notice"))?;
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(subject = %account.id, ?notice, error = format!("{error:#}"), "notice not queued");
        }
    }

    /// Uses a link of `purpose` on `conn` (the caller's transaction, so the link is used only if
    /// what it does commits); returns its account's id. A wrong, used or expired link is
    /// [`Error::invalid_link`].
    pub async fn use_link(
        &self,
        conn: &mut AnyConnection,
        token: &str,
        purpose: LinkPurpose,
    ) -> Result<String, Error> {
        let digest = token::digest_of_value(token.trim()).ok_or_else(Error::invalid_link)?;
        let now = self.clock.now();
        // Of two uses at once, one moves the row.
        let row = sqlx::query(
            "UPDATE owner_links SET used_at = $1 \
             WHERE token_digest = $2 AND purpose = $3 AND used_at = 0 AND expires_at > $1 \
             RETURNING account_id",
        )
        .bind(to_sql(now))
        .bind(digest.as_str())
        .bind(purpose.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| db_error(e, "using a notice's link"))?
        .ok_or_else(Error::invalid_link)?;
        Ok(row
            .try_get("account_id")
            .map_err(|e| db_error(e, "reading a notice's link"))?)
    }
}

/// Follows a "this wasn't me" link: every session of the account ends, the account is locked
/// until a reset (whoever logged in holds the password, and would only log in again), and a
/// reset link goes to its verified address (within the reset links' own hourly cap). Returns
/// how many sessions ended.
pub async fn disown_login(state: &AppState, token: &str) -> Result<u64, Error> {
    let mut tx = state.accounts.begin().await?;
    let account_id = state
        .notices
        .use_link(&mut tx, token, LinkPurpose::NotMe)
        .await?;
    let revoked = state.sessions.end_all_in(&mut tx, &account_id).await?;
    sqlx::query("UPDATE accounts SET locked_at = $1 WHERE id = $2 AND locked_at = 0")
        .bind(to_sql(state.outbox.now()))
        .bind(account_id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(e, "locking a disowned account"))?;
    tx.commit()
        .await
        .map_err(|e| db_error(e, "committing a disowned login"))?;
    state.sessions.ended(&account_id).await;
    state
        .events
        .report_account(EventKind::LoginDisowned, &account_id)
        .await;
    // The sessions ended whatever follows; a reset link (within its own hourly cap) that cannot
    // be queued is logged, and the owner can ask for one on the forgot page.
    let queued = match state.accounts.find_by_id(&account_id).await {
        Ok(Some(account)) => password_reset::queue_link_for(state, &account).await,
        Ok(None) => Ok(false),
        Err(error) => Err(error),
    };
    if let Err(error) = queued {
        tracing::warn!(subject = %account_id, error = format!("{error:#}"), "reset link after a disowned login not queued");
    }
    Ok(revoked)
}

/// Follows an unlock link: the account's lockout is lifted, in the store and (a permanent one)
/// in the database, on every replica within a second.
pub async fn unlock(state: &AppState, token: &str) -> Result<(), Error> {
    let mut tx = state.accounts.begin().await?;
    let account_id = state
        .notices
        .use_link(&mut tx, token, LinkPurpose::Unlock)
        .await?;
    let row = sqlx::query("UPDATE accounts SET locked_at = 0 WHERE id = $1 RETURNING username")
        .bind(account_id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error(e, "lifting a permanent lock"))?
        .ok_or_else(Error::invalid_link)?;
    let username: String = row
        .try_get("username")
        .map_err(|e| db_error(e, "reading an account"))?;
    let username = portcullis_core::Username::parse(&username)
        .map_err(|e| anyhow::anyhow!("stored username of {account_id} no longer parses: {e}"))?;
    // The store first: a link whose lockout could not be lifted stays unused, to try again.
    state
        .stores
        .admin
        .clear(&[state.guard.deriver().username_key(&username)])
        .await?;
    tx.commit()
        .await
        .map_err(|e| db_error(e, "committing an unlock"))?;
    state.announce(Invalidation::Unlock).await;
    state
        .events
        .report_account(EventKind::Unlock, &account_id)
        .await;
    Ok(())
}

/// Stores a link's digest for `account_id`, forgetting the account's links that expired.
async fn store_link(
    conn: &mut AnyConnection,
    account_id: &str,
    purpose: LinkPurpose,
    digest: &str,
    now: UnixMillis,
) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM owner_links WHERE account_id = $1 AND expires_at <= $2")
        .bind(account_id)
        .bind(to_sql(now))
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error(e, "forgetting expired notice links"))?;
    sqlx::query(
        "INSERT INTO owner_links (token_digest, account_id, purpose, expires_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(digest)
    .bind(account_id)
    .bind(purpose.as_str())
    .bind(to_sql(now.saturating_add(purpose.ttl_ms())))
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error(e, "storing a notice's link"))?;
    Ok(())
}
