//! Generic cell rate algorithm (GCRA): a rate limit that needs one number of state per key.
//!
//! A key's state is its theoretical arrival time (TAT): the time at which the key would be back
//! to empty. Each admitted event pushes the TAT one `interval` later; an event is refused when
//! that would put the TAT more than `burst` intervals ahead of now. A fresh key therefore admits
//! `burst` events at once and one more every `interval` after that.

use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// A rate limit: `burst` events at once, then one every `interval_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gcra {
    /// Events a fresh key admits at once (at least 1).
    pub burst: u32,
    /// Milliseconds after which one more event is admitted (at least 1).
    pub interval_ms: u64,
}

/// The outcome of asking a GCRA limit about one more event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcraVerdict {
    /// Admitted; store `new_tat` as the key's state.
    Admit {
        /// The key's theoretical arrival time after this event.
        new_tat: UnixMillis,
    },
    /// Refused; the event would be admitted after `retry_after_ms`.
    Refuse {
        /// Milliseconds until one more event would be admitted.
        retry_after_ms: u64,
    },
}

impl Gcra {
    /// How far ahead of now the TAT may run before events are refused.
    fn tolerance(&self) -> u64 {
        self.interval_ms.saturating_mul(u64::from(self.burst))
    }

    /// Asks whether one more event at `now` is admitted by a key whose TAT is `tat`
    /// (0 for a key never seen).
    pub fn check(&self, tat: UnixMillis, now: UnixMillis) -> GcraVerdict {
        let new_tat = tat.max(now).saturating_add(self.interval_ms);
        let ahead = new_tat - now;
        let tolerance = self.tolerance();
        if ahead > tolerance {
            GcraVerdict::Refuse {
                retry_after_ms: ahead - tolerance,
            }
        } else {
            GcraVerdict::Admit { new_tat }
        }
    }

    /// Events counted and not yet refilled at `now` (0 to `burst`, rounded up): how much of the
    /// budget a key has used.
    pub fn used(&self, tat: UnixMillis, now: UnixMillis) -> u64 {
        tat.saturating_sub(now).div_ceil(self.interval_ms.max(1))
    }

    /// Counts one event unconditionally (an outcome that already happened, such as a failure)
    /// and returns the new TAT.
    pub fn charge(&self, tat: UnixMillis, now: UnixMillis) -> UnixMillis {
        tat.max(now).saturating_add(self.interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn used_counts_the_cells_not_yet_refilled() {
        let limit = Gcra {
            burst: 10,
            interval_ms: 1_000,
        };
        assert_eq!(limit.used(0, 5_000), 0);
        let tat = limit.charge(limit.charge(0, 5_000), 5_000);
        assert_eq!(limit.used(tat, 5_000), 2);
        assert_eq!(
            limit.used(tat, 5_500),
            2,
            "half a cell refilled still counts"
        );
        assert_eq!(limit.used(tat, 6_000), 1);
        assert_eq!(limit.used(tat, 9_000), 0);
    }

    const LIMIT: Gcra = Gcra {
        burst: 3,
        interval_ms: 1_000,
    };

    #[test]
    fn a_fresh_key_admits_a_burst_then_refuses_with_the_wait() {
        let now = 10_000;
        let mut tat = 0;
        for _ in 0..3 {
            match LIMIT.check(tat, now) {
                GcraVerdict::Admit { new_tat } => tat = new_tat,
                GcraVerdict::Refuse { .. } => panic!("burst refused"),
            }
        }
        assert_eq!(
            LIMIT.check(tat, now),
            GcraVerdict::Refuse {
                retry_after_ms: 1_000
            }
        );
        assert!(matches!(
            LIMIT.check(tat, now + 1_000),
            GcraVerdict::Admit { .. }
        ));
    }

    #[test]
    fn an_idle_key_is_as_good_as_fresh_once_now_passes_its_tat() {
        let tat = 5_000;
        assert_eq!(LIMIT.check(tat, 7_000), LIMIT.check(0, 7_000));
    }

    #[test]
    fn charging_pushes_the_tat_even_past_the_tolerance() {
        let mut tat = 0;
        for _ in 0..5 {
            tat = LIMIT.charge(tat, 0);
        }
        assert_eq!(tat, 5_000);
        assert_eq!(
            LIMIT.check(tat, 0),
            GcraVerdict::Refuse {
                retry_after_ms: 3_000
            }
        );
    }

    proptest! {
        /// Over any sequence of requests, the admitted ones within [first, last] never exceed
        /// burst + elapsed / interval.
        #[test]
        fn a_key_never_admits_more_than_burst_plus_rate_times_elapsed(
            burst in 1u32..20,
            interval_ms in 1u64..5_000,
            gaps in proptest::collection::vec(0u64..3_000, 1..200),
        ) {
            let limit = Gcra { burst, interval_ms };
            let mut now = 1_000_000u64;
            let mut tat = 0;
            let mut admitted: Vec<u64> = Vec::new();
            for gap in gaps {
                now += gap;
                if let GcraVerdict::Admit { new_tat } = limit.check(tat, now) {
                    tat = new_tat;
                    admitted.push(now);
                }
            }
            for (i, start) in admitted.iter().enumerate() {
                for (j, end) in admitted.iter().enumerate().skip(i) {
                    let count = (j - i + 1) as u64;
                    prop_assert!(
                        count * interval_ms <= u64::from(burst) * interval_ms + (end - start),
                        "{count} events in {}ms", end - start
                    );
                }
            }
        }

        /// Refusals always name a positive wait after which the event is admitted.
        #[test]
        fn a_refusal_names_a_wait_after_which_the_event_is_admitted(
            tat in 0u64..100_000, now in 0u64..100_000,
        ) {
            if let GcraVerdict::Refuse { retry_after_ms } = LIMIT.check(tat, now) {
                prop_assert!(retry_after_ms > 0);
                let admitted = matches!(
                    LIMIT.check(tat, now + retry_after_ms),
                    GcraVerdict::Admit { .. }
                );
                prop_assert!(admitted);
            }
        }
    }
}
