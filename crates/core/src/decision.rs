//! The decision across dimensions, and what an outcome does to each key.
//!
//! `decide` looks at every key an attempt touches: the attempt is allowed only if no key refuses
//! it, and only an allowed attempt is counted (a refused one changes nothing, so locked counters
//! do not grow). `record` applies the verified outcome.
//!
//! Lockouts count an admitted attempt as a failure at once, before its password is checked:
//! otherwise many concurrent attempts (from many replicas) could all be admitted before the first
//! failures were recorded, and verification would run far more often than the policy allows.
//! Each admission is finished by exactly one of `record` (verified) or `abandon` (never
//! verified, e.g. shed with 503), which settle that provisional count:
//! - a failure lets it stand;
//! - a success on the account's own dimensions takes it back with the recorded failures, but
//!   not the provisional failures of other attempts still in flight;
//! - an abandoned attempt takes back its own count and any lockout its admission started, so a
//!   client retrying on 503 does not lock itself out (it still counts against rate limits).
//!
//! On any other dimension a lockout therefore counts attempts, not failures. The failure limits
//! (`failures`) are charged when a failure is recorded and are never reset.
//!
//! An attempt that is not refused but must first solve a challenge (see [`crate::challenge`])
//! is answered [`Decision::Challenge`]: it counts against the rate limits, so asking for
//! challenges does not help a flood, but not against lockouts or failure limits.
//!
//! The under-attack signal counts outcomes, so that it cannot be steered: a failure, an
//! abandoned attempt (shed at the peak of a flood) and an unanswered challenge each count as a
//! failed attempt; a success counts once per account per signal window (an attacker logging into
//! its own account over and over does not dilute the failure share). Attempts from trusted
//! devices are not counted: stuffing never has one.

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::attack::AttackState;
use crate::backoff::{Backoff, Lockout, LockoutState};
use crate::challenge;
use crate::gcra::GcraVerdict;
use crate::keys::{AttemptKey, Dimension};
use crate::policy::{KeyPolicy, Policy};
use crate::spray::SprayState;

/// Everything the policy remembers about one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// Theoretical arrival time of the attempts limit (0: fresh).
    pub attempt_tat: UnixMillis,
    /// Theoretical arrival time of the throttle, the slow attempts limit (0: fresh).
    pub throttle_tat: UnixMillis,
    /// Theoretical arrival time of the failures limit (0: fresh).
    pub failure_tat: UnixMillis,
    /// Consecutive failures and lockout.
    pub lockout: LockoutState,
    /// Distinct usernames failed from this source, and its ban.
    pub spray: SprayState,
    /// Service-wide attempts and failures (the global key only).
    pub attack: AttackState,
    /// Until when this account's successes are already counted by the under-attack signal (the
    /// end of the signal window of its last counted success; account keys only).
    pub success_counted_until: UnixMillis,
}

impl KeyState {
    /// When this state becomes equivalent to a fresh one, so a store may forget it
    /// (`None`: never, the key is permanently locked).
    pub fn expires_at(&self, policy: &KeyPolicy) -> Option<UnixMillis> {
        let lockout = match &policy.lockout {
            Some(backoff) => backoff.expires_at(&self.lockout)?,
            None => 0,
        };
        let spray = policy
            .spray
            .as_ref()
            .map_or(0, |s| s.expires_at(&self.spray));
        let attack = policy
            .attack
            .as_ref()
            .map_or(0, |a| a.expires_at(&self.attack));
        Some(
            attack
                .max(self.success_counted_until)
                .max(self.attempt_tat)
                .max(self.throttle_tat)
                .max(self.failure_tat)
                .max(lockout)
                .max(spray),
        )
    }
}

/// Why an attempt was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Too many attempts.
    RateLimited,
    /// A suspicious source used up its long-term attempt budget.
    Throttled,
    /// Too many failures.
    TooManyFailures,
    /// A lockout is in force.
    LockedOut,
    /// The source is banned for spraying many usernames.
    Banned,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 5] = [
        Reason::RateLimited,
        Reason::Throttled,
        Reason::TooManyFailures,
        Reason::LockedOut,
        Reason::Banned,
    ];

    /// The reason's name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RateLimited => "rate_limited",
            Reason::Throttled => "throttled",
            Reason::TooManyFailures => "too_many_failures",
            Reason::LockedOut => "locked_out",
            Reason::Banned => "banned",
        }
    }
}

/// A refusal: which dimension refused, why, and when to come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The dimension with the longest wait.
    pub dimension: Dimension,
    /// Why that dimension refused.
    pub reason: Reason,
    /// Milliseconds until every refusing key would admit the attempt (at least 1).
    pub retry_after_ms: u64,
}

impl Denial {
    /// The wait in whole seconds, rounded up, for a `Retry-After` header.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after_ms.div_ceil(1_000).max(1)
    }
}

/// The decision on one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go on to verify the password.
    Allow {
        /// Lockouts this attempt started by being counted: they stand if it fails; a success
        /// clears them on the account's dimensions.
        pending: Vec<LockoutEvent>,
        /// Whether the service is under attack (per-address limits were tightened).
        under_attack: bool,
    },
    /// Refuse before any password work until a challenge of this much work is solved (the
    /// attempt was counted against the rate limits).
    Challenge {
        /// Expected PBKDF2-SHA-256 iterations (see [`crate::challenge`]).
        work: u64,
    },
    /// Refuse before any password work.
    Deny(Denial),
}

impl Decision {
    /// Whether the attempt may go on to verification.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// Whether the attempt was counted (allowed or challenged), so its states must be saved.
    pub fn counts(&self) -> bool {
        !matches!(self, Decision::Deny(_))
    }
}

/// A verified attempt's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The password matched.
    Success,
    /// The password did not match, or the account does not exist.
    Failure,
}

/// A lockout that an outcome started on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockoutEvent {
    /// The locked key.
    pub key: AttemptKey,
    /// How long for.
    pub lockout: Lockout,
}

/// The refusals of one key at `now` (each with its wait), or the state with the attempt counted.
fn check_key(
    policy: &KeyPolicy,
    state: &KeyState,
    now: UnixMillis,
) -> Result<KeyState, (Reason, u64)> {
    let mut refusal: Option<(Reason, u64)> = None;
    let mut refuse = |reason, wait: u64| {
        if refusal.is_none_or(|(_, longest)| wait > longest) {
            refusal = Some((reason, wait));
        }
    };
    if let Some(wait) = policy
        .spray
        .as_ref()
        .and_then(|s| s.banned_for(&state.spray, now))
    {
        refuse(Reason::Banned, wait);
    }
    if let Some(wait) = policy
        .lockout
        .as_ref()
        .and_then(|b| b.locked_for(&state.lockout, now))
    {
        refuse(Reason::LockedOut, wait);
    }
    if let Some(limit) = &policy.failures
        && let GcraVerdict::Refuse { retry_after_ms } = limit.check(state.failure_tat, now)
    {
        refuse(Reason::TooManyFailures, retry_after_ms);
    }
    let mut next = state.clone();
    if let Some(limit) = &policy.attempts {
        match limit.check(state.attempt_tat, now) {
            GcraVerdict::Admit { new_tat } => next.attempt_tat = new_tat,
            GcraVerdict::Refuse { retry_after_ms } => refuse(Reason::RateLimited, retry_after_ms),
        }
    }
    if let Some(limit) = &policy.throttle {
        match limit.check(state.throttle_tat, now) {
            GcraVerdict::Admit { new_tat } => next.throttle_tat = new_tat,
            GcraVerdict::Refuse { retry_after_ms } => refuse(Reason::Throttled, retry_after_ms),
        }
    }
    match refusal {
        Some(refused) => Err(refused),
        None => Ok(next),
    }
}

/// Decides an attempt touching `keys` whose current states are `states` (same order), carrying
/// a solved challenge of `proof_work` (0: none). When allowed, `states` are updated to count the
/// attempt (on lockouts, as a failure); when challenged, to count it against the rate limits and
/// as a failure of the under-attack signal; when refused, they are unchanged.
pub fn decide(
    policy: &Policy,
    keys: &[AttemptKey],
    states: &mut [KeyState],
    proof_work: u64,
    now: UnixMillis,
) -> Decision {
    let under_attack = keys.iter().zip(states.iter()).any(|(key, state)| {
        policy
            .for_dimension(key.dimension)
            .attack
            .is_some_and(|signal| {
                let mut rolled = state.attack;
                signal.roll(&mut rolled, now);
                signal.under_attack(&rolled, now)
            })
    });
    let mut counted = Vec::with_capacity(states.len());
    let mut denial: Option<Denial> = None;
    for (key, state) in keys.iter().zip(states.iter()) {
        let limits = policy.effective(key.dimension, under_attack);
        match check_key(&limits, state, now) {
            Ok(next) => counted.push(next),
            Err((reason, wait)) => {
                if denial.is_none_or(|d| wait > d.retry_after_ms) {
                    denial = Some(Denial {
                        dimension: key.dimension,
                        reason,
                        retry_after_ms: wait.max(1),
                    });
                }
            }
        }
    }
    if let Some(denial) = denial {
        return Decision::Deny(denial);
    }
    let required = challenge::required_work(policy, keys, states, under_attack, now);
    states.clone_from_slice(&counted);
    if let Some(work) = required.filter(|&work| proof_work < work) {
        count_in_signal(policy, keys, states, true, now);
        return Decision::Challenge { work };
    }
    let mut pending = Vec::new();
    for (key, state) in keys.iter().zip(states.iter_mut()) {
        if let Some(backoff) = &policy.for_dimension(key.dimension).lockout {
            let (locked, lockout) = backoff.on_admission(&state.lockout, now);
            state.lockout = locked;
            if let Some(lockout) = lockout {
                pending.push(LockoutEvent {
                    key: key.clone(),
                    lockout,
                });
            }
        }
    }
    Decision::Allow {
        pending,
        under_attack,
    }
}

/// Counts one finished attempt in the under-attack signal (on the global key), unless it came
/// from a trusted device: stuffing never carries a device cookie, and the owners' own logins
/// must not dilute what it does carry.
fn count_in_signal(
    policy: &Policy,
    keys: &[AttemptKey],
    states: &mut [KeyState],
    failed: bool,
    now: UnixMillis,
) {
    if keys.iter().any(|k| k.dimension == Dimension::Device) {
        return;
    }
    for (key, state) in keys.iter().zip(states.iter_mut()) {
        if let Some(signal) = &policy.for_dimension(key.dimension).attack {
            signal.roll(&mut state.attack, now);
            state.attack.attempts = state.attack.attempts.saturating_add(1);
            if failed {
                state.attack.failures = state.attack.failures.saturating_add(1);
            }
        }
    }
}

/// Whether a success is the account's first in the signal window of `now`; if so, marks it
/// counted on the account's username key. Without that key in the store every success counts.
fn first_success_in_window(
    policy: &Policy,
    keys: &[AttemptKey],
    states: &mut [KeyState],
    now: UnixMillis,
) -> bool {
    let Some(signal) = policy.global.attack else {
        return false;
    };
    let window_end = (now / signal.window_ms.max(1) + 1).saturating_mul(signal.window_ms);
    let account = keys.iter().position(|k| k.dimension == Dimension::Username);
    let Some(state) = account.and_then(|i| states.get_mut(i)) else {
        return true;
    };
    if state.success_counted_until > now {
        return false;
    }
    state.success_counted_until = window_end;
    true
}

/// The lockout that an admission started on `key`, among its `pending` lockouts.
pub fn started_on(pending: &[LockoutEvent], key: &AttemptKey) -> Option<Lockout> {
    pending.iter().find(|l| l.key == *key).map(|l| l.lockout)
}

/// Applies a verified attempt's outcome to the states of its keys (`pending`: the lockouts its
/// admission started): a failure charges the failure limits (its lockout count was taken at
/// admission) and adds `username` (its keyed hash) to each source's distinct usernames; a
/// success settles the account's lockouts (see the module doc); both count in the under-attack
/// signal. Returns the bans the failure started.
pub fn record(
    policy: &Policy,
    keys: &[AttemptKey],
    states: &mut [KeyState],
    outcome: Outcome,
    username: &str,
    pending: &[LockoutEvent],
    now: UnixMillis,
) -> Vec<LockoutEvent> {
    let failed = outcome == Outcome::Failure;
    if failed || first_success_in_window(policy, keys, states, now) {
        count_in_signal(policy, keys, states, failed, now);
    }
    let mut bans = Vec::new();
    for (key, state) in keys.iter().zip(states.iter_mut()) {
        let limits = policy.for_dimension(key.dimension);
        if limits.lockout.is_some() {
            state.lockout = match outcome {
                Outcome::Success if key.dimension.resets_on_success() => {
                    Backoff::on_success(&state.lockout, started_on(pending, key))
                }
                _ => Backoff::on_verified(&state.lockout),
            };
        }
        if failed {
            if let Some(limit) = &limits.failures {
                state.failure_tat = limit.charge(state.failure_tat, now);
            }
            if let Some(spray) = &limits.spray
                && let Some(until) = spray.on_failure(&mut state.spray, username, now)
            {
                bans.push(LockoutEvent {
                    key: key.clone(),
                    lockout: Lockout::Ban { until },
                });
            }
        }
    }
    bans
}

/// Settles an admission that was never verified (`pending`: the lockouts it started): its
/// provisional lockout failures and those lockouts are taken back; the rate limits keep counting
/// it, and the under-attack signal counts it as a failure (shedding must not hide a flood).
pub fn abandon(
    policy: &Policy,
    keys: &[AttemptKey],
    states: &mut [KeyState],
    pending: &[LockoutEvent],
    now: UnixMillis,
) {
    count_in_signal(policy, keys, states, true, now);
    for (key, state) in keys.iter().zip(states.iter_mut()) {
        if policy.for_dimension(key.dimension).lockout.is_some() {
            state.lockout = Backoff::on_abandon(&state.lockout, started_on(pending, key));
        }
    }
}
