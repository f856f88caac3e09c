//! The per-replica deny cache: when the shared store refuses an attempt because one of its keys
//! is over a limit until T, the replica remembers `key → T` and refuses attempts touching that
//! key locally until T, with the remaining `Retry-After`: no store round trip, nothing counted
//! (the store would have counted nothing either). Envoy's rate-limit service does the same with
//! its local cache of over-limit keys.
//!
//! The cache only ever answers "denied", with the deadline the store gave; anything it does not
//! hold goes to the store. Deadlines are absolute, so it keeps working while Redis is down.
//! Entries are bounded (`store.deny_cache_entries`, least recently used go first) and read as
//! absent from their deadline on. An administrator's unlock or an allowlist change, announced
//! through the store to every replica, clears it; so does the store's recovery from an outage
//! (see `stores`).

use std::sync::Arc;

use portcullis_core::{AttemptKey, Denial, UnixMillis};
use portcullis_store::Clock;
use quick_cache::sync::Cache;

/// Refusals the store gave, by key, until their deadlines.
#[derive(Clone)]
pub struct DenyCache {
    entries: Arc<Cache<String, (UnixMillis, Denial)>>,
    clock: Arc<dyn Clock>,
}

impl DenyCache {
    /// A cache of at most `capacity` keys, on `clock`'s time.
    pub fn new(capacity: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            entries: Arc::new(Cache::new(capacity.max(1))),
            clock,
        }
    }

    /// The refusal the store gave for one of `keys`, with the wait left, if one still stands.
    pub fn refusal(&self, keys: &[AttemptKey]) -> Option<Denial> {
        let now = self.clock.now();
        let mut found: Option<Denial> = None;
        for key in keys {
            let Some((until, denial)) = self.entries.get(&key.key) else {
                continue;
            };
            if until <= now {
                self.entries.remove(&key.key);
                continue;
            }
            let left = Denial {
                retry_after_ms: until - now,
                ..denial
            };
            if found.is_none_or(|f| f.retry_after_ms < left.retry_after_ms) {
                found = Some(left);
            }
        }
        found
    }

    /// Remembers the store's refusal of an attempt with `keys`: the key of the refusing
    /// dimension is refused until the deadline.
    pub fn remember(&self, keys: &[AttemptKey], denial: &Denial) {
        let Some(key) = keys.iter().find(|k| k.dimension == denial.dimension) else {
            return;
        };
        let until = self.clock.now().saturating_add(denial.retry_after_ms);
        self.entries.insert(key.key.clone(), (until, *denial));
        metrics::gauge!("portcullis_deny_cache_entries").set(self.entries.len() as f64);
    }

    /// Forgets every refusal (an unlock or an allowlist change somewhere).
    pub fn clear(&self) {
        self.entries.clear();
        metrics::gauge!("portcullis_deny_cache_entries").set(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::{Dimension, Reason};
    use portcullis_store::ManualClock;

    const T0: UnixMillis = 1_700_000_000_000;

    fn key(dimension: Dimension, key: &str) -> AttemptKey {
        AttemptKey {
            dimension,
            key: key.to_owned(),
        }
    }

    fn denial(dimension: Dimension, retry_after_ms: u64) -> Denial {
        Denial {
            dimension,
            reason: Reason::LockedOut,
            retry_after_ms,
        }
    }

    #[test]
    fn a_refusal_stands_until_the_stores_deadline_and_not_a_millisecond_longer() {
        let clock = Arc::new(ManualClock::new(T0));
        let cache = DenyCache::new(10, clock.clone());
        let attempt = [key(Dimension::Ip, "i:1"), key(Dimension::Username, "u:a")];
        cache.remember(&attempt, &denial(Dimension::Username, 60_000));
        clock.advance(15_000);
        let refused = cache.refusal(&[key(Dimension::Username, "u:a")]).unwrap();
        assert_eq!(refused.retry_after_ms, 45_000);
        assert_eq!(refused.dimension, Dimension::Username);
        assert!(
            cache.refusal(&[key(Dimension::Ip, "i:1")]).is_none(),
            "only the refusing key"
        );
        clock.advance(44_999);
        assert_eq!(cache.refusal(&attempt).unwrap().retry_after_ms, 1);
        clock.advance(1);
        assert!(cache.refusal(&attempt).is_none());
    }

    #[test]
    fn it_never_answers_for_keys_it_was_not_given_and_forgets_on_clear() {
        let clock = Arc::new(ManualClock::new(T0));
        let cache = DenyCache::new(10, clock);
        assert!(cache.refusal(&[key(Dimension::Ip, "i:1")]).is_none());
        cache.remember(&[key(Dimension::Ip, "i:1")], &denial(Dimension::Ip, 1_000));
        cache.remember(
            &[key(Dimension::Subnet, "s:1")],
            &denial(Dimension::Subnet, 9_000),
        );
        let both = [key(Dimension::Ip, "i:1"), key(Dimension::Subnet, "s:1")];
        assert_eq!(
            cache.refusal(&both).unwrap().retry_after_ms,
            9_000,
            "the longest wait"
        );
        cache.clear();
        assert!(cache.refusal(&both).is_none());
    }
}
