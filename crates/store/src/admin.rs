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

/// A change that makes what replicas cache stale: refusals (their deny caches), the allowlist,
/// or sessions (their forward-auth caches).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// An administrator cleared keys (unlock, unban).
    Unlock,
    /// The allowlist changed.
    Allowlist,
    /// Sessions ended (a logout, a password change): of the account with this public id, or,
    /// with `None`, of any account (a subscription that was away may have missed some).
    SessionsEnded(Option<String>),
}

/// The prefix of a [`Invalidation::SessionsEnded`] message naming its account.
const SESSIONS_OF: &str = "sessions:";

impl Invalidation {
    /// The message on the wire.
    pub fn message(&self) -> String {
        match self {
            Invalidation::Unlock => "unlock".to_owned(),
            Invalidation::Allowlist => "allowlist".to_owned(),
            Invalidation::SessionsEnded(None) => "sessions".to_owned(),
            Invalidation::SessionsEnded(Some(subject)) => format!("{SESSIONS_OF}{subject}"),
        }
    }

    /// The change a message names, if it names one.
    pub fn parse(message: &str) -> Option<Self> {
        match message {
            "unlock" => Some(Invalidation::Unlock),
            "allowlist" => Some(Invalidation::Allowlist),
            "sessions" => Some(Invalidation::SessionsEnded(None)),
            _ => message
                .strip_prefix(SESSIONS_OF)
                .filter(|subject| !subject.is_empty())
                .map(|subject| Invalidation::SessionsEnded(Some(subject.to_owned()))),
        }
    }
}

/// What hears announced changes.
pub type Listener = std::sync::Arc<dyn Fn(Invalidation) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::Invalidation;

    #[test]
    fn every_change_reads_back_from_its_message_and_nothing_else_is_a_change() {
        for change in [
            Invalidation::Unlock,
            Invalidation::Allowlist,
            Invalidation::SessionsEnded(None),
            Invalidation::SessionsEnded(Some("3f9a".to_owned())),
        ] {
            assert_eq!(Invalidation::parse(&change.message()), Some(change));
        }
        for noise in ["", "sessions:", "unlocked", "Unlock"] {
            assert_eq!(Invalidation::parse(noise), None, "{noise:?}");
        }
    }
}
