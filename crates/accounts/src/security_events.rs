//! Reporting security events: a tracing event on target `security` for the logs, and an
//! entry in the event log (Redis Stream or ring buffer) for a notification service.
//!
//! Failing to append is never a failed request. While the shared store is unavailable its
//! circuit breaker fails the append at once (no waiting), and the event goes to a bounded
//! in-process buffer (the oldest dropped first). The first append that succeeds again starts
//! one background task that delivers the buffered events, oldest first.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use portcullis_core::LockoutEvent;
use portcullis_core::backoff::Lockout;
use portcullis_store::{EventKind, EventLog, SecurityEvent};

/// Events kept in process while the event log cannot take them.
const BUFFERED_EVENTS: usize = 1_000;

/// Where security events go.
#[derive(Clone)]
pub struct SecurityEvents {
    log: Arc<dyn EventLog>,
    /// Events the log refused, newest last.
    buffered: Arc<Mutex<VecDeque<SecurityEvent>>>,
    /// Whether a task is delivering the buffered events.
    flushing: Arc<AtomicBool>,
}

impl SecurityEvents {
    /// Reports into `log` (and the tracing `security` target).
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self {
            log,
            buffered: Arc::new(Mutex::new(VecDeque::new())),
            flushing: Arc::new(AtomicBool::new(false)),
        }
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, VecDeque<SecurityEvent>> {
        self.buffered.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers the buffered events in the background, oldest first, until the buffer is
    /// empty or the log fails again (at most one such task at a time).
    fn flush_in_background(&self) {
        if self.buffer().is_empty() || self.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        let events = self.clone();
        tokio::spawn(async move {
            events.deliver_buffered().await;
            events.flushing.store(false, Ordering::Release);
        });
    }

    /// Delivers the buffered events now, oldest first, until the buffer is empty or the log
    /// fails again (a replica about to exit); returns how many are still undelivered (each
    /// was logged when it happened).
    pub async fn deliver_buffered(&self) -> usize {
        loop {
            let Some(event) = self.buffer().pop_front() else {
                return 0;
            };
            if self.log.append(&event).await.is_err() {
                let mut buffered = self.buffer();
                buffered.push_front(event);
                return buffered.len();
            }
        }
    }

    /// Reports an event about one account (no key, no deadline).
    pub async fn report_account(&self, kind: EventKind, account_id: &str) {
        self.report(SecurityEvent {
            kind,
            dimension: None,
            key: None,
            subject: Some(account_id.to_owned()),
            until: None,
        })
        .await;
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
        match self.log.append(&event).await {
            Ok(()) => self.flush_in_background(),
            Err(error) => {
                tracing::warn!(error = %error, "security event kept in process: the event log is unavailable");
                let mut buffered = self.buffer();
                if buffered.len() == BUFFERED_EVENTS {
                    buffered.pop_front();
                }
                buffered.push_back(event);
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use portcullis_store::StoreError;

    /// An event log that can be down.
    #[derive(Default)]
    struct FlakyLog {
        down: AtomicBool,
        appended: Mutex<Vec<SecurityEvent>>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("down")]
    struct Down;

    #[async_trait]
    impl EventLog for FlakyLog {
        async fn append(&self, event: &SecurityEvent) -> Result<(), StoreError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::unavailable("appending", Down));
            }
            self.appended.lock().unwrap().push(event.clone());
            Ok(())
        }

        async fn recent(
            &self,
            _: usize,
        ) -> Result<Vec<portcullis_store::RecordedEvent>, StoreError> {
            Ok(Vec::new())
        }
    }

    fn event(until: u64) -> SecurityEvent {
        SecurityEvent {
            kind: EventKind::Ban,
            dimension: None,
            key: None,
            subject: None,
            until: Some(until),
        }
    }

    #[tokio::test]
    async fn events_reported_during_an_outage_are_buffered_and_delivered_after_it() {
        let log = Arc::new(FlakyLog::default());
        let events = SecurityEvents::new(log.clone());
        log.down.store(true, Ordering::SeqCst);
        for i in 0..(BUFFERED_EVENTS as u64 + 3) {
            events.report(event(i)).await;
        }
        assert_eq!(
            events.buffer().len(),
            BUFFERED_EVENTS,
            "bounded, oldest dropped"
        );
        log.down.store(false, Ordering::SeqCst);
        events.report(event(9_999)).await;
        for _ in 0..10_000 {
            if log.appended.lock().unwrap().len() == BUFFERED_EVENTS + 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let appended = log.appended.lock().unwrap();
        let until: Vec<u64> = appended.iter().filter_map(|e| e.until).collect();
        assert_eq!(until.len(), BUFFERED_EVENTS + 1);
        assert_eq!(until[0], 9_999, "the new event is not held up");
        assert_eq!(until[1], 3, "then the buffer, oldest kept first");
        assert_eq!(until[BUFFERED_EVENTS], BUFFERED_EVENTS as u64 + 2);
        assert!(events.buffer().is_empty());
    }
}
