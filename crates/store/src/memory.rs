//! The in-process store: the embedded default for a single replica.
//!
//! Attempts go through the core's [`StateTable`] behind a mutex, so the memory store is the
//! reference model itself. Sessions live in a map swept of expired entries once a minute;
//! security events in a ring buffer of the newest [`MEMORY_EVENTS`].
//! Nothing here survives a restart, and nothing is shared with other processes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use portcullis_core::model::StateTable;
use portcullis_core::{AttemptKey, Decision, LockoutEvent, Outcome, Policy, UnixMillis};

use crate::admin::{AdminStore, KeyStatus, Restriction};
use crate::events::{MEMORY_EVENTS, SecurityEvent};
use crate::{AttemptStore, Clock, EventLog, Session, SessionStore, StoreError};

const SESSION_SWEEP_INTERVAL_MS: u64 = 60_000;
/// Restrictions indexed before stale entries are pruned.
const MAX_INDEXED: usize = 10_000;

#[derive(Debug, Default)]
struct Sessions {
    by_digest: HashMap<String, Session>,
    /// Sweep expired sessions on the first write after this time.
    sweep_after: UnixMillis,
}

/// Attempt counters and sessions in this process's memory.
#[derive(Debug)]
pub struct MemoryStore {
    policy: Policy,
    clock: Arc<dyn Clock>,
    attempts: Mutex<StateTable>,
    sessions: Mutex<Sessions>,
    /// The newest security events, oldest dropped first.
    events: Mutex<VecDeque<SecurityEvent>>,
    /// Keys that were locked or banned (the restrictions index; stale entries are pruned when
    /// read).
    restricted: Mutex<HashSet<AttemptKey>>,
}

/// Locks a mutex even if a previous holder panicked: every critical section here leaves the
/// data consistent, so poisoning carries no information.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryStore {
    /// An empty store applying `policy` with time from `clock`.
    pub fn new(policy: Policy, clock: Arc<dyn Clock>) -> Self {
        Self {
            policy,
            clock,
            attempts: Mutex::new(StateTable::default()),
            sessions: Mutex::new(Sessions::default()),
            events: Mutex::new(VecDeque::with_capacity(MEMORY_EVENTS)),
            restricted: Mutex::new(HashSet::new()),
        }
    }

    fn index(&self, lockouts: &[LockoutEvent]) {
        if lockouts.is_empty() {
            return;
        }
        let mut restricted = lock(&self.restricted);
        restricted.extend(lockouts.iter().map(|l| l.key.clone()));
        if restricted.len() > MAX_INDEXED {
            // Keep the index proportional to what is restricted now.
            let now = self.clock.now();
            let attempts = lock(&self.attempts);
            restricted.retain(|key| {
                let state = attempts.state(&key.key, now).unwrap_or_default();
                KeyStatus::new(key, &state, 0, now).is_restricted()
            });
        }
    }

    fn status_of(&self, key: &AttemptKey, now: UnixMillis) -> KeyStatus {
        let state = lock(&self.attempts)
            .state(&key.key, now)
            .unwrap_or_default();
        let distinct = u32::try_from(state.spray.usernames.len()).unwrap_or(u32::MAX);
        KeyStatus::new(key, &state, distinct, now)
    }

    /// Attempt-counter entries held (live or not yet swept): for memory tests and metrics.
    pub fn attempt_entries(&self) -> usize {
        lock(&self.attempts).len()
    }

    /// Session entries held (live or not yet swept).
    pub fn session_entries(&self) -> usize {
        lock(&self.sessions).by_digest.len()
    }
}

#[async_trait]
impl AttemptStore for MemoryStore {
    async fn attempt(&self, keys: &[AttemptKey]) -> Result<Decision, StoreError> {
        let now = self.clock.now();
        let decision = lock(&self.attempts).attempt(&self.policy, keys, now);
        if let Decision::Allow { pending, .. } = &decision {
            self.index(pending);
        }
        Ok(decision)
    }

    async fn record(
        &self,
        keys: &[AttemptKey],
        outcome: Outcome,
        username: &str,
    ) -> Result<Vec<LockoutEvent>, StoreError> {
        let now = self.clock.now();
        let bans = lock(&self.attempts).record(&self.policy, keys, outcome, username, now);
        self.index(&bans);
        Ok(bans)
    }
}

#[async_trait]
impl AdminStore for MemoryStore {
    async fn status(&self, keys: &[AttemptKey]) -> Result<Vec<KeyStatus>, StoreError> {
        let now = self.clock.now();
        Ok(keys.iter().map(|k| self.status_of(k, now)).collect())
    }

    async fn clear(&self, keys: &[AttemptKey]) -> Result<u64, StoreError> {
        let mut attempts = lock(&self.attempts);
        let mut restricted = lock(&self.restricted);
        let mut cleared = 0;
        for key in keys {
            restricted.remove(key);
            cleared += u64::from(attempts.clear(&key.key));
        }
        Ok(cleared)
    }

    async fn restrictions(&self, limit: usize) -> Result<Vec<Restriction>, StoreError> {
        let now = self.clock.now();
        let keys: Vec<AttemptKey> = lock(&self.restricted).iter().cloned().collect();
        let mut live = Vec::new();
        for key in keys {
            let status = self.status_of(&key, now);
            if status.is_restricted() {
                let until = if status.permanent {
                    None
                } else {
                    status.locked_until.max(status.banned_until)
                };
                live.push(Restriction {
                    key: key.key,
                    until,
                });
            } else {
                lock(&self.restricted).remove(&key);
            }
        }
        live.sort_by(|a, b| a.key.cmp(&b.key));
        live.truncate(limit);
        Ok(live)
    }
}

#[async_trait]
impl EventLog for MemoryStore {
    async fn append(&self, event: &SecurityEvent) -> Result<(), StoreError> {
        let mut events = lock(&self.events);
        if events.len() == MEMORY_EVENTS {
            events.pop_front();
        }
        events.push_back(event.clone());
        Ok(())
    }

    async fn recent(&self, count: usize) -> Result<Vec<SecurityEvent>, StoreError> {
        Ok(lock(&self.events)
            .iter()
            .rev()
            .take(count)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(
        &self,
        digest: &str,
        subject: &str,
        ttl_ms: u64,
    ) -> Result<Session, StoreError> {
        let now = self.clock.now();
        let session = Session {
            subject: subject.to_owned(),
            expires_at: now.saturating_add(ttl_ms),
        };
        let mut sessions = lock(&self.sessions);
        if now > sessions.sweep_after {
            sessions.by_digest.retain(|_, s| s.expires_at > now);
            sessions.sweep_after = now.saturating_add(SESSION_SWEEP_INTERVAL_MS);
        }
        sessions
            .by_digest
            .insert(digest.to_owned(), session.clone());
        Ok(session)
    }

    async fn get(&self, digest: &str) -> Result<Option<Session>, StoreError> {
        let now = self.clock.now();
        Ok(lock(&self.sessions)
            .by_digest
            .get(digest)
            .filter(|s| s.expires_at > now)
            .cloned())
    }

    async fn revoke(&self, digest: &str) -> Result<bool, StoreError> {
        let now = self.clock.now();
        Ok(lock(&self.sessions)
            .by_digest
            .remove(digest)
            .is_some_and(|s| s.expires_at > now))
    }

    /// A scan over all sessions: fine for the embedded single replica, where this is rare.
    async fn revoke_all(&self, digest: &str) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let mut sessions = lock(&self.sessions);
        let Some(subject) = sessions.by_digest.get(digest).map(|s| s.subject.clone()) else {
            return Ok(0);
        };
        let mut ended = 0;
        sessions.by_digest.retain(|_, s| {
            let ends = s.subject == subject;
            if ends && s.expires_at > now {
                ended += 1;
            }
            !ends
        });
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use portcullis_core::{KeyDeriver, Username};

    fn store() -> (MemoryStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        (MemoryStore::new(Policy::default(), clock.clone()), clock)
    }

    #[tokio::test]
    async fn sessions_expire_and_revoke() {
        let (store, clock) = store();
        let session = store.create("d1", "acct", 1_000).await.unwrap();
        assert_eq!(store.get("d1").await.unwrap(), Some(session));
        clock.advance(1_000);
        assert_eq!(store.get("d1").await.unwrap(), None);
        store.create("d2", "acct", 1_000).await.unwrap();
        store.create("d3", "acct", 1_000).await.unwrap();
        store.create("other", "acct2", 1_000).await.unwrap();
        assert!(store.revoke("d2").await.unwrap());
        assert_eq!(store.revoke_all("d3").await.unwrap(), 1);
        assert!(store.get("other").await.unwrap().is_some());
        assert!(!store.revoke("d2").await.unwrap());
        assert_eq!(store.get("d2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_event_ring_keeps_the_newest_events() {
        let (store, _) = store();
        for i in 0..MEMORY_EVENTS as u64 + 5 {
            let event = SecurityEvent {
                kind: crate::EventKind::Ban,
                dimension: None,
                key: None,
                subject: None,
                until: Some(i),
            };
            store.append(&event).await.unwrap();
        }
        let recent = store.recent(2).await.unwrap();
        let until: Vec<_> = recent.iter().map(|e| e.until).collect();
        assert_eq!(
            until,
            [
                Some(MEMORY_EVENTS as u64 + 4),
                Some(MEMORY_EVENTS as u64 + 3)
            ]
        );
        assert_eq!(store.recent(usize::MAX).await.unwrap().len(), MEMORY_EVENTS);
    }

    #[tokio::test]
    async fn expired_sessions_are_swept_from_memory() {
        let (store, clock) = store();
        for i in 0..10_000 {
            store.create(&format!("d{i}"), "acct", 1_000).await.unwrap();
        }
        assert_eq!(store.session_entries(), 10_000);
        clock.advance(SESSION_SWEEP_INTERVAL_MS + 1);
        store.create("late", "acct", 1_000).await.unwrap();
        assert_eq!(store.session_entries(), 1);
    }

    #[tokio::test]
    async fn a_flood_of_distinct_attempts_leaves_bounded_memory_after_their_ttl() {
        let (store, clock) = store();
        let policy = Policy::default();
        let deriver = KeyDeriver::new(b"k", 24, 64).unwrap();
        for i in 0..100_000u32 {
            let ip = format!("10.{}.{}.{}", i >> 12, (i >> 4) & 0xff, i & 0xf)
                .parse()
                .unwrap();
            let user = Username::parse(&format!("user{i}")).unwrap();
            let keys = policy.active_keys(deriver.keys(ip, &user, None));
            if store.attempt(&keys).await.unwrap().is_allowed() {
                store
                    .record(&keys, Outcome::Failure, &format!("user{i}"))
                    .await
                    .unwrap();
            }
        }
        let peak = store.attempt_entries();
        assert!(peak > 100_000, "{peak} entries at peak");
        // A day later every failure window has passed; the next write sweeps.
        clock.advance(25 * 3_600_000);
        let user = Username::parse("late").unwrap();
        let keys = policy.active_keys(deriver.keys("192.0.2.1".parse().unwrap(), &user, None));
        store.attempt(&keys).await.unwrap();
        assert_eq!(store.attempt_entries(), 5, "the late attempt's own keys");
    }
}
