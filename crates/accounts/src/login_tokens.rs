//! Short-lived, single-use tokens between a verified password and what must follow it before a
//! session opens: the second factor (`mfa_token`), or a forced password change
//! (`password_change_token`). Stored like sessions, by the SHA-256 of the token, in the accounts
//! database, so any replica can take the next step.

use std::sync::Arc;

use portcullis_store::Clock;
use sqlx::{AnyPool, Row};

use crate::accounts::{db_error, to_sql};
use crate::token;

/// What a login token lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Give the second factor (`POST /v1/login/mfa`).
    Mfa,
    /// Change the password (`POST /v1/password`), and nothing else.
    PasswordChange,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Mfa => "mfa",
            Purpose::PasswordChange => "password_change",
        }
    }
}

/// A live login token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginToken {
    /// The digest it is stored under.
    pub digest: String,
    /// The account it belongs to.
    pub account_id: String,
    /// Second-factor codes tried with it.
    pub codes_used: u32,
    /// Whether the session it leads to must change its password (breached).
    pub password_change_required: bool,
}

/// The login tokens table.
#[derive(Clone)]
pub struct LoginTokens {
    pool: AnyPool,
    clock: Arc<dyn Clock>,
}

impl LoginTokens {
    /// Tokens in `pool`, on `clock`'s time.
    pub fn new(pool: AnyPool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }

    /// Issues a token for `account_id` living `ttl_ms`; returns the token, shown once.
    pub async fn issue(
        &self,
        account_id: &str,
        purpose: Purpose,
        ttl_ms: u64,
        password_change_required: bool,
    ) -> anyhow::Result<String> {
        let issued = token::issue()?;
        let now = self.clock.now();
        // Expired tokens of the account go with each new one, so the table stays small.
        sqlx::query("DELETE FROM login_tokens WHERE account_id = $1 AND expires_at <= $2")
            .bind(account_id)
            .bind(to_sql(now))
            .execute(&self.pool)
            .await
            .map_err(|e| db_error(e, "removing expired login tokens"))?;
        sqlx::query(
            "INSERT INTO login_tokens (token_digest, account_id, purpose, expires_at, \
             password_change_required) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(issued.digest.as_str())
        .bind(account_id)
        .bind(purpose.as_str())
        .bind(to_sql(now.saturating_add(ttl_ms)))
        .bind(i64::from(password_change_required))
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(e, "storing a login token"))?;
        Ok(issued.token)
    }

    /// The live token of this purpose with this value, if any (`None` for a malformed one).
    pub async fn find(&self, value: &str, purpose: Purpose) -> anyhow::Result<Option<LoginToken>> {
        match token::digest_of_value(value) {
            Some(digest) => self.by_digest(digest, purpose).await,
            None => Ok(None),
        }
    }

    /// An `mfa_token` as it is now (its code count moves), if it is still live.
    pub async fn reload(&self, token: &LoginToken) -> anyhow::Result<Option<LoginToken>> {
        self.by_digest(token.digest.clone(), Purpose::Mfa).await
    }

    async fn by_digest(
        &self,
        digest: String,
        purpose: Purpose,
    ) -> anyhow::Result<Option<LoginToken>> {
        let row = sqlx::query(
            "SELECT account_id, codes_used, password_change_required FROM login_tokens \
             WHERE token_digest = $1 AND purpose = $2 AND expires_at > $3",
        )
        .bind(digest.as_str())
        .bind(purpose.as_str())
        .bind(to_sql(self.clock.now()))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error(e, "looking up a login token"))?;
        row.map(|row| {
            Ok(LoginToken {
                digest: digest.clone(),
                account_id: row.try_get("account_id")?,
                codes_used: u32::try_from(row.try_get::<i64, _>("codes_used")?).unwrap_or(u32::MAX),
                password_change_required: row.try_get::<i64, _>("password_change_required")? != 0,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| anyhow::Error::new(e).context("reading a login token row"))
    }

    /// Moves the token's code count from `from` to `to` if nobody moved it meanwhile; returns
    /// whether it did (a compare-and-set, so concurrent codes on one token are all counted).
    pub async fn set_codes_used(
        &self,
        token: &LoginToken,
        from: u32,
        to: u32,
    ) -> anyhow::Result<bool> {
        let result = sqlx::query(
            "UPDATE login_tokens SET codes_used = $1 WHERE token_digest = $2 AND codes_used = $3",
        )
        .bind(i64::from(to))
        .bind(token.digest.as_str())
        .bind(i64::from(from))
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(e, "counting a second-factor code"))?;
        Ok(result.rows_affected() == 1)
    }

    /// Takes back one counted code (a replayed code is not a guess).
    pub async fn uncount_code(&self, token: &LoginToken) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE login_tokens SET codes_used = codes_used - 1 \
             WHERE token_digest = $1 AND codes_used > 0",
        )
        .bind(token.digest.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(e, "taking back a second-factor code"))?;
        Ok(())
    }

    /// Uses the token up; returns whether it was still there (only one caller wins).
    pub async fn consume(&self, token: &LoginToken) -> anyhow::Result<bool> {
        let result =
            sqlx::query("DELETE FROM login_tokens WHERE token_digest = $1 AND expires_at > $2")
                .bind(token.digest.as_str())
                .bind(to_sql(self.clock.now()))
                .execute(&self.pool)
                .await
                .map_err(|e| db_error(e, "using a login token"))?;
        Ok(result.rows_affected() == 1)
    }
}
