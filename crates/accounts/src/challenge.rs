//! Proof-of-work challenges at the guard's door: issuing them (`GET /v1/challenge` and the
//! challenge answers), and turning a request's `altcha` payload into the work it proves, once.
//!
//! When to ask and how much work is policy (`portcullis_core::challenge`, decided in the store
//! with every other limit); the protocol is ALTCHA v2 (`portcullis_core::altcha`). A payload is
//! checked in increasing cost: its shape, expiry and signature (microseconds), then its single
//! use in the attempt store (so a replay is refused on every replica), then the one key
//! derivation that proves the solution, off the async threads.

use std::sync::Arc;

use portcullis_core::altcha::{Altcha, Challenge, ProofError};
use portcullis_store::{AttemptStore, Clock};

use crate::error::Error;
use crate::instruments::{self, StoreOp};

/// How long a challenge may be solved and used: long enough for a slow device at the highest
/// work, short enough that a stock of solved challenges goes stale.
pub const LIFETIME_SECS: u64 = 600;

/// What a request's payload proved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Carried {
    /// The work it proves (0: none).
    pub work: u64,
    /// Whether the request carried a payload at all (a challenge answer then says it failed).
    pub presented: bool,
}

/// Issues and checks challenges.
#[derive(Clone)]
pub struct Challenges {
    altcha: Altcha,
    /// The work of a challenge asked for without context (`GET /v1/challenge`).
    min_work: u64,
    clock: Arc<dyn Clock>,
}

impl Challenges {
    /// Challenges signed with `key`, at least `min_work` hard, timed by `clock`.
    pub fn new(key: &[u8], min_work: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            altcha: Altcha::new(key),
            min_work,
            clock,
        }
    }

    /// A fresh challenge of `work` (at least the minimum).
    pub fn issue(&self, work: u64) -> Result<Challenge, Error> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no entropy source: {e}"))?;
        let expires_at = self.clock.now() / 1_000 + LIFETIME_SECS;
        Ok(self
            .altcha
            .issue(work.max(self.min_work), expires_at, random))
    }

    /// The work `payload` proves, consuming it in `store`; a payload that proves nothing
    /// (malformed, expired, forged, wrong or used before) proves 0 and is counted by why.
    pub async fn prove(
        &self,
        store: &dyn AttemptStore,
        payload: Option<&str>,
    ) -> Result<Carried, Error> {
        let Some(payload) = payload else {
            return Ok(Carried::default());
        };
        let work = match self.check(store, payload).await? {
            Ok(work) => {
                count("accepted");
                work
            }
            Err(why) => {
                count(why);
                // DEBUG: a botnet sending garbage would write a line per request; the metric
                // counts them by why, and the challenge that follows is in the refusal log.
                tracing::debug!(why, "challenge solution refused");
                0
            }
        };
        Ok(Carried {
            work,
            presented: true,
        })
    }

    async fn check(
        &self,
        store: &dyn AttemptStore,
        payload: &str,
    ) -> Result<Result<u64, &'static str>, Error> {
        let opened = match self.altcha.open(payload, self.clock.now()) {
            Ok(opened) => opened,
            Err(error) => return Ok(Err(reason(error))),
        };
        let parameters = &opened.challenge.parameters;
        let expires_at = parameters.expires_at.saturating_mul(1_000);
        let first_use = instruments::store_call(
            StoreOp::ConsumeProof,
            store.consume_proof(&parameters.nonce, expires_at),
        )
        .await?;
        if !first_use {
            return Ok(Err("replayed"));
        }
        let checked = tokio::task::spawn_blocking(move || Altcha::check_solution(&opened))
            .await
            .map_err(|e| anyhow::anyhow!("checking a challenge solution: {e}"))?;
        Ok(checked.map(|proof| proof.work).map_err(reason))
    }
}

fn reason(error: ProofError) -> &'static str {
    match error {
        ProofError::Malformed => "malformed",
        ProofError::Expired => "expired",
        ProofError::BadSignature => "bad_signature",
        ProofError::WrongSolution => "wrong_solution",
    }
}

fn count(result: &'static str) {
    metrics::counter!("portcullis_challenge_solutions_total", "result" => result).increment(1);
}
