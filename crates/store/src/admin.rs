//! What administrators see and change: key status, unlocks, the current restrictions.

use async_trait::async_trait;
use portcullis_core::{AttemptKey, Dimension, KeyState, UnixMillis};
use serde::Serialize;

use crate::StoreError;

/// One counter key as an administrator sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyStatus {
    /// What the key counts.
    pub dimension: Dimension,
    /// The store key (usernames only as keyed hashes).
    pub key: String,
    /// Consecutive failures counted by its lockout.
    pub failures: u32,
    /// Locked until then, if locked.
    pub locked_until: Option<UnixMillis>,
    /// Locked until an administrator unlocks.
    pub permanent: bool,
    /// Banned until then, if banned.
    pub banned_until: Option<UnixMillis>,
    /// Bans so far (the escalation level).
    pub bans: u32,
    /// Distinct usernames failed in the current spray window.
    pub distinct_usernames: u32,
}

impl KeyStatus {
    /// The status of `key` in `state` at `now`.
    pub fn new(
        key: &AttemptKey,
        state: &KeyState,
        distinct_usernames: u32,
        now: UnixMillis,
    ) -> Self {
        Self {
            dimension: key.dimension,
            key: key.key.clone(),
            failures: state.lockout.failures,
            locked_until: (state.lockout.locked_until > now).then_some(state.lockout.locked_until),
            permanent: state.lockout.permanent,
            banned_until: (state.spray.banned_until > now).then_some(state.spray.banned_until),
            bans: state.spray.bans,
            distinct_usernames,
        }
    }

    /// Whether anything refuses attempts on this key now.
    pub fn is_restricted(&self) -> bool {
        self.permanent || self.locked_until.is_some() || self.banned_until.is_some()
    }
}

/// A key that refuses attempts now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Restriction {
    /// The store key.
    pub key: String,
    /// When it ends (`None`: a permanent lockout).
    pub until: Option<UnixMillis>,
}

/// Administration of the attempt store.
#[async_trait]
pub trait AdminStore: Send + Sync + 'static {
    /// The status of each key (a fresh key shows all zeros).
    async fn status(&self, keys: &[AttemptKey]) -> Result<Vec<KeyStatus>, StoreError>;

    /// Forgets every counter of the keys (unlock, unban); returns how many held state.
    async fn clear(&self, keys: &[AttemptKey]) -> Result<u64, StoreError>;

    /// Current lockouts and bans, at most `limit`, from an index with expiry (no key scan).
    async fn restrictions(&self, limit: usize) -> Result<Vec<Restriction>, StoreError>;

    /// Tells every replica that counters or the allowlist changed under what they cache (their
    /// deny caches). A store one process owns has no one else to tell.
    async fn announce(&self, _change: Invalidation) -> Result<(), StoreError> {
        Ok(())
    }

    /// Calls `listener` with every change any replica announces, this one's included, for as
    /// long as the process runs (reconnecting after failures). A store one process owns has no
    /// one else to hear.
    fn listen(&self, _listener: Listener) {}
}

/// A change that makes cached refusals stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// An administrator cleared keys (unlock, unban).
    Unlock,
    /// The allowlist changed.
    Allowlist,
}

impl Invalidation {
    /// The message on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Invalidation::Unlock => "unlock",
            Invalidation::Allowlist => "allowlist",
        }
    }

    /// The change a message names, if it names one.
    pub fn parse(message: &str) -> Option<Self> {
        match message {
            "unlock" => Some(Invalidation::Unlock),
            "allowlist" => Some(Invalidation::Allowlist),
            _ => None,
        }
    }
}

/// What hears announced changes.
pub type Listener = std::sync::Arc<dyn Fn(Invalidation) + Send + Sync>;
