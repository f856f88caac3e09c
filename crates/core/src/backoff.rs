//! Failure counting and lockout back-off, with Keycloak's brute-force detection knobs.
//!
//! Consecutive failures are counted until `failure_reset_ms` passes without one (Keycloak's
//! "failure reset time"). Reaching `max_failures` starts a temporary lockout whose length grows
//! with the failures ("multiple": a lockout every `max_failures` failures, each one increment
//! longer; "linear": a lockout on every failure past the threshold, one increment longer each
//! time), capped at `max_wait_ms`. Two failures closer together than `quick_login_check_ms`
//! lock for at least `min_quick_login_wait_ms`. After `permanent_after` temporary lockouts the
//! next one is permanent, cleared only by an administrator.

use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// How the lockout wait grows with the failure count (Keycloak's brute-force strategy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// A lockout every `max_failures` failures: wait = increment x (failures / max_failures).
    Multiple,
    /// A lockout on every failure from `max_failures` on: wait = increment x (1 + failures - max).
    Linear,
}

/// Lockout back-off settings for one dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Consecutive failures that start a lockout (at least 1).
    pub max_failures: u32,
    /// How the wait grows past the first lockout.
    pub strategy: Strategy,
    /// The wait added per step of the strategy.
    pub wait_increment_ms: u64,
    /// The longest temporary lockout.
    pub max_wait_ms: u64,
    /// Failures are forgotten once this long passes without a new one.
    pub failure_reset_ms: u64,
    /// Two failures closer than this count as a machine (0 turns the check off).
    pub quick_login_check_ms: u64,
    /// The lockout a quick failure starts at least.
    pub min_quick_login_wait_ms: u64,
    /// Temporary lockouts after which the next one is permanent (`None`: never permanent).
    pub permanent_after: Option<u32>,
}

/// One key's failure history and lockout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutState {
    /// Consecutive failures not yet forgotten.
    pub failures: u32,
    /// When the last failure happened (0: never).
    pub last_failure: UnixMillis,
    /// Attempts are refused until then.
    pub locked_until: UnixMillis,
    /// Temporary lockouts so far, for the permanent-lockout rule.
    pub temporary_lockouts: u32,
    /// Locked until an administrator unlocks.
    pub permanent: bool,
    /// Admitted attempts not yet verified: each is counted in `failures` provisionally, so
    /// concurrent guesses cannot outrun the lockout, and a success or an abandoned attempt
    /// takes back only its own count.
    pub in_flight: u32,
}

/// A lockout that a failure started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lockout {
    /// Locked until the given time.
    Temporary {
        /// When attempts are admitted again.
        until: UnixMillis,
    },
    /// Locked until an administrator unlocks.
    Permanent,
    /// A source banned by the distinct-username signal (see `spray`), until the given time.
    Ban {
        /// When attempts from the source are admitted again.
        until: UnixMillis,
    },
}

impl Backoff {
    /// The lockout wait that the `failures`-th consecutive failure starts, by the strategy alone
    /// (`None` when that failure starts no lockout).
    pub fn wait_after(&self, failures: u32) -> Option<u64> {
        let max = self.max_failures.max(1);
        let steps = match self.strategy {
            Strategy::Multiple if failures >= max && failures.is_multiple_of(max) => failures / max,
            Strategy::Linear if failures >= max => 1 + failures - max,
            _ => return None,
        };
        Some(
            self.wait_increment_ms
                .saturating_mul(u64::from(steps))
                .min(self.max_wait_ms),
        )
    }

    /// Whether the state is as good as fresh at `now`: the reset time passed since its last
    /// failure, or it has no failure left and no lockout running (an abandoned attempt's
    /// `last_failure` and an earlier `temporary_lockouts` then count for nothing, so a state
    /// kept for another field behaves as one the store already dropped; see `expires_at`).
    fn forgets(&self, state: &LockoutState, now: UnixMillis) -> bool {
        if state.failures == 0 {
            return state.locked_until <= now;
        }
        now.saturating_sub(state.last_failure) >= self.failure_reset_ms
    }

    /// Records a failure at `now`; returns the new state and the lockout it started, if any.
    pub fn on_failure(
        &self,
        state: &LockoutState,
        now: UnixMillis,
    ) -> (LockoutState, Option<Lockout>) {
        let mut next = *state;
        if next.permanent {
            return (next, None);
        }
        if self.forgets(&next, now) {
            next = LockoutState::default();
        }
        let previous = next.last_failure;
        next.failures = next.failures.saturating_add(1);
        next.last_failure = now;

        let mut wait = self.wait_after(next.failures).unwrap_or(0);
        let quick = self.quick_login_check_ms > 0
            && previous > 0
            && now.saturating_sub(previous) < self.quick_login_check_ms;
        if quick {
            wait = wait.max(self.min_quick_login_wait_ms);
        }
        if wait == 0 {
            return (next, None);
        }
        if self
            .permanent_after
            .is_some_and(|after| next.temporary_lockouts >= after)
        {
            next.permanent = true;
            return (next, Some(Lockout::Permanent));
        }
        next.temporary_lockouts = next.temporary_lockouts.saturating_add(1);
        next.locked_until = next.locked_until.max(now.saturating_add(wait));
        (
            next,
            Some(Lockout::Temporary {
                until: next.locked_until,
            }),
        )
    }

    /// Counts an admitted attempt as a provisional failure (it may start a lockout, so many
    /// concurrent attempts cannot all be admitted before the first failure is verified).
    pub fn on_admission(
        &self,
        state: &LockoutState,
        now: UnixMillis,
    ) -> (LockoutState, Option<Lockout>) {
        let (mut next, lockout) = self.on_failure(state, now);
        next.in_flight = next.in_flight.saturating_add(1);
        (next, lockout)
    }

    /// A verified attempt that does not reset the key (a failure, or a success on a dimension
    /// successes do not reset): the provisional failure its admission counted stands, and it
    /// is no longer in flight.
    pub fn on_verified(state: &LockoutState) -> LockoutState {
        LockoutState {
            in_flight: state.in_flight.saturating_sub(1),
            ..*state
        }
    }

    /// An attempt never verified (shed with 503): takes back its provisional failure and the
    /// lockout its admission `started`, if any.
    pub fn on_abandon(state: &LockoutState, started: Option<Lockout>) -> LockoutState {
        let mut next = *state;
        next.failures = next.failures.saturating_sub(1);
        next.in_flight = next.in_flight.saturating_sub(1);
        match started {
            Some(Lockout::Temporary { .. }) => {
                next.temporary_lockouts = next.temporary_lockouts.saturating_sub(1);
                next.locked_until = 0;
            }
            Some(Lockout::Permanent) => next.permanent = false,
            Some(Lockout::Ban { .. }) | None => {}
        }
        next
    }

    /// A success: forgets the recorded failures and its own provisional one (with the lockout
    /// its admission `started`); the provisional failures of other attempts still in flight
    /// stay counted, so a success amid concurrent guesses frees no extra guesses. A permanent
    /// lock that the attempt did not start stands.
    pub fn on_success(state: &LockoutState, started: Option<Lockout>) -> LockoutState {
        let own_undone = Self::on_abandon(state, started);
        if own_undone.permanent {
            return own_undone;
        }
        let others = own_undone.in_flight;
        LockoutState {
            failures: others,
            last_failure: if others > 0 {
                own_undone.last_failure
            } else {
                0
            },
            in_flight: others,
            ..LockoutState::default()
        }
    }

    /// Milliseconds the state refuses attempts for at `now` (`None`: not locked).
    /// A permanent lock reports `max_wait_ms`, so it answers like a temporary one.
    pub fn locked_for(&self, state: &LockoutState, now: UnixMillis) -> Option<u64> {
        if state.permanent {
            Some(self.max_wait_ms.max(1))
        } else if state.locked_until > now {
            Some(state.locked_until - now)
        } else {
            None
        }
    }

    /// Verified failures not yet forgotten at `now` (attempts still in flight not counted).
    pub fn recorded_failures(&self, state: &LockoutState, now: UnixMillis) -> u32 {
        if state.failures > 0 && now.saturating_sub(state.last_failure) >= self.failure_reset_ms {
            return 0;
        }
        state.failures.saturating_sub(state.in_flight)
    }

    /// When the state becomes equivalent to a fresh one (`None`: never, it is permanent).
    pub fn expires_at(&self, state: &LockoutState) -> Option<UnixMillis> {
        if state.permanent {
            return None;
        }
        let forgotten = if state.failures > 0 {
            state.last_failure.saturating_add(self.failure_reset_ms)
        } else {
            0
        };
        Some(forgotten.max(state.locked_until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{Just, prop_assert, prop_assert_eq, prop_oneof, proptest};
    use proptest::strategy::Strategy as PropStrategy;

    const MINUTE: u64 = 60_000;

    fn keycloak_like(strategy: Strategy) -> Backoff {
        Backoff {
            max_failures: 5,
            strategy,
            wait_increment_ms: MINUTE,
            max_wait_ms: 15 * MINUTE,
            failure_reset_ms: 12 * 60 * MINUTE,
            quick_login_check_ms: 0,
            min_quick_login_wait_ms: MINUTE,
            permanent_after: None,
        }
    }

    fn fail_n(policy: &Backoff, n: u32, start: u64, gap: u64) -> (LockoutState, Option<Lockout>) {
        let mut state = LockoutState::default();
        let mut last = None;
        for i in 0..n {
            let (next, lockout) = policy.on_failure(&state, start + u64::from(i) * gap);
            state = next;
            last = lockout;
        }
        (state, last)
    }

    #[test]
    fn the_fifth_failure_locks_for_one_increment() {
        let policy = keycloak_like(Strategy::Multiple);
        let (state, _) = fail_n(&policy, 4, 1_000, 10);
        assert_eq!(policy.locked_for(&state, 1_040), None);
        let (state, lockout) = policy.on_failure(&state, 1_040);
        assert_eq!(
            lockout,
            Some(Lockout::Temporary {
                until: 1_040 + MINUTE
            })
        );
        assert_eq!(policy.locked_for(&state, 1_041), Some(MINUTE - 1));
        assert_eq!(policy.locked_for(&state, 1_040 + MINUTE), None);
    }

    #[test]
    fn multiple_locks_every_max_failures_and_linear_on_every_failure_past_it() {
        let multiple = keycloak_like(Strategy::Multiple);
        let linear = keycloak_like(Strategy::Linear);
        let waits = |b: &Backoff| (1..=11).map(|n| b.wait_after(n)).collect::<Vec<_>>();
        let m = Some(MINUTE);
        assert_eq!(
            waits(&multiple),
            [
                None,
                None,
                None,
                None,
                m,
                None,
                None,
                None,
                None,
                Some(2 * MINUTE),
                None
            ]
        );
        assert_eq!(
            waits(&linear),
            [
                None,
                None,
                None,
                None,
                m,
                Some(2 * MINUTE),
                Some(3 * MINUTE),
                Some(4 * MINUTE),
                Some(5 * MINUTE),
                Some(6 * MINUTE),
                Some(7 * MINUTE)
            ]
        );
    }

    #[test]
    fn failures_are_forgotten_after_the_reset_time() {
        let policy = keycloak_like(Strategy::Multiple);
        let (state, _) = fail_n(&policy, 4, 1_000, 10);
        let later = state.last_failure + policy.failure_reset_ms;
        let (state, lockout) = policy.on_failure(&state, later);
        assert_eq!(state.failures, 1);
        assert_eq!(lockout, None);
        assert_eq!(
            policy.expires_at(&state),
            Some(later + policy.failure_reset_ms)
        );
    }

    #[test]
    fn a_quick_second_failure_locks_for_the_minimum_quick_wait() {
        let policy = Backoff {
            quick_login_check_ms: 1_000,
            ..keycloak_like(Strategy::Multiple)
        };
        let (state, _) = policy.on_failure(&LockoutState::default(), 10_000);
        let (_, lockout) = policy.on_failure(&state, 10_500);
        assert_eq!(
            lockout,
            Some(Lockout::Temporary {
                until: 10_500 + MINUTE
            })
        );
        let (_, slow) = policy.on_failure(&state, 12_000);
        assert_eq!(slow, None);
    }

    #[test]
    fn temporary_lockouts_turn_permanent_after_the_configured_count() {
        let policy = Backoff {
            permanent_after: Some(2),
            ..keycloak_like(Strategy::Multiple)
        };
        let (state, first) = fail_n(&policy, 5, 0, 1);
        assert!(matches!(first, Some(Lockout::Temporary { .. })));
        let (state, second) = fail_n_from(&policy, state, 5, 10 * MINUTE);
        assert!(matches!(second, Some(Lockout::Temporary { .. })));
        let (state, third) = fail_n_from(&policy, state, 5, 30 * MINUTE);
        assert_eq!(third, Some(Lockout::Permanent));
        assert!(state.permanent);
        assert_eq!(policy.expires_at(&state), None);
        assert_eq!(policy.locked_for(&state, u64::MAX / 2), Some(15 * MINUTE));
        let (unchanged, none) = policy.on_failure(&state, 40 * MINUTE);
        assert_eq!((unchanged, none), (state, None));
    }

    fn fail_n_from(
        policy: &Backoff,
        mut state: LockoutState,
        n: u32,
        start: u64,
    ) -> (LockoutState, Option<Lockout>) {
        let mut last = None;
        for i in 0..n {
            let (next, lockout) = policy.on_failure(&state, start + u64::from(i));
            state = next;
            last = lockout;
        }
        (state, last)
    }

    fn any_backoff() -> impl PropStrategy<Value = Backoff> {
        (
            1u32..10,
            prop_oneof![
                Just(super::Strategy::Multiple),
                Just(super::Strategy::Linear)
            ],
            1u64..100_000,
            1u64..1_000_000,
        )
            .prop_map(|(max_failures, strategy, inc, max_wait)| Backoff {
                max_failures,
                strategy,
                wait_increment_ms: inc,
                max_wait_ms: max_wait,
                failure_reset_ms: u64::MAX,
                quick_login_check_ms: 0,
                min_quick_login_wait_ms: 0,
                permanent_after: None,
            })
    }

    proptest! {
        /// Each lockout is at least as long as the one before it, and none exceeds max wait.
        #[test]
        fn back_off_is_non_decreasing_in_failures_and_capped_at_max_wait(
            backoff in any_backoff(), failures in 1u32..200,
        ) {
            let waits: Vec<u64> = (1..=failures).filter_map(|n| backoff.wait_after(n)).collect();
            for pair in waits.windows(2) {
                prop_assert!(pair[0] <= pair[1]);
            }
            for wait in waits {
                prop_assert!(wait <= backoff.max_wait_ms);
            }
        }

        /// Any state that has expired behaves like a fresh one on the next admission, whatever
        /// history made it (admissions verified, abandoned or successful, quick failures,
        /// lockouts): a store may drop it then, or keep it for another field.
        #[test]
        fn an_expired_state_behaves_like_a_fresh_one(
            steps in proptest::collection::vec((0u8..3, 0u64..3_000), 1..12), later in 0u64..10_000,
        ) {
            let policy = Backoff {
                failure_reset_ms: 5_000,
                quick_login_check_ms: 1_000,
                permanent_after: Some(2),
                ..keycloak_like(super::Strategy::Multiple)
            };
            let (mut state, mut now) = (LockoutState::default(), 1_000);
            for (settle, gap) in steps {
                now += gap;
                if policy.locked_for(&state, now).is_some() {
                    continue;
                }
                let (admitted, started) = policy.on_admission(&state, now);
                state = match settle {
                    0 => Backoff::on_verified(&admitted),
                    1 => Backoff::on_abandon(&admitted, started),
                    _ => Backoff::on_success(&admitted, started),
                };
            }
            if let Some(expiry) = policy.expires_at(&state) {
                let at = expiry.max(now) + later;
                prop_assert_eq!(
                    policy.on_admission(&state, at),
                    policy.on_admission(&LockoutState::default(), at)
                );
            }
        }
    }
}
