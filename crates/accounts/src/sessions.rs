//! Login sessions in the accounts database: durable, so losing Redis logs nobody out.
//!
//! A session is found by the SHA-256 digest of its bearer token (the token itself is never
//! stored). Each account keeps at most `session.max_per_account` sessions (the oldest are
//! evicted), so "log out everywhere" is a bounded delete.
//!
//! Whatever ends sessions here (a logout, eviction, a password change) forgets them in this
//! replica's [`SessionCache`] and announces it to every other replica's.

use std::sync::Arc;

use portcullis_core::UnixMillis;
use portcullis_store::{AdminStore, Clock, Invalidation};
use sqlx::{AnyPool, Row};

use crate::accounts::{db_error, from_sql, to_sql};
use crate::session_cache::{Identity, SessionCache};

/// A live session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The account's public id.
    pub subject: String,
    /// When the session ends.
    pub expires_at: UnixMillis,
    /// Whether it was opened with a password found in a breach, not changed since.
    pub password_change_required: bool,
}

/// A live session as its account sees it (the account page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSummary {
    /// When it began.
    pub created_at: UnixMillis,
    /// When it ends.
    pub expires_at: UnixMillis,
    /// Whether it is the session asking.
    pub current: bool,
}

/// How long sessions live and how many an account keeps.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    /// Milliseconds a session lives.
    pub ttl_ms: u64,
    /// Sessions an account keeps; a new one evicts the oldest.
    pub max_per_account: u32,
}

/// The sessions table.
#[derive(Clone)]
pub struct Sessions {
    pool: AnyPool,
    clock: Arc<dyn Clock>,
    limits: SessionLimits,
    cache: SessionCache,
    /// Where endings are announced to the other replicas.
    announcer: Arc<dyn AdminStore>,
}

impl Sessions {
    /// Sessions in `pool` within `limits`, on `clock`'s time; lookups for forward
    /// authentication are kept in `cache`, and endings announced through `announcer`.
    pub fn new(
        pool: AnyPool,
        clock: Arc<dyn Clock>,
        limits: SessionLimits,
        cache: SessionCache,
        announcer: Arc<dyn AdminStore>,
    ) -> Self {
        Self {
            pool,
            clock,
            limits,
            cache,
            announcer,
        }
    }

    /// Now, on the sessions' clock.
    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// Stores a new session for the account (flagged when its password must change); evicts
    /// its oldest beyond the cap.
    pub async fn create(
        &self,
        digest: &str,
        account_id: &str,
        password_change_required: bool,
    ) -> anyhow::Result<Session> {
        let now = self.clock.now();
        let expires_at = now.saturating_add(self.limits.ttl_ms);
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| db_error(e, "starting a session transaction"))?;
        sqlx::query(
            "INSERT INTO sessions (token_digest, account_id, created_at, expires_at, \
             password_change_required) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(digest)
        .bind(account_id)
        .bind(to_sql(now))
        .bind(to_sql(expires_at))
        .bind(i64::from(password_change_required))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(e, "inserting a session"))?;
        let deleted: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM sessions WHERE account_id = $1 AND (expires_at <= $2 OR id <= \
             (SELECT id FROM sessions WHERE account_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $3)) \
             RETURNING expires_at",
        )
        .bind(account_id)
        .bind(to_sql(now))
        .bind(i64::from(self.limits.max_per_account))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_error(e, "evicting old sessions"))?;
        tx.commit()
            .await
            .map_err(|e| db_error(e, "committing a session"))?;
        // Expired ones were passing nowhere; a live one evicted was.
        if deleted
            .into_iter()
            .any(|expires_at| from_sql(expires_at) > now)
        {
            self.ended(account_id).await;
        }
        Ok(Session {
            subject: account_id.to_owned(),
            expires_at,
            password_change_required,
        })
    }

    /// The live session with this token digest, if any.
    pub async fn get(&self, digest: &str) -> anyhow::Result<Option<Session>> {
        let row = sqlx::query(
            "SELECT account_id, expires_at, password_change_required FROM sessions \
             WHERE token_digest = $1 AND expires_at > $2",
        )
        .bind(digest)
        .bind(to_sql(self.clock.now()))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error(e, "looking up a session"))?;
        row.map(|row| {
            Ok(Session {
                subject: row.try_get("account_id")?,
                expires_at: from_sql(row.try_get("expires_at")?),
                password_change_required: row.try_get::<i64, _>("password_change_required")? != 0,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| anyhow::Error::new(e).context("reading a session row"))
    }

    /// Who the live session with this token digest belongs to, if any: from this replica's
    /// cache when it has the answer (see [`SessionCache`]), else from the database.
    pub async fn identify(&self, digest: &str) -> anyhow::Result<Option<Identity>> {
        let ticket = match self.cache.get(digest) {
            Ok(known) => return Ok(known),
            Err(ticket) => ticket,
        };
        let row = sqlx::query(
            "SELECT s.account_id, s.expires_at, s.password_change_required, a.username \
             FROM sessions s JOIN accounts a ON a.id = s.account_id \
             WHERE s.token_digest = $1 AND s.expires_at > $2",
        )
        .bind(digest)
        .bind(to_sql(self.clock.now()))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error(e, "looking up a session"))?;
        let identity = row
            .map(|row| {
                Ok(Identity {
                    subject: row.try_get("account_id")?,
                    username: row.try_get("username")?,
                    expires_at: from_sql(row.try_get("expires_at")?),
                    password_change_required: row.try_get::<i64, _>("password_change_required")?
                        != 0,
                })
            })
            .transpose()
            .map_err(|e: sqlx::Error| anyhow::Error::new(e).context("reading a session row"))?;
        self.cache.put(digest, identity.as_ref(), ticket);
        Ok(identity)
    }

    /// The live sessions of the account, newest first, marking the one with `current_digest`.
    pub async fn list(
        &self,
        account_id: &str,
        current_digest: &str,
    ) -> anyhow::Result<Vec<SessionSummary>> {
        let rows = sqlx::query(
            "SELECT token_digest, created_at, expires_at FROM sessions \
             WHERE account_id = $1 AND expires_at > $2 ORDER BY id DESC",
        )
        .bind(account_id)
        .bind(to_sql(self.clock.now()))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error(e, "listing sessions"))?;
        rows.iter()
            .map(|row| {
                Ok(SessionSummary {
                    created_at: from_sql(row.try_get("created_at")?),
                    expires_at: from_sql(row.try_get("expires_at")?),
                    current: row.try_get::<String, _>("token_digest")? == current_digest,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| anyhow::Error::new(e).context("reading a session row"))
    }

    /// Ends a session; returns whether it was live.
    pub async fn revoke(&self, digest: &str) -> anyhow::Result<bool> {
        let account: Option<String> = sqlx::query_scalar(
            "DELETE FROM sessions WHERE token_digest = $1 AND expires_at > $2 \
             RETURNING account_id",
        )
        .bind(digest)
        .bind(to_sql(self.clock.now()))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error(e, "revoking a session"))?;
        if let Some(account) = &account {
            self.ended(account).await;
        }
        Ok(account.is_some())
    }

    /// Ends every session of the account this live session belongs to ("log out
    /// everywhere"); returns how many were live.
    pub async fn revoke_all(&self, digest: &str) -> anyhow::Result<u64> {
        let ended: Vec<String> = sqlx::query_scalar(
            "DELETE FROM sessions WHERE expires_at > $2 AND account_id = \
             (SELECT account_id FROM sessions WHERE token_digest = $1 AND expires_at > $2) \
             RETURNING account_id",
        )
        .bind(digest)
        .bind(to_sql(self.clock.now()))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error(e, "revoking every session of an account"))?;
        if let Some(account) = ended.first() {
            self.ended(account).await;
        }
        Ok(ended.len() as u64)
    }

    /// Ends every live session of the account on `conn` (the caller's transaction, so the
    /// change that ends them commits with them); returns how many ended. Once it committed,
    /// the caller calls [`Sessions::ended`].
    pub async fn end_all_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        account_id: &str,
    ) -> anyhow::Result<u64> {
        let result = sqlx::query("DELETE FROM sessions WHERE account_id = $1 AND expires_at > $2")
            .bind(account_id)
            .bind(to_sql(self.clock.now()))
            .execute(conn)
            .await
            .map_err(|e| db_error(e, "ending every session of an account"))?;
        Ok(result.rows_affected())
    }

    /// After a password change: ends every session of the account but `keep` (the one that
    /// changed it, if any), and clears the change flag of `keep`; returns how many ended.
    pub async fn after_password_change(
        &self,
        account_id: &str,
        keep: Option<&str>,
    ) -> anyhow::Result<u64> {
        let keep = keep.unwrap_or_default();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| db_error(e, "starting a session transaction"))?;
        let revoked = sqlx::query(
            "DELETE FROM sessions WHERE account_id = $1 AND token_digest <> $2 AND expires_at > $3",
        )
        .bind(account_id)
        .bind(keep)
        .bind(to_sql(self.clock.now()))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(e, "revoking the other sessions of an account"))?;
        sqlx::query("UPDATE sessions SET password_change_required = 0 WHERE token_digest = $1")
            .bind(keep)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(e, "clearing a password-change flag"))?;
        tx.commit()
            .await
            .map_err(|e| db_error(e, "committing a session transaction"))?;
        self.ended(account_id).await;
        Ok(revoked.rows_affected())
    }

    /// Sessions of the account ended (or changed): this replica forgets them at once, and the
    /// others when they hear it. An announcement that fails is logged; the other replicas'
    /// caches then hold them at most `session.cache_secs`.
    pub async fn ended(&self, account_id: &str) {
        self.cache.forget(Some(account_id));
        let change = Invalidation::SessionsEnded(Some(account_id.to_owned()));
        if let Err(error) = self.announcer.announce(change).await {
            tracing::warn!(%error, "ended sessions not announced to other replicas");
        }
    }
}
