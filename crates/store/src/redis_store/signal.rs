//! The under-attack signal, shared by every replica off the attempt path.
//!
//! Each replica counts finished attempts and failures (what `decision` counts, and how) in its
//! own memory, by signal window. Every [`FLUSH_EVERY`] it adds them to its shard of a sharded
//! counter (`SIGNAL_SHARDS` hashes per window, each in a slot of its own under `per_subject`)
//! and, in the same round trip, reads every shard of the current and the previous window back:
//! the service-wide counts, which `AttackSignal::under_attack` judges together with the counts
//! the replica has not added yet. So no attempt waits on the signal, no key is written by every
//! attempt, a replica's own attempts count at once, and it sees the others' within two flushes
//! (0.5 s), against a window of minutes; while failures pile up before an attack is seen,
//! replicas flush every [`FLUSH_EARLY_EVERY`] instead, so an attack starting is seen within
//! about 0.1 s. A flush that fails keeps its counts for the next one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::future::{join_all, try_join_all};
use portcullis_core::UnixMillis;
use portcullis_core::attack::{AttackSignal, AttackState};

use super::calls::Calls;
use super::keyspace::{Keyspace, SIGNAL_SHARDS};
use crate::{Clock, StoreError};

/// How often a replica adds its counts and reads the service's back.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// While failures pile up and the signal is still off, a replica flushes as often as this, so
/// the others see an attack start sooner than [`FLUSH_EVERY`] allows.
pub const FLUSH_EARLY_EVERY: Duration = Duration::from_millis(50);

/// Attempts and failures counted in one window.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    attempts: u64,
    failures: u64,
}

/// This replica's side of the shared signal.
pub struct SharedSignal {
    signal: AttackSignal,
    /// The shard this replica adds to.
    shard: u64,
    /// Counted here, not yet added, by window.
    pending: Mutex<BTreeMap<u64, Counts>>,
    /// The service-wide counts as last read back.
    seen: Mutex<AttackState>,
    /// One flush at a time (the background task's and a test's), so none reads back before
    /// another's counts are added.
    flushing: tokio::sync::Mutex<()>,
}

impl SharedSignal {
    /// The signal of `signal`'s settings, adding to the shard `seed` picks.
    pub fn new(signal: AttackSignal, seed: u64) -> Self {
        Self {
            signal,
            shard: seed % SIGNAL_SHARDS,
            pending: Mutex::new(BTreeMap::new()),
            seen: Mutex::new(AttackState::default()),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    /// Counts one finished attempt (`failed`: as a failure) at `now`.
    pub fn count(&self, now: UnixMillis, failed: bool) {
        let window = now / self.signal.window_ms.max(1);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = pending.entry(window).or_default();
        counts.attempts += 1;
        counts.failures += u64::from(failed);
    }

    /// Whether the service-wide counts last read back, with this replica's own counts not yet
    /// added, show an attack at `now` (so a replica's own attempts count at once; only the
    /// others' wait for a flush).
    pub fn under_attack(&self, now: UnixMillis) -> bool {
        let mut seen = *self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        self.signal.roll(&mut seen, now);
        let window = now / self.signal.window_ms.max(1);
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let small = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        if let Some(counts) = pending.get(&window) {
            seen.attempts = seen.attempts.saturating_add(small(counts.attempts));
            seen.failures = seen.failures.saturating_add(small(counts.failures));
        }
        if let Some(counts) = window.checked_sub(1).and_then(|w| pending.get(&w)) {
            seen.previous_attempts = seen
                .previous_attempts
                .saturating_add(small(counts.attempts));
            seen.previous_failures = seen
                .previous_failures
                .saturating_add(small(counts.failures));
        }
        self.signal.under_attack(&seen, now)
    }

    /// Adds the pending counts to this replica's shard and reads every shard back.
    pub async fn flush(
        &self,
        calls: &Calls,
        keyspace: &Keyspace,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let _one = self.flushing.lock().await;
        let taken =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        let window_ms = self.signal.window_ms.max(1);
        let window = now / window_ms;
        // A window's counts matter for two windows; a third covers clocks a little apart.
        let ttl_ms = 3 * window_ms;
        let writes: Vec<_> = taken
            .iter()
            .filter(|&(&counted, _)| counted + 1 >= window)
            .map(|(&counted, counts)| {
                let mut pipe = redis::pipe();
                let key = keyspace.signal(self.shard, counted);
                pipe.cmd("HINCRBY")
                    .arg(&key)
                    .arg("a")
                    .arg(counts.attempts)
                    .ignore();
                pipe.cmd("HINCRBY")
                    .arg(&key)
                    .arg("f")
                    .arg(counts.failures)
                    .ignore();
                pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms).ignore();
                pipe
            })
            .collect();
        let reads: Vec<String> = [window, window.saturating_sub(1)]
            .into_iter()
            .flat_map(|w| (0..SIGNAL_SHARDS).map(move |shard| (shard, w)))
            .map(|(shard, w)| keyspace.signal(shard, w))
            .collect();
        let result = calls
            .call("sharing the attack signal", |conn| async move {
                try_join_all(writes.iter().map(|pipe| {
                    let mut conn = conn.clone();
                    async move { pipe.query_async::<()>(&mut conn).await }
                }))
                .await?;
                let read = join_all(reads.iter().map(|key| {
                    let mut conn = conn.clone();
                    async move {
                        redis::cmd("HMGET")
                            .arg(key)
                            .arg("a")
                            .arg("f")
                            .query_async::<(Option<u64>, Option<u64>)>(&mut conn)
                            .await
                    }
                }))
                .await;
                read.into_iter().collect::<Result<Vec<_>, _>>()
            })
            .await;
        let counts = match result {
            Ok(counts) => counts,
            Err(error) => {
                // Kept for the next flush.
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                for (counted, counts) in taken {
                    let kept = pending.entry(counted).or_default();
                    kept.attempts += counts.attempts;
                    kept.failures += counts.failures;
                }
                return Err(error);
            }
        };
        let sum = |of: &[(Option<u64>, Option<u64>)]| {
            of.iter().fold((0u64, 0u64), |(a, f), (ra, rf)| {
                (a + ra.unwrap_or(0), f + rf.unwrap_or(0))
            })
        };
        let shards = usize::try_from(SIGNAL_SHARDS).unwrap_or(usize::MAX);
        let (current, previous) = counts.split_at(shards.min(counts.len()));
        let (attempts, failures) = sum(current);
        let (previous_attempts, previous_failures) = sum(previous);
        let small = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = AttackState {
            window,
            attempts: small(attempts),
            failures: small(failures),
            previous_attempts: small(previous_attempts),
            previous_failures: small(previous_failures),
        };
        Ok(())
    }

    /// Whether failures not yet shared are worth a flush before [`FLUSH_EVERY`]: a quarter of
    /// the failures that could start an attack, while this replica does not see one yet.
    fn worth_flushing_early(&self, now: UnixMillis) -> bool {
        let enough = (u64::from(self.signal.min_attempts) * u64::from(self.signal.failure_percent))
            .div_ceil(400)
            .max(1);
        let failures: u64 = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|counts| counts.failures)
            .sum();
        failures >= enough && !self.under_attack(now)
    }

    /// Flushes every [`FLUSH_EVERY`] (every [`FLUSH_EARLY_EVERY`] while failures pile up before
    /// an attack is seen) until the store is dropped.
    pub fn share(
        signal: &Arc<SharedSignal>,
        calls: &Arc<Calls>,
        keyspace: Keyspace,
        clock: Arc<dyn Clock>,
    ) {
        let (signal, calls): (Weak<SharedSignal>, Weak<Calls>) =
            (Arc::downgrade(signal), Arc::downgrade(calls));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(FLUSH_EARLY_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut flushed = std::time::Instant::now();
            loop {
                every.tick().await;
                let (Some(signal), Some(calls)) = (signal.upgrade(), calls.upgrade()) else {
                    return;
                };
                let now = clock.now();
                if flushed.elapsed() < FLUSH_EVERY && !signal.worth_flushing_early(now) {
                    continue;
                }
                flushed = std::time::Instant::now();
                if let Err(error) = signal.flush(&calls, &keyspace, now).await {
                    tracing::debug!(%error, "the attack signal was not shared; counts kept");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of a signal window (60 s).
    const NOW: UnixMillis = 1_700_000_040_000;

    #[test]
    fn a_replicas_own_counts_tell_before_they_are_shared() {
        let shared = SharedSignal::new(
            AttackSignal {
                window_ms: 60_000,
                min_attempts: 5,
                failure_percent: 50,
                tighten_factor: 2,
            },
            7,
        );
        assert!(!shared.under_attack(NOW));
        for _ in 0..4 {
            shared.count(NOW, true);
        }
        assert!(!shared.under_attack(NOW), "fewer than min_attempts");
        shared.count(NOW, true);
        assert!(shared.under_attack(NOW));
        // At the start of the next window they weigh in full as the previous one's.
        assert!(shared.under_attack(NOW + 60_000));
        assert!(!shared.under_attack(NOW + 180_000));
    }

    #[test]
    fn failures_piling_up_before_an_attack_is_seen_are_flushed_early() {
        // A quarter of the 6 failures that could start an attack (20 attempts, 30%): 2.
        let shared = SharedSignal::new(
            AttackSignal {
                window_ms: 60_000,
                min_attempts: 20,
                failure_percent: 30,
                tighten_factor: 4,
            },
            7,
        );
        shared.count(NOW, false);
        shared.count(NOW, true);
        assert!(!shared.worth_flushing_early(NOW));
        shared.count(NOW, true);
        assert!(shared.worth_flushing_early(NOW));
        // Once this replica sees the attack, the usual pace will do.
        for _ in 0..20 {
            shared.count(NOW, true);
        }
        assert!(shared.under_attack(NOW));
        assert!(!shared.worth_flushing_early(NOW));
    }
}
