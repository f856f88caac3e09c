//! Redis failure as a designed mode for attempts: what to do while the shared store is
//! unavailable (`store.on_error`). The circuit breaker itself lives in the Redis store's one
//! call path (see [`crate::breaker`]), so while it is open this answers at once.
//!
//! - `fail_closed`: refuse logins (503 + Retry-After) until Redis answers again;
//! - `fail_open`: admit every attempt unchecked, loudly (logs and the degraded gauge);
//! - `local` (the default): count in this process with the same policy, so each replica still
//!   limits what it sees; all but the familiar networks' rule, since only Redis knows them.
//!
//! A success Redis did not hear of (in `local` or `fail_open` mode) still makes its network
//! familiar: its account and network are kept, and told to Redis once it answers again, so a
//! stall of a few milliseconds does not cost the account's owner a challenge next time.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use portcullis_core::attack::Assessment;
use portcullis_core::{
    AttemptKey, Decision, LockoutEvent, Outcome, Policy, UnixMillis, Verified, familiar,
};
use serde::{Deserialize, Serialize};

use crate::{AttemptStore, Clock, Health, MemoryStore, RedisStore, StoreError, lock};

/// How many successes' networks a replica keeps for Redis while it is unavailable; beyond
/// this (a long outage) a success's network stays unfamiliar, and its owner answers one
/// challenge from it next time.
const UNHEARD_MAX: usize = 10_000;

/// What the service does while the shared store cannot answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Refuse logins with 503 and Retry-After.
    FailClosed,
    /// Admit attempts unchecked (and say so loudly).
    FailOpen,
    /// Count in this process instead.
    Local,
}

/// The shared store, and the configured mode when it is unavailable.
pub struct FallbackStore {
    primary: Arc<RedisStore>,
    local: MemoryStore,
    mode: OnError,
    /// The keys (account, network) of successes recorded while Redis was unavailable, to be
    /// remembered there once it answers (see [`FallbackStore::retell`]).
    unheard: Arc<Mutex<Vec<[AttemptKey; 2]>>>,
}

impl FallbackStore {
    /// Wraps `primary`; a memory store with `policy`, on `clock`, serves the `local` mode.
    /// That store knows no account's networks (Redis keeps them): deciding alone, it would
    /// challenge every login without a device cookie until Redis returns, so it leaves that
    /// rule to Redis and applies the rest.
    pub fn new(
        primary: Arc<RedisStore>,
        policy: Policy,
        clock: Arc<dyn Clock>,
        mode: OnError,
    ) -> Self {
        let mut local = policy;
        local.challenge.unfamiliar_networks = false;
        Self {
            primary,
            local: MemoryStore::new(local, clock),
            mode,
            unheard: Arc::default(),
        }
    }

    /// Keeps the network of a success Redis did not hear of, for [`FallbackStore::retell`].
    fn keep_unheard(&self, keys: &[AttemptKey]) {
        if let (Some(account), Some(network)) =
            (familiar::account_of(keys), familiar::network_of(keys))
        {
            let mut unheard = lock(&self.unheard);
            if unheard.len() < UNHEARD_MAX {
                unheard.push([account.clone(), network.clone()]);
            }
        }
    }

    /// Tells Redis, now that it answered, the networks of the successes it did not hear of, in
    /// the background (the request that found it back does not wait). Whatever it cannot take
    /// is kept for the next time.
    fn retell(&self) {
        let networks = std::mem::take(&mut *lock(&self.unheard));
        if networks.is_empty() {
            return;
        }
        let (primary, unheard) = (self.primary.clone(), self.unheard.clone());
        tokio::spawn(async move { remember_all(&primary, &unheard, networks).await });
    }

    /// The primary's answer; while it is unavailable, the mode's instead: what `local` answers
    /// (`local` mode) or `unchecked` (`fail_open`). Fail-closed passes the outage on, and no
    /// mode hides a protocol error (a bug).
    async fn or_fallback<T>(
        &self,
        primary: Result<T, StoreError>,
        local: impl Future<Output = Result<T, StoreError>>,
        unchecked: T,
    ) -> Result<T, StoreError> {
        let error = match primary {
            Ok(answer) => {
                self.retell();
                return Ok(answer);
            }
            Err(error) => error,
        };
        match (&error, self.mode) {
            (StoreError::Unavailable { .. }, OnError::Local) => {
                tracing::warn!(error = %error, "attempt store unavailable: counting locally");
                local.await
            }
            (StoreError::Unavailable { .. }, OnError::FailOpen) => {
                tracing::warn!(error = %error, "attempt store unavailable: unchecked (fail_open)");
                Ok(unchecked)
            }
            _ => Err(error),
        }
    }
}

#[async_trait]
impl AttemptStore for FallbackStore {
    async fn attempt(&self, keys: &[AttemptKey], proof_work: u64) -> Result<Decision, StoreError> {
        let unchecked = Decision::Allow {
            pending: Vec::new(),
            under_attack: false,
        };
        let primary = self.primary.attempt(keys, proof_work).await;
        let local = self.local.attempt(keys, proof_work);
        self.or_fallback(primary, local, unchecked).await
    }

    async fn consume_proof(&self, id: &str, expires_at: UnixMillis) -> Result<bool, StoreError> {
        let primary = self.primary.consume_proof(id, expires_at).await;
        let local = self.local.consume_proof(id, expires_at);
        self.or_fallback(primary, local, true).await
    }

    async fn record(
        &self,
        keys: &[AttemptKey],
        verified: Verified,
        username: &str,
        pending: &[LockoutEvent],
    ) -> Result<Vec<LockoutEvent>, StoreError> {
        let primary = self.primary.record(keys, verified, username, pending).await;
        let unheard = primary.is_err() && verified.outcome == Outcome::Success;
        let local = self.local.record(keys, verified, username, pending);
        let bans = self.or_fallback(primary, local, Vec::new()).await?;
        if unheard {
            self.keep_unheard(keys);
        }
        Ok(bans)
    }

    async fn remember_network(&self, keys: &[AttemptKey]) -> Result<(), StoreError> {
        let primary = self.primary.remember_network(keys).await;
        self.or_fallback(primary, self.local.remember_network(keys), ())
            .await
    }

    async fn abandon(
        &self,
        keys: &[AttemptKey],
        pending: &[LockoutEvent],
    ) -> Result<(), StoreError> {
        let primary = self.primary.abandon(keys, pending).await;
        self.or_fallback(primary, self.local.abandon(keys, pending), ())
            .await
    }

    async fn hand_over(&self) -> Result<(), StoreError> {
        let networks = std::mem::take(&mut *lock(&self.unheard));
        remember_all(&self.primary, &self.unheard, networks).await;
        self.primary.hand_over().await
    }

    /// The shared signal while Redis answers; the local one while the fallback counts.
    fn attack_signal(&self) -> Option<Assessment> {
        if self.primary.is_degraded() && self.mode == OnError::Local {
            self.local.attack_signal()
        } else {
            self.primary.attack_signal()
        }
    }

    async fn health(&self) -> Health {
        match (self.primary.ping().await, self.mode) {
            (Ok(()), _) => Health::Ready,
            (Err(_), OnError::FailClosed) => Health::Unavailable,
            (Err(_), _) => Health::Degraded,
        }
    }
}

/// Remembers `networks` (each an account's key and a network's) in Redis, in order; from the
/// first it cannot, puts them back in `unheard`.
async fn remember_all(
    primary: &RedisStore,
    unheard: &Mutex<Vec<[AttemptKey; 2]>>,
    networks: Vec<[AttemptKey; 2]>,
) {
    let count = networks.len();
    if count == 0 {
        return;
    }
    let mut networks = networks.into_iter();
    while let Some(keys) = networks.next() {
        if let Err(error) = primary.remember_network(&keys).await {
            tracing::warn!(%error, "networks of successes Redis did not hear of: kept for later");
            lock(unheard).extend(std::iter::once(keys).chain(networks));
            return;
        }
    }
    tracing::info!(
        count,
        "told Redis the networks of successes it did not hear of"
    );
}
