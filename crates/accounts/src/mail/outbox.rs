//! The outbox table: mail written in the transaction of the change that causes it, so a change
//! never commits without its mail nor mails about a change that rolled back.
//!
//! A replica's sender claims due messages by pushing their next attempt past a lease
//! ([`CLAIM_LEASE_MS`]); on PostgreSQL the claim skips rows another replica holds (`FOR UPDATE
//! SKIP LOCKED`), and SQLite has one writer at a time, so each message goes to one sender. A
//! sender that dies mid-send leaves its claim to expire: the message goes out again then (at
//! least once, never lost). A failed attempt waits [`retry_delay`]; after [`MAX_ATTEMPTS`] the
//! message is `failed` and stays for operators. A sent message keeps its envelope (kind,
//! recipient, times) and loses its body: the link it carried.

use std::sync::Arc;

use portcullis_core::UnixMillis;
use portcullis_store::Clock;
use sqlx::{AnyConnection, AnyPool, Row};

use super::Mail;
use crate::accounts::{Dialect, db_error, from_sql, to_sql};

/// How long a claimed message is held by its sender before another may take it: longer than a
/// batch can take to fail (16 messages, each up to the transport's 30 s timeout).
pub const CLAIM_LEASE_MS: u64 = 600_000;
/// Attempts before a message is given up as `failed`: with [`retry_delay`], about a day.
pub const MAX_ATTEMPTS: u64 = 30;
/// The first retry's wait; each later one doubles, up to [`MAX_RETRY_MS`].
const MIN_RETRY_MS: u64 = 10_000;
/// The longest wait between attempts.
const MAX_RETRY_MS: u64 = 3_600_000;

/// How long a message waits after its `attempts`-th failed attempt.
pub fn retry_delay(attempts: u64) -> u64 {
    let doublings = u32::try_from(attempts.saturating_sub(1).min(20)).unwrap_or(20);
    MIN_RETRY_MS
        .saturating_mul(1 << doublings)
        .min(MAX_RETRY_MS)
}

/// Writes `mail` to `recipient` into the outbox on `conn`: the caller's transaction.
pub async fn enqueue(
    conn: &mut AnyConnection,
    recipient: &str,
    mail: &Mail,
    now: UnixMillis,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO outbox (kind, recipient, mail, state, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, 'queued', 0, $4, $4)",
    )
    .bind(mail.kind())
    .bind(recipient)
    .bind(serde_json::to_string(mail)?)
    .bind(to_sql(now))
    .execute(conn)
    .await
    .map_err(|e| db_error(e, "queueing mail"))?;
    Ok(())
}

/// A message a sender claimed.
#[derive(Debug)]
pub struct Claimed {
    /// The row.
    pub id: i64,
    /// Where it goes.
    pub recipient: String,
    /// What it says, or why it cannot be read.
    pub mail: Result<Mail, String>,
    /// Attempts so far, this one included.
    pub attempts: u64,
}

/// Messages by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    /// Waiting for their first or next attempt.
    pub queued: u64,
    /// Delivered to the SMTP server (or the log).
    pub sent: u64,
    /// Given up after [`MAX_ATTEMPTS`].
    pub failed: u64,
}

/// A message not sent yet, as operators see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Unsent {
    /// The row.
    pub id: i64,
    /// What it is about.
    pub kind: String,
    /// Where it goes.
    pub recipient: String,
    /// `queued` or `failed`.
    pub state: String,
    /// Attempts so far.
    pub attempts: u64,
    /// When it is due next (Unix milliseconds).
    pub next_attempt_at: u64,
    /// Why the last attempt failed, if one did.
    pub last_error: Option<String>,
}

/// The outbox.
#[derive(Clone)]
pub struct Outbox {
    pool: AnyPool,
    dialect: Dialect,
    clock: Arc<dyn Clock>,
}

impl Outbox {
    /// The outbox in `pool` (of `dialect`), on `clock`'s time.
    pub fn new(pool: AnyPool, dialect: Dialect, clock: Arc<dyn Clock>) -> Self {
        Self {
            pool,
            dialect,
            clock,
        }
    }

    /// Now, on the outbox's clock.
    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// Claims up to `limit` due messages, oldest first, for [`CLAIM_LEASE_MS`].
    pub async fn claim(&self, limit: u32) -> anyhow::Result<Vec<Claimed>> {
        let now = self.clock.now();
        let sql = match self.dialect {
            Dialect::Postgres => concat!(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1 WHERE id IN ",
                "(SELECT id FROM outbox WHERE state = 'queued' AND next_attempt_at <= $2 ",
                "ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id, recipient, mail, attempts"
            ),
            Dialect::Sqlite => concat!(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1 WHERE id IN ",
                "(SELECT id FROM outbox WHERE state = 'queued' AND next_attempt_at <= $2 ",
                "ORDER BY id LIMIT $3) RETURNING id, recipient, mail, attempts"
            ),
        };
        let rows = sqlx::query(sql)
            .bind(to_sql(now.saturating_add(CLAIM_LEASE_MS)))
            .bind(to_sql(now))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error(e, "claiming mail"))?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let mail: String = row.try_get("mail")?;
                Ok(Claimed {
                    id: row.try_get("id")?,
                    recipient: row.try_get("recipient")?,
                    mail: serde_json::from_str(&mail).map_err(|e| e.to_string()),
                    attempts: from_sql(row.try_get("attempts")?),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| anyhow::Error::new(e).context("reading claimed mail"))?;
        claimed.sort_by_key(|c| c.id);
        Ok(claimed)
    }

    /// Marks a claimed message sent, emptying its body.
    pub async fn sent(&self, id: i64) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE outbox SET state = 'sent', sent_at = $1, mail = '', last_error = NULL \
             WHERE id = $2",
        )
        .bind(to_sql(self.clock.now()))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(e, "marking mail sent"))?;
        Ok(())
    }

    /// Records a failed attempt of a claimed message: it waits [`retry_delay`], or is `failed`
    /// after [`MAX_ATTEMPTS`] (or at once when it cannot be read: no retry helps that).
    pub async fn attempt_failed(
        &self,
        claimed: &Claimed,
        error: &str,
        final_failure: bool,
    ) -> anyhow::Result<()> {
        let state = if final_failure || claimed.attempts >= MAX_ATTEMPTS {
            "failed"
        } else {
            "queued"
        };
        let next = self
            .clock
            .now()
            .saturating_add(retry_delay(claimed.attempts));
        sqlx::query(
            "UPDATE outbox SET state = $1, next_attempt_at = $2, last_error = $3 WHERE id = $4",
        )
        .bind(state)
        .bind(to_sql(next))
        .bind(error)
        .bind(claimed.id)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(e, "recording a failed mail attempt"))?;
        Ok(())
    }

    /// Forgets messages sent before `before`.
    pub async fn forget_sent_before(&self, before: UnixMillis) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM outbox WHERE state = 'sent' AND sent_at < $1")
            .bind(to_sql(before))
            .execute(&self.pool)
            .await
            .map_err(|e| db_error(e, "forgetting sent mail"))?;
        Ok(())
    }

    /// The newest `limit` messages not sent, newest first.
    pub async fn unsent(&self, limit: u32) -> anyhow::Result<Vec<Unsent>> {
        let rows = sqlx::query(
            "SELECT id, kind, recipient, state, attempts, next_attempt_at, last_error FROM outbox \
             WHERE state <> 'sent' ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error(e, "listing unsent mail"))?;
        rows.iter()
            .map(|row| {
                Ok(Unsent {
                    id: row.try_get("id")?,
                    kind: row.try_get("kind")?,
                    recipient: row.try_get("recipient")?,
                    state: row.try_get("state")?,
                    attempts: from_sql(row.try_get("attempts")?),
                    next_attempt_at: from_sql(row.try_get("next_attempt_at")?),
                    last_error: row.try_get("last_error")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| anyhow::Error::new(e).context("reading unsent mail"))
    }

    /// Messages by state.
    pub async fn depth(&self) -> anyhow::Result<Depth> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error(e, "counting mail"))?;
        let mut depth = Depth::default();
        for row in rows {
            let state: String = row.try_get("state")?;
            let n = from_sql(row.try_get("n")?);
            match state.as_str() {
                "queued" => depth.queued = n,
                "sent" => depth.sent = n,
                _ => depth.failed += n,
            }
        }
        Ok(depth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_ten_seconds_to_an_hour_and_give_up_after_about_a_day() {
        assert_eq!(retry_delay(1), 10_000);
        assert_eq!(retry_delay(2), 20_000);
        assert_eq!(retry_delay(3), 40_000);
        assert_eq!(retry_delay(10), MAX_RETRY_MS);
        assert_eq!(retry_delay(u64::MAX), MAX_RETRY_MS);
        let total: u64 = (1..MAX_ATTEMPTS).map(retry_delay).sum();
        assert!((20 * 3_600_000..30 * 3_600_000).contains(&total), "{total}");
    }
}
