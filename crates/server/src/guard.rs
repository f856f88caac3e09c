//! The login guard: every endpoint that verifies a password goes through it.
//!
//! It derives the attempt's keys, asks the store for a decision (one store call), runs the
//! password check only when allowed, and records the outcome (a second store call). A refused
//! attempt never reaches Argon2 or the database.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use portcullis_core::backoff::Lockout;
use portcullis_core::{
    AttemptKey, Decision, DeviceId, Dimension, KeyDeriver, LockoutEvent, Outcome, Policy, Username,
};
use portcullis_store::AttemptStore;

use crate::allowlist::Allowlist;
use crate::error::ApiError;
use crate::instruments;
use crate::security_events::SecurityEvents;

/// What a guarded password check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    /// Whether the password matched.
    pub outcome: Outcome,
    /// Whether this failure turned the account's lockout permanent (it must be stored with the
    /// account, which outlives the attempt store).
    pub permanently_locked: bool,
}

/// Applies the policy around password checks.
#[derive(Clone)]
pub struct LoginGuard {
    policy: Policy,
    deriver: KeyDeriver,
    store: Arc<dyn AttemptStore>,
    events: SecurityEvents,
    allowlist: Allowlist,
}

impl LoginGuard {
    /// A guard applying `policy` with keys from `deriver`, counting in `store`, reporting
    /// lockouts and bans to `events`.
    pub fn new(
        policy: Policy,
        deriver: KeyDeriver,
        store: Arc<dyn AttemptStore>,
        events: SecurityEvents,
        allowlist: Allowlist,
    ) -> Self {
        Self {
            policy,
            deriver,
            store,
            events,
            allowlist,
        }
    }

    /// The keys an attempt by the username with keyed hash `digest` touches.
    fn keys(&self, ip: IpAddr, digest: &str, device: Option<&DeviceId>) -> Vec<AttemptKey> {
        self.limited(ip, self.deriver.keys_for_digest(ip, digest, device))
    }

    /// Keeps the keys the policy limits; allowlisted sources skip the address and subnet
    /// limits, never the account's.
    fn limited(&self, ip: IpAddr, keys: Vec<AttemptKey>) -> Vec<AttemptKey> {
        let mut keys = self.policy.active_keys(keys);
        if self.allowlist.contains(ip) {
            keys.retain(|k| !matches!(k.dimension, Dimension::Ip | Dimension::Subnet));
        }
        keys
    }

    /// Runs `verify` (which answers whether the password matched) if the policy admits an
    /// attempt by `username` from `ip` (from a trusted `device`, if it presented one), and
    /// records its outcome.
    pub async fn check_password<F, Fut>(
        &self,
        ip: IpAddr,
        username: &Username,
        device: Option<&DeviceId>,
        verify: F,
    ) -> Result<Checked, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<bool, ApiError>>,
    {
        // One keyed hash per attempt, for the keys and for the store's distinct-username count.
        let digest = self.deriver.username_digest(username);
        let keys = self.keys(ip, &digest, device);
        let pending = self.admit(&keys).await?;
        let outcome = if verify().await? {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        let bans =
            instruments::store_call("record", self.store.record(&keys, outcome, &digest)).await?;
        tracing::Span::current().record("outcome", outcome_name(outcome));
        metrics::counter!("portcullis_logins_total", "outcome" => outcome_name(outcome))
            .increment(1);
        let mut permanently_locked = false;
        if outcome == Outcome::Failure {
            // Lockouts stand once the attempt that started them failed; bans start with it.
            self.events.report_lockouts(&pending).await;
            self.events.report_lockouts(&bans).await;
            permanently_locked = pending
                .iter()
                .any(|l| l.key.dimension == Dimension::Username && l.lockout == Lockout::Permanent);
        }
        Ok(Checked {
            outcome,
            permanently_locked,
        })
    }

    /// Derives keys for administration (the same derivation attempts use).
    pub fn deriver(&self) -> &KeyDeriver {
        &self.deriver
    }

    /// Whether the attempt store answers (for readiness).
    pub async fn store_ready(&self) -> Result<(), portcullis_store::StoreError> {
        self.store.ping().await
    }

    /// Counts an attempt that is not a password check (a registration) against its source
    /// address and subnet only.
    pub async fn admit_source(&self, ip: IpAddr) -> Result<(), ApiError> {
        let keys = self.limited(ip, self.deriver.source_keys(ip).to_vec());
        self.admit(&keys).await.map(drop)
    }

    /// Asks the store; returns the lockouts the attempt started provisionally.
    async fn admit(&self, keys: &[AttemptKey]) -> Result<Vec<LockoutEvent>, ApiError> {
        match instruments::store_call("attempt", self.store.attempt(keys)).await? {
            Decision::Allow {
                pending,
                under_attack,
            } => {
                // The service-wide signal, as of this attempt (per-address limits tighten).
                metrics::gauge!("portcullis_under_attack").set(f64::from(u8::from(under_attack)));
                metrics::counter!("portcullis_decisions_total", "outcome" => "allowed")
                    .increment(1);
                Ok(pending)
            }
            Decision::Deny(denial) => {
                metrics::counter!(
                    "portcullis_decisions_total",
                    "outcome" => "denied",
                    "reason" => denial.reason.as_str(),
                    "dimension" => denial.dimension.as_str()
                )
                .increment(1);
                let span = tracing::Span::current();
                span.record("outcome", "denied");
                span.record("reason", denial.reason.as_str());
                tracing::info!(
                    dimension = denial.dimension.as_str(),
                    reason = denial.reason.as_str(),
                    retry_after_ms = denial.retry_after_ms,
                    "attempt refused before verification"
                );
                Err(ApiError::Throttled {
                    retry_after_secs: denial.retry_after_secs(),
                })
            }
        }
    }
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
    }
}
