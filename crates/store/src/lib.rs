//! Where Portcullis keeps what it must share between requests: attempt counters and sessions.
//!
//! The server talks to the [`AttemptStore`] and [`SessionStore`] traits. Each implementation
//! applies the policy of `portcullis-core` atomically, with its own notion of now:
//! - [`memory`]: in-process, the embedded default (one replica only);
//! - [`redis_store`]: Redis or Redis Cluster, shared by every replica;
//! - [`resilient`]: a circuit breaker around the shared store and the mode for when it fails.
//!
//! A store owns its clock (see [`clock`]) so that all replicas sharing a store share one time.

pub mod admin;
pub mod clock;
pub mod events;
pub mod memory;
pub mod redis_store;
pub mod resilient;

use async_trait::async_trait;
use portcullis_core::{AttemptKey, Decision, LockoutEvent, Outcome, UnixMillis};

pub use admin::{AdminStore, KeyStatus, Restriction};
pub use clock::{Clock, ManualClock, SystemClock};
pub use events::{EventKind, SecurityEvent};
pub use memory::MemoryStore;
pub use redis_store::{RedisConfig, RedisStore};
pub use resilient::{OnError, ResilientStore, Transition};

/// A store that could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing service failed or is unreachable.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Attempt counters: decides attempts and records their outcomes under the policy.
#[async_trait]
pub trait AttemptStore: Send + Sync + 'static {
    /// Decides an attempt touching `keys`, counting it if allowed, in one atomic step.
    async fn attempt(&self, keys: &[AttemptKey]) -> Result<Decision, StoreError>;

    /// Records a verified attempt's outcome for the username with keyed hash `username`
    /// (see `KeyDeriver::username_digest`); returns the bans it started.
    async fn record(
        &self,
        keys: &[AttemptKey],
        outcome: Outcome,
        username: &str,
    ) -> Result<Vec<LockoutEvent>, StoreError>;

    /// Whether the store answers (for readiness; never called per request).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The security event log (see [`events`]).
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends an event.
    async fn append(&self, event: &SecurityEvent) -> Result<(), StoreError>;

    /// The newest `count` events, newest first.
    async fn recent(&self, count: usize) -> Result<Vec<SecurityEvent>, StoreError>;
}

/// A logged-in session, found by the digest of its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The account's public id.
    pub subject: String,
    /// When the session ends.
    pub expires_at: UnixMillis,
}

/// Sessions by token digest, each with a time to live.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session for `ttl_ms`; returns it with its expiry.
    async fn create(&self, digest: &str, subject: &str, ttl_ms: u64)
    -> Result<Session, StoreError>;

    /// The live session with this digest, if any.
    async fn get(&self, digest: &str) -> Result<Option<Session>, StoreError>;

    /// Ends a session; returns whether it was live.
    async fn revoke(&self, digest: &str) -> Result<bool, StoreError>;

    /// Ends every session of the account this session belongs to ("log out everywhere");
    /// returns how many were live.
    async fn revoke_all(&self, digest: &str) -> Result<u64, StoreError>;
}
