//! Second factors in the accounts database: the TOTP factor (sealed secret, last used step,
//! the account's second-factor lockout) and hashed recovery codes.
//!
//! Every change that two replicas could race on is a compare-and-set: the last step only moves
//! forward (`last_step < $step`), and the lockout state is written only over the version it
//! was read at.

use portcullis_core::backoff::LockoutState;
use sqlx::{AnyPool, Row};

use crate::accounts::{db_error, from_sql, now_ms, to_sql};

/// An account's TOTP factor.
#[derive(Clone, Debug)]
pub struct Factor {
    /// The secret, sealed (see `sealing`).
    pub sealed_secret: String,
    /// The key it was sealed under.
    pub key_id: String,
    /// Whether enrolment was confirmed with a first code.
    pub confirmed: bool,
    /// The newest step accepted (0: none yet).
    pub last_step: u64,
    /// The account's second-factor lockout.
    pub lockout: LockoutState,
    /// The version the lockout was read at.
    pub version: i64,
}

/// The factors and recovery codes tables.
#[derive(Clone)]
pub struct Records {
    pool: AnyPool,
}

impl Records {
    /// The tables in `pool`.
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    /// The account's factor, confirmed or pending.
    pub async fn load(&self, account_id: &str) -> anyhow::Result<Option<Factor>> {
        let row = sqlx::query(
            "SELECT sealed_secret, key_id, confirmed_at, last_step, failures, last_failure, \
             locked_until, lockouts, in_flight, version FROM totp_factors WHERE account_id = $1",
        )
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error(e, "looking up a second factor"))?;
        row.map(|row| {
            let count = |name: &str| {
                row.try_get::<i64, _>(name)
                    .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
            };
            Ok(Factor {
                sealed_secret: row.try_get("sealed_secret")?,
                key_id: row.try_get("key_id")?,
                confirmed: row.try_get::<i64, _>("confirmed_at")? > 0,
                last_step: from_sql(row.try_get("last_step")?),
                lockout: LockoutState {
                    failures: count("failures")?,
                    last_failure: from_sql(row.try_get("last_failure")?),
                    locked_until: from_sql(row.try_get("locked_until")?),
                    temporary_lockouts: count("lockouts")?,
                    permanent: false,
                    in_flight: count("in_flight")?,
                },
                version: row.try_get("version")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| anyhow::Error::new(e).context("reading a second factor row"))
    }

    /// Factors sealed under a key other than `key_id`.
    pub async fn sealed_under_other_keys(&self, key_id: &str) -> anyhow::Result<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM totp_factors WHERE key_id <> $1")
            .bind(key_id)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error(e, "counting sealed secrets"))?;
        Ok(from_sql(
            row.try_get("n")
                .map_err(|e| db_error(e, "reading a count"))?,
        ))
    }

    /// Stores a pending factor (replacing a pending one); returns false when the account has a
    /// confirmed factor already.
    pub async fn put_pending(
        &self,
        account_id: &str,
        sealed_secret: &str,
        key_id: &str,
    ) -> anyhow::Result<bool> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| db_error(e, "starting an enrolment"))?;
        sqlx::query("DELETE FROM totp_factors WHERE account_id = $1 AND confirmed_at = 0")
            .bind(account_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(e, "replacing a pending enrolment"))?;
        let inserted = sqlx::query(
            "INSERT INTO totp_factors (account_id, sealed_secret, key_id) VALUES ($1, $2, $3) \
             ON CONFLICT (account_id) DO NOTHING",
        )
        .bind(account_id)
        .bind(sealed_secret)
        .bind(key_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(e, "storing a pending enrolment"))?;
        tx.commit()
            .await
            .map_err(|e| db_error(e, "committing an enrolment"))?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Stores a confirmed factor (an import); returns false when the account has one already.
    pub async fn put_confirmed(
        &self,
        account_id: &str,
        sealed_secret: &str,
        key_id: &str,
    ) -> anyhow::Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO totp_factors (account_id, sealed_secret, key_id, confirmed_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (account_id) DO NOTHING",
        )
        .bind(account_id)
        .bind(sealed_secret)
        .bind(key_id)
        .bind(now_ms().max(1))
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(e, "importing a second factor"))?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Confirms a pending factor at `step` and replaces the recovery codes with `digests`, in
    /// one transaction; returns false when there was no pending factor.
    pub async fn confirm(
        &self,
        account_id: &str,
        step: u64,
        digests: &[String],
    ) -> anyhow::Result<bool> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| db_error(e, "starting a confirmation"))?;
        let confirmed = sqlx::query(
            "UPDATE totp_factors SET confirmed_at = $1, last_step = $2 \
             WHERE account_id = $3 AND confirmed_at = 0",
        )
        .bind(now_ms())
        .bind(to_sql(step))
        .bind(account_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(e, "confirming a second factor"))?;
        if confirmed.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM recovery_codes WHERE account_id = $1")
            .bind(account_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(e, "replacing recovery codes"))?;
        for digest in digests {
            sqlx::query("INSERT INTO recovery_codes (account_id, code_digest) VALUES ($1, $2)")
                .bind(account_id)
                .bind(digest.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(e, "storing a recovery code"))?;
        }
        tx.commit()
            .await
            .map_err(|e| db_error(e, "committing a confirmation"))?;
        Ok(true)
    }

    /// Removes the account's factor and recovery codes.
    pub async fn remove(&self, account_id: &str) -> anyhow::Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| db_error(e, "starting a removal"))?;
        for delete in [
            "DELETE FROM totp_factors WHERE account_id = $1",
            "DELETE FROM recovery_codes WHERE account_id = $1",
        ] {
            sqlx::query(delete)
                .bind(account_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(e, "removing a second factor"))?;
        }
        tx.commit()
            .await
            .map_err(|e| db_error(e, "committing a removal"))?;
        Ok(())
    }

    /// Accepts `step` for the account if it is newer than every step accepted before; returns
    /// whether it was (only one of two replicas racing with the same code wins).
    pub async fn advance_step(&self, account_id: &str, step: u64) -> anyhow::Result<bool> {
        let result = sqlx::query(
            "UPDATE totp_factors SET last_step = $1 WHERE account_id = $2 AND last_step < $1",
        )
        .bind(to_sql(step))
        .bind(account_id)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(e, "accepting a TOTP step"))?;
        Ok(result.rows_affected() == 1)
    }

    /// Writes the lockout state over the version it was read at; returns whether it did.
    pub async fn store_lockout(
        &self,
        account_id: &str,
        version: i64,
        state: &LockoutState,
    ) -> anyhow::Result<bool> {
        let result = sqlx::query(
            "UPDATE totp_factors SET failures = $1, last_failure = $2, locked_until = $3, \
             lockouts = $4, in_flight = $5, version = version + 1 \
             WHERE account_id = $6 AND version = $7",
        )
        .bind(i64::from(state.failures))
        .bind(to_sql(state.last_failure))
        .bind(to_sql(state.locked_until))
        .bind(i64::from(state.temporary_lockouts))
        .bind(i64::from(state.in_flight))
        .bind(account_id)
        .bind(version)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(e, "storing a second-factor lockout"))?;
        Ok(result.rows_affected() == 1)
    }

    /// Uses up a recovery code (each is good once; only one of two racing uses wins).
    pub async fn use_recovery_code(
        &self,
        account_id: &str,
        digest: &str,
    ) -> anyhow::Result<RecoveryCodeUse> {
        let result = sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 \
             WHERE account_id = $2 AND code_digest = $3 AND used_at = 0",
        )
        .bind(now_ms().max(1))
        .bind(account_id)
        .bind(digest)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(e, "using a recovery code"))?;
        if result.rows_affected() == 1 {
            return Ok(RecoveryCodeUse::Used);
        }
        let known = sqlx::query(
            "SELECT used_at FROM recovery_codes WHERE account_id = $1 AND code_digest = $2",
        )
        .bind(account_id)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error(e, "looking up a recovery code"))?;
        Ok(if known.is_some() {
            RecoveryCodeUse::UsedBefore
        } else {
            RecoveryCodeUse::Unknown
        })
    }
}

/// What presenting a recovery code did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryCodeUse {
    /// It was the account's and unused: now it is used.
    Used,
    /// It was the account's, and used already.
    UsedBefore,
    /// It is not one of the account's codes.
    Unknown,
}
