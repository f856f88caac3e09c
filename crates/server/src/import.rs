//! `portcullis users import FILE`: bulk account creation from `username,password` lines (or,
//! after a first line `username,email,password`, `username,email,password` lines whose address,
//! if any, the operator vouches for: it is the account's verified one); and
//! `portcullis users import-totp FILE`: their TOTP secrets, from `username,secret` lines.
//!
//! Seeding many accounts (for a drill, or a migration) is dominated by Argon2, so lines are
//! hashed in parallel on the hashing pool, as many at once as it has workers. Usernames are
//! normalised like registrations; a username (or verified address) that exists already is
//! skipped, not overwritten. The password is everything after the first comma (the second with
//! addresses); a first line `username,password` is a header. Passwords meet the same rules as at registration (`passwords.*`); a line whose
//! password does not is counted and skipped.
//!
//! TOTP secrets (base32, as authenticator apps and other identity providers export them) become
//! confirmed second factors, sealed like enrolled ones; an account that has one keeps it.
//!
//! `portcullis users import-passkeys FILE`: passkeys registered for this relying party id by
//! another system, one JSON object a line, `{"username", "name", "credential", "passkey_only"}`
//! with `credential` in webauthn-rs 0.6's `Passkey` form; `passkey_only: true` takes the
//! account's password away once its passkey is in (the drill's passkey users are made so).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use futures_util::stream::{self, StreamExt};
use portcullis_accounts::accounts::{Accounts, CreateError};
use portcullis_accounts::addresses;
use portcullis_accounts::mfa::{self, sealing::SecretSealer};
use portcullis_accounts::passkeys::{self, Imported};
use portcullis_accounts::passwords::{MAX_PASSWORD_BYTES, PasswordHasher, PasswordPolicy};
use portcullis_core::Username;
use portcullis_store::{Clock, SystemClock};
use secrecy::{ExposeSecret, SecretString};

use crate::settings::Settings;

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Accounts created.
    pub imported: usize,
    /// Lines whose normalised username existed already.
    pub existing: usize,
    /// Lines refused: no comma, a bad username, an empty or overlong password.
    pub invalid: usize,
    /// Lines whose password the rules refuse (weak or breached).
    pub weak: usize,
}

/// Imports the accounts in `file` into `settings.database`.
pub async fn import(settings: &Settings, file: &Path) -> anyhow::Result<ImportReport> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let accounts = Accounts::connect(&settings.database).await?;
    if settings.database.migrate_on_start {
        accounts.migrate().await?;
    }
    let hasher = PasswordHasher::new(&settings.argon2)?;
    let passwords = PasswordPolicy::from_settings(&settings.passwords)?;
    let parallel = hasher.workers();
    let mut report = ImportReport::default();
    let mut valid = Vec::new();
    let with_addresses = text.lines().next().map(str::trim) == Some("username,email,password");
    // Lines are created concurrently: of two giving one address, the first in the file keeps it.
    let mut addresses = HashSet::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() || (number == 0 && line.trim() == "username,password") {
            continue;
        }
        if number == 0 && with_addresses {
            continue;
        }
        match parse_line(line, with_addresses) {
            Some((_, Some(email), _)) if !addresses.insert(email.clone()) => report.existing += 1,
            Some((username, _, password))
                if passwords
                    .check_new(password.expose_secret(), &username)
                    .is_err() =>
            {
                report.weak += 1
            }
            Some(entry) => valid.push(entry),
            None => report.invalid += 1,
        }
    }
    let outcomes: Vec<anyhow::Result<bool>> = stream::iter(valid)
        .map(|(username, email, password)| {
            let (hasher, accounts) = (&hasher, &accounts);
            async move {
                let hash = hasher
                    .hash(password)
                    .await
                    .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?;
                match accounts.create(&username, &hash, email.as_deref()).await {
                    Ok(_) => Ok(true),
                    Err(CreateError::Taken) => Ok(false),
                    Err(CreateError::Database(e)) => Err(e),
                }
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    for outcome in outcomes {
        if outcome? {
            report.imported += 1;
        } else {
            report.existing += 1;
        }
    }
    Ok(report)
}

/// What a TOTP import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TotpImportReport {
    /// Second factors imported.
    pub imported: usize,
    /// Lines whose account has a second factor already (kept).
    pub existing: usize,
    /// Lines naming no account.
    pub unknown: usize,
    /// Lines refused: no comma, a bad username, a secret that is not base32 of 128 bits or more.
    pub invalid: usize,
}

/// Imports the TOTP secrets in `file` (`username,secret` lines; a first line
/// `username,totp_secret` is a header) as confirmed second factors.
pub async fn import_totp(settings: &Settings, file: &Path) -> anyhow::Result<TotpImportReport> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let accounts = Accounts::connect(&settings.database).await?;
    if settings.database.migrate_on_start {
        accounts.migrate().await?;
    }
    let sealer = SecretSealer::new(&crate::startup::instance_key(settings, &accounts).await?)?;
    let mut report = TotpImportReport::default();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() || (number == 0 && line.trim() == "username,totp_secret") {
            continue;
        }
        let Some((username, secret)) = line
            .split_once(',')
            .and_then(|(u, s)| Some((Username::parse(u).ok()?, s)))
        else {
            report.invalid += 1;
            continue;
        };
        let Some(account) = accounts.find(&username).await? else {
            report.unknown += 1;
            continue;
        };
        match mfa::import_secret(accounts.pool(), &sealer, &account.id, secret).await {
            Ok(true) => report.imported += 1,
            Ok(false) => report.existing += 1,
            Err(error) if error.is::<mfa::SecretFormat>() => report.invalid += 1,
            Err(error) => return Err(error),
        }
    }
    Ok(report)
}

/// What a passkey import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PasskeyImportReport {
    /// Passkeys added.
    pub imported: usize,
    /// Lines whose credential is registered already (kept as it was).
    pub existing: usize,
    /// Lines naming no account.
    pub unknown: usize,
    /// Lines refused: not a JSON object of the form, a bad name or credential, or an account
    /// with as many passkeys as it may have.
    pub invalid: usize,
}

/// One line of a passkey import.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PasskeyLine {
    username: String,
    name: String,
    credential: serde_json::Value,
    #[serde(default)]
    passkey_only: bool,
}

/// Imports the passkeys in `file` (one [`PasskeyLine`] a line).
pub async fn import_passkeys(
    settings: &Settings,
    file: &Path,
) -> anyhow::Result<PasskeyImportReport> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let accounts = Accounts::connect(&settings.database).await?;
    if settings.database.migrate_on_start {
        accounts.migrate().await?;
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut report = PasskeyImportReport::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parsed = serde_json::from_str::<PasskeyLine>(line)
            .ok()
            .and_then(|l| Username::parse(&l.username).ok().map(|u| (l, u)));
        let Some((line, username)) = parsed else {
            report.invalid += 1;
            continue;
        };
        let Some(account) = accounts.find(&username).await? else {
            report.unknown += 1;
            continue;
        };
        let imported = passkeys::import(
            accounts.pool(),
            clock.clone(),
            &account.id,
            &line.name,
            &line.credential,
            settings.webauthn.max_per_account,
        )
        .await?;
        match imported {
            Imported::Added => report.imported += 1,
            Imported::Registered => report.existing += 1,
            Imported::Full | Imported::Invalid => report.invalid += 1,
        }
        if imported == Imported::Added && line.passkey_only {
            accounts.remove_password(&account.id).await?;
        }
    }
    Ok(report)
}

/// `username,password`, or with addresses `username,email,password` (the email may be empty;
/// the password may contain commas), normalised and checked.
fn parse_line(line: &str, with_address: bool) -> Option<(Username, Option<String>, SecretString)> {
    let (username, rest) = line.split_once(',')?;
    let username = Username::parse(username).ok()?;
    let (email, password) = if with_address {
        let (email, password) = rest.split_once(',')?;
        let email = match email.trim() {
            "" => None,
            email => Some(addresses::normalise(email).ok()?),
        };
        (email, password)
    } else {
        (None, rest)
    };
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return None;
    }
    Some((username, email, SecretString::from(password.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::parse_line;

    #[test]
    fn lines_are_normalised_and_passwords_may_hold_commas() {
        let (username, email, _) = parse_line(" Alice ,pa,ss", false).unwrap();
        assert_eq!((username.as_str(), email), ("alice", None));
        assert!(parse_line("no-comma", false).is_none());
        assert!(parse_line("bob,", false).is_none());
        assert!(parse_line(",password", false).is_none());
    }

    #[test]
    fn with_addresses_the_second_column_is_an_address_or_empty() {
        let (username, email, _) = parse_line("Carol, Carol@Example.com ,pa,ss", true).unwrap();
        assert_eq!(username.as_str(), "carol");
        assert_eq!(email.as_deref(), Some("carol@example.com"));
        let (_, email, _) = parse_line("dave,,password", true).unwrap();
        assert_eq!(email, None);
        assert!(parse_line("erin,not an address,password", true).is_none());
        assert!(parse_line("erin,erin@example.com", true).is_none());
    }
}
