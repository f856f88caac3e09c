//! Redis failure as a designed mode for attempts: what to do while the shared store is
//! unavailable (`store.on_error`). The circuit breaker itself lives in the Redis store's one
//! call path (see [`crate::breaker`]), so while it is open this answers at once.
//!
//! - `fail_closed`: refuse logins (503 + Retry-After) until Redis answers again;
//! - `fail_open`: admit every attempt unchecked, loudly (logs and the degraded gauge);
//! - `local` (the default): count in this process with the same policy, so each replica still
//!   limits what it sees.

use std::sync::Arc;

use async_trait::async_trait;
use portcullis_core::{AttemptKey, Decision, LockoutEvent, Outcome};
use serde::{Deserialize, Serialize};

use crate::{AttemptStore, Health, MemoryStore, RedisStore, StoreError};

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

/// The shared store, and the configured mode when it is unavailable.
pub struct FallbackStore {
    primary: Arc<RedisStore>,
    local: MemoryStore,
    mode: OnError,
}

impl FallbackStore {
    /// Wraps `primary`; `local` serves the `local` mode.
    pub fn new(primary: Arc<RedisStore>, local: MemoryStore, mode: OnError) -> Self {
        Self {
            primary,
            local,
            mode,
        }
    }

    /// The mode's answer to a failed call, or the error itself when it is not an outage (a
    /// protocol error is a bug: no mode hides it).
    fn degraded(&self, error: StoreError) -> Result<(), StoreError> {
        match (&error, self.mode) {
            (StoreError::Unavailable { .. }, OnError::Local | OnError::FailOpen) => {
                tracing::warn!(error = %error, mode = ?self.mode, "attempt store unavailable");
                Ok(())
            }
            _ => Err(error),
        }
    }
}

#[async_trait]
impl AttemptStore for FallbackStore {
    async fn attempt(&self, keys: &[AttemptKey]) -> Result<Decision, StoreError> {
        match self.primary.attempt(keys).await {
            Ok(decision) => Ok(decision),
            Err(error) => {
                self.degraded(error)?;
                match self.mode {
                    OnError::Local => self.local.attempt(keys).await,
                    _ => {
                        tracing::warn!("admitting an attempt unchecked (fail_open)");
                        Ok(Decision::Allow {
                            pending: Vec::new(),
                            under_attack: false,
                        })
                    }
                }
            }
        }
    }

    async fn record(
        &self,
        keys: &[AttemptKey],
        outcome: Outcome,
        username: &str,
        pending: &[LockoutEvent],
    ) -> Result<Vec<LockoutEvent>, StoreError> {
        match self.primary.record(keys, outcome, username, pending).await {
            Ok(bans) => Ok(bans),
            Err(error) => {
                self.degraded(error)?;
                match self.mode {
                    OnError::Local => self.local.record(keys, outcome, username, pending).await,
                    _ => Ok(Vec::new()),
                }
            }
        }
    }

    async fn abandon(
        &self,
        keys: &[AttemptKey],
        pending: &[LockoutEvent],
    ) -> Result<(), StoreError> {
        match self.primary.abandon(keys, pending).await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.degraded(error)?;
                match self.mode {
                    OnError::Local => self.local.abandon(keys, pending).await,
                    _ => Ok(()),
                }
            }
        }
    }

    async fn health(&self) -> Health {
        match (self.primary.ping().await, self.mode) {
            (Ok(()), _) => Health::Ready,
            (Err(_), OnError::FailClosed) => Health::Unavailable,
            (Err(_), _) => Health::Degraded,
        }
    }
}
