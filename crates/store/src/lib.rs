//! Where Portcullis keeps what it shares between requests and replicas: attempt counters, the
//! restrictions index and the security event stream. Accounts and sessions live in the
//! accounts database (the server's), which is durable; losing this store loses only
//! rate-limit history.
//!
//! The server talks to the [`AttemptStore`], [`EventLog`] and [`AdminStore`] traits:
//! - [`memory`]: in-process, the embedded default (one replica only);
//! - [`redis_store`]: Redis or Redis Cluster, shared by every replica, every call through one
//!   circuit breaker ([`breaker`]);
//! - [`fallback`]: what attempts do while the shared store is unavailable (`store.on_error`).
//!
//! A store owns its clock (see [`clock`]) so that all replicas sharing a store share one time.

pub mod admin;
pub mod breaker;
pub mod clock;
pub mod events;
pub mod fallback;
pub mod memory;
pub mod redis_store;

use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use portcullis_core::attack::Assessment;
use portcullis_core::{AttemptKey, Decision, LockoutEvent, UnixMillis, Verified};

pub use admin::{AdminStore, Invalidation, KeyStatus, Listener, Restriction};
pub use breaker::{Breaker, Transition};
pub use clock::{Clock, ManualClock, SystemClock};
pub use events::{EventKind, RecordedEvent, SecurityEvent};
pub use fallback::{FallbackStore, OnError};
pub use memory::MemoryStore;
pub use redis_store::{RedisConfig, RedisStore, SentinelConfig, Sharding, Topology};

/// Boxed cause of an unavailable store.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store that could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing service failed, timed out or is unreachable (or the breaker is open): the
    /// only kind of error that counts against the circuit breaker.
    #[error("store unavailable while {doing}")]
    Unavailable {
        /// What the store was doing.
        doing: &'static str,
        /// Why it failed.
        #[source]
        source: Cause,
    },
    /// The store answered something this code does not understand: a bug (a script and its
    /// decoder disagree), logged at error, never a breaker trip.
    #[error("store protocol error: {0}")]
    Protocol(String),
    /// The store cannot be built from its settings.
    #[error("store misconfigured: {0}")]
    Misconfigured(String),
}

impl StoreError {
    /// An unavailable store, with what it was doing and why.
    pub fn unavailable(
        doing: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unavailable {
            doing,
            source: Box::new(source),
        }
    }
}

/// Whether the store can serve requests now (for readiness; never called per request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// The store answers.
    Ready,
    /// The shared store does not answer; its fallback serves (local or fail-open mode).
    Degraded,
    /// The store does not answer and nothing serves in its place (fail-closed mode).
    Unavailable,
}

/// Attempt counters: decides attempts (allow, challenge or deny) and settles their outcomes
/// under the policy, and consumes solved challenges once.
///
/// Every admitted attempt is settled exactly once, by [`AttemptStore::record`] or
/// [`AttemptStore::abandon`], with the lockouts its admission started (`pending`).
#[async_trait]
pub trait AttemptStore: Send + Sync + 'static {
    /// Decides an attempt touching `keys` that carries a solved challenge of `proof_work`
    /// (0: none), counting it unless refused, in one atomic step.
    async fn attempt(&self, keys: &[AttemptKey], proof_work: u64) -> Result<Decision, StoreError>;

    /// Marks the solved challenge `id` used until it expires at `expires_at`; `false` if it was
    /// used before, here or on any other replica sharing the store. One atomic step.
    async fn consume_proof(&self, id: &str, expires_at: UnixMillis) -> Result<bool, StoreError>;

    /// Records a verified attempt (its outcome, and what verifying found) for the username with
    /// keyed hash `username` (see `KeyDeriver::username_digest`); returns the bans it started.
    async fn record(
        &self,
        keys: &[AttemptKey],
        verified: Verified,
        username: &str,
        pending: &[LockoutEvent],
    ) -> Result<Vec<LockoutEvent>, StoreError>;

    /// Makes the network of `keys` (a login's keys) familiar to their account, as a success from
    /// it does, when the policy asks about networks (see `portcullis_core::familiar`): the
    /// account was registered there.
    async fn remember_network(&self, keys: &[AttemptKey]) -> Result<(), StoreError>;

    /// Settles an attempt that was never verified (see `portcullis_core::decision::abandon`).
    async fn abandon(
        &self,
        keys: &[AttemptKey],
        pending: &[LockoutEvent],
    ) -> Result<(), StoreError>;

    /// Whether the store can serve attempts now.
    async fn health(&self) -> Health {
        Health::Ready
    }

    /// The under-attack signal as this replica sees it now (none when the policy has none).
    fn attack_signal(&self) -> Option<Assessment>;

    /// Hands over what this replica holds back before it exits (the signal's counts not yet
    /// shared); a store that holds nothing back has nothing to do.
    async fn hand_over(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The security event log (see [`events`]).
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends an event.
    async fn append(&self, event: &SecurityEvent) -> Result<(), StoreError>;

    /// The newest `count` events, newest first.
    async fn recent(&self, count: usize) -> Result<Vec<RecordedEvent>, StoreError>;
}

/// Locks a mutex even if a previous holder panicked: every critical section in this crate
/// leaves its data consistent, so poisoning carries no information.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
