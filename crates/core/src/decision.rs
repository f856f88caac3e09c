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
//! abandoned attempt (shed at the peak of a flood) and a challenge no attempt answers each count
//! as a failed attempt (not one asked only for a network new to its account, see
//! [`crate::ChallengePolicy::signal_counts`]); a success counts once per account per signal bucket (an attacker logging
//! into its own account over and over does not dilute the failure share). Attempts from trusted
//! devices are not counted: stuffing never has one.

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::attack::{AttackSignal, AttackState, ChallengeStep, Detector, Sign};
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
    /// end of the signal's bucket of its last counted success; account keys only).
    pub success_counted_until: UnixMillis,
    /// Until when this account's failures are already counted among the signal's distinct
    /// failed accounts (the end of the bucket of its last counted failure; account keys only).
    pub failure_counted_until: UnixMillis,
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
                .max(self.failure_counted_until)
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
/// a solved challenge of `proof_work` (0: none), from a network its account has logged in from
/// or not (`familiar_network`, see [`crate::familiar`]). When allowed, `states` are updated to
/// count the attempt (on lockouts, as a failure); when challenged, to count it against the rate
/// limits and as a challenge of the under-attack signal (a failure until answered; not when
/// only its network asked for it, see [`crate::ChallengePolicy::signal_counts`]); when refused,
/// they are unchanged.
pub fn decide(
    policy: &Policy,
    keys: &[AttemptKey],
    states: &mut [KeyState],
    proof_work: u64,
    familiar_network: bool,
    now: UnixMillis,
) -> Decision {
    // The signal as it stands with this attempt: judged now, kept if the attempt counts.
    let judged = keys.iter().zip(states.iter()).find_map(|(key, state)| {
        let signal = policy.for_dimension(key.dimension).attack?;
        let mut attack = state.attack;
        signal.roll(&mut attack, now);
        signal.judge(&mut attack, now);
        Some(attack)
    });
    let under_attack = judged.is_some_and(|attack| attack.tripped(now).is_some());
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
    let asked = challenge::asked(policy, keys, states, under_attack, familiar_network, now);
    states.clone_from_slice(&counted);
    if let Some(attack) = judged {
        for (key, state) in keys.iter().zip(states.iter_mut()) {
            if policy.for_dimension(key.dimension).attack.is_some() {
                state.attack = attack;
            }
        }
    }
    if proof_work > 0 && asked.signal_counts {
        count_in_signal(policy, keys, states, |signal, attack| {
            signal.count_challenge(attack, ChallengeStep::Answered, now)
        });
    }
    if let Some(work) = asked.work.filter(|&work| proof_work < work) {
        if asked.signal_counts {
            count_in_signal(policy, keys, states, |signal, attack| {
                signal.count_challenge(attack, ChallengeStep::Issued, now)
            });
        }
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

/// Counts what an attempt tells in the under-attack signal (on the global key), unless it came
/// from a trusted device: stuffing never carries a device cookie, and the owners' own logins
/// must not dilute what it does carry.
fn count_in_signal(
    policy: &Policy,
    keys: &[AttemptKey],
    states: &mut [KeyState],
    count: impl Fn(&AttackSignal, &mut AttackState),
) {
    if keys.iter().any(|k| k.dimension == Dimension::Device) {
        return;
    }
    for (key, state) in keys.iter().zip(states.iter_mut()) {
        if let Some(signal) = &policy.for_dimension(key.dimension).attack {
            count(signal, &mut state.attack);
        }
    }
}

/// A verified attempt: its outcome, and what verifying found for the under-attack signal (the
/// guard's to tell the store).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The outcome.
    pub outcome: Outcome,
    /// It named no account here.
    pub unknown_username: bool,
    /// The keyed digest of a wrong password (see `KeyDeriver::password_digest`), for the
    /// password fan-out, which the store keeps ([`crate::attack::FanOut`]).
    pub password: Option<u64>,
}

impl From<Outcome> for Verified {
    fn from(outcome: Outcome) -> Self {
        Self {
            outcome,
            unknown_username: false,
            password: None,
        }
    }
}

/// Whether this is the account's first outcome of its kind in the period of `now` that
/// `period_ms` cuts (`counted_until`: the field of the account's username key that remembers the
/// end of the last period it counted in); if so, marks it. Without that key every one counts.
fn first_in_period(
    keys: &[AttemptKey],
    states: &mut [KeyState],
    counted_until: fn(&mut KeyState) -> &mut UnixMillis,
    period_ms: u64,
    now: UnixMillis,
) -> bool {
    let account = keys.iter().position(|k| k.dimension == Dimension::Username);
    let Some(state) = account.and_then(|i| states.get_mut(i)) else {
        return true;
    };
    let until = counted_until(state);
    if *until > now {
        return false;
    }
    *until = (now / period_ms.max(1) + 1).saturating_mul(period_ms);
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
/// signal, with what verifying found. Returns the bans the failure started.
pub fn record(
    policy: &Policy,
    keys: &[AttemptKey],
    states: &mut [KeyState],
    verified: Verified,
    username: &str,
    pending: &[LockoutEvent],
    now: UnixMillis,
) -> Vec<LockoutEvent> {
    let Verified {
        outcome,
        unknown_username,
        ..
    } = verified;
    let failed = outcome == Outcome::Failure;
    // A success counts once per account per bucket (logging into one's own account again and
    // again dilutes nothing, and a busy hour's repeat logins count as a quiet hour's do, so the
    // shares the detectors judge do not move with the volume); a failure counts among the
    // distinct failed accounts once per bucket.
    if let Some(signal) = policy.global.attack
        && (failed
            || first_in_period(
                keys,
                states,
                |s| &mut s.success_counted_until,
                signal.bucket_ms,
                now,
            ))
    {
        let first_failure = |states: &mut [KeyState]| {
            first_in_period(
                keys,
                states,
                |s| &mut s.failure_counted_until,
                signal.bucket_ms,
                now,
            )
        };
        let sign = Sign {
            failed,
            unknown_username,
            first_failure_of_account: failed && first_failure(states),
        };
        count_in_signal(policy, keys, states, |signal, attack| {
            signal.count(attack, sign, now)
        });
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

/// Trips the under-attack signal by the password fan-out: a failed password has now failed on
/// `usernames` distinct usernames (the store's [`crate::attack::FanOut`] said so).
pub fn trip_fan_out(
    policy: &Policy,
    keys: &[AttemptKey],
    states: &mut [KeyState],
    usernames: u32,
    now: UnixMillis,
) {
    for (key, state) in keys.iter().zip(states.iter_mut()) {
        if let Some(signal) = &policy.for_dimension(key.dimension).attack {
            let at = u64::from(signal.fan_out_usernames) * 1_000;
            signal.trip(
                &mut state.attack,
                Detector::PasswordFanOut,
                usernames,
                at,
                now,
            );
        }
    }
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
    count_in_signal(policy, keys, states, |signal, attack| {
        signal.count(attack, Sign::FAILED, now)
    });
    for (key, state) in keys.iter().zip(states.iter_mut()) {
        if policy.for_dimension(key.dimension).lockout.is_some() {
            state.lockout = Backoff::on_abandon(&state.lockout, started_on(pending, key));
        }
    }
}
