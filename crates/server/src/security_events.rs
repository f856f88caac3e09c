//! Reporting security events: a tracing event on target `security` for the logs, and an
//! entry in the event log (Redis Stream or ring buffer) for a notification service. Failing to
//! append is logged, never turned into a failed request.

use std::sync::Arc;

use portcullis_core::LockoutEvent;
use portcullis_core::backoff::Lockout;
use portcullis_store::{EventKind, EventLog, SecurityEvent};

/// Where security events go.
#[derive(Clone)]
pub struct SecurityEvents {
    log: Arc<dyn EventLog>,
}

impl SecurityEvents {
    /// Reports into `log` (and the tracing `security` target).
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self { log }
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
            tracing::error!(error = %error, "security event not appended to the event log");
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

    /// The newest events, newest first.
    pub async fn recent(
        &self,
        count: usize,
    ) -> Result<Vec<SecurityEvent>, portcullis_store::StoreError> {
        self.log.recent(count).await
    }
}
