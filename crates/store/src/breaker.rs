//! The circuit breaker every call to a shared store goes through, whatever trait it serves.
//!
//! After `failure_threshold` consecutive failures (each bounded by the call timeout) the breaker
//! opens: calls fail at once for `cool_down`, so a dead or frozen Redis costs no waiting per
//! request. Then one call probes; success closes the breaker (recovery without a restart),
//! failure keeps it open. Only unavailability trips it: a malformed reply is a bug, not an
//! outage. Time is tokio's, so tests move it with `tokio::time::pause`/`advance`.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// A change of the breaker, for the owner to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The shared store stopped answering: calls fail fast.
    Degraded,
    /// The shared store answers again.
    Recovered,
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    /// While set and in the future, calls fail without trying.
    open_until: Option<Instant>,
}

/// Counts consecutive failures and fails calls fast while open.
pub struct Breaker {
    failure_threshold: u32,
    cool_down: Duration,
    state: Mutex<State>,
    on_transition: Box<dyn Fn(Transition) + Send + Sync>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("failure_threshold", &self.failure_threshold)
            .field("cool_down", &self.cool_down)
            .field("state", &*self.lock())
            .finish()
    }
}

impl Breaker {
    /// Opens after `failure_threshold` consecutive failures for `cool_down`; `on_transition`
    /// hears every change.
    pub fn new(
        failure_threshold: u32,
        cool_down: Duration,
        on_transition: Box<dyn Fn(Transition) + Send + Sync>,
    ) -> Self {
        Self {
            failure_threshold: failure_threshold.max(1),
            cool_down,
            state: Mutex::new(State::default()),
            on_transition,
        }
    }

    /// A breaker that hears nobody (tests, benches).
    pub fn silent(failure_threshold: u32, cool_down: Duration) -> Self {
        Self::new(failure_threshold, cool_down, Box::new(|_| {}))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so poisoning carries nothing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the breaker is open (calls skip the store).
    pub fn is_open(&self) -> bool {
        self.lock().open_until.is_some()
    }

    /// Whether to try the store now: closed, or open and due for a probe.
    pub fn permits(&self) -> bool {
        self.lock()
            .open_until
            .is_none_or(|until| Instant::now() >= until)
    }

    /// The store answered.
    pub fn succeeded(&self) {
        let was_open = {
            let mut state = self.lock();
            state.consecutive_failures = 0;
            state.open_until.take().is_some()
        };
        if was_open {
            (self.on_transition)(Transition::Recovered);
        }
    }

    /// The store was unavailable.
    pub fn failed(&self) {
        let opened = {
            let mut state = self.lock();
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            let was_open = state.open_until.is_some();
            if was_open || state.consecutive_failures >= self.failure_threshold {
                state.open_until = Some(Instant::now() + self.cool_down);
            }
            !was_open && state.open_until.is_some()
        };
        if opened {
            (self.on_transition)(Transition::Degraded);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_the_threshold_and_probes_after_the_cool_down() {
        let changes = Arc::new(AtomicU32::new(0));
        let heard = changes.clone();
        let breaker = Breaker::new(
            3,
            Duration::from_secs(1),
            Box::new(move |_| {
                heard.fetch_add(1, Ordering::SeqCst);
            }),
        );
        breaker.failed();
        breaker.failed();
        assert!(breaker.permits() && !breaker.is_open());
        breaker.failed();
        assert!(breaker.is_open() && !breaker.permits());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!breaker.permits());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(breaker.permits(), "one probe after the cool-down");
        breaker.failed();
        assert!(!breaker.permits(), "a failed probe keeps it open");
        tokio::time::advance(Duration::from_secs(1)).await;
        breaker.succeeded();
        assert!(!breaker.is_open() && breaker.permits());
        assert_eq!(
            changes.load(Ordering::SeqCst),
            2,
            "degraded once, recovered once"
        );
    }
}
