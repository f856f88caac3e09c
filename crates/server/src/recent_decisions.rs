//! This replica's decisions over the last minutes, minute by minute, by outcome and refusal
//! reason, and the service-wide under-attack signal as the store last answered it: what the
//! admin console shows (`GET /admin/v1/status`). The fleet's figures are Prometheus'
//! `portcullis_decisions_total` and `portcullis_under_attack`, over every replica.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use portcullis_core::{Reason, UnixMillis};
use portcullis_store::Clock;
use serde::Serialize;

/// Minutes kept (the console's window).
pub const MINUTES: usize = 10;

const MINUTE_MS: u64 = 60_000;

/// What the guard decided for one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// Admitted, while the store said the service was (or was not) under attack.
    Allowed {
        /// The service-wide signal with this admission.
        under_attack: bool,
    },
    /// Asked for a solved challenge.
    Challenged,
    /// Refused, for this reason.
    Denied(Reason),
}

/// The counts of one minute.
#[derive(Clone, Copy, Debug, Default)]
struct Minute {
    /// Minutes since the Unix epoch.
    index: u64,
    allowed: u64,
    challenged: u64,
    /// By position in [`Reason::ALL`].
    denied: [u64; Reason::ALL.len()],
}

/// One minute's decisions, as the admin API answers them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MinuteOfDecisions {
    /// The minute's start (Unix milliseconds).
    pub start: UnixMillis,
    /// Attempts admitted.
    pub allowed: u64,
    /// Attempts asked for a solved challenge.
    pub challenged: u64,
    /// Attempts refused, by reason (`rate_limited`, `throttled`, `too_many_failures`,
    /// `locked_out`, `banned`).
    pub denied: BTreeMap<&'static str, u64>,
}

/// The service-wide signal as the store last answered it on this replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AttackSignalSeen {
    /// Whether the service was under attack.
    pub under_attack: bool,
    /// When (Unix milliseconds): the last admitted attempt.
    pub as_of: UnixMillis,
}

#[derive(Default)]
struct Window {
    minutes: VecDeque<Minute>,
    signal: Option<AttackSignalSeen>,
}

/// This replica's recent decisions.
#[derive(Clone)]
pub struct RecentDecisions {
    clock: Arc<dyn Clock>,
    window: Arc<Mutex<Window>>,
}

impl RecentDecisions {
    /// An empty window on `clock`'s time.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            window: Arc::default(),
        }
    }

    /// Counts one decision in the current minute.
    pub fn count(&self, decision: Counted) {
        let now = self.clock.now();
        let index = now / MINUTE_MS;
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if window.minutes.back().is_none_or(|m| m.index != index) {
            if window.minutes.len() == MINUTES {
                window.minutes.pop_front();
            }
            window.minutes.push_back(Minute {
                index,
                ..Minute::default()
            });
        }
        let Some(minute) = window.minutes.back_mut() else {
            return;
        };
        match decision {
            Counted::Allowed { under_attack } => {
                minute.allowed += 1;
                window.signal = Some(AttackSignalSeen {
                    under_attack,
                    as_of: now,
                });
            }
            Counted::Challenged => minute.challenged += 1,
            Counted::Denied(reason) => {
                if let Some(at) = Reason::ALL.iter().position(|r| *r == reason) {
                    minute.denied[at] += 1;
                }
            }
        }
    }

    /// The last [`MINUTES`] minutes, oldest first, the current one included (minutes without
    /// a decision are zeros).
    pub fn minutes(&self) -> Vec<MinuteOfDecisions> {
        let current = self.clock.now() / MINUTE_MS;
        let window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let first = current.saturating_sub(MINUTES as u64 - 1);
        (first..=current)
            .map(|index| {
                let minute = window
                    .minutes
                    .iter()
                    .find(|m| m.index == index)
                    .copied()
                    .unwrap_or_default();
                MinuteOfDecisions {
                    start: index * MINUTE_MS,
                    allowed: minute.allowed,
                    challenged: minute.challenged,
                    denied: Reason::ALL
                        .iter()
                        .zip(minute.denied)
                        .map(|(reason, n)| (reason.as_str(), n))
                        .collect(),
                }
            })
            .collect()
    }

    /// The under-attack signal with the last admitted attempt, if any was admitted since start.
    pub fn attack_signal(&self) -> Option<AttackSignalSeen> {
        self.window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .signal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_store::ManualClock;

    #[test]
    fn counts_fall_into_their_minute_and_old_minutes_leave_the_window() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let recent = RecentDecisions::new(clock.clone());
        recent.count(Counted::Allowed {
            under_attack: false,
        });
        recent.count(Counted::Denied(Reason::Banned));
        recent.count(Counted::Denied(Reason::Banned));
        clock.advance(MINUTE_MS);
        recent.count(Counted::Challenged);
        recent.count(Counted::Allowed { under_attack: true });

        let minutes = recent.minutes();
        assert_eq!(minutes.len(), MINUTES);
        let (before, now) = (&minutes[MINUTES - 2], &minutes[MINUTES - 1]);
        assert_eq!((before.allowed, before.challenged), (1, 0));
        assert_eq!(before.denied["banned"], 2);
        assert_eq!(before.denied["rate_limited"], 0);
        assert_eq!((now.allowed, now.challenged), (1, 1));
        assert_eq!(now.start - before.start, MINUTE_MS);
        assert_eq!(
            recent.attack_signal(),
            Some(AttackSignalSeen {
                under_attack: true,
                as_of: clock.now(),
            })
        );

        clock.advance(MINUTES as u64 * MINUTE_MS);
        assert!(
            recent
                .minutes()
                .iter()
                .all(|m| m.allowed + m.challenged + m.denied.values().sum::<u64>() == 0)
        );
    }
}
