//! The stores a deployment runs on, held together: built once from the settings, asked for
//! their health by `/readyz`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use portcullis_store::{
    AdminStore, AttemptStore, Breaker, Clock, EventLog, FallbackStore, Health, MemoryStore,
    RedisConfig, RedisStore, SystemClock, Transition,
};

use crate::settings::Settings;

/// The attempt store, the security event log and the admin view of the counters.
#[derive(Clone)]
pub struct Stores {
    /// Counters and decisions (Redis behind the `store.on_error` fallback, or memory).
    pub attempts: Arc<dyn AttemptStore>,
    /// The security event stream.
    pub events: Arc<dyn EventLog>,
    /// Inspection and unlocks.
    pub admin: Arc<dyn AdminStore>,
}

impl Stores {
    /// The stores the settings name: Redis if configured (every call through one circuit
    /// breaker), else memory. Time is `injected` (tests), else the system's (and Redis' own
    /// `TIME` in the counter functions).
    pub fn build(settings: &Settings, injected: Option<Arc<dyn Clock>>) -> anyhow::Result<Self> {
        let clock = injected.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let Some(redis) = &settings.store.redis else {
            let store = Arc::new(MemoryStore::new(settings.policy, clock));
            return Ok(Self {
                attempts: store.clone(),
                events: store.clone(),
                admin: store,
            });
        };
        let config = RedisConfig {
            urls: redis.urls(),
            cluster: redis.cluster,
            prefix: redis.prefix.clone(),
            sharding: redis.sharding(),
            timeout: Duration::from_millis(redis.timeout_ms),
        };
        let breaker = Breaker::new(
            settings.store.breaker_failures,
            Duration::from_millis(settings.store.breaker_cool_down_ms),
            Box::new(report_transition),
        );
        let mut store =
            RedisStore::new(&config, &settings.policy, breaker).context("store.redis")?;
        if let Some(clock) = injected {
            store = store.with_clock(clock);
        }
        let store = Arc::new(store);
        let attempts = FallbackStore::new(
            store.clone(),
            MemoryStore::new(settings.policy, clock),
            settings.store.on_error,
        );
        Ok(Self {
            attempts: Arc::new(attempts),
            events: store.clone(),
            admin: store,
        })
    }

    /// Whether the attempt store serves (ready, degraded to its fallback, or unavailable).
    pub async fn health(&self) -> Health {
        self.attempts.health().await
    }
}

/// Reports the breaker's changes: a `security` event and the `portcullis_store_degraded` gauge.
fn report_transition(transition: Transition) {
    let (event, degraded) = match transition {
        Transition::Degraded => ("store_degraded", 1.0),
        Transition::Recovered => ("store_recovered", 0.0),
    };
    metrics::gauge!("portcullis_store_degraded").set(degraded);
    tracing::warn!(target: "security", event, "shared store {event}");
}
