//! The stores a deployment runs on, held together: built once from the settings, asked for
//! their health by `/readyz`; with Redis, the replica's deny cache of its refusals too, which
//! the breaker's recovery clears.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use portcullis_core::Policy;
use portcullis_store::{
    AdminStore, AttemptStore, Breaker, Clock, EventLog, FallbackStore, Health, MemoryStore,
    RedisConfig, RedisStore, SystemClock, Transition,
};

use crate::deny_cache::DenyCache;
use crate::settings::StoreSettings;

/// The attempt store, the security event log and the admin view of the counters.
#[derive(Clone)]
pub struct Stores {
    /// Counters and decisions (Redis behind the `store.on_error` fallback, or memory).
    pub attempts: Arc<dyn AttemptStore>,
    /// The security event stream.
    pub events: Arc<dyn EventLog>,
    /// Inspection and unlocks.
    pub admin: Arc<dyn AdminStore>,
    /// The shared store's refusals this replica remembers (Redis only, unless turned off).
    pub deny_cache: Option<DenyCache>,
}

impl Stores {
    /// The stores `settings` name, counting by `policy`: Redis if configured (every call
    /// through one circuit breaker), else memory. Time is `injected` (tests), else the
    /// system's (and Redis' own `TIME` in the counter functions).
    pub fn build(
        settings: &StoreSettings,
        policy: &Policy,
        injected: Option<Arc<dyn Clock>>,
    ) -> anyhow::Result<Self> {
        let clock = injected.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let Some(redis) = &settings.redis else {
            let store = Arc::new(MemoryStore::new(*policy, clock));
            return Ok(Self {
                attempts: store.clone(),
                events: store.clone(),
                admin: store,
                deny_cache: None,
            });
        };
        let config = RedisConfig {
            topology: redis.topology(),
            prefix: redis.prefix.clone(),
            sharding: redis.sharding(),
            timeout: Duration::from_millis(redis.timeout_ms),
        };
        let deny_cache = (settings.deny_cache_entries > 0)
            .then(|| DenyCache::new(settings.deny_cache_entries, clock.clone()));
        let breaker = Breaker::new(
            settings.breaker_failures,
            Duration::from_millis(settings.breaker_cool_down_ms),
            on_transition(deny_cache.clone()),
        );
        let mut store = RedisStore::new(&config, policy, breaker).context("store.redis")?;
        if let Some(clock) = injected {
            store = store.with_clock(clock);
        }
        let store = Arc::new(store);
        let attempts = FallbackStore::new(store.clone(), *policy, clock, settings.on_error);
        Ok(Self {
            attempts: Arc::new(attempts),
            events: store.clone(),
            admin: store,
            deny_cache,
        })
    }

    /// Whether the attempt store serves (ready, degraded to its fallback, or unavailable).
    pub async fn health(&self) -> Health {
        self.attempts.health().await
    }
}

/// What the breaker's changes do: a `security` event, the `portcullis_store_degraded` gauge and
/// the count of degradations (a flapping breaker counts up fast); a recovery also empties
/// `deny_cache`, since what it learnt while Redis was away are the local fallback's refusals,
/// and the shared count goes on without them.
fn on_transition(deny_cache: Option<DenyCache>) -> Box<dyn Fn(Transition) + Send + Sync> {
    Box::new(move |transition| {
        let (event, degraded) = match transition {
            Transition::Degraded => ("store_degraded", 1.0),
            Transition::Recovered => ("store_recovered", 0.0),
        };
        if let (Transition::Recovered, Some(cache)) = (transition, &deny_cache) {
            cache.clear();
        }
        metrics::gauge!("portcullis_store_degraded").set(degraded);
        if transition == Transition::Degraded {
            metrics::counter!("portcullis_store_degradations_total").increment(1);
        }
        tracing::warn!(target: "security", event, "shared store {event}");
    })
}

#[cfg(test)]
mod tests {
    use portcullis_core::{AttemptKey, Denial, Dimension, Reason};
    use portcullis_store::ManualClock;

    use super::*;

    #[test]
    fn a_recovery_forgets_the_refusals_the_outage_cached_and_a_degradation_keeps_them() {
        let cache = DenyCache::new(10, Arc::new(ManualClock::default()));
        let keys = [AttemptKey {
            dimension: Dimension::Username,
            key: "u:alice".to_owned(),
        }];
        cache.remember(
            &keys,
            &Denial {
                dimension: Dimension::Username,
                reason: Reason::LockedOut,
                retry_after_ms: 60_000,
            },
        );
        let report = on_transition(Some(cache.clone()));
        report(Transition::Degraded);
        assert!(cache.refusal(&keys).is_some(), "kept while degraded");
        report(Transition::Recovered);
        assert!(cache.refusal(&keys).is_none(), "forgotten on recovery");
    }
}
