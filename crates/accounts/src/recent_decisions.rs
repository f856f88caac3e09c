//! This replica's decisions over the last minutes, minute by minute, by outcome and refusal
//! reason: what the admin console shows (`GET /admin/v1/status`, beside the store's
//! under-attack signal). The fleet's figures are Prometheus' `portcullis_decisions_total`, over
//! every replica.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_core::{Reason, UnixMillis};
use portcullis_store::Clock;

/// Minutes kept (the console's window).
pub const MINUTES: usize = 10;

const MINUTE_MS: u64 = 60_000;

/// What the guard decided for one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// Admitted.
    Allowed,
    /// Asked for a solved challenge.
    Challenged,
    /// Refused, for this reason.
    Denied(Reason),
}

/// Counters a minute keeps: allowed, challenged, then refused by position in [`Reason::ALL`].
const COUNTERS: usize = 2 + Reason::ALL.len();

/// One minute's counters, reused every [`MINUTES`] minutes. Lock-free, since every attempt
/// counts here (refusals from the deny cache included): a count that races the minute's reset
/// may be lost, which a dashboard can afford and the hot path is spared a lock for.
struct Slot {
    /// The minute (since the Unix epoch) plus one; 0 for a slot never used.
    minute: AtomicU64,
    counts: [AtomicU64; COUNTERS],
}

/// One minute's decisions, as the admin API answers them.
#[derive(Clone, Debug, PartialEq, Eq)]
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

struct Window {
    slots: [Slot; MINUTES],
}

/// This replica's recent decisions.
#[derive(Clone)]
pub struct RecentDecisions {
    clock: Arc<dyn Clock>,
    window: Arc<Window>,
}

impl RecentDecisions {
    /// An empty window on `clock`'s time.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            window: Arc::new(Window {
                slots: std::array::from_fn(|_| Slot {
                    minute: AtomicU64::new(0),
                    counts: std::array::from_fn(|_| AtomicU64::new(0)),
                }),
            }),
        }
    }

    fn slot(&self, index: u64) -> &Slot {
        &self.window.slots[(index % MINUTES as u64) as usize]
    }

    /// Counts one decision in the current minute.
    pub fn count(&self, decision: Counted) {
        let now = self.clock.now();
        let index = now / MINUTE_MS;
        let slot = self.slot(index);
        let seen = slot.minute.load(Ordering::Acquire);
        // The first count of a new minute takes the slot over from ten minutes ago.
        if seen < index + 1
            && slot
                .minute
                .compare_exchange(seen, index + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for count in &slot.counts {
                count.store(0, Ordering::Relaxed);
            }
        }
        let at = match decision {
            Counted::Allowed => 0,
            Counted::Challenged => 1,
            Counted::Denied(reason) => {
                2 + Reason::ALL
                    .iter()
                    .position(|r| *r == reason)
                    .unwrap_or_default()
            }
        };
        slot.counts[at].fetch_add(1, Ordering::Relaxed);
    }

    /// The last [`MINUTES`] minutes, oldest first, the current one included (minutes without
    /// a decision are zeros).
    pub fn minutes(&self) -> Vec<MinuteOfDecisions> {
        let current = self.clock.now() / MINUTE_MS;
        let first = current.saturating_sub(MINUTES as u64 - 1);
        (first..=current)
            .map(|index| {
                let slot = self.slot(index);
                let kept = slot.minute.load(Ordering::Acquire) == index + 1;
                let count = |at: usize| {
                    if kept {
                        slot.counts[at].load(Ordering::Relaxed)
                    } else {
                        0
                    }
                };
                MinuteOfDecisions {
                    start: index * MINUTE_MS,
                    allowed: count(0),
                    challenged: count(1),
                    denied: Reason::ALL
                        .iter()
                        .enumerate()
                        .map(|(i, reason)| (reason.as_str(), count(2 + i)))
                        .collect(),
                }
            })
            .collect()
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
        recent.count(Counted::Allowed);
        recent.count(Counted::Denied(Reason::Banned));
        recent.count(Counted::Denied(Reason::Banned));
        clock.advance(MINUTE_MS);
        recent.count(Counted::Challenged);
        recent.count(Counted::Allowed);

        let minutes = recent.minutes();
        assert_eq!(minutes.len(), MINUTES);
        let (before, now) = (&minutes[MINUTES - 2], &minutes[MINUTES - 1]);
        assert_eq!((before.allowed, before.challenged), (1, 0));
        assert_eq!(before.denied["banned"], 2);
        assert_eq!(before.denied["rate_limited"], 0);
        assert_eq!((now.allowed, now.challenged), (1, 1));
        assert_eq!(now.start - before.start, MINUTE_MS);

        clock.advance(MINUTES as u64 * MINUTE_MS);
        assert!(
            recent
                .minutes()
                .iter()
                .all(|m| m.allowed + m.challenged + m.denied.values().sum::<u64>() == 0)
        );
    }
}
