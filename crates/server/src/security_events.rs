//! Reporting security events: a tracing event on target `security` for the logs, and an
//! entry in the event log (Redis Stream or ring buffer) for a notification service.
//!
//! Failing to append is never a failed request. While the shared store is unavailable its
//! circuit breaker fails the append at once (no waiting), and the event goes to a bounded
//! in-process buffer that `recent` still shows; the oldest buffered events are dropped first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use portcullis_core::LockoutEvent;
use portcullis_core::backoff::Lockout;
use portcullis_store::{EventKind, EventLog, SecurityEvent, StoreError};

/// Events kept in process while the event log cannot take them.
const BUFFERED_EVENTS: usize = 1_000;

/// Where security events go.
#[derive(Clone)]
pub struct SecurityEvents {
    log: Arc<dyn EventLog>,
    /// Events the log refused, newest last.
    buffered: Arc<Mutex<VecDeque<SecurityEvent>>>,
}

impl SecurityEvents {
    /// Reports into `log` (and the tracing `security` target).
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self {
            log,
            buffered: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, VecDeque<SecurityEvent>> {
        self.buffered.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs and appends one event.
    pub async fn report(&self, event: SecurityEvent) {
        tracing::warn!(
            target: "security",
            event = event.kind.as_str(),
            dimension = event.dimension.as_deref(),
            key = event.key.as_deref(),
            subject = event.subject.as_deref(),
            until = event.until,
            "security event"
        );
        if let Err(error) = self.log.append(&event).await {
            tracing::warn!(error = %error, "security event kept in process: the event log is unavailable");
            let mut buffered = self.buffer();
            if buffered.len() == BUFFERED_EVENTS {
                buffered.pop_front();
            }
            buffered.push_back(event);
        }
    }

    /// Reports the lockouts and bans an attempt started.
    pub async fn report_lockouts(&self, lockouts: &[LockoutEvent]) {
        for lockout in lockouts {
            let (kind, until) = match lockout.lockout {
                Lockout::Temporary { until } => (EventKind::Lockout, Some(until)),
                Lockout::Permanent => (EventKind::PermanentLockout, None),
                Lockout::Ban { until } => (EventKind::Ban, Some(until)),
            };
            self.report(SecurityEvent {
                kind,
                dimension: Some(lockout.key.dimension.as_str().to_owned()),
                key: Some(lockout.key.key.clone()),
                subject: None,
                until,
            })
            .await;
        }
    }

    /// The newest events, newest first: those buffered in process during an outage, then the
    /// event log's (when it answers).
    pub async fn recent(&self, count: usize) -> Result<Vec<SecurityEvent>, StoreError> {
        let buffered: Vec<SecurityEvent> =
            self.buffer().iter().rev().take(count).cloned().collect();
        let stored = match self.log.recent(count).await {
            Ok(stored) => stored,
            Err(error) if !buffered.is_empty() => {
                tracing::warn!(error = %error, "event log unavailable: showing buffered events");
                Vec::new()
            }
            Err(error) => return Err(error),
        };
        Ok(buffered.into_iter().chain(stored).take(count).collect())
    }
}
