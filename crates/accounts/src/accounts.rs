//! Accounts in SQL: embedded SQLite by default, PostgreSQL for a distributed deployment.
//!
//! The database enforces one account per normalised username and per confusable skeleton (UTS
//! #39), so two concurrent registrations of one name, or of two names that look alike, cannot
//! both succeed. Queries go through sqlx's `Any` driver with SQL both
//! dialects accept; migrations live in `migrations/<dialect>` and are embedded in the binary.

use std::path::Path;
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use portcullis_core::Username;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use crate::settings::DatabaseSettings;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The SQL dialect behind the `Any` pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite, file or memory.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The database cannot be reached (down, or every connection busy past the acquire timeout):
/// the API answers 503 with Retry-After rather than 500.
#[derive(Debug, thiserror::Error)]
#[error("database unavailable: {0}")]
pub struct DatabaseUnavailable(sqlx::Error);

/// Wraps a query error with what was being done, marking unavailability for the API.
pub fn db_error(error: sqlx::Error, doing: &'static str) -> anyhow::Error {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            anyhow::Error::new(DatabaseUnavailable(error)).context(doing)
        }
        other => anyhow::Error::new(other).context(doing),
    }
}

/// The query reading an [`Account`] where `$condition` holds: its columns and which second
/// factors follow the password (so a login needs no second query to know).
macro_rules! select_account {
    ($condition:literal) => {
        concat!(
            "SELECT id, username, password_hash, locked_at, email, (SELECT COUNT(*) FROM totp_factors t ",
            "WHERE t.account_id = accounts.id AND t.confirmed_at > 0) AS totp_factors, ",
            "(SELECT COUNT(*) FROM passkeys p WHERE p.account_id = accounts.id) AS passkeys ",
            "FROM accounts WHERE ",
            $condition
        )
    };
}

/// A stored account.
#[derive(Clone, Debug)]
pub struct Account {
    /// Public random id (the session subject).
    pub id: String,
    /// Normalised username.
    pub username: String,
    /// Argon2id PHC string; empty for an account that signs in with passkeys only.
    pub password_hash: String,
    /// When a permanent lockout began (milliseconds since the epoch); cleared by an admin.
    /// Stored as 0 when unlocked.
    pub locked_at: Option<i64>,
    /// What may follow the password as its second factor.
    pub second_factors: SecondFactors,
    /// The verified address, lower-cased, if any: the only one mail about the account goes to.
    pub email: Option<String>,
}

impl Account {
    /// Whether the account has a password (one that signs in with passkeys only has none).
    pub fn has_password(&self) -> bool {
        !self.password_hash.is_empty()
    }

    /// The stored username as a [`Username`] (it was normalised when stored).
    pub fn normalised_username(&self) -> anyhow::Result<Username> {
        Username::parse(&self.username)
            .map_err(|e| anyhow::anyhow!("stored username of {} no longer parses: {e}", self.id))
    }
}

/// The second factors an account has: after its password, a login needs one of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecondFactors {
    /// A confirmed TOTP authenticator (with its recovery codes).
    pub totp: bool,
    /// At least one passkey.
    pub passkey: bool,
}

impl SecondFactors {
    /// Whether a second factor must follow the password.
    pub fn any(self) -> bool {
        self.totp || self.passkey
    }

    /// The methods a client may offer, as `mfa_required` names them.
    pub fn methods(self) -> Vec<&'static str> {
        [(self.passkey, "passkey"), (self.totp, "totp")]
            .into_iter()
            .filter_map(|(on, method)| on.then_some(method))
            .collect()
    }
}

/// Why an account was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The normalised username exists.
    #[error("username is already taken")]
    Taken,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] anyhow::Error),
}

/// The accounts table.
#[derive(Clone, Debug)]
pub struct Accounts {
    pool: AnyPool,
    dialect: Dialect,
}

impl Accounts {
    /// Connects to `database.url`, creating a SQLite file and its folder if missing.
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let url = settings.url.as_str();
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            anyhow::bail!(
                "database.url: unsupported scheme in `{}`; use sqlite:// or postgres://",
                redact(url)
            );
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms));
        if dialect == Dialect::Sqlite && in_memory {
            // Every connection to `:memory:` is its own database: keep exactly one, forever.
            options = options
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            create_parent_dir(path)?;
        }
        let url = with_create_mode(url);
        let pool = options
            .connect(&url)
            .await
            .with_context(|| format!("database.url: cannot connect to {}", redact(&url)))?;
        if dialect == Dialect::Sqlite && !in_memory {
            // Write-ahead logging: a commit appends to the log and syncs it once (synchronous
            // stays FULL, so a commit survives a power cut), where the rollback journal syncs
            // twice and creates and deletes a file; readers never wait for the writer, and
            // `portcullis users import` can write while the service runs. The mode stays with
            // the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_optional(&pool)
                .await
                .map_err(|e| db_error(e, "turning on SQLite's write-ahead log"))?;
        }
        Ok(Self { pool, dialect })
    }

    /// The connection pool, for other tables of the same database.
    pub fn pool(&self) -> AnyPool {
        self.pool.clone()
    }

    /// A transaction on the accounts database, for a change and what must commit with it (its
    /// mail).
    pub async fn begin(&self) -> anyhow::Result<sqlx::Transaction<'static, sqlx::Any>> {
        self.pool
            .begin()
            .await
            .map_err(|e| db_error(e, "starting a transaction"))
    }

    /// Which dialect the database speaks.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrations = match self.dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrations
            .run(&self.pool)
            .await
            .context("applying database migrations")
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| db_error(e, "database ping"))?;
        Ok(())
    }

    /// The account with this normalised username, if any.
    pub async fn find(&self, username: &Username) -> anyhow::Result<Option<Account>> {
        self.find_where(select_account!("username = $1"), username.as_str())
            .await
    }

    /// The account with this id, if any.
    pub async fn find_by_id(&self, id: &str) -> anyhow::Result<Option<Account>> {
        self.find_where(select_account!("id = $1"), id).await
    }

    async fn find_where(
        &self,
        query: &'static str,
        value: &str,
    ) -> anyhow::Result<Option<Account>> {
        let row = sqlx::query(query)
            .bind(value)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_error(e, "looking up an account"))?;
        row.map(|row| {
            Ok(Account {
                id: row.try_get("id")?,
                username: row.try_get("username")?,
                password_hash: row.try_get("password_hash")?,
                locked_at: Some(row.try_get::<i64, _>("locked_at")?).filter(|&at| at > 0),
                second_factors: SecondFactors {
                    totp: row.try_get::<i64, _>("totp_factors")? > 0,
                    passkey: row.try_get::<i64, _>("passkeys")? > 0,
                },
                email: row.try_get("email")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| anyhow::Error::new(e).context("reading an account row"))
    }

    /// Creates an account, with `email` as its verified address if given (an operator's
    /// import vouches for it); refuses a taken username or verified address.
    pub async fn create(
        &self,
        username: &Username,
        password_hash: &str,
        email: Option<&str>,
    ) -> Result<Account, CreateError> {
        let id = crate::token::random_id()?;
        self.create_with_id(&id, username, password_hash, email)
            .await
    }

    /// [`Accounts::create`] with the id given (a passkey registration chose it for the user
    /// handle its authenticator keeps).
    pub async fn create_with_id(
        &self,
        id: &str,
        username: &Username,
        password_hash: &str,
        email: Option<&str>,
    ) -> Result<Account, CreateError> {
        let id = id.to_owned();
        let created_at = now_ms();
        let result = sqlx::query(
            "INSERT INTO accounts (id, username, skeleton, password_hash, created_at, email) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.as_str())
        .bind(username.as_str())
        .bind(username.skeleton())
        .bind(password_hash)
        .bind(created_at)
        .bind(email)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(Account {
                id,
                username: username.as_str().to_owned(),
                password_hash: password_hash.to_owned(),
                locked_at: None,
                second_factors: SecondFactors::default(),
                email: email.map(str::to_owned),
            }),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(CreateError::Taken),
            Err(e) => Err(CreateError::Database(db_error(e, "inserting an account"))),
        }
    }
}

impl Accounts {
    /// Fills in the confusable skeleton of accounts made before it was stored. A row whose
    /// skeleton another account holds already keeps none (it still logs in; no new look-alike
    /// of either can register).
    pub async fn fill_skeletons(&self) -> anyhow::Result<()> {
        let rows = sqlx::query("SELECT id, username FROM accounts WHERE skeleton IS NULL")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error(e, "listing accounts without a skeleton"))?;
        for row in rows {
            let id: String = row.try_get("id").context("reading an account id")?;
            let raw: String = row.try_get("username").context("reading a username")?;
            let Ok(username) = Username::parse(&raw) else {
                tracing::warn!(
                    subject = id,
                    "stored username no longer parses; no skeleton"
                );
                continue;
            };
            let result = sqlx::query("UPDATE accounts SET skeleton = $1 WHERE id = $2")
                .bind(username.skeleton())
                .bind(id.as_str())
                .execute(&self.pool)
                .await;
            match result {
                Ok(_) => {}
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    tracing::warn!(
                        subject = id,
                        "account looks like another; no skeleton stored"
                    );
                }
                Err(e) => return Err(db_error(e, "storing a username skeleton")),
            }
        }
        Ok(())
    }

    /// The instance's own secret key, made on first use and kept in the database: what
    /// `secrets.hmac_key` stands in for when it is not configured (the embedded default), so
    /// sealed TOTP secrets and device cookies survive a restart.
    pub async fn instance_secret(&self) -> anyhow::Result<Vec<u8>> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| anyhow::anyhow!("no entropy source: {e}"))?;
        sqlx::query(
            "INSERT INTO instance_secret (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(hex::encode(fresh))
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(e, "storing the instance secret"))?;
        let row = sqlx::query("SELECT secret FROM instance_secret WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error(e, "reading the instance secret"))?;
        let secret: String = row
            .try_get("secret")
            .context("reading the instance secret")?;
        Ok(secret.into_bytes())
    }

    /// Replaces an account's password hash (a rehash with current parameters).
    pub async fn update_hash(&self, id: &str, password_hash: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE accounts SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error(e, "updating a password hash"))?;
        Ok(())
    }

    /// Takes the password away: the account signs in with its passkeys only, and every password
    /// verifies against the dummy hash. A reset gives it one again.
    pub async fn remove_password(&self, id: &str) -> anyhow::Result<()> {
        self.update_hash(id, "").await
    }

    /// Deletes an account that was never used (a passkey registration whose passkey could not be
    /// stored); its rows in other tables go with it.
    pub async fn delete_unused(&self, id: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM accounts WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error(e, "deleting an unused account"))?;
        Ok(())
    }

    /// Marks an account permanently locked (no-op for a name without an account).
    pub async fn lock(&self, username: &Username) -> anyhow::Result<()> {
        sqlx::query("UPDATE accounts SET locked_at = $1 WHERE username = $2 AND locked_at = 0")
            .bind(now_ms())
            .bind(username.as_str())
            .execute(&self.pool)
            .await
            .map_err(|e| db_error(e, "locking an account"))?;
        Ok(())
    }

    /// Lifts a permanent lockout; returns whether there was one.
    pub async fn unlock(&self, username: &Username) -> anyhow::Result<bool> {
        let result =
            sqlx::query("UPDATE accounts SET locked_at = 0 WHERE username = $1 AND locked_at <> 0")
                .bind(username.as_str())
                .execute(&self.pool)
                .await
                .map_err(|e| db_error(e, "unlocking an account"))?;
        Ok(result.rows_affected() > 0)
    }
}

/// A count or a time as SQL stores it (BIGINT), saturating.
pub fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A count or a time as SQL stored it; a negative value reads as 0.
pub fn from_sql(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Creates the folder of a SQLite file path (`data/portcullis.db?opts` -> `data/`).
fn create_parent_dir(path: &str) -> anyhow::Result<()> {
    let file = path.split('?').next().unwrap_or(path);
    if let Some(parent) = Path::new(file)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).with_context(|| {
            format!(
                "database.url: cannot create the folder {}",
                parent.display()
            )
        })?;
    }
    Ok(())
}

/// Adds `mode=rwc` to a SQLite file URL so the file is created when missing.
fn with_create_mode(url: &str) -> String {
    if !url.starts_with("sqlite:") || url.contains("mode=") || url.contains(":memory:") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}mode=rwc")
}

/// A URL fit for logs: any password replaced.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{user}:***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
impl Accounts {
    /// A migrated in-memory SQLite database on one connection (each connection would be a
    /// database of its own), for unit tests.
    pub(crate) async fn in_memory() -> Self {
        let accounts = Self::connect(&DatabaseSettings {
            url: "sqlite::memory:".to_owned(),
            migrate_on_start: true,
            max_connections: 1,
            acquire_timeout_ms: 1_000,
        })
        .await
        .unwrap();
        accounts.migrate().await.unwrap();
        accounts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sqlite_file_keeps_a_write_ahead_log() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/accounts.db", dir.path().display());
        let settings = DatabaseSettings {
            url,
            migrate_on_start: true,
            max_connections: 2,
            acquire_timeout_ms: 1_000,
        };
        let accounts = Accounts::connect(&settings).await.unwrap();
        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&accounts.pool())
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(mode, "wal");
        // And a second connection to the file, as an import while the service runs, sees it.
        let again = Accounts::connect(&settings).await.unwrap();
        again.migrate().await.unwrap();
        let username = Username::parse("alice").unwrap();
        again.create(&username, "hash", None).await.unwrap();
        assert!(accounts.find(&username).await.unwrap().is_some());
    }
}
