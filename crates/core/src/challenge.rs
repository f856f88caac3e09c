//! When an attempt must first solve a proof-of-work challenge, and how hard it is.
//!
//! Limits keyed on an address, a network or an account cannot see a stuffing list spread thin
//! over thousands of addresses that each try once. A challenge can: every attempt costs the
//! sender CPU time, which a person pays once (well under a second) and a list of millions pays
//! per guess. It is asked only where the situation is risky, so the price falls on attackers:
//!
//! - while the service is under attack (the global signal), every attempt without a trusted
//!   device;
//! - with `unfamiliar_networks` on, every attempt without a trusted device from a network its
//!   account has not logged in from (see [`crate::familiar`]);
//! - when the source is already failing: its distinct failed usernames or its failures, as a
//!   share of the limits that would ban or throttle it, at the address, subnet and network level,
//!   reach `risk_percent`;
//! - never for an attempt with a valid device cookie for its username, unless that device itself
//!   is failing: its recorded failures reach `risk_percent` of its lockout threshold (a typo is
//!   not failing; a stolen cookie guessing is).
//!
//! Difficulty is *work*: the expected number of PBKDF2-SHA-256 iterations a solver computes. It
//! rises linearly with the risk, from `min_work` to `max_work`. A solved challenge carries the
//! work it proves; an attempt whose proof is short of the work its risk asks for is challenged
//! again, harder.

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::decision::KeyState;
use crate::keys::{AttemptKey, Dimension};
use crate::policy::{Policy, PolicyError};

/// Risk in thousandths: 0 for a clean source, 1000 at the source's ban thresholds.
pub type Permille = u64;

const FULL_RISK: Permille = 1_000;

/// When to ask for a challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeMode {
    /// Only where the situation is risky (see the module doc).
    Risk,
    /// Every login and registration, device cookie or not (the work still follows the risk).
    Always,
    /// Never.
    Off,
}

/// The challenge settings (`policy.challenge`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengePolicy {
    /// When to ask.
    pub mode: ChallengeMode,
    /// In `risk` mode, a source whose risk reaches this share (percent) of its ban thresholds is
    /// challenged even when the service is not under attack.
    pub risk_percent: u32,
    /// Work asked of a source with no risk: expected PBKDF2-SHA-256 iterations.
    pub min_work: u64,
    /// Work asked of a source at its ban thresholds.
    pub max_work: u64,
    /// In `risk` mode, whether an attempt without a trusted device from a network its account
    /// has not logged in from is challenged (see [`crate::familiar`]).
    pub unfamiliar_networks: bool,
    /// How long a network stays familiar after the account's last login from it, in days.
    pub familiar_days: u32,
}

impl Default for ChallengePolicy {
    fn default() -> Self {
        Self {
            mode: ChallengeMode::Risk,
            // Three distinct usernames failing from one address (of its ten before a ban).
            risk_percent: 30,
            // About 0.3 s on one core at ~3 million iterations per second (browsers' WebCrypto
            // and native code are close), so a person waits well under a second...
            min_work: 1_000_000,
            // ...and a source about to be banned pays several seconds a guess.
            max_work: 16_000_000,
            // A leaked list's first guesses come before any detector can tell them from people.
            unfamiliar_networks: true,
            // Entra ID forgets a familiar location after about this long without a sign-in.
            familiar_days: 90,
        }
    }
}

impl ChallengePolicy {
    /// Checks that the work range is usable.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.min_work == 0 {
            return Err(PolicyError::new("challenge.min_work", "must be at least 1"));
        }
        if self.max_work < self.min_work {
            return Err(PolicyError::new(
                "challenge.max_work",
                "must be at least challenge.min_work",
            ));
        }
        if !(1..=3_650).contains(&self.familiar_days) {
            return Err(PolicyError::new(
                "challenge.familiar_days",
                "must be in 1..=3650",
            ));
        }
        if self.risk_percent > 100 {
            return Err(PolicyError::new(
                "challenge.risk_percent",
                "must be in 0..=100",
            ));
        }
        Ok(())
    }

    /// The work an attempt must prove, if any, given its highest `risk` over its keys, whether
    /// it comes from a trusted device, the under-attack signal, and whether its network is new
    /// to its account (`unfamiliar`: with `unfamiliar_networks` on, no trusted device, and an
    /// account that has not logged in from there). The work grows with the risk, so a store
    /// deciding part of an attempt's keys may ask for a challenge on its own.
    pub fn required(
        &self,
        risk: Permille,
        trusted_device: bool,
        under_attack: bool,
        unfamiliar: bool,
    ) -> Option<u64> {
        let risky = risk >= Permille::from(self.risk_percent) * 10;
        let challenged = match self.mode {
            ChallengeMode::Off => false,
            ChallengeMode::Always => true,
            // A trusted device is judged on its own failures alone, under attack or not.
            ChallengeMode::Risk if trusted_device => risky,
            ChallengeMode::Risk => under_attack || risky || unfamiliar,
        };
        challenged.then(|| self.work_at(risk))
    }

    /// Whether the under-attack signal counts an attempt's challenge, asked or answered (the
    /// arguments as for [`ChallengePolicy::required`]): not when only its network, new to its
    /// account, asks for one. People answer those in a moment, but a challenge counts as a
    /// failure until an answer reaches the signal (often through another replica's flush), so
    /// a burst of first logins on a cold service would trip the floor. A list that never answers
    /// them gets no further than their challenges.
    pub fn signal_counts(
        &self,
        risk: Permille,
        trusted_device: bool,
        under_attack: bool,
        unfamiliar: bool,
    ) -> bool {
        !unfamiliar
            || self
                .required(risk, trusted_device, under_attack, false)
                .is_some()
    }

    /// Until when a network is familiar after a login from it at `now`.
    pub fn familiar_until(&self, now: UnixMillis) -> UnixMillis {
        now.saturating_add(u64::from(self.familiar_days) * 86_400_000)
    }

    /// The work asked at `risk`.
    pub fn work_at(&self, risk: Permille) -> u64 {
        let span = self.max_work - self.min_work.min(self.max_work);
        let risk = risk.min(FULL_RISK);
        // u128: max_work may be large; the result is at most max_work.
        let extra = u128::from(span) * u128::from(risk) / u128::from(FULL_RISK);
        self.min_work + u64::try_from(extra).unwrap_or(span)
    }
}

/// An attempt's challenge, as its keys and the signal ask for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asked {
    /// The work it must prove, if any.
    pub work: Option<u64>,
    /// Whether the under-attack signal counts its challenge, asked or answered (see
    /// [`ChallengePolicy::signal_counts`]).
    pub signal_counts: bool,
}

/// The challenge of an attempt touching `keys` (states before it is counted);
/// `familiar_network`: whether its account has logged in from its network (see
/// [`crate::familiar`]).
pub fn asked(
    policy: &Policy,
    keys: &[AttemptKey],
    states: &[KeyState],
    under_attack: bool,
    familiar_network: bool,
    now: UnixMillis,
) -> Asked {
    let settings = &policy.challenge;
    let mut risk: Permille = 0;
    let mut trusted_device = false;
    for (key, state) in keys.iter().zip(states) {
        let limits = policy.for_dimension(key.dimension);
        if key.dimension.is_source() {
            if let Some(spray) = &limits.spray {
                risk = risk.max(share(
                    u64::from(spray.usernames_at(&state.spray, now)),
                    spray.max_usernames,
                ));
            }
            if let Some(failures) = &limits.failures {
                risk = risk.max(share(failures.used(state.failure_tat, now), failures.burst));
            }
        }
        if key.dimension == Dimension::Device {
            trusted_device = true;
            if let Some(lockout) = &limits.lockout {
                let failed = lockout.recorded_failures(&state.lockout, now);
                risk = risk.max(share(u64::from(failed), lockout.max_failures));
            }
        }
    }
    let unfamiliar = settings.unfamiliar_networks
        && !familiar_network
        && crate::familiar::account_of(keys).is_some();
    Asked {
        work: settings.required(risk, trusted_device, under_attack, unfamiliar),
        signal_counts: settings.signal_counts(risk, trusted_device, under_attack, unfamiliar),
    }
}

/// `part` of `whole`, in thousandths, capped at the whole.
fn share(part: u64, whole: u32) -> Permille {
    (part.saturating_mul(FULL_RISK) / u64::from(whole.max(1))).min(FULL_RISK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceCookies, KeyDeriver, Username};

    const NOW: UnixMillis = 1_700_000_000_000;

    fn keys(device: bool) -> Vec<AttemptKey> {
        let deriver = KeyDeriver::new(b"k", 24, 64, 48).unwrap();
        let name = Username::parse("alice").unwrap();
        let cookies = DeviceCookies::new(b"d");
        let id = cookies
            .verify(&cookies.issue(&name, [1; 16]), &name)
            .unwrap();
        let device = device.then_some(&id);
        deriver.keys("2001:db8::1".parse().unwrap(), &name, device)
    }

    fn fresh(keys: &[AttemptKey]) -> Vec<KeyState> {
        vec![KeyState::default(); keys.len()]
    }

    /// States where the `dimension` key failed on `usernames` distinct usernames just now.
    fn sprayed(keys: &[AttemptKey], dimension: Dimension, usernames: usize) -> Vec<KeyState> {
        let mut states = fresh(keys);
        for (key, state) in keys.iter().zip(&mut states) {
            if key.dimension == dimension {
                state.spray.usernames = (0..usernames).map(|i| i.to_string()).collect();
                state.spray.window_end = NOW + 1;
            }
        }
        states
    }

    #[test]
    fn a_clean_source_is_challenged_only_under_attack() {
        let policy = Policy::default();
        let k = keys(false);
        assert_eq!(asked(&policy, &k, &fresh(&k), false, true, NOW).work, None);
        assert_eq!(
            asked(&policy, &k, &fresh(&k), true, true, NOW).work,
            Some(policy.challenge.min_work)
        );
    }

    #[test]
    fn a_failing_source_is_challenged_and_the_work_rises_with_its_risk() {
        let policy = Policy::default();
        let k = keys(false);
        // Two of ten usernames: 20%, under the 30% threshold.
        assert_eq!(
            asked(
                &policy,
                &k,
                &sprayed(&k, Dimension::Ip, 2),
                false,
                true,
                NOW
            )
            .work,
            None
        );
        let three = asked(
            &policy,
            &k,
            &sprayed(&k, Dimension::Ip, 3),
            false,
            true,
            NOW,
        )
        .work;
        let nine = asked(
            &policy,
            &k,
            &sprayed(&k, Dimension::Ip, 9),
            false,
            true,
            NOW,
        )
        .work;
        assert_eq!(three, Some(policy.challenge.work_at(300)));
        assert!(nine > three, "{nine:?} vs {three:?}");
        // The /48 counts too: 30 of its 60.
        let network = asked(
            &policy,
            &k,
            &sprayed(&k, Dimension::Network, 30),
            false,
            true,
            NOW,
        )
        .work;
        assert_eq!(network, Some(policy.challenge.work_at(500)));
        // A window that closed counts nothing.
        let closed = asked(
            &policy,
            &k,
            &sprayed(&k, Dimension::Ip, 9),
            false,
            true,
            NOW + 2,
        )
        .work;
        assert_eq!(closed, None);
    }

    #[test]
    fn failures_count_as_a_share_of_the_failure_budget() {
        let policy = Policy::default();
        let k = keys(false);
        let mut states = fresh(&k);
        let limit = policy.ip.failures.unwrap();
        let mut tat = 0;
        for _ in 0..limit.burst / 2 {
            tat = limit.charge(tat, NOW);
        }
        states[1].failure_tat = tat;
        assert_eq!(k[1].dimension, Dimension::Ip);
        assert_eq!(
            asked(&policy, &k, &states, false, true, NOW).work,
            Some(policy.challenge.work_at(500))
        );
    }

    #[test]
    fn a_trusted_device_is_challenged_only_when_its_own_failures_reach_the_threshold() {
        let policy = Policy::default();
        let k = keys(true);
        assert_eq!(asked(&policy, &k, &fresh(&k), true, true, NOW).work, None);
        let mut states = fresh(&k);
        states[1].lockout.failures = 1;
        states[1].lockout.last_failure = NOW;
        assert_eq!(
            asked(&policy, &k, &states, true, true, NOW).work,
            None,
            "one typo (20% of 5) is not failing"
        );
        states[1].lockout.failures = 2;
        assert_eq!(
            asked(&policy, &k, &states, false, true, NOW).work,
            Some(policy.challenge.work_at(400))
        );
        // Failures still in flight are not the device's record yet.
        states[1].lockout.in_flight = 2;
        assert_eq!(asked(&policy, &k, &states, false, true, NOW).work, None);
    }

    #[test]
    fn the_modes_always_and_off_override_the_risk() {
        let mut policy = Policy::default();
        let k = keys(true);
        policy.challenge.mode = ChallengeMode::Always;
        assert_eq!(
            asked(&policy, &k, &fresh(&k), false, true, NOW).work,
            Some(policy.challenge.min_work)
        );
        policy.challenge.mode = ChallengeMode::Off;
        let k = keys(false);
        assert_eq!(
            asked(&policy, &k, &sprayed(&k, Dimension::Ip, 9), true, true, NOW).work,
            None
        );
    }

    #[test]
    fn an_unfamiliar_network_is_challenged_only_without_a_trusted_device_and_when_turned_on() {
        let mut policy = Policy::default();
        let k = keys(false);
        assert_eq!(
            asked(&policy, &k, &fresh(&k), false, false, NOW).work,
            Some(policy.challenge.min_work),
            "on by default"
        );
        policy.challenge.unfamiliar_networks = false;
        assert_eq!(asked(&policy, &k, &fresh(&k), false, false, NOW).work, None);
        policy.challenge.unfamiliar_networks = true;
        assert_eq!(
            asked(&policy, &k, &fresh(&k), false, false, NOW).work,
            Some(policy.challenge.min_work)
        );
        assert_eq!(asked(&policy, &k, &fresh(&k), false, true, NOW).work, None);
        // The work still follows the source's risk.
        assert_eq!(
            asked(
                &policy,
                &k,
                &sprayed(&k, Dimension::Ip, 3),
                false,
                false,
                NOW
            )
            .work,
            Some(policy.challenge.work_at(300))
        );
        let device = keys(true);
        assert_eq!(
            asked(&policy, &device, &fresh(&device), false, false, NOW).work,
            None,
            "a trusted device is not asked where it is"
        );
        // The signal counts only the challenges it would ask for itself.
        let signal_counts = |states: &[KeyState], under_attack| {
            asked(&policy, &k, states, under_attack, false, NOW).signal_counts
        };
        assert!(!signal_counts(&fresh(&k), false));
        assert!(signal_counts(&fresh(&k), true));
        assert!(signal_counts(&sprayed(&k, Dimension::Ip, 3), false));
        assert!(asked(&policy, &k, &fresh(&k), false, true, NOW).signal_counts);
    }

    #[test]
    fn bad_work_ranges_are_refused_with_the_setting() {
        let mut policy = Policy::default();
        policy.challenge.max_work = policy.challenge.min_work - 1;
        assert_eq!(
            policy.validate().unwrap_err().to_string(),
            "policy.challenge.max_work: must be at least challenge.min_work"
        );
    }
}
