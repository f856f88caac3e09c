//! The one way to call Redis: one timeout, one circuit breaker, one classification of errors
//! (unavailable vs. protocol). Shared by the store and the signal's flush task.

use std::time::Duration;

use futures_util::future::join_all;
use redis::{ErrorKind, RedisError, ServerErrorKind};

use super::connection::{Conn, Connections};
use crate::{Breaker, StoreError};

/// The breaker is open: the call was not tried.
#[derive(Debug, thiserror::Error)]
#[error("circuit breaker open")]
pub struct BreakerOpen;

/// Whether calls tell the breaker how they went: a compensating call after a slot failed does
/// not, since the attempt already told it.
#[derive(Clone, Copy)]
pub enum Breaking {
    Reported,
    Unreported,
}

/// The call did not answer within the timeout.
#[derive(Debug, thiserror::Error)]
#[error("redis call timed out")]
pub struct TimedOut;

/// Connections, the timeout and the breaker every call passes.
pub struct Calls {
    pub connections: Connections,
    pub timeout: Duration,
    /// One view of whether Redis answers, for every trait served.
    pub breaker: Breaker,
}

impl Calls {
    /// Runs one Redis call through the breaker, with the timeout; drops the connection after
    /// any failure but a protocol error. Only unavailability counts against the breaker.
    pub async fn call<T, F, Fut>(&self, doing: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        if !self.breaker.permits() {
            return Err(StoreError::unavailable(doing, BreakerOpen));
        }
        let result = self.try_call(doing, f).await;
        self.report(result.as_ref().err());
        result
    }

    /// Runs calls that belong together (one per slot of an attempt) at once, as one call for
    /// the breaker when `breaking` says so: checked once before, told once after, with an
    /// unavailable slot outweighing every answer, so the slots on live primaries cannot hide a
    /// dead one. Each call's own result comes back, in order.
    pub async fn together<T>(
        &self,
        doing: &'static str,
        breaking: Breaking,
        calls: impl IntoIterator<Item = impl Future<Output = Result<T, StoreError>>>,
    ) -> Result<Vec<Result<T, StoreError>>, StoreError> {
        let reported = matches!(breaking, Breaking::Reported);
        if reported && !self.breaker.permits() {
            return Err(StoreError::unavailable(doing, BreakerOpen));
        }
        let results = join_all(calls).await;
        if reported {
            let worst = results
                .iter()
                .filter_map(|result| result.as_ref().err())
                .max_by_key(|error| matches!(error, StoreError::Unavailable { .. }));
            self.report(worst);
        }
        Ok(results)
    }

    /// Tells the breaker how a call went: `None` when Redis answered.
    fn report(&self, error: Option<&StoreError>) {
        match error {
            Some(StoreError::Unavailable { .. }) => self.breaker.failed(),
            Some(error @ StoreError::Protocol(_)) => {
                self.breaker.succeeded();
                tracing::error!(error = %error, "redis answered something this code does not understand");
            }
            None | Some(StoreError::Misconfigured(_)) => self.breaker.succeeded(),
        }
    }

    /// [`Calls::call`] without the breaker, for [`Calls::together`].
    pub async fn try_call<T, F, Fut>(&self, doing: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let conn = match tokio::time::timeout(self.timeout, self.connections.get()).await {
            Ok(conn) => conn?,
            Err(_) => return Err(StoreError::unavailable(doing, TimedOut)),
        };
        match tokio::time::timeout(self.timeout, f(conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) if is_protocol_error(&error) => {
                Err(StoreError::Protocol(format!("{doing}: {error}")))
            }
            Ok(Err(error)) => {
                // Whatever made the server unavailable (a dropped link, a primary demoted to a
                // read-only replica by a failover), the next call connects afresh.
                self.connections.reset();
                Err(StoreError::unavailable(doing, error))
            }
            Err(_) => {
                self.connections.reset();
                Err(StoreError::unavailable(doing, TimedOut))
            }
        }
    }
}

/// A reply this code does not understand (a script error, a type mismatch): a bug to fix, not
/// an outage to wait out.
fn is_protocol_error(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Parse
            | ErrorKind::UnexpectedReturnType
            | ErrorKind::Extension
            | ErrorKind::Server(ServerErrorKind::ResponseError)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis_store::Topology;

    /// Calls on an unused pool (nothing connects) through a breaker that opens on one failure.
    fn calls() -> Calls {
        Calls {
            connections: Connections::new(&Topology::Single("redis://127.0.0.1:1".to_owned()))
                .unwrap(),
            timeout: Duration::from_secs(1),
            breaker: Breaker::silent(1, Duration::from_secs(60)),
        }
    }

    fn answered() -> Result<(), StoreError> {
        Ok(())
    }

    fn dead() -> Result<(), StoreError> {
        Err(StoreError::unavailable("testing", TimedOut))
    }

    #[tokio::test]
    async fn one_dead_slot_opens_the_breaker_whatever_the_others_answer_and_in_any_order() {
        for slots in [[dead(), answered()], [answered(), dead()]] {
            let calls = calls();
            let slots = slots.map(std::future::ready);
            let results = calls.together("testing", Breaking::Reported, slots).await;
            let results = results.unwrap();
            assert!(
                results[0].is_ok() != results[1].is_ok(),
                "each call's own result"
            );
            assert!(calls.breaker.is_open());
            let refused = calls.together(
                "testing",
                Breaking::Reported,
                [std::future::ready(answered())],
            );
            assert!(matches!(refused.await, Err(StoreError::Unavailable { .. })));
        }
    }

    #[tokio::test]
    async fn unreported_calls_leave_the_breaker_alone() {
        let calls = calls();
        let slots = [dead(), dead()].map(std::future::ready);
        let results = calls.together("testing", Breaking::Unreported, slots).await;
        assert_eq!(results.unwrap().len(), 2);
        assert!(!calls.breaker.is_open());
    }
}
