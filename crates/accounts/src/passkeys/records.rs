//! The passkeys table: each account's WebAuthn credentials, by a public random id, with the
//! credential id unique across accounts.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_store::Clock;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use webauthn_rs::prelude::Passkey;

use crate::accounts::{db_error, from_sql, to_sql};

/// The query reading [`StoredPasskey`]s where `$condition` holds.
macro_rules! select_passkeys {
    ($condition:literal) => {
        concat!(
            "SELECT id, account_id, name, credential, version, created_at, last_used_at ",
            "FROM passkeys WHERE ",
            $condition
        )
    };
}

/// A stored passkey.
#[derive(Clone, Debug)]
pub struct StoredPasskey {
    /// Public random id (`/v1/passkeys/{id}`).
    pub id: String,
    /// The account it signs in to.
    pub account_id: String,
    /// What its owner called it.
    pub name: String,
    /// webauthn-rs's credential: the public key and the signature counter.
    pub passkey: Passkey,
    /// Moves with every update (compare-and-set).
    pub version: i64,
    /// When it was added (ms since the epoch).
    pub created_at: u64,
    /// When it last signed in (ms since the epoch), if ever.
    pub last_used_at: Option<u64>,
}

/// Why a passkey was not added.
#[derive(Debug)]
pub enum Refused {
    /// The account has as many as it may.
    Full,
    /// The credential is registered already (to this account or another).
    Registered,
}

/// The credential id as stored: unpadded base64url of its bytes.
pub fn encode_credential_id(id: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

/// The passkeys table.
#[derive(Clone)]
pub struct Records {
    pool: AnyPool,
    clock: Arc<dyn Clock>,
}

/// How a removal turned out.
#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    /// The passkey is gone.
    Removed,
    /// The account has no passkey with this id.
    Unknown,
    /// Kept: the last passkey of an account without a password.
    Last,
}

impl Records {
    /// Passkeys in `pool`, on `clock`'s time.
    pub fn new(pool: AnyPool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }

    /// The passkeys of `account_id`, oldest first.
    pub async fn of_account(&self, account_id: &str) -> anyhow::Result<Vec<StoredPasskey>> {
        let rows = sqlx::query(select_passkeys!("account_id = $1 ORDER BY created_at, id"))
            .bind(account_id)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error(e, "listing an account's passkeys"))?;
        rows.iter().map(read).collect()
    }

    /// The passkey with this credential id, whichever account has it.
    pub async fn by_credential_id(
        &self,
        credential_id: &[u8],
    ) -> anyhow::Result<Option<StoredPasskey>> {
        let row = sqlx::query(select_passkeys!("credential_id = $1"))
            .bind(encode_credential_id(credential_id))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_error(e, "looking up a passkey"))?;
        row.as_ref().map(read).transpose()
    }

    /// Adds `passkey` named `name` to `account_id`, unless it has `max` already or the
    /// credential is registered (one statement: two replicas adding at once cannot pass `max`
    /// together on PostgreSQL's serialised unique index, and rarely by one on a race of the
    /// count).
    pub async fn add(
        &self,
        account_id: &str,
        name: &str,
        passkey: &Passkey,
        max: u32,
    ) -> anyhow::Result<Result<StoredPasskey, Refused>> {
        let id = crate::token::random_id()?;
        let created_at = self.clock.now();
        let result = sqlx::query(
            "INSERT INTO passkeys (id, account_id, credential_id, name, credential, created_at) \
             SELECT $1, $2, $3, $4, $5, $6 \
             WHERE (SELECT COUNT(*) FROM passkeys WHERE account_id = $2) < $7",
        )
        .bind(id.as_str())
        .bind(account_id)
        .bind(encode_credential_id(passkey.cred_id()))
        .bind(name)
        .bind(serde_json::to_string(passkey)?)
        .bind(to_sql(created_at))
        .bind(i64::from(max))
        .execute(&self.pool)
        .await;
        match result {
            Ok(done) if done.rows_affected() == 0 => Ok(Err(Refused::Full)),
            Ok(_) => Ok(Ok(StoredPasskey {
                id,
                account_id: account_id.to_owned(),
                name: name.to_owned(),
                passkey: passkey.clone(),
                version: 0,
                created_at,
                last_used_at: None,
            })),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Ok(Err(Refused::Registered))
            }
            Err(e) => Err(db_error(e, "adding a passkey")),
        }
    }

    /// Renames `account_id`'s passkey `id`; false when the account has no such passkey.
    pub async fn rename(&self, account_id: &str, id: &str, name: &str) -> anyhow::Result<bool> {
        let done = sqlx::query("UPDATE passkeys SET name = $1 WHERE id = $2 AND account_id = $3")
            .bind(name)
            .bind(id)
            .bind(account_id)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error(e, "renaming a passkey"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes `account_id`'s passkey `id`, unless it is the last of an account without a
    /// password (one statement, so the check and the removal see one state).
    pub async fn remove(&self, account_id: &str, id: &str) -> anyhow::Result<Removal> {
        let done = sqlx::query(
            "DELETE FROM passkeys WHERE id = $1 AND account_id = $2 \
             AND ((SELECT password_hash FROM accounts WHERE id = $2) <> '' \
                  OR (SELECT COUNT(*) FROM passkeys WHERE account_id = $2) > 1)",
        )
        .bind(id)
        .bind(account_id)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(e, "removing a passkey"))?;
        if done.rows_affected() == 1 {
            return Ok(Removal::Removed);
        }
        let kept = self
            .of_account(account_id)
            .await?
            .iter()
            .any(|stored| stored.id == id);
        Ok(if kept {
            Removal::Last
        } else {
            Removal::Unknown
        })
    }

    /// Removes every passkey of `account_id` on `conn` (a reset's transaction); returns how
    /// many.
    pub async fn remove_all_in(
        conn: &mut sqlx::AnyConnection,
        account_id: &str,
    ) -> anyhow::Result<u64> {
        let done = sqlx::query("DELETE FROM passkeys WHERE account_id = $1")
            .bind(account_id)
            .execute(conn)
            .await
            .map_err(|e| db_error(e, "removing every passkey of an account"))?;
        Ok(done.rows_affected())
    }

    /// Records that `stored` signed in now, with its credential as the sign-in left it
    /// (counter, backup flags). Written only over the version read: of two sign-ins finishing at
    /// once, the later write never puts back an older counter.
    pub async fn record_use(&self, stored: &StoredPasskey) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE passkeys SET credential = $1, last_used_at = $2, version = version + 1 \
             WHERE id = $3 AND version = $4",
        )
        .bind(serde_json::to_string(&stored.passkey)?)
        .bind(to_sql(self.clock.now()))
        .bind(stored.id.as_str())
        .bind(stored.version)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(e, "recording a passkey's use"))?;
        Ok(())
    }

    /// How many accounts have at least one passkey.
    pub async fn accounts_with_passkeys(&self) -> anyhow::Result<u64> {
        let row = sqlx::query("SELECT COUNT(DISTINCT account_id) AS n FROM passkeys")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error(e, "counting accounts with passkeys"))?;
        Ok(from_sql(row.try_get("n")?))
    }
}

fn read(row: &AnyRow) -> anyhow::Result<StoredPasskey> {
    let credential: String = row.try_get("credential")?;
    let last_used_at = from_sql(row.try_get("last_used_at")?);
    Ok(StoredPasskey {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        name: row.try_get("name")?,
        passkey: serde_json::from_str(&credential)?,
        version: row.try_get("version")?,
        created_at: from_sql(row.try_get("created_at")?),
        last_used_at: (last_used_at > 0).then_some(last_used_at),
    })
}

#[cfg(test)]
mod tests {
    use portcullis_core::Username;
    use portcullis_store::ManualClock;
    use webauthn_authenticator_rs::WebauthnAuthenticator;
    use webauthn_authenticator_rs::softpasskey::SoftPasskey;
    use webauthn_rs::prelude::{Url, Uuid, WebauthnBuilder};

    use super::*;
    use crate::accounts::Accounts;

    /// A passkey made by a software authenticator through a real registration.
    fn new_passkey() -> Passkey {
        let origin = Url::parse("http://localhost:8080").unwrap();
        let webauthn = WebauthnBuilder::new("localhost", &origin)
            .unwrap()
            .build()
            .unwrap();
        let (options, state) = webauthn
            .start_passkey_registration(Uuid::new_v4(), "alice", "alice", None)
            .unwrap();
        let credential = SoftPasskey::new(true)
            .do_registration(origin, options)
            .unwrap();
        webauthn
            .finish_passkey_registration(&credential, &state)
            .unwrap()
    }

    #[tokio::test]
    async fn a_credential_belongs_to_one_account_and_an_account_holds_at_most_max() {
        let accounts = Accounts::in_memory().await;
        let mut ids = Vec::new();
        for name in ["alice", "bob"] {
            let username = Username::parse(name).unwrap();
            ids.push(accounts.create(&username, "hash", None).await.unwrap().id);
        }
        let records = Records::new(accounts.pool(), std::sync::Arc::new(ManualClock::default()));
        let shared = new_passkey();
        assert!(
            records
                .add(&ids[0], "one", &shared, 2)
                .await
                .unwrap()
                .is_ok()
        );
        assert!(matches!(
            records.add(&ids[1], "stolen", &shared, 2).await.unwrap(),
            Err(Refused::Registered)
        ));
        assert!(matches!(
            records.add(&ids[0], "again", &shared, 2).await.unwrap(),
            Err(Refused::Registered)
        ));
        assert!(
            records
                .add(&ids[0], "two", &new_passkey(), 2)
                .await
                .unwrap()
                .is_ok()
        );
        assert!(matches!(
            records
                .add(&ids[0], "three", &new_passkey(), 2)
                .await
                .unwrap(),
            Err(Refused::Full)
        ));
        let found = records
            .by_credential_id(shared.cred_id())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.account_id, ids[0]);
        assert_eq!(records.of_account(&ids[0]).await.unwrap().len(), 2);
        assert!(records.of_account(&ids[1]).await.unwrap().is_empty());
        assert_eq!(records.accounts_with_passkeys().await.unwrap(), 1);
    }
}
