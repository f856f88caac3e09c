//! The in-process store: the embedded default for a single replica.
//!
//! Attempts go through the core's [`StateTable`], so the memory store is the reference model
//! itself. The table and the restrictions index share one lock (two locks taken in different
//! orders once deadlocked an unlock racing a lockout). Security events live in a ring buffer of
//! the newest [`MEMORY_EVENTS`]. Nothing here survives a restart, and nothing is shared with
//! other processes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use portcullis_core::attack::Assessment;
use portcullis_core::model::StateTable;
use portcullis_core::{AttemptKey, Decision, LockoutEvent, Policy, UnixMillis, Verified};

use crate::admin::{AdminStore, KeyStatus, Restriction};
use crate::events::{MEMORY_EVENTS, RecordedEvent, SecurityEvent};
use crate::{AttemptStore, Clock, EventLog, StoreError, lock};

/// Restrictions indexed before stale entries are pruned.
const MAX_INDEXED: usize = 10_000;

/// Key states and the keys that were locked or banned, under one lock.
#[derive(Debug)]
struct Counters {
    table: StateTable,
    /// The restrictions index (stale entries are pruned when read or when it grows).
    restricted: HashSet<AttemptKey>,
    /// Prune the index when it reaches this size: twice what the last pruning kept, so a
    /// flood of live lockouts costs amortised constant time per lockout, not a scan each.
    prune_at: usize,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            table: StateTable::default(),
            restricted: HashSet::new(),
            prune_at: MAX_INDEXED,
        }
    }
}

impl Counters {
    fn index(&mut self, lockouts: &[LockoutEvent], now: UnixMillis) {
        self.restricted
            .extend(lockouts.iter().map(|l| l.key.clone()));
        if self.restricted.len() > self.prune_at {
            // Keep the index proportional to what is restricted now.
            let table = &self.table;
            self.restricted
                .retain(|key| status_in(table, key, now).is_restricted());
            self.prune_at = (self.restricted.len() * 2).max(MAX_INDEXED);
        }
    }
}

fn status_in(table: &StateTable, key: &AttemptKey, now: UnixMillis) -> KeyStatus {
    let state = table.state(&key.key, now).unwrap_or_default();
    let distinct = u32::try_from(state.spray.usernames.len()).unwrap_or(u32::MAX);
    KeyStatus::new(key, &state, distinct, now)
}

/// Attempt counters and security events in this process's memory.
#[derive(Debug)]
pub struct MemoryStore {
    policy: Policy,
    clock: Arc<dyn Clock>,
    counters: Mutex<Counters>,
    /// Solved challenges already used, until they expire.
    used_proofs: Mutex<UsedProofs>,
    /// The newest security events, oldest dropped first.
    events: Mutex<VecDeque<RecordedEvent>>,
}

/// Solved challenges' ids and when each expires.
#[derive(Debug, Default)]
struct UsedProofs {
    expires: HashMap<String, UnixMillis>,
    /// Sweep expired ids when this many are held (twice what the last sweep kept).
    sweep_at: usize,
}

impl UsedProofs {
    fn consume(&mut self, id: &str, expires_at: UnixMillis, now: UnixMillis) -> bool {
        if self.expires.get(id).is_some_and(|&at| at > now) {
            return false;
        }
        self.expires.insert(id.to_owned(), expires_at);
        if self.expires.len() >= self.sweep_at {
            self.expires.retain(|_, &mut at| at > now);
            self.sweep_at = (self.expires.len() * 2).max(MAX_INDEXED);
        }
        true
    }
}

impl MemoryStore {
    /// An empty store applying `policy` with time from `clock`.
    pub fn new(policy: Policy, clock: Arc<dyn Clock>) -> Self {
        Self {
            policy,
            clock,
            counters: Mutex::new(Counters::default()),
            used_proofs: Mutex::default(),
            events: Mutex::new(VecDeque::with_capacity(MEMORY_EVENTS)),
        }
    }

    /// Attempt-counter entries held (live or not yet swept): for memory tests and metrics.
    pub fn attempt_entries(&self) -> usize {
        lock(&self.counters).table.len()
    }
}

#[async_trait]
impl AttemptStore for MemoryStore {
    async fn attempt(&self, keys: &[AttemptKey], proof_work: u64) -> Result<Decision, StoreError> {
        let now = self.clock.now();
        let mut counters = lock(&self.counters);
        let decision = counters.table.attempt(&self.policy, keys, proof_work, now);
        if let Decision::Allow { pending, .. } = &decision {
            counters.index(pending, now);
        }
        Ok(decision)
    }

    async fn record(
        &self,
        keys: &[AttemptKey],
        verified: Verified,
        username: &str,
        pending: &[LockoutEvent],
    ) -> Result<Vec<LockoutEvent>, StoreError> {
        let now = self.clock.now();
        let mut counters = lock(&self.counters);
        let bans = counters
            .table
            .record(&self.policy, keys, verified, username, pending, now);
        counters.index(&bans, now);
        Ok(bans)
    }

    async fn abandon(
        &self,
        keys: &[AttemptKey],
        pending: &[LockoutEvent],
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        lock(&self.counters)
            .table
            .abandon(&self.policy, keys, pending, now);
        Ok(())
    }

    async fn remember_network(&self, keys: &[AttemptKey]) -> Result<(), StoreError> {
        let now = self.clock.now();
        lock(&self.counters)
            .table
            .remember_network(&self.policy, keys, now);
        Ok(())
    }

    async fn consume_proof(&self, id: &str, expires_at: UnixMillis) -> Result<bool, StoreError> {
        let now = self.clock.now();
        Ok(lock(&self.used_proofs).consume(id, expires_at, now))
    }

    fn attack_signal(&self) -> Option<Assessment> {
        let signal = self.policy.global.attack?;
        let now = self.clock.now();
        let global = AttemptKey::global();
        let state = lock(&self.counters)
            .table
            .state(&global.key, now)
            .unwrap_or_default();
        Some(signal.assess(&state.attack, now))
    }
}

#[async_trait]
impl AdminStore for MemoryStore {
    async fn status(&self, keys: &[AttemptKey]) -> Result<Vec<KeyStatus>, StoreError> {
        let now = self.clock.now();
        let counters = lock(&self.counters);
        Ok(keys
            .iter()
            .map(|k| status_in(&counters.table, k, now))
            .collect())
    }

    async fn clear(&self, keys: &[AttemptKey]) -> Result<u64, StoreError> {
        let mut counters = lock(&self.counters);
        let mut cleared = 0;
        for key in keys {
            counters.restricted.remove(key);
            cleared += u64::from(counters.table.clear(&key.key));
        }
        Ok(cleared)
    }

    async fn restrictions(&self, limit: usize) -> Result<Vec<Restriction>, StoreError> {
        let now = self.clock.now();
        let mut counters = lock(&self.counters);
        let Counters {
            table, restricted, ..
        } = &mut *counters;
        let mut live = Vec::new();
        restricted.retain(|key| {
            let status = status_in(table, key, now);
            if status.is_restricted() {
                let until = if status.permanent {
                    None
                } else {
                    status.locked_until.max(status.banned_until)
                };
                live.push(Restriction {
                    key: key.key.clone(),
                    until,
                });
            }
            status.is_restricted()
        });
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
        events.push_back(RecordedEvent {
            at: self.clock.now(),
            event: event.clone(),
        });
        Ok(())
    }

    async fn recent(&self, count: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(lock(&self.events)
            .iter()
            .rev()
            .take(count)
            .cloned()
            .collect())
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
        let until: Vec<_> = recent.iter().map(|e| e.event.until).collect();
        assert_eq!(
            until,
            [
                Some(MEMORY_EVENTS as u64 + 4),
                Some(MEMORY_EVENTS as u64 + 3)
            ]
        );
        assert_eq!(store.recent(usize::MAX).await.unwrap().len(), MEMORY_EVENTS);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn unlocks_racing_lockouts_past_the_index_limit_finish() {
        let (store, _) = store();
        let store = Arc::new(store);
        let deriver = KeyDeriver::new(b"k", 24, 64, 48).unwrap();
        let policy = Policy::default();
        let keys_of = move |i: usize| {
            let user = Username::parse(&format!("locked{i}")).unwrap();
            // One /24 each, so only the account's lockouts refuse.
            let ip = format!("10.{}.{}.1", i >> 8, i & 0xff).parse().unwrap();
            policy.active_keys(deriver.keys(ip, &user, None))
        };
        let lockers: Vec<_> = (0..2)
            .map(|worker| {
                let (store, keys_of) = (store.clone(), keys_of.clone());
                tokio::spawn(async move {
                    for i in (worker..MAX_INDEXED + 2_000).step_by(2) {
                        let keys = keys_of(i);
                        for _ in 0..5 {
                            store.attempt(&keys, 0).await.unwrap();
                        }
                    }
                })
            })
            .collect();
        let unlocker = {
            let (store, keys_of) = (store.clone(), keys_of.clone());
            tokio::spawn(async move {
                for i in 0..MAX_INDEXED + 2_000 {
                    store.clear(&keys_of(i)).await.unwrap();
                    if i % 1_000 == 0 {
                        store.restrictions(10).await.unwrap();
                    }
                }
            })
        };
        let all = futures_util::future::join_all(lockers.into_iter().chain([unlocker]));
        let finished = tokio::time::timeout(std::time::Duration::from_secs(120), all).await;
        assert!(finished.is_ok(), "a lock-order deadlock hung the workers");
    }

    #[tokio::test]
    async fn a_flood_of_distinct_attempts_leaves_bounded_memory_after_their_ttl() {
        let (store, clock) = store();
        let policy = Policy::default();
        let deriver = KeyDeriver::new(b"k", 24, 64, 48).unwrap();
        for i in 0..100_000u32 {
            let ip = format!("10.{}.{}.{}", i >> 12, (i >> 4) & 0xff, i & 0xf)
                .parse()
                .unwrap();
            let user = Username::parse(&format!("user{i}")).unwrap();
            let keys = policy.active_keys(deriver.keys(ip, &user, None));
            // Solving the challenge each new account's network asks for.
            if store.attempt(&keys, u64::MAX).await.unwrap().is_allowed() {
                store
                    .record(
                        &keys,
                        portcullis_core::Outcome::Failure.into(),
                        &format!("user{i}"),
                        &[],
                    )
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
        store.attempt(&keys, u64::MAX).await.unwrap();
        // Address, subnet, username, username from the address (the global signal counts
        // outcomes, and none came yet).
        assert_eq!(store.attempt_entries(), 4, "the late attempt's own keys");
    }
}
