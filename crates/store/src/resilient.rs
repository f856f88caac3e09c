//! Redis failure as a designed mode: a circuit breaker around the shared store, and what to do
//! while it is open (`store.on_error`).
//!
//! - `fail_closed`: refuse logins (503 + Retry-After) until Redis answers again;
//! - `fail_open`: admit every attempt unchecked, loudly (logs and the degraded gauge);
//! - `local` (the default): count in this process with the same policy, so each replica still
//!   limits what it sees.
//!
//! After `failure_threshold` consecutive failures (each bounded by the Redis call timeout) the
//! breaker opens: calls skip Redis for `cool_down` and take the configured mode at once, so a
//! dead or frozen Redis costs no waiting per request. Then one call probes Redis again; success
//! closes the breaker (recovery without a restart), failure keeps it open.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use portcullis_core::{AttemptKey, Decision, LockoutEvent, Outcome};
use serde::{Deserialize, Serialize};

use crate::{AttemptStore, MemoryStore, StoreError};

/// What the service does while the shared store cannot answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Refuse logins with 503 and Retry-After.
    FailClosed,
    /// Admit attempts unchecked (and say so loudly).
    FailOpen,
    /// Count in this process instead.
    Local,
}

/// A change of the breaker, for the caller to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The shared store stopped answering: the configured mode applies.
    Degraded,
    /// The shared store answers again.
    Recovered,
}

#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    /// While set and in the future, calls skip the shared store.
    open_until: Option<Instant>,
}

/// The shared store behind a circuit breaker, with a fallback mode.
pub struct ResilientStore {
    primary: Arc<dyn AttemptStore>,
    local: MemoryStore,
    mode: OnError,
    failure_threshold: u32,
    cool_down: Duration,
    breaker: Mutex<Breaker>,
    on_transition: Box<dyn Fn(Transition) + Send + Sync>,
}

impl ResilientStore {
    /// Wraps `primary`; `local` serves the `local` mode; `on_transition` hears every change.
    pub fn new(
        primary: Arc<dyn AttemptStore>,
        local: MemoryStore,
        mode: OnError,
        failure_threshold: u32,
        cool_down: Duration,
        on_transition: Box<dyn Fn(Transition) + Send + Sync>,
    ) -> Self {
        Self {
            primary,
            local,
            mode,
            failure_threshold: failure_threshold.max(1),
            cool_down,
            breaker: Mutex::new(Breaker::default()),
            on_transition,
        }
    }

    /// Whether calls currently skip the shared store.
    pub fn is_degraded(&self) -> bool {
        self.lock().open_until.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether to try the shared store now (closed, or open and due for a probe).
    fn should_try(&self) -> bool {
        self.lock()
            .open_until
            .is_none_or(|until| Instant::now() >= until)
    }

    fn succeeded(&self) {
        let was_open = {
            let mut breaker = self.lock();
            breaker.consecutive_failures = 0;
            breaker.open_until.take().is_some()
        };
        if was_open {
            (self.on_transition)(Transition::Recovered);
        }
    }

    fn failed(&self, error: &StoreError) {
        let opened = {
            let mut breaker = self.lock();
            breaker.consecutive_failures = breaker.consecutive_failures.saturating_add(1);
            let was_open = breaker.open_until.is_some();
            if was_open || breaker.consecutive_failures >= self.failure_threshold {
                breaker.open_until = Some(Instant::now() + self.cool_down);
            }
            !was_open && breaker.open_until.is_some()
        };
        tracing::warn!(error = %error, "shared attempt store failed");
        if opened {
            (self.on_transition)(Transition::Degraded);
        }
    }
}

#[async_trait]
impl AttemptStore for ResilientStore {
    async fn attempt(&self, keys: &[AttemptKey]) -> Result<Decision, StoreError> {
        if self.should_try() {
            match self.primary.attempt(keys).await {
                Ok(decision) => {
                    self.succeeded();
                    return Ok(decision);
                }
                Err(error) => self.failed(&error),
            }
        }
        match self.mode {
            OnError::FailClosed => {
                Err(StoreError::Unavailable("attempt store degraded".to_owned()))
            }
            OnError::FailOpen => {
                tracing::warn!(
                    "attempt store degraded: admitting an attempt unchecked (fail_open)"
                );
                Ok(Decision::Allow {
                    pending: Vec::new(),
                    under_attack: false,
                })
            }
            OnError::Local => self.local.attempt(keys).await,
        }
    }

    async fn record(
        &self,
        keys: &[AttemptKey],
        outcome: Outcome,
        username: &str,
    ) -> Result<Vec<LockoutEvent>, StoreError> {
        if self.should_try() {
            match self.primary.record(keys, outcome, username).await {
                Ok(bans) => {
                    self.succeeded();
                    return Ok(bans);
                }
                Err(error) => self.failed(&error),
            }
        }
        match self.mode {
            OnError::FailClosed => {
                Err(StoreError::Unavailable("attempt store degraded".to_owned()))
            }
            OnError::FailOpen => Ok(Vec::new()),
            OnError::Local => self.local.record(keys, outcome, username).await,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let result = self.primary.ping().await;
        match &result {
            Ok(()) => self.succeeded(),
            Err(error) => self.failed(error),
        }
        result
    }
}
