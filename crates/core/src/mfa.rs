//! Second-factor attempts: how many codes one login may try, the account's lockout for wrong
//! codes, and which TOTP time step a code may be accepted for (RFC 6238 with replay refused).
//!
//! A second-factor code is guessable (one in a million, three steps valid at once), and an
//! attacker who reaches it already has the password, so its limits are tighter than the
//! password's: at most `codes_per_token` codes per login ([`MfaPolicy::admit`]), and a lockout
//! with back-off per account across logins (Kanidm soft-locks after 3 bad codes). Admission
//! counts a code as a provisional failure, as the password lockout does, so concurrent guesses
//! cannot outrun it; [`MfaPolicy::settle`] then keeps or takes it back.

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::backoff::{Backoff, Lockout, LockoutState, Strategy};
use crate::policy::PolicyError;

/// The length of one TOTP time step (RFC 6238's default), in milliseconds.
pub const STEP_MS: u64 = 30_000;
/// Steps either side of the current one a code may belong to (clock skew, typing time).
pub const SKEW_STEPS: u64 = 1;

/// Second-factor limits (`policy.mfa`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaPolicy {
    /// Codes one login (one `mfa_token`) may try; then the password must be given again.
    pub codes_per_token: u32,
    /// The account's lockout for wrong codes, across logins.
    pub lockout: Backoff,
}

impl Default for MfaPolicy {
    fn default() -> Self {
        Self {
            codes_per_token: 5,
            // Three wrong codes lock for one step window and more: 30 s, then 60 s, ... up to
            // 15 minutes; forgotten after 12 hours without one.
            lockout: Backoff {
                max_failures: 3,
                strategy: Strategy::Linear,
                wait_increment_ms: STEP_MS,
                max_wait_ms: 15 * 60_000,
                failure_reset_ms: 12 * 3_600_000,
                quick_login_check_ms: 0,
                min_quick_login_wait_ms: 0,
                permanent_after: None,
            },
        }
    }
}

/// Why a second-factor code is not even tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MfaRefusal {
    /// The login's codes are spent: log in with the password again.
    TokenSpent,
    /// The account's second factor is locked for this long.
    Locked {
        /// Milliseconds until a code is tried again.
        retry_after_ms: u64,
    },
}

/// How a tried code turned out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeOutcome {
    /// Right: the account's failures are forgotten.
    Accepted,
    /// Wrong: the provisional failure stands.
    Wrong,
    /// Not a guess (a code replayed from a step already used): nothing is counted.
    NotCounted,
}

impl MfaPolicy {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.codes_per_token == 0 {
            return Err(PolicyError::new(
                "mfa.codes_per_token",
                "must be at least 1",
            ));
        }
        if self.lockout.max_failures == 0 {
            return Err(PolicyError::new(
                "mfa.lockout.max_failures",
                "must be at least 1",
            ));
        }
        if self.lockout.failure_reset_ms == 0 {
            return Err(PolicyError::new(
                "mfa.lockout.failure_reset_ms",
                "must be at least 1",
            ));
        }
        if self.lockout.permanent_after.is_some() {
            return Err(PolicyError::new(
                "mfa.lockout.permanent_after",
                "is not supported: a second factor locks only temporarily (a permanent lock \
                 would let anyone with the password lock its owner out)",
            ));
        }
        Ok(())
    }

    /// Admits one code of a login that has tried `codes_used` already, on an account whose
    /// second-factor lockout is `state`: the state with the code counted provisionally and the
    /// lockout that started, or why the code is not tried.
    pub fn admit(
        &self,
        codes_used: u32,
        state: &LockoutState,
        now: UnixMillis,
    ) -> Result<(LockoutState, Option<Lockout>), MfaRefusal> {
        if codes_used >= self.codes_per_token {
            return Err(MfaRefusal::TokenSpent);
        }
        if let Some(retry_after_ms) = self.lockout.locked_for(state, now) {
            return Err(MfaRefusal::Locked { retry_after_ms });
        }
        Ok(self.lockout.on_admission(state, now))
    }

    /// Settles an admitted code with its outcome (`started`: the lockout its admission began).
    pub fn settle(
        state: &LockoutState,
        outcome: CodeOutcome,
        started: Option<Lockout>,
    ) -> LockoutState {
        match outcome {
            CodeOutcome::Accepted => Backoff::on_success(state, started),
            CodeOutcome::Wrong => Backoff::on_verified(state),
            CodeOutcome::NotCounted => Backoff::on_abandon(state, started),
        }
    }
}

/// The TOTP time step of `now`.
pub fn step_at(now: UnixMillis) -> u64 {
    now / STEP_MS
}

/// The steps a code entered at `now` may belong to, oldest first.
pub fn candidate_steps(now: UnixMillis) -> impl Iterator<Item = u64> {
    let current = step_at(now);
    current.saturating_sub(SKEW_STEPS)..=current.saturating_add(SKEW_STEPS)
}

/// Which step a code is accepted for, given the steps it matched and the last step the account
/// accepted: the newest matching step after it. A code matching only used steps is a replay.
pub fn accepted_step(matching: impl IntoIterator<Item = u64>, last_used: Option<u64>) -> StepCheck {
    let mut matched_any = false;
    let mut newest = None;
    for step in matching {
        matched_any = true;
        if last_used.is_none_or(|last| step > last) {
            newest = newest.max(Some(step));
        }
    }
    match (newest, matched_any) {
        (Some(step), _) => StepCheck::Accept(step),
        (None, true) => StepCheck::Replayed,
        (None, false) => StepCheck::Wrong,
    }
}

/// What [`accepted_step`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepCheck {
    /// The code is right for this step, not used before.
    Accept(u64),
    /// The code is right only for steps the account used already.
    Replayed,
    /// The code matches no step in the window.
    Wrong,
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixMillis = 1_700_000_000_000;

    #[test]
    fn a_login_tries_at_most_its_codes() {
        let policy = MfaPolicy {
            lockout: Backoff {
                max_failures: 100,
                ..MfaPolicy::default().lockout
            },
            ..MfaPolicy::default()
        };
        let state = LockoutState::default();
        assert!(policy.admit(4, &state, T0).is_ok());
        assert_eq!(policy.admit(5, &state, T0), Err(MfaRefusal::TokenSpent));
    }

    #[test]
    fn three_wrong_codes_lock_the_second_factor_for_a_step_and_longer_after() {
        let policy = MfaPolicy::default();
        let mut state = LockoutState::default();
        for i in 0..3 {
            let (admitted, started) = policy.admit(0, &state, T0 + i).unwrap();
            state = MfaPolicy::settle(&admitted, CodeOutcome::Wrong, started);
        }
        assert_eq!(
            policy.admit(0, &state, T0 + 3),
            Err(MfaRefusal::Locked {
                retry_after_ms: STEP_MS - 1
            })
        );
        let later = T0 + STEP_MS + 2;
        let (admitted, started) = policy.admit(0, &state, later).unwrap();
        assert!(
            matches!(started, Some(Lockout::Temporary { until }) if until == later + 2 * STEP_MS)
        );
        state = MfaPolicy::settle(&admitted, CodeOutcome::Wrong, started);
        assert!(policy.admit(0, &state, later + STEP_MS).is_err());
    }

    #[test]
    fn concurrent_codes_count_before_they_are_checked() {
        let policy = MfaPolicy::default();
        let mut state = LockoutState::default();
        let mut admitted = 0;
        for _ in 0..10 {
            if let Ok((next, _)) = policy.admit(0, &state, T0) {
                state = next;
                admitted += 1;
            }
        }
        assert_eq!(admitted, 3, "the lockout stops guesses still in flight");
    }

    #[test]
    fn a_right_code_forgets_failures_and_a_replay_counts_nothing() {
        let policy = MfaPolicy::default();
        let (admitted, started) = policy.admit(0, &LockoutState::default(), T0).unwrap();
        let wrong = MfaPolicy::settle(&admitted, CodeOutcome::Wrong, started);
        let (admitted, started) = policy.admit(1, &wrong, T0).unwrap();
        assert_eq!(
            MfaPolicy::settle(&admitted, CodeOutcome::NotCounted, started),
            wrong
        );
        let (admitted, started) = policy.admit(1, &wrong, T0).unwrap();
        assert_eq!(
            MfaPolicy::settle(&admitted, CodeOutcome::Accepted, started),
            LockoutState::default()
        );
    }

    #[test]
    fn a_code_is_accepted_for_its_newest_unused_step_only() {
        let now = T0;
        let steps: Vec<u64> = candidate_steps(now).collect();
        assert_eq!(
            steps,
            vec![step_at(now) - 1, step_at(now), step_at(now) + 1]
        );
        assert_eq!(accepted_step([10, 11], None), StepCheck::Accept(11));
        assert_eq!(accepted_step([10, 11], Some(10)), StepCheck::Accept(11));
        assert_eq!(accepted_step([10], Some(10)), StepCheck::Replayed);
        assert_eq!(accepted_step([9], Some(10)), StepCheck::Replayed);
        assert_eq!(accepted_step([], Some(10)), StepCheck::Wrong);
    }

    #[test]
    fn a_zero_code_budget_is_refused_with_the_setting_name() {
        let policy = MfaPolicy {
            codes_per_token: 0,
            ..MfaPolicy::default()
        };
        assert_eq!(
            policy.validate().unwrap_err().to_string(),
            "policy.mfa.codes_per_token: must be at least 1"
        );
    }
}
