//! Refusals, summarised: a flood must not become a log flood.
//!
//! A client over its limits can be refused tens of thousands of times a second, and a botnet
//! that does not solve is challenged as often. One INFO line each would send that many lines
//! to whatever collects the logs, and cost the refusal path more than its decision. So the
//! guard counts each refusal here, by the refusing key (its store key: an address, a network,
//! an account's keyed hash, never a name) and reason, and every [`INTERVAL`] one INFO line per
//! key tells the counts. The per-request line is DEBUG (the server marks those answers).
//! Admitted attempts and security events keep their own lines.
//!
//! At most [`MAX_KEYS`] keys are told apart in one interval: a flood from more sources adds to
//! one "other keys" line, so the summary stays bounded too. The lock is held for one map
//! lookup (the key is copied only the first time it is refused in an interval).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use portcullis_core::{AttemptKey, Reason};

/// How often the counts are written.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Keys told apart in one interval.
pub const MAX_KEYS: usize = 1_000;

/// Whether a refused request's own line (DEBUG) can be written anywhere: only then is what was
/// refused recorded into the request's span. The log formatter writes out each field recorded
/// into a span as it comes, whether a line ever prints it or not.
pub fn request_lines() -> bool {
    tracing::level_filters::LevelFilter::current() >= tracing::level_filters::LevelFilter::DEBUG
}

/// What a request was refused with: a refusal reason, or a challenge it did not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Refused (429) for this reason.
    Denied(Reason),
    /// Asked for a solved challenge (401) before verification.
    Challenged,
}

/// Counts by refusal: each reason in [`Reason::ALL`]'s order, then challenges.
type Counts = [u64; Reason::ALL.len() + 1];

impl Refusal {
    fn index(self) -> usize {
        match self {
            Refusal::Denied(reason) => Reason::ALL
                .iter()
                .position(|r| *r == reason)
                .unwrap_or_default(),
            Refusal::Challenged => Reason::ALL.len(),
        }
    }
}

/// One interval's counts.
#[derive(Default)]
struct Interval {
    /// By the refusing key's store key (which names its dimension).
    keys: HashMap<String, Counts>,
    /// Refusals of keys beyond [`MAX_KEYS`], together.
    others: Counts,
}

/// The refusals this replica has not written yet.
#[derive(Clone, Default)]
pub struct RefusalLog {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    interval: Mutex<Interval>,
    /// Whether the writing task runs (started by the first refusal, in the runtime).
    writing: AtomicBool,
}

impl RefusalLog {
    /// Counts one refusal of `key`.
    pub fn count(&self, key: &AttemptKey, refusal: Refusal) {
        self.start_writing();
        let at = refusal.index();
        let mut interval = self
            .inner
            .interval
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(counts) = interval.keys.get_mut(key.key.as_str()) {
            counts[at] += 1;
        } else if interval.keys.len() < MAX_KEYS {
            let mut counts = Counts::default();
            counts[at] = 1;
            interval.keys.insert(key.key.clone(), counts);
        } else {
            interval.others[at] += 1;
        }
    }

    /// Writes the interval's lines and starts the next interval; returns how many lines.
    pub fn write(&self) -> usize {
        let interval = std::mem::take(
            &mut *self
                .inner
                .interval
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let mut lines = 0;
        for (key, counts) in &interval.keys {
            summary_line(key, counts);
            lines += 1;
        }
        if interval.others.iter().any(|&n| n > 0) {
            summary_line("other keys", &interval.others);
            lines += 1;
        }
        lines
    }

    /// Starts the task that writes every [`INTERVAL`], once, from the first refusal.
    fn start_writing(&self) {
        let inner = &self.inner;
        if inner.writing.load(Ordering::Relaxed) || inner.writing.swap(true, Ordering::Relaxed) {
            return;
        }
        let log: Weak<Inner> = Arc::downgrade(inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(INTERVAL);
            every.tick().await;
            loop {
                every.tick().await;
                let Some(inner) = log.upgrade() else { return };
                RefusalLog { inner }.write();
            }
        });
    }
}

/// One key's line: its counts by reason, the zeros left out.
fn summary_line(key: &str, counts: &Counts) {
    let by_reason: Vec<String> = Reason::ALL
        .iter()
        .map(|r| r.as_str())
        .chain(["challenged"])
        .zip(counts)
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason}={n}"))
        .collect();
    let total: u64 = counts.iter().sum();
    tracing::info!(
        key,
        refused = total,
        by_reason = by_reason.join(" "),
        interval_secs = INTERVAL.as_secs(),
        "attempts refused before verification"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::{KeyDeriver, Username};

    fn keys(ip: &str) -> Vec<AttemptKey> {
        let deriver = KeyDeriver::new(b"k", 24, 64, 48).unwrap();
        deriver.keys(
            ip.parse().unwrap(),
            &Username::parse("alice").unwrap(),
            None,
        )
    }

    #[tokio::test]
    async fn a_flood_is_one_line_per_key_and_reason_set_per_interval() {
        let log = RefusalLog::default();
        let flood = &keys("203.0.113.7")[1];
        for _ in 0..50_000 {
            log.count(flood, Refusal::Denied(Reason::RateLimited));
        }
        log.count(flood, Refusal::Challenged);
        let other = &keys("198.51.100.1")[1];
        log.count(other, Refusal::Denied(Reason::Banned));
        {
            let interval = log.inner.interval.lock().unwrap();
            assert_eq!(
                interval.keys[&flood.key][Refusal::Denied(Reason::RateLimited).index()],
                50_000
            );
            assert_eq!(interval.keys[&flood.key][Refusal::Challenged.index()], 1);
        }
        assert_eq!(log.write(), 2);
        assert_eq!(log.write(), 0, "the next interval starts empty");
    }

    #[tokio::test]
    async fn keys_beyond_the_bound_share_one_line() {
        let log = RefusalLog::default();
        for i in 0..(MAX_KEYS + 500) {
            let key = &keys(&format!("10.{}.{}.1", i / 250, i % 250))[1];
            log.count(key, Refusal::Challenged);
        }
        {
            let interval = log.inner.interval.lock().unwrap();
            assert_eq!(interval.keys.len(), MAX_KEYS);
            assert_eq!(interval.others[Refusal::Challenged.index()], 500);
        }
        assert_eq!(log.write(), MAX_KEYS + 1);
    }
}
