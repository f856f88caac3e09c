//! The sender every replica runs: every `mail.poll_ms` it claims the due messages (a batch at
//! a time, until none is due), composes and sends each, and records the outcome in the outbox;
//! then it counts the outbox for the metrics and forgets sent messages older than
//! [`KEEP_SENT_MS`]. A database or SMTP server that is down costs a pass, never a message.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Compose;
use super::outbox::{Claimed, Outbox};
use super::transport::Transport;
use crate::AppState;
use crate::instruments;

/// Messages claimed at once (see [`super::outbox::CLAIM_LEASE_MS`]).
const BATCH: u32 = 16;
/// How long a sent message's envelope stays for operators.
pub const KEEP_SENT_MS: u64 = 7 * 24 * 3_600_000;

/// A replica's sender.
pub struct Sender {
    outbox: Outbox,
    transport: Transport,
    compose: Arc<dyn Compose>,
}

impl Sender {
    /// Sends what `outbox` holds through `transport`, in the words of `compose`.
    pub fn new(outbox: Outbox, transport: Transport, compose: Arc<dyn Compose>) -> Self {
        Self {
            outbox,
            transport,
            compose,
        }
    }

    /// Runs a pass every `poll` for as long as `state` lives (the application that sends).
    pub fn spawn(self, poll: Duration, state: Weak<AppState>) {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(poll);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if state.strong_count() == 0 {
                    return;
                }
                if let Err(error) = self.pass().await {
                    let error = format!("{error:#}");
                    tracing::warn!(%error, "mail sender: pass failed; the next one retries");
                }
            }
        });
    }

    /// Sends every due message; returns how many went out.
    async fn pass(&self) -> anyhow::Result<usize> {
        let mut sent = 0;
        loop {
            let claimed = self.outbox.claim(BATCH).await?;
            if claimed.is_empty() {
                break;
            }
            for message in &claimed {
                if self.send(message).await? {
                    sent += 1;
                }
            }
        }
        self.tidy().await?;
        Ok(sent)
    }

    /// Sends one claimed message and records how it went; whether it went out.
    async fn send(&self, claimed: &Claimed) -> anyhow::Result<bool> {
        let composed = match &claimed.mail {
            Ok(mail) => self.compose.compose(mail),
            Err(error) => Err(anyhow::anyhow!("unreadable message: {error}")),
        };
        let (result, final_failure) = match composed {
            Ok(composed) => (
                self.transport.send(&claimed.recipient, &composed).await,
                false,
            ),
            // No retry makes an unreadable message readable.
            Err(error) => (Err(error), true),
        };
        match result {
            Ok(()) => {
                self.outbox.sent(claimed.id).await?;
                tracing::info!(id = claimed.id, attempts = claimed.attempts, "mail sent");
                Ok(true)
            }
            Err(error) => {
                instruments::mail_send_failed();
                let error = format!("{error:#}");
                tracing::warn!(id = claimed.id, attempts = claimed.attempts, %error, "mail not sent");
                self.outbox
                    .attempt_failed(claimed, &error, final_failure)
                    .await?;
                Ok(false)
            }
        }
    }

    /// Counts the outbox for the metrics and forgets old sent messages.
    async fn tidy(&self) -> anyhow::Result<()> {
        self.outbox
            .forget_sent_before(self.outbox.now().saturating_sub(KEEP_SENT_MS))
            .await?;
        instruments::mail_outbox(&self.outbox.depth().await?);
        Ok(())
    }
}
