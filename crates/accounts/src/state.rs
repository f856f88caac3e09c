//! The application state: everything the use cases reach, built once at start-up and shared by
//! every worker.

use portcullis_core::DeviceCookies;
use portcullis_store::Invalidation;

use crate::access_tokens::AccessTokens;
use crate::accounts::Accounts;
use crate::allowlist::Allowlist;
use crate::error::Error;
use crate::guard::LoginGuard;
use crate::login_tokens::LoginTokens;
use crate::mail::outbox::Outbox;
use crate::mfa::SecondFactors;
use crate::notices::Notices;
use crate::passkeys::Passkeys;
use crate::passwords::{PasswordHasher, PasswordPolicy};
use crate::security_events::SecurityEvents;
use crate::sessions::Sessions;
use crate::settings::BreachedLogin;
use crate::stores::Stores;

/// What every use case can reach.
pub struct AppState {
    /// The accounts table.
    pub accounts: Accounts,
    /// Login sessions (in the accounts database).
    pub sessions: Sessions,
    /// JWT access tokens, when `tokens.access.enabled`.
    pub access_tokens: Option<AccessTokens>,
    /// Argon2id and its bounded pool.
    pub hasher: PasswordHasher,
    /// The rules for new passwords and the breached-password filter.
    pub passwords: PasswordPolicy,
    /// What a login with a breached password gets.
    pub breached_login: BreachedLogin,
    /// Tokens between a verified password and its second factor or forced change.
    pub login_tokens: LoginTokens,
    /// Second factors (TOTP, recovery codes).
    pub mfa: SecondFactors,
    /// Passkeys and their ceremonies.
    pub passkeys: Passkeys,
    /// How long an `mfa_token` lives, in milliseconds.
    pub mfa_token_ttl_ms: u64,
    /// Rate limits and lockouts around password checks.
    pub guard: LoginGuard,
    /// The attempt store, event log and admin view, for health and administration.
    pub stores: Stores,
    /// Security events (logs and the event log).
    pub events: SecurityEvents,
    /// Networks exempt from the address and subnet limits.
    pub allowlist: Allowlist,
    /// Mail to accounts' owners, sent by every replica's sender.
    pub outbox: Outbox,
    /// Notices to accounts' owners, and their links.
    pub notices: Notices,
    /// Signs and checks device cookies.
    pub device_cookies: DeviceCookies,
    /// Whether a permanently locked account says so (423) or answers like a throttle (429).
    pub disclose_lockouts: bool,
    /// Retry-After for a permanently locked account answered like a throttle.
    pub locked_retry_after_secs: u64,
}

impl AppState {
    /// The refusal for a permanently locked account (see `responses.disclose_lockouts`).
    pub fn locked_error(&self) -> Error {
        if self.disclose_lockouts {
            Error::Locked
        } else {
            Error::Throttled {
                retry_after_secs: self.locked_retry_after_secs,
            }
        }
    }

    /// Tells every replica (this one at once) that cached refusals went stale: an unlock or
    /// an allowlist change. A store that cannot pass it on is logged; the change itself stands
    /// and other replicas' caches expire at their deadlines.
    pub async fn announce(&self, change: Invalidation) {
        self.guard.forget_refusals();
        let message = change.message();
        if let Err(error) = self.stores.admin.announce(change).await {
            tracing::warn!(%error, change = message, "change not announced to other replicas");
        }
    }
}
