//! The server's half of a WebAuthn ceremony between its options and its answer: the challenge
//! and the credentials it allows, as webauthn-rs's state. Stored in the accounts database by
//! the SHA-256 of a random id the client echoes (never in a client cookie), taken once, alive
//! [`CEREMONY_MS`], so any replica finishes what another started and a replayed answer finds
//! nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_store::Clock;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{AnyPool, Row};

use crate::accounts::{db_error, to_sql};
use crate::token;

/// How long a ceremony waits for its answer, in ms (webauthn-rs asks authenticators to give up
/// after the same 5 minutes).
pub const CEREMONY_MS: u64 = 5 * 60 * 1_000;

/// How often a replica removes the ceremonies nobody finished, in ms.
const SWEEP_EVERY_MS: u64 = 60 * 1_000;

/// A ceremony taken back by its id.
pub struct Taken<S> {
    /// The account it names, if any.
    pub account_id: Option<String>,
    /// What it is for, and webauthn-rs's state.
    pub state: S,
}

/// The ceremonies table.
#[derive(Clone)]
pub struct Ceremonies {
    pool: AnyPool,
    clock: Arc<dyn Clock>,
    /// When this replica last removed expired ceremonies (ms since the epoch).
    swept_at: Arc<AtomicU64>,
}

impl Ceremonies {
    /// Ceremonies in `pool`, on `clock`'s time.
    pub fn new(pool: AnyPool, clock: Arc<dyn Clock>) -> Self {
        Self {
            pool,
            clock,
            swept_at: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Keeps `state` (naming `account_id`, if any); returns the id the client echoes.
    pub async fn start(
        &self,
        account_id: Option<&str>,
        state: &impl Serialize,
    ) -> anyhow::Result<String> {
        let issued = token::issue()?;
        let now = self.clock.now();
        let state = serde_json::to_string(state)?;
        // Ceremonies nobody finished go once a minute per replica, so the table stays small and
        // a sign-in's options pay one write, not two.
        let swept = self.swept_at.load(Ordering::Relaxed);
        if now.saturating_sub(swept) >= SWEEP_EVERY_MS
            && self
                .swept_at
                .compare_exchange(swept, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            sqlx::query("DELETE FROM passkey_ceremonies WHERE expires_at <= $1")
                .bind(to_sql(now))
                .execute(&self.pool)
                .await
                .map_err(|e| db_error(e, "removing expired passkey ceremonies"))?;
        }
        sqlx::query(
            "INSERT INTO passkey_ceremonies (ceremony_digest, account_id, state, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(issued.digest.as_str())
        .bind(account_id)
        .bind(state)
        .bind(to_sql(now.saturating_add(CEREMONY_MS)))
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(e, "storing a passkey ceremony"))?;
        Ok(issued.token)
    }

    /// Takes the live ceremony `id` names, once: a second take, an expired ceremony or a
    /// malformed id find nothing.
    pub async fn take<S: DeserializeOwned>(&self, id: &str) -> anyhow::Result<Option<Taken<S>>> {
        let Some(digest) = token::digest_of_value(id) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "DELETE FROM passkey_ceremonies WHERE ceremony_digest = $1 AND expires_at > $2 \
             RETURNING account_id, state",
        )
        .bind(digest)
        .bind(to_sql(self.clock.now()))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error(e, "taking a passkey ceremony"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let state: String = row.try_get("state")?;
        Ok(Some(Taken {
            account_id: row.try_get("account_id")?,
            state: serde_json::from_str(&state)?,
        }))
    }
}
