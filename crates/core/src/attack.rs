//! The "under attack" signal: detectors of credential stuffing over the service's own traffic,
//! judged against the service's own baseline.
//!
//! Only attempts without a trusted device count: stuffing never has one, and the owners' logins
//! on their devices must not dilute what it does carry. What each finished attempt tells (a
//! [`Sign`]) is counted in buckets of `bucket_ms`; the recent estimate is the current bucket plus
//! the previous one weighted by how much of it still overlaps the last `bucket_ms`. A bucket that
//! leaves that view folds into the [`Baseline`]: exponentially weighted means per bucket with a
//! half-life of `baseline_half_life_ms`, never while tripped (an attack must not become the norm).
//! The detectors ([`Detector`]):
//! - **failures**: the share of attempts that failed;
//! - **unknown usernames**: the share naming an account that does not exist here (lists leaked
//!   elsewhere name many; people rarely mistype their own name);
//! - **failed accounts**: distinct accounts with a failure, per attempt (one person's repeated
//!   typos count once; a list's one guess per account each count);
//!
//!   each a one-sided binomial test of the recent count against the baseline's share of the
//!   recent attempts (a likelihood ratio, honest at small counts), so a surge of ordinary traffic
//!   (more attempts, the same shares) never trips one: it trips once the baseline has
//!   `warm_up_ms` behind it, at `min_z` standard deviations and `min_excess` counts above what
//!   the baseline expects;
//! - **password fan-out**: one password failing on `fan_out_usernames` distinct usernames within
//!   `fan_out_window_ms`, whatever the sources ([`FanOut`]; the store keeps the passwords'
//!   keyed digests, never beyond their window);
//! - **floor**: the absolute rule for a service with no history yet: at least `min_attempts` in
//!   the sliding `window_ms`, `failure_percent` of them failing.
//!
//! A trip holds for `hold_ms` after the last attempt that showed it (hysteresis: a quiet moment
//! inside an attack does not end it). While tripped, attempts without a trusted device are
//! challenged and per-address limits tighten by `tighten_factor`.

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::gcra::Gcra;

/// The most [`AttackSignal::fan_out_usernames`] may be: Redis shares a password's count in a
/// byte that saturates there (the store's count-min sketch), and a password failing on that
/// many usernames within its window has long tripped any sensible setting.
pub const MAX_FAN_OUT_USERNAMES: u32 = 255;

/// Settings of the signal (on the `global` dimension).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackSignal {
    /// The floor's sliding window.
    pub window_ms: u64,
    /// The floor: fewer attempts than this in its window never trip it.
    pub min_attempts: u32,
    /// The floor: the failure share, in percent, from which it trips.
    pub failure_percent: u32,
    /// Per-address limits admit this many times fewer attempts while under attack.
    pub tighten_factor: u32,
    /// The detectors' bucket: the recent estimate covers about this long.
    pub bucket_ms: u64,
    /// Half-life of the baseline's weighted means.
    pub baseline_half_life_ms: u64,
    /// How much history the baseline needs before its detectors may trip.
    pub warm_up_ms: u64,
    /// Standard deviations above the baseline at which a detector trips.
    pub min_z: u32,
    /// Counts above what the baseline expects at which a detector trips (both must hold).
    pub min_excess: u32,
    /// How long a trip holds after the last attempt that showed it.
    pub hold_ms: u64,
    /// Distinct usernames one password fails on, within its window, that trip the fan-out (at
    /// most [`MAX_FAN_OUT_USERNAMES`]).
    pub fan_out_usernames: u32,
    /// The fan-out's window, from a password's first failure in it.
    pub fan_out_window_ms: u64,
}

/// What one finished attempt without a trusted device tells the signal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sign {
    /// It failed (a wrong password, an unknown account, a shed attempt).
    pub failed: bool,
    /// It named an account that does not exist.
    pub unknown_username: bool,
    /// It is the account's first failure in the current bucket.
    pub first_failure_of_account: bool,
}

impl Sign {
    /// An attempt that failed without telling more (shed).
    pub const FAILED: Sign = Sign {
        failed: true,
        unknown_username: false,
        first_failure_of_account: false,
    };
}

/// A challenge's part in the signal.
///
/// A challenge counts as a failed attempt until an attempt answers it: a flood that does not
/// solve stays visible while it is challenged, and people solving theirs add no failures (the
/// attempt that answers counts by its own outcome). Counting them apart, rather than taking a
/// failure back, keeps every count growing, so replicas' shares add up whatever the order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeStep {
    /// An attempt was answered with a challenge.
    Issued,
    /// An attempt carried a solved challenge.
    Answered,
}

/// One bucket's (or floor window's) counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Attempts (an account's successes once per bucket, so logging into one's own account
    /// again and again dilutes nothing).
    pub attempts: u32,
    /// Failures.
    pub failures: u32,
    /// Attempts naming an account that does not exist.
    pub unknown: u32,
    /// Distinct accounts with a failure.
    pub failed_accounts: u32,
    /// Challenges issued.
    pub challenged: u32,
    /// Challenges answered.
    pub answered: u32,
}

impl Counts {
    /// Adds one attempt's sign.
    pub fn add(&mut self, sign: Sign) {
        self.attempts = self.attempts.saturating_add(1);
        self.failures = self.failures.saturating_add(u32::from(sign.failed));
        self.unknown = self
            .unknown
            .saturating_add(u32::from(sign.unknown_username));
        self.failed_accounts = self
            .failed_accounts
            .saturating_add(u32::from(sign.first_failure_of_account));
    }

    /// Adds a challenge's step.
    pub fn add_challenge(&mut self, step: ChallengeStep) {
        let count = match step {
            ChallengeStep::Issued => &mut self.challenged,
            ChallengeStep::Answered => &mut self.answered,
        };
        *count = count.saturating_add(1);
    }

    /// Adds another's counts (replicas' shares of one bucket).
    pub fn merge(&mut self, other: &Counts) {
        self.attempts = self.attempts.saturating_add(other.attempts);
        self.failures = self.failures.saturating_add(other.failures);
        self.unknown = self.unknown.saturating_add(other.unknown);
        self.failed_accounts = self.failed_accounts.saturating_add(other.failed_accounts);
        self.challenged = self.challenged.saturating_add(other.challenged);
        self.answered = self.answered.saturating_add(other.answered);
    }

    fn is_empty(&self) -> bool {
        *self == Counts::default()
    }
}

/// Counts as the detectors read them (a weighted sum of buckets or windows), with the
/// challenges settled ([`ChallengeStep`]): each unanswered one a failed attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Settled {
    attempts: f64,
    failures: f64,
    unknown: f64,
    failed_accounts: f64,
}

impl Settled {
    /// `current` plus `previous` weighted by `overlap`, settled.
    fn of(current: &Counts, previous: &Counts, overlap: f64) -> Self {
        let sum =
            |of: fn(&Counts) -> u32| f64::from(of(current)) + f64::from(of(previous)) * overlap;
        let unanswered = (sum(|c| c.challenged) - sum(|c| c.answered)).max(0.0);
        Self {
            attempts: sum(|c| c.attempts) + unanswered,
            failures: sum(|c| c.failures) + unanswered,
            unknown: sum(|c| c.unknown),
            failed_accounts: sum(|c| c.failed_accounts),
        }
    }
}

/// The service's history: weighted means over the buckets folded in (integers, so every store
/// computes the same).
///
/// The detectors' shares are means of each bucket's own shares, not totals over totals: a
/// burst of clean logins (every user's first login after a release, a drill's warm-up) is one
/// bucket among many, so it cannot drag the expected share down and make the ordinary traffic
/// after it look like an attack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// The last bucket folded in (0: none yet).
    pub folded_through: u64,
    /// Buckets folded in since the first attempt (quiet ones too): the history behind it.
    pub buckets: u32,
    /// Mean attempts per bucket (quiet buckets too), thousandths.
    pub attempts: u64,
    /// What the buckets with attempts weigh together, millionths (it nears a million as the
    /// history grows; each share below is a weighted sum over it).
    pub share_weight: u64,
    /// Weighted sum of the buckets' failure shares, millionths.
    pub failure_share: u64,
    /// Weighted sum of the buckets' shares naming unknown accounts, millionths.
    pub unknown_share: u64,
    /// Weighted sum of the buckets' distinct failed accounts per attempt, millionths.
    pub failed_account_share: u64,
}

impl Baseline {
    /// The mean share a weighted sum stands for (0 with no bucket behind it).
    fn share(&self, sum: u64) -> f64 {
        if self.share_weight == 0 {
            0.0
        } else {
            sum as f64 / self.share_weight as f64
        }
    }
}

/// What trips the signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// The share of attempts failing, against the baseline's.
    Failures,
    /// The share naming unknown accounts, against the baseline's.
    UnknownUsernames,
    /// Distinct failed accounts per attempt, against the baseline's.
    FailedAccounts,
    /// One password failing on many usernames.
    PasswordFanOut,
    /// The absolute rule (many attempts, a large share failing).
    Floor,
}

impl Detector {
    /// Every detector.
    pub const ALL: [Detector; 5] = [
        Detector::Failures,
        Detector::UnknownUsernames,
        Detector::FailedAccounts,
        Detector::PasswordFanOut,
        Detector::Floor,
    ];

    /// The detector's name in settings, metrics and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Failures => "failures",
            Detector::UnknownUsernames => "unknown_usernames",
            Detector::FailedAccounts => "failed_accounts",
            Detector::PasswordFanOut => "password_fan_out",
            Detector::Floor => "floor",
        }
    }
}

/// A trip: which detector, by how much, until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trip {
    /// The detector that tripped (the last to show an attack).
    pub detector: Detector,
    /// What it counted.
    pub observed: u32,
    /// What it would have tripped at, or (for the baseline's detectors) what the baseline
    /// expected, in thousandths.
    pub expected_milli: u64,
    /// When the signal tripped (a trip extended keeps its start).
    pub since: UnixMillis,
    /// The signal holds until then.
    pub until: UnixMillis,
}

/// One detector's reading at a moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// Which detector.
    pub detector: Detector,
    /// What it counts now (the recent estimate).
    pub observed: f64,
    /// What the baseline expects of that many attempts (the floor: the failures it trips at).
    pub expected: f64,
    /// How far above the baseline, in standard deviations (the likelihood ratio's; 0 for the
    /// floor).
    pub z: f64,
    /// Whether this reading trips the signal.
    pub trips: bool,
}

/// The signal at a moment, as the admin API and the metrics show it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assessment {
    /// When.
    pub at: UnixMillis,
    /// The trip in force.
    pub trip: Option<Trip>,
    /// Whether the baseline's detectors may trip yet.
    pub warm: bool,
    /// Each detector's reading but the fan-out's (an event).
    pub readings: [Reading; 4],
}

impl Assessment {
    /// Whether an attempt judged now would find the service under attack: a trip is in force,
    /// or a reading would trip it.
    pub fn shows_attack(&self) -> bool {
        self.trip.is_some() || self.readings.iter().any(|reading| reading.trips)
    }
}

/// The signal's state (kept on the global key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttackState {
    /// The floor's current window (`now / window_ms`).
    pub window: u64,
    /// The floor's counts in the current window (its attempts, failures and challenges).
    pub floor: Counts,
    /// The floor's counts in the previous window.
    pub previous_floor: Counts,
    /// The detectors' current bucket (`now / bucket_ms`; 0 before the first attempt).
    pub bucket: u64,
    /// Counts of the current bucket.
    pub current: Counts,
    /// Counts of the previous bucket.
    pub previous: Counts,
    /// The service's history.
    pub baseline: Baseline,
    /// The last trip (over once `until` has passed).
    pub trip: Option<Trip>,
}

impl AttackState {
    /// The trip in force at `now`.
    pub fn tripped(&self, now: UnixMillis) -> Option<Trip> {
        self.trip.filter(|trip| trip.until > now)
    }
}

/// Below this share the binomial tests treat the baseline as this share: a baseline of none
/// would make a single typo infinitely unlikely.
const MIN_SHARE: f64 = 0.01;

/// How surprising `observed` of `attempts` is when each is one with probability `p`, in
/// standard deviations: the signed root of the binomial deviance (the likelihood ratio). Where
/// counts are large it is the usual z-score; where they are small it stays honest, as the z-score
/// does not (a mean of 1.2 makes 7 a "5σ" z-score, yet 7 or more come once in 4,000 windows). Its
/// square halved bounds the tail: the chance of at least `observed` is below `exp(-z²/2)`
/// (Chernoff).
fn surprise(observed: f64, attempts: f64, p: f64) -> f64 {
    if attempts <= 0.0 {
        return 0.0;
    }
    let expected = attempts * p;
    let term = |count: f64, mean: f64| {
        if count > 0.0 {
            count * (count / mean).ln()
        } else {
            0.0
        }
    };
    let deviance =
        2.0 * (term(observed, expected) + term(attempts - observed, attempts - expected));
    deviance.max(0.0).sqrt().copysign(observed - expected)
}

impl AttackSignal {
    /// Moves the state to `now`: the floor's windows, and the buckets (folding those that leave
    /// the view into the baseline, unless tripped).
    pub fn roll(&self, state: &mut AttackState, now: UnixMillis) {
        // A state that holds nothing any more is forgotten, as a store forgets its key: a store
        // that rolls in the quiet (or before the first attempt) keeps the same history as one
        // that rolls only when attempts come.
        if now >= self.expires_at(state) {
            *state = AttackState::default();
        }
        self.roll_floor(state, now);
        let bucket = now / self.bucket_ms.max(1);
        if bucket <= state.bucket {
            return;
        }
        if state.bucket == 0 {
            // The first count (or the first since the state was forgotten): history starts here.
            state.bucket = bucket;
            state.baseline.folded_through = bucket.saturating_sub(2);
            return;
        }
        // A bucket the signal was tripped in is not learned: whichever moment the state rolls
        // past it (every store rolls at its own moments), the baseline comes out the same.
        let bucket_ms = self.bucket_ms.max(1);
        let trip = state.trip;
        let tripped_in = |first: u64, last: u64| match trip {
            Some(t) if last >= first => {
                let from = (t.since / bucket_ms).max(first);
                let to = (t.until.saturating_sub(1) / bucket_ms).min(last);
                (to + 1).saturating_sub(from)
            }
            _ => 0,
        };
        let fold = |baseline: &mut Baseline, index: u64, counts: &Counts| {
            if index > baseline.folded_through {
                if tripped_in(index, index) == 0 {
                    self.fold(baseline, counts, 1);
                }
                baseline.folded_through = index;
            }
        };
        let previous = state.previous;
        let current = state.current;
        fold(&mut state.baseline, state.bucket - 1, &previous);
        if bucket == state.bucket + 1 {
            state.previous = current;
        } else {
            fold(&mut state.baseline, state.bucket, &current);
            // Buckets nobody counted in: quiet ones.
            let first = state.baseline.folded_through.max(state.bucket) + 1;
            let last = bucket - 2;
            let quiet = (last + 1).saturating_sub(first) - tripped_in(first, last);
            if quiet > 0 {
                self.fold(&mut state.baseline, &Counts::default(), quiet);
            }
            state.baseline.folded_through = bucket - 2;
            state.previous = Counts::default();
        }
        state.current = Counts::default();
        state.bucket = bucket;
    }

    fn roll_floor(&self, state: &mut AttackState, now: UnixMillis) {
        let window = now / self.window_ms.max(1);
        if window == state.window {
            return;
        }
        state.previous_floor = if window == state.window + 1 {
            state.floor
        } else {
            Counts::default()
        };
        state.window = window;
        state.floor = Counts::default();
    }

    /// Folds `buckets` buckets of `counts` into the baseline. Quiet buckets (no attempts) age
    /// the mean attempts and leave the shares as they were: they have none.
    fn fold(&self, baseline: &mut Baseline, counts: &Counts, buckets: u64) {
        let settled = Settled::of(counts, &Counts::default(), 0.0);
        let half_lives = (self.bucket_ms as f64) / (self.baseline_half_life_ms.max(1) as f64);
        let keep = 0.5f64.powf(half_lives).powf(buckets as f64);
        let mix = |mean: &mut u64, value: f64| {
            *mean = (*mean as f64 * keep + value * (1.0 - keep)).round() as u64;
        };
        mix(&mut baseline.attempts, settled.attempts * 1_000.0);
        if settled.attempts > 0.0 {
            let share = |count: f64| (count / settled.attempts).min(1.0) * 1_000_000.0;
            mix(&mut baseline.share_weight, 1_000_000.0);
            mix(&mut baseline.failure_share, share(settled.failures));
            mix(&mut baseline.unknown_share, share(settled.unknown));
            mix(
                &mut baseline.failed_account_share,
                share(settled.failed_accounts),
            );
        }
        baseline.buckets = baseline
            .buckets
            .saturating_add(u32::try_from(buckets).unwrap_or(u32::MAX));
    }

    /// Counts one finished attempt's sign at `now` (the state rolled first).
    pub fn count(&self, state: &mut AttackState, sign: Sign, now: UnixMillis) {
        self.roll(state, now);
        state.floor.add(sign);
        state.current.add(sign);
    }

    /// Counts a challenge's step at `now` (the state rolled first).
    pub fn count_challenge(&self, state: &mut AttackState, step: ChallengeStep, now: UnixMillis) {
        self.roll(state, now);
        state.floor.add_challenge(step);
        state.current.add_challenge(step);
    }

    /// Whether the baseline's detectors may trip: enough history behind it, and a share learnt
    /// from some attempts.
    pub fn is_warm(&self, baseline: &Baseline) -> bool {
        u64::from(baseline.buckets).saturating_mul(self.bucket_ms) >= self.warm_up_ms
            && baseline.share_weight > 0
    }

    /// Every detector's reading of the (rolled) state at `now`, but the fan-out's (an event,
    /// see [`FanOut`]).
    pub fn readings(&self, state: &AttackState, now: UnixMillis) -> [Reading; 4] {
        let bucket = self.bucket_ms.max(1);
        let overlap = (bucket - now % bucket) as f64 / bucket as f64;
        let recent = Settled::of(&state.current, &state.previous, overlap);
        let attempts = recent.attempts;
        let base = &state.baseline;
        let warm = self.is_warm(base);
        let test = |detector, observed: f64, sum: u64| {
            let p = base.share(sum).clamp(MIN_SHARE, 1.0 - MIN_SHARE);
            let expected = attempts * p;
            let z = surprise(observed.min(attempts), attempts, p);
            Reading {
                detector,
                observed,
                expected,
                z,
                trips: warm
                    && z >= f64::from(self.min_z)
                    && observed - expected >= f64::from(self.min_excess),
            }
        };
        [
            test(Detector::Failures, recent.failures, base.failure_share),
            test(
                Detector::UnknownUsernames,
                recent.unknown,
                base.unknown_share,
            ),
            test(
                Detector::FailedAccounts,
                recent.failed_accounts,
                base.failed_account_share,
            ),
            self.floor(state, now),
        ]
    }

    /// The floor's reading: failures over its sliding window, against the share it trips at.
    fn floor(&self, state: &AttackState, now: UnixMillis) -> Reading {
        let window = self.window_ms.max(1);
        let overlap = (window - now % window) as f64 / window as f64;
        let Settled {
            attempts, failures, ..
        } = Settled::of(&state.floor, &state.previous_floor, overlap);
        let at = attempts * f64::from(self.failure_percent) / 100.0;
        Reading {
            detector: Detector::Floor,
            observed: failures,
            expected: at,
            z: 0.0,
            trips: attempts >= f64::from(self.min_attempts) && attempts > 0.0 && failures >= at,
        }
    }

    /// The signal at `now` as an operator sees it (the state is not changed).
    pub fn assess(&self, state: &AttackState, now: UnixMillis) -> Assessment {
        let mut state = *state;
        self.roll(&mut state, now);
        Assessment {
            at: now,
            trip: state.tripped(now),
            warm: self.is_warm(&state.baseline),
            readings: self.readings(&state, now),
        }
    }

    /// Judges the (rolled) state at `now`: a detector that shows an attack trips the signal,
    /// or extends the trip in force, for `hold_ms`. Returns the trip in force, if any.
    pub fn judge(&self, state: &mut AttackState, now: UnixMillis) -> Option<Trip> {
        let strongest = self
            .readings(state, now)
            .into_iter()
            .filter(|r| r.trips)
            .max_by(|a, b| (a.observed - a.expected).total_cmp(&(b.observed - b.expected)));
        if let Some(reading) = strongest {
            let observed = reading.observed.round() as u32;
            let expected_milli = (reading.expected * 1_000.0).round() as u64;
            self.trip(state, reading.detector, observed, expected_milli, now);
        }
        state.tripped(now)
    }

    /// Trips the signal (or extends the trip in force) by `detector`, which counted `observed`
    /// against `expected_milli`.
    pub fn trip(
        &self,
        state: &mut AttackState,
        detector: Detector,
        observed: u32,
        expected_milli: u64,
        now: UnixMillis,
    ) {
        let since = state.tripped(now).map_or(now, |trip| trip.since);
        state.trip = Some(Trip {
            detector,
            observed,
            expected_milli,
            since,
            until: now.saturating_add(self.hold_ms),
        });
    }

    /// A limit tightened by the factor: a smaller burst, a slower refill.
    pub fn tighten(&self, limit: Gcra) -> Gcra {
        let factor = self.tighten_factor.max(1);
        Gcra {
            burst: (limit.burst / factor).max(1),
            interval_ms: limit.interval_ms.saturating_mul(u64::from(factor)),
        }
    }

    /// When the state holds nothing that matters any more: its windows and trip are over and
    /// its baseline has decayed to nothing (ten half-lives without an attempt).
    pub fn expires_at(&self, state: &AttackState) -> UnixMillis {
        let counted = [
            state.floor,
            state.previous_floor,
            state.current,
            state.previous,
        ]
        .iter()
        .any(|counts| !counts.is_empty())
            || state.baseline.attempts > 0;
        if !counted && state.trip.is_none() {
            return 0;
        }
        let floor = (state.window + 2).saturating_mul(self.window_ms);
        let buckets = (state.bucket + 2).saturating_mul(self.bucket_ms);
        let trip = state.trip.map_or(0, |t| t.until);
        let history = buckets.saturating_add(self.baseline_half_life_ms.saturating_mul(10));
        floor.max(trip).max(history)
    }

    /// The fan-out detector of these settings.
    pub fn fan_out(&self) -> FanOut {
        FanOut {
            usernames: self.fan_out_usernames,
            window_ms: self.fan_out_window_ms,
        }
    }
}

/// The password fan-out: one password failing on many distinct usernames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FanOut {
    /// Distinct usernames that trip it.
    pub usernames: u32,
    /// The window, from the password's first failure in it.
    pub window_ms: u64,
}

/// One password's distinct failed usernames (their keyed hashes, at most `usernames`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FanOutState {
    /// The usernames it failed on in the current window.
    pub usernames: Vec<String>,
    /// When the window ends (0: none open).
    pub window_end: UnixMillis,
}

impl FanOut {
    /// Counts a failure of the password on `username` at `now`; returns how many distinct
    /// usernames it failed on in its window when that trips the detector.
    pub fn on_failure(
        &self,
        state: &mut FanOutState,
        username: &str,
        now: UnixMillis,
    ) -> Option<u32> {
        if now >= state.window_end {
            state.usernames.clear();
            state.window_end = now.saturating_add(self.window_ms);
        }
        let limit = usize::try_from(self.usernames.max(1)).unwrap_or(usize::MAX);
        if state.usernames.len() < limit && !state.usernames.iter().any(|u| u == username) {
            state.usernames.push(username.to_owned());
        }
        let seen = u32::try_from(state.usernames.len()).unwrap_or(u32::MAX);
        (state.usernames.len() >= limit).then_some(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: u64 = 1_000;
    const MINUTE: u64 = 60 * SECOND;
    /// The start of a bucket and of a floor window.
    const T0: UnixMillis = 1_700_000_100_000;

    fn signal() -> AttackSignal {
        crate::Policy::default().global.attack.unwrap()
    }

    /// One second of traffic at `now`: `attempts` attempts, `failures` of them failing (each on
    /// an account of its own), `unknown` of those naming unknown accounts.
    fn second(
        signal: &AttackSignal,
        state: &mut AttackState,
        now: UnixMillis,
        (attempts, failures, unknown): (u32, u32, u32),
    ) {
        for i in 0..attempts {
            let failed = i < failures;
            let sign = Sign {
                failed,
                unknown_username: failed && i < unknown,
                first_failure_of_account: failed,
            };
            signal.count(state, sign, now);
        }
    }

    /// `secs` seconds of a steady legitimate stream: `per_second` attempts a second, one in ten
    /// a typo (a failure then, on the same account, a success), from `start`.
    fn steady(
        signal: &AttackSignal,
        state: &mut AttackState,
        start: UnixMillis,
        secs: u64,
        per_second: u32,
    ) -> bool {
        let mut tripped = false;
        for s in 0..secs {
            let now = start + s * SECOND;
            for i in 0..per_second {
                // Typos: every tenth login, counted once per account per bucket.
                let typo = (s * u64::from(per_second) + u64::from(i)) % 10 == 0;
                if typo {
                    let sign = Sign {
                        failed: true,
                        unknown_username: false,
                        first_failure_of_account: true,
                    };
                    signal.count(state, sign, now);
                }
                signal.count(state, Sign::default(), now);
            }
            signal.roll(state, now);
            tripped |= signal.judge(state, now).is_some();
        }
        tripped
    }

    #[test]
    fn a_cold_service_has_only_the_floor() {
        let signal = signal();
        let mut state = AttackState::default();
        second(&signal, &mut state, T0, (19, 19, 19));
        assert_eq!(signal.judge(&mut state, T0), None, "19 attempts");
        second(&signal, &mut state, T0, (1, 1, 1));
        let trip = signal.judge(&mut state, T0).unwrap();
        assert_eq!(trip.detector, Detector::Floor);
        assert_eq!(trip.until, T0 + signal.hold_ms);
    }

    #[test]
    fn an_assessment_shows_an_attack_before_any_attempt_judges_it() {
        let signal = signal();
        let mut state = AttackState::default();
        second(&signal, &mut state, T0, (19, 19, 19));
        assert!(!signal.assess(&state, T0).shows_attack(), "19 attempts");
        second(&signal, &mut state, T0, (1, 1, 1));
        let unjudged = signal.assess(&state, T0);
        assert_eq!(unjudged.trip, None, "no attempt has judged it yet");
        assert!(unjudged.shows_attack(), "the floor's reading trips");
        signal.judge(&mut state, T0);
        assert!(signal.assess(&state, T0).trip.is_some());
    }

    #[test]
    fn history_starts_with_the_first_count_whenever_the_state_first_rolled() {
        let signal = signal();
        let later = T0 + 30 * MINUTE;
        // One store rolled at start-up and in the quiet after; another only when attempts came.
        let mut rolled_early = AttackState::default();
        signal.roll(&mut rolled_early, T0);
        signal.roll(&mut rolled_early, T0 + 10 * MINUTE);
        steady(&signal, &mut rolled_early, later, 120, 5);
        let mut on_time = AttackState::default();
        steady(&signal, &mut on_time, later, 120, 5);
        assert_eq!(rolled_early, on_time);
        assert!(
            !signal.is_warm(&on_time.baseline),
            "two minutes of history, not thirty"
        );
        // Once its history has decayed to nothing (ten half-lives without an attempt), a state
        // is forgotten as a store forgets the key: it starts afresh.
        let quiet = signal.expires_at(&on_time);
        signal.roll(&mut on_time, quiet);
        let mut fresh = AttackState::default();
        signal.roll(&mut fresh, quiet);
        assert_eq!(on_time, fresh);
    }

    #[test]
    fn a_warm_baseline_sees_a_thin_list_inside_busy_traffic() {
        let signal = signal();
        let mut state = AttackState::default();
        // 12 minutes of 10 logins a second, one in ten a typo: warm, and never tripped.
        assert!(!steady(&signal, &mut state, T0, 12 * 60, 10));
        assert!(signal.is_warm(&state.baseline));
        // Then a list at 3 pairs a second, 30% of them unknown names, under the same traffic.
        let start = T0 + 12 * MINUTE;
        let mut tripped_after = None;
        for s in 0..30u64 {
            let now = start + s * SECOND;
            steady(&signal, &mut state, now, 1, 10);
            for i in 0..3 {
                let unknown = (s * 3 + i) % 10 < 3;
                let sign = Sign {
                    failed: true,
                    unknown_username: unknown,
                    first_failure_of_account: !unknown,
                };
                signal.count(&mut state, sign, now);
            }
            if signal.judge(&mut state, now).is_some() {
                tripped_after = Some(s);
                break;
            }
        }
        let after = tripped_after.expect("the list trips a detector");
        // Its first 18 to 30 pairs: about one hit in a list with 2% reused.
        assert!(after <= 10, "tripped after {after} s");
    }

    #[test]
    fn a_trip_holds_after_the_attack_and_the_baseline_does_not_learn_it() {
        let signal = signal();
        let mut state = AttackState::default();
        assert!(!steady(&signal, &mut state, T0, 12 * 60, 5));
        let start = T0 + 12 * MINUTE;
        second(&signal, &mut state, start, (40, 40, 12));
        let trip = signal.judge(&mut state, start).unwrap();
        // The last ordinary bucket is learned as the view moves past it...
        signal.roll(&mut state, start + signal.bucket_ms);
        let before = state.baseline;
        // ...then quiet again: the trip holds for hold_ms, and the attack's buckets (and the
        // quiet ones it held through) are not learned.
        signal.roll(&mut state, start + 2 * MINUTE);
        assert_eq!(state.tripped(start + 2 * MINUTE), Some(trip));
        assert_eq!(
            (state.baseline.failure_share, state.baseline.attempts),
            (before.failure_share, before.attempts)
        );
        assert_eq!(state.tripped(trip.until), None);
    }

    #[test]
    fn people_answering_their_challenges_let_a_trip_end_and_a_flood_that_does_not_holds_it() {
        let signal = signal();
        for flood in [false, true] {
            let mut state = AttackState::default();
            assert!(!steady(&signal, &mut state, T0, 12 * 60, 10));
            let start = T0 + 12 * MINUTE;
            second(&signal, &mut state, start, (40, 40, 12));
            let trip = signal.judge(&mut state, start).unwrap();
            // Then 10 minutes of the same people, each challenged, answering and getting in (one
            // in ten after a typo), with or without a flood that never answers.
            let mut last = None;
            for s in 1..10 * 60u64 {
                let now = start + s * SECOND;
                for i in 0..10u64 {
                    signal.count_challenge(&mut state, ChallengeStep::Issued, now);
                    signal.count_challenge(&mut state, ChallengeStep::Answered, now);
                    if (s * 10 + i) % 10 == 0 {
                        signal.count(&mut state, Sign::FAILED, now);
                    }
                    signal.count(&mut state, Sign::default(), now);
                }
                if flood {
                    for _ in 0..5 {
                        signal.count_challenge(&mut state, ChallengeStep::Issued, now);
                    }
                }
                last = signal.judge(&mut state, now);
            }
            let end = start + 10 * MINUTE;
            if flood {
                assert_eq!(
                    last.map(|t| t.since),
                    Some(trip.since),
                    "the flood holds it"
                );
            } else {
                assert_eq!(last, None, "the trip ends");
                assert!(state.tripped(end).is_none());
            }
        }
    }

    #[test]
    fn quiet_time_decays_the_baseline_but_keeps_its_shares() {
        let signal = signal();
        let mut state = AttackState::default();
        steady(&signal, &mut state, T0, 12 * 60, 10);
        let busy = state.baseline;
        signal.roll(&mut state, T0 + 12 * MINUTE + 60 * MINUTE);
        let quiet = state.baseline;
        assert!(quiet.attempts < busy.attempts / 2);
        // (The last two busy buckets fold in as the view moves past them; the quiet ones after
        // them have no shares to move.)
        let share = |b: &Baseline| b.share(b.failure_share);
        assert!((share(&quiet) - share(&busy)).abs() < 0.001);
        assert!(quiet.buckets > busy.buckets);
    }

    #[test]
    fn a_burst_of_clean_logins_in_the_history_does_not_make_ordinary_typos_an_attack() {
        // The short drill's clock: 2 s buckets, a 2-minute half-life, warm after 20 s.
        let signal = AttackSignal {
            bucket_ms: 2 * SECOND,
            baseline_half_life_ms: 2 * MINUTE,
            warm_up_ms: 20 * SECOND,
            ..signal()
        };
        let mut state = AttackState::default();
        // Every user's first login at once (300 clean successes), then 2 attempts a second
        // with the usual typos...
        second(&signal, &mut state, T0, (300, 0, 0));
        assert!(!steady(&signal, &mut state, T0 + SECOND, 40, 2));
        assert!(signal.is_warm(&state.baseline));
        // ...rising five-fold: the same share of typos, which the burst must not hide, arriving
        // as typos do, unevenly (five in one second, then none for four).
        let start = T0 + 41 * SECOND;
        for s in 0..60u64 {
            let now = start + s * SECOND;
            let typos = if s % 5 == 0 { 5 } else { 0 };
            second(&signal, &mut state, now, (typos, typos, 0));
            second(&signal, &mut state, now, (10, 0, 0));
            assert_eq!(signal.judge(&mut state, now), None, "{s} s into the surge");
        }
    }

    #[test]
    fn the_surprise_is_the_z_score_at_large_counts_and_honest_at_small_ones() {
        let z_score = |k: f64, n: f64, p: f64| (k - n * p) / (n * p * (1.0 - p)).sqrt();
        // 10,000 attempts at 10%: 1,100 failures are 3.3 standard deviations either way.
        let (large, plain) = (
            surprise(1_100.0, 10_000.0, 0.1),
            z_score(1_100.0, 10_000.0, 0.1),
        );
        assert!((large - plain).abs() < 0.1, "{large} against {plain}");
        assert!(surprise(900.0, 10_000.0, 0.1) < -3.0);
        // 7 failures of 12 at 10% (the binomial tail: 5e-5) are 5.6 by the z-score, not by it.
        assert!(z_score(7.0, 12.0, 0.1) > 5.0);
        let small = surprise(7.0, 12.0, 0.1);
        assert!((3.5..4.5).contains(&small), "{small}");
        // Nothing counted, nothing surprising; all of them failing is.
        assert_eq!(surprise(0.0, 0.0, 0.1), 0.0);
        assert!(surprise(12.0, 12.0, 0.1) > 5.0);
    }

    #[test]
    fn a_password_failing_on_many_usernames_trips_the_fan_out() {
        let fan_out = signal().fan_out();
        let mut state = FanOutState::default();
        for i in 0..fan_out.usernames - 1 {
            assert_eq!(fan_out.on_failure(&mut state, &format!("u{i}"), T0), None);
            assert_eq!(
                fan_out.on_failure(&mut state, &format!("u{i}"), T0),
                None,
                "again"
            );
        }
        assert_eq!(
            fan_out.on_failure(&mut state, "last", T0 + 1),
            Some(fan_out.usernames)
        );
        // A new window starts over.
        let later = T0 + fan_out.window_ms;
        assert_eq!(fan_out.on_failure(&mut state, "u0", later), None);
    }

    #[test]
    fn tightening_divides_the_burst_and_slows_the_refill() {
        let limit = Gcra {
            burst: 30,
            interval_ms: 1_000,
        };
        assert_eq!(
            signal().tighten(limit),
            Gcra {
                burst: 7,
                interval_ms: 4_000
            }
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// A steady legitimate stream, of any volume and typo rate, never trips.
        #[test]
        fn a_steady_stream_never_trips(per_second in 1u32..40, typo_tenths in 0u32..3) {
            let signal = signal();
            let mut state = AttackState::default();
            let mut tripped = false;
            for s in 0..(15 * 60u64) {
                let now = T0 + s * SECOND;
                for i in 0..per_second {
                    if (s * u64::from(per_second) + u64::from(i)) % 10 < u64::from(typo_tenths) {
                        signal.count(&mut state, Sign { failed: true, unknown_username: false, first_failure_of_account: true }, now);
                    }
                    signal.count(&mut state, Sign::default(), now);
                }
                tripped |= signal.judge(&mut state, now).is_some();
            }
            prop_assert!(!tripped);
        }

        /// A surge that multiplies every count (the same shares) never trips.
        #[test]
        fn doubling_every_count_does_not_trip(per_second in 2u32..20, factor in 2u32..6) {
            let signal = signal();
            let mut state = AttackState::default();
            prop_assert!(!steady(&signal, &mut state, T0, 12 * 60, per_second));
            let surge = steady(&signal, &mut state, T0 + 12 * MINUTE, 5 * 60, per_second * factor);
            prop_assert!(!surge);
        }

        /// A list above the floor trips within its first attempts, warm or not.
        #[test]
        fn an_attack_above_the_floor_trips_within_its_first_attempts(
            warm in any::<bool>(), per_second in 2u32..20,
        ) {
            let signal = signal();
            let mut state = AttackState::default();
            let start = if warm {
                steady(&signal, &mut state, T0, 12 * 60, per_second);
                T0 + 12 * MINUTE
            } else {
                T0
            };
            let mut sent = 0;
            let mut tripped = false;
            while !tripped && sent < 200 {
                let now = start + u64::from(sent) * 100;
                signal.count(&mut state, Sign { failed: true, unknown_username: sent % 3 == 0, first_failure_of_account: sent % 3 != 0 }, now);
                sent += 1;
                tripped = signal.judge(&mut state, now).is_some();
            }
            prop_assert!(tripped && sent <= signal.min_attempts + 10, "{} attempts", sent);
        }
    }
}
