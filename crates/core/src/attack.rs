//! The "under attack" signal: the service-wide failure ratio over a sliding window.
//!
//! Credential stuffing shows as a jump in the share of logins that fail. The global key counts
//! finished attempts and failed ones (which count, and how, is `decision`'s) in fixed windows
//! and estimates the last `window_ms` from the current and the previous window (weighting the
//! previous one by how much of it still overlaps). When at least `min_attempts` were seen and at
//! least `failure_percent` of them failed, the service is under attack: attempts without a
//! trusted device are challenged and per-address limits tighten by `tighten_factor`.

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::gcra::Gcra;

/// Settings of the signal (on the `global` dimension).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackSignal {
    /// The sliding window.
    pub window_ms: u64,
    /// Fewer attempts than this in the window never count as an attack.
    pub min_attempts: u32,
    /// The failure share, in percent, from which the service is under attack.
    pub failure_percent: u32,
    /// Per-address limits admit this many times fewer attempts while under attack.
    pub tighten_factor: u32,
}

/// Counts of the current and the previous window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttackState {
    /// Index of the current window (`now / window_ms`).
    pub window: u64,
    /// Attempts counted in the current window.
    pub attempts: u32,
    /// Failures recorded in the current window.
    pub failures: u32,
    /// Attempts counted in the previous window.
    pub previous_attempts: u32,
    /// Failures recorded in the previous window.
    pub previous_failures: u32,
}

impl AttackSignal {
    /// Moves the state to the window of `now`.
    pub fn roll(&self, state: &mut AttackState, now: UnixMillis) {
        let window = now / self.window_ms.max(1);
        if window == state.window {
            return;
        }
        if window == state.window + 1 {
            state.previous_attempts = state.attempts;
            state.previous_failures = state.failures;
        } else {
            state.previous_attempts = 0;
            state.previous_failures = 0;
        }
        state.window = window;
        state.attempts = 0;
        state.failures = 0;
    }

    /// Whether the (rolled) state shows an attack at `now`.
    pub fn under_attack(&self, state: &AttackState, now: UnixMillis) -> bool {
        let window = u128::from(self.window_ms.max(1));
        let overlap = window - u128::from(now) % window;
        // Both estimates scaled by the window length, to stay in integers.
        let attempts =
            u128::from(state.attempts) * window + u128::from(state.previous_attempts) * overlap;
        let failures =
            u128::from(state.failures) * window + u128::from(state.previous_failures) * overlap;
        attempts >= u128::from(self.min_attempts) * window
            && attempts > 0
            && failures * 100 >= u128::from(self.failure_percent) * attempts
    }

    /// A limit tightened by the factor: a smaller burst, a slower refill.
    pub fn tighten(&self, limit: Gcra) -> Gcra {
        let factor = self.tighten_factor.max(1);
        Gcra {
            burst: (limit.burst / factor).max(1),
            interval_ms: limit.interval_ms.saturating_mul(u64::from(factor)),
        }
    }

    /// When the state holds nothing that matters any more.
    pub fn expires_at(&self, state: &AttackState) -> UnixMillis {
        if state.attempts == 0 && state.previous_attempts == 0 {
            return 0;
        }
        (state.window + 2).saturating_mul(self.window_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNAL: AttackSignal = AttackSignal {
        window_ms: 60_000,
        min_attempts: 10,
        failure_percent: 80,
        tighten_factor: 4,
    };

    fn state(attempts: u32, failures: u32, previous: (u32, u32)) -> AttackState {
        AttackState {
            window: 1,
            attempts,
            failures,
            previous_attempts: previous.0,
            previous_failures: previous.1,
        }
    }

    #[test]
    fn a_high_failure_share_over_enough_attempts_is_an_attack() {
        assert!(SIGNAL.under_attack(&state(10, 8, (0, 0)), 60_000));
        assert!(
            !SIGNAL.under_attack(&state(10, 7, (0, 0)), 60_000),
            "70% fail"
        );
        assert!(
            !SIGNAL.under_attack(&state(9, 9, (0, 0)), 60_000),
            "too few attempts"
        );
    }

    #[test]
    fn the_previous_window_counts_as_much_as_it_still_overlaps() {
        // Half-way through the window, half of the previous one still counts: 4 + 12/2 = 10.
        assert!(SIGNAL.under_attack(&state(4, 4, (12, 12)), 90_000));
        assert!(!SIGNAL.under_attack(&state(4, 4, (10, 10)), 90_000));
    }

    #[test]
    fn rolling_keeps_one_previous_window_and_forgets_older_ones() {
        let mut s = state(5, 4, (1, 1));
        SIGNAL.roll(&mut s, 120_000);
        assert_eq!(
            s,
            AttackState {
                window: 2,
                attempts: 0,
                failures: 0,
                previous_attempts: 5,
                previous_failures: 4
            }
        );
        SIGNAL.roll(&mut s, 300_000);
        assert_eq!(
            s,
            AttackState {
                window: 5,
                ..AttackState::default()
            }
        );
    }

    #[test]
    fn tightening_divides_the_burst_and_slows_the_refill() {
        let limit = Gcra {
            burst: 30,
            interval_ms: 1_000,
        };
        assert_eq!(
            SIGNAL.tighten(limit),
            Gcra {
                burst: 7,
                interval_ms: 4_000
            }
        );
        assert_eq!(
            SIGNAL
                .tighten(Gcra {
                    burst: 2,
                    interval_ms: 1
                })
                .burst,
            1
        );
    }
}
