//! A table of key states that applies the policy: the reference model of every store.
//!
//! The memory store is this table behind a lock; the Redis store implements the same
//! transitions in Lua and is tested against it. Expired entries read as fresh, and are swept
//! whenever the table has doubled since the last sweep or a minute has passed, so memory stays
//! proportional to the keys that are live.

use std::collections::HashMap;

use crate::UnixMillis;
use crate::attack::{FanOut, FanOutState};
use crate::decision::{self, Decision, KeyState, LockoutEvent, Outcome, Verified};
use crate::familiar::{self, FamiliarNetworks};
use crate::keys::{AttemptKey, Dimension};
use crate::policy::Policy;

/// The fewest entries before sweeping for size is worth it.
const MIN_SWEEP_LEN: usize = 1_024;
/// The longest time between sweeps, so a flood that stopped is forgotten.
const SWEEP_INTERVAL_MS: UnixMillis = 60_000;

#[derive(Clone, Debug)]
struct Entry {
    state: KeyState,
    /// `None`: kept until cleared (a permanent lockout).
    expires_at: Option<UnixMillis>,
}

impl Entry {
    fn is_live(&self, now: UnixMillis) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// Key states by store key.
#[derive(Debug)]
pub struct StateTable {
    entries: HashMap<String, Entry>,
    /// The password fan-out's failed passwords (keyed digests), until their windows end.
    fan_out: FanOutTable,
    /// Each account's familiar networks, by its username key (kept apart from its state: they
    /// outlive its counters by weeks).
    familiar: HashMap<String, FamiliarNetworks>,
    /// Sweep expired entries when the table reaches this length...
    sweep_at: usize,
    /// ...or when a write comes after this time.
    sweep_after: UnixMillis,
}

impl Default for StateTable {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            fan_out: FanOutTable::default(),
            familiar: HashMap::new(),
            sweep_at: MIN_SWEEP_LEN,
            sweep_after: 0,
        }
    }
}

impl StateTable {
    /// The live state of a key at `now` (`None`: fresh).
    pub fn state(&self, key: &str, now: UnixMillis) -> Option<KeyState> {
        self.entries
            .get(key)
            .filter(|e| e.is_live(now))
            .map(|e| e.state.clone())
    }

    fn load(&self, keys: &[AttemptKey], now: UnixMillis) -> Vec<KeyState> {
        keys.iter()
            .map(|k| self.state(&k.key, now).unwrap_or_default())
            .collect()
    }

    fn save(
        &mut self,
        policy: &Policy,
        keys: &[AttemptKey],
        states: Vec<KeyState>,
        now: UnixMillis,
    ) {
        for (key, state) in keys.iter().zip(states) {
            let expires_at = state.expires_at(policy.for_dimension(key.dimension));
            let entry = Entry { state, expires_at };
            if entry.is_live(now) {
                self.entries.insert(key.key.clone(), entry);
            } else {
                self.entries.remove(&key.key);
            }
        }
        if self.entries.len() >= self.sweep_at || now > self.sweep_after {
            self.sweep(now);
        }
    }

    /// Forgets every expired entry and gives their memory back.
    pub fn sweep(&mut self, now: UnixMillis) {
        self.fan_out.sweep(now);
        self.familiar.retain(|_, known| known.expires_at() > now);
        self.entries.retain(|_, e| e.is_live(now));
        self.entries.shrink_to(self.entries.len() * 2);
        self.sweep_at = (self.entries.len() * 2).max(MIN_SWEEP_LEN);
        self.sweep_after = now.saturating_add(SWEEP_INTERVAL_MS);
    }

    /// Entries held, live or not yet swept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Decides an attempt carrying a proof of `proof_work` (0: none) and counts it unless refused
    /// (see [`decision::decide`]).
    pub fn attempt(
        &mut self,
        policy: &Policy,
        keys: &[AttemptKey],
        proof_work: u64,
        now: UnixMillis,
    ) -> Decision {
        let mut states = self.load(keys, now);
        let familiar = self.knows_network(keys, now);
        let decision = decision::decide(policy, keys, &mut states, proof_work, familiar, now);
        if decision.counts() {
            self.save(policy, keys, states, now);
        }
        decision
    }

    /// Applies a verified outcome of an admission that started the `pending` lockouts (see
    /// [`decision::record`]); returns the bans it started.
    pub fn record(
        &mut self,
        policy: &Policy,
        keys: &[AttemptKey],
        verified: Verified,
        username: &str,
        pending: &[LockoutEvent],
        now: UnixMillis,
    ) -> Vec<LockoutEvent> {
        let mut states = self.load(keys, now);
        let bans = decision::record(policy, keys, &mut states, verified, username, pending, now);
        if verified.outcome == Outcome::Success {
            self.remember_network(policy, keys, now);
        }
        let signal = policy
            .global
            .attack
            .filter(|_| keys.iter().any(|k| k.dimension == Dimension::Global));
        if let (Some(signal), Some(password), Outcome::Failure) =
            (signal, verified.password, verified.outcome)
            && let Some(usernames) = self.fan_out.fail(signal.fan_out(), password, username, now)
        {
            decision::trip_fan_out(policy, keys, &mut states, usernames, now);
        }
        self.save(policy, keys, states, now);
        bans
    }

    /// Settles an admission that was never verified (see [`decision::abandon`]).
    pub fn abandon(
        &mut self,
        policy: &Policy,
        keys: &[AttemptKey],
        pending: &[LockoutEvent],
        now: UnixMillis,
    ) {
        let mut states = self.load(keys, now);
        decision::abandon(policy, keys, &mut states, pending, now);
        self.save(policy, keys, states, now);
    }

    /// Makes the network of `keys` familiar to their account (a login succeeded from it, or the
    /// account was registered there), when the policy asks about networks.
    pub fn remember_network(&mut self, policy: &Policy, keys: &[AttemptKey], now: UnixMillis) {
        let settings = &policy.challenge;
        if let (true, Some(account), Some(network)) = (
            settings.unfamiliar_networks,
            familiar::account_of(keys),
            familiar::network_of(keys),
        ) {
            let known = self.familiar.entry(account.key.clone()).or_default();
            known.remember(&network.key, settings.familiar_until(now), now);
        }
    }

    /// Whether the account of `keys` has logged in from their network (true when they name no
    /// account or no network: there is nothing to judge).
    fn knows_network(&self, keys: &[AttemptKey], now: UnixMillis) -> bool {
        match (familiar::account_of(keys), familiar::network_of(keys)) {
            (Some(account), Some(network)) => self
                .familiar
                .get(&account.key)
                .is_some_and(|known| known.knows(&network.key, now)),
            _ => true,
        }
    }

    /// Forgets a key entirely (an administrator's unlock).
    pub fn clear(&mut self, key: &str) -> bool {
        self.entries.remove(key).is_some()
    }
}

/// Failed passwords' distinct usernames, by the passwords' keyed digests.
#[derive(Debug, Default)]
struct FanOutTable {
    passwords: HashMap<u64, FanOutState>,
    /// Sweep passwords whose window ended when this many are held (twice what the last kept).
    sweep_at: usize,
}

impl FanOutTable {
    /// Counts `password` failing on `username`; the distinct usernames when that trips.
    fn fail(
        &mut self,
        fan_out: FanOut,
        password: u64,
        username: &str,
        now: UnixMillis,
    ) -> Option<u32> {
        let tripped =
            fan_out.on_failure(self.passwords.entry(password).or_default(), username, now);
        if self.passwords.len() >= self.sweep_at.max(MIN_SWEEP_LEN) {
            self.sweep(now);
        }
        tripped
    }

    fn sweep(&mut self, now: UnixMillis) {
        self.passwords.retain(|_, state| state.window_end > now);
        self.passwords.shrink_to(self.passwords.len() * 2);
        self.sweep_at = self.passwords.len() * 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Dimension, KeyDeriver};
    use crate::username::Username;
    use crate::{Denial, Reason};
    use proptest::prelude::*;
    use std::net::IpAddr;

    const T0: UnixMillis = 1_700_000_000_000;

    /// The default limits without challenges, to watch the limits alone.
    fn limits_only() -> Policy {
        let mut policy = Policy::default();
        policy.challenge.mode = crate::ChallengeMode::Off;
        policy
    }

    fn keys(ip: &str, user: &str) -> Vec<AttemptKey> {
        let deriver = KeyDeriver::new(b"test", 24, 64, 48).unwrap();
        let ip: IpAddr = ip.parse().unwrap();
        limits_only().active_keys(deriver.keys(ip, &Username::parse(user).unwrap(), None))
    }

    /// The username's keyed hash, as the guard passes it to `record`.
    fn user_of(keys: &[AttemptKey]) -> &str {
        let account =
            |k: &&AttemptKey| matches!(k.dimension, Dimension::Username | Dimension::Device);
        &keys.iter().find(account).unwrap().key
    }

    fn key_of(keys: &[AttemptKey], dimension: Dimension) -> &str {
        &keys.iter().find(|k| k.dimension == dimension).unwrap().key
    }

    /// Settles an admitted `decision` with a verified `outcome`, as the guard does.
    fn settle(
        table: &mut StateTable,
        policy: &Policy,
        keys: &[AttemptKey],
        decision: &Decision,
        outcome: Outcome,
        now: UnixMillis,
    ) {
        if let Decision::Allow { pending, .. } = decision {
            table.record(policy, keys, outcome.into(), user_of(keys), pending, now);
        }
    }

    /// Attempts and, if admitted, records `outcome`, as a login does whose client solves any
    /// challenge (it carries an ample proof).
    fn login(
        table: &mut StateTable,
        policy: &Policy,
        keys: &[AttemptKey],
        outcome: Outcome,
        now: UnixMillis,
    ) -> Decision {
        let decision = table.attempt(policy, keys, u64::MAX, now);
        settle(table, policy, keys, &decision, outcome, now);
        decision
    }

    /// Attempts then fails, as a login with a wrong password does.
    fn fail(table: &mut StateTable, keys: &[AttemptKey], now: UnixMillis) -> Decision {
        login(table, &limits_only(), keys, Outcome::Failure, now)
    }

    #[test]
    fn the_sixth_wrong_password_for_one_username_is_refused_from_any_ip() {
        let mut table = StateTable::default();
        for i in 0..5 {
            let from = keys(&format!("198.51.{i}.1"), "alice");
            assert!(fail(&mut table, &from, T0 + i).is_allowed());
        }
        let elsewhere = keys("203.0.113.9", "Alice");
        let Decision::Deny(denial) = table.attempt(&limits_only(), &elsewhere, 0, T0 + 10) else {
            panic!("sixth attempt allowed");
        };
        assert_eq!(
            denial,
            Denial {
                dimension: Dimension::Username,
                reason: Reason::LockedOut,
                retry_after_ms: 60_000 - 6,
            }
        );
        assert_eq!(denial.retry_after_secs(), 60);
        let after = T0 + 4 + 60_000;
        assert!(
            table
                .attempt(&limits_only(), &elsewhere, 0, after)
                .is_allowed()
        );
    }

    #[test]
    fn concurrent_attempts_cannot_outrun_the_lockout_before_their_failures_are_recorded() {
        let mut table = StateTable::default();
        let policy = limits_only();
        // Ten attempts admitted back to back, none verified yet: the lockout counts each one.
        let decisions: Vec<Decision> = (0..10)
            .map(|i| table.attempt(&policy, &keys(&format!("198.51.{i}.1"), "erin"), 0, T0))
            .collect();
        assert_eq!(decisions.iter().filter(|d| d.is_allowed()).count(), 5);
        let Decision::Allow { pending, .. } = &decisions[4] else {
            panic!("fifth attempt refused");
        };
        assert_eq!(
            pending.len(),
            1,
            "the fifth attempt starts the username lockout"
        );
        assert_eq!(pending[0].key.dimension, Dimension::Username);
    }

    #[test]
    fn one_address_failing_on_ten_usernames_is_banned() {
        let mut table = StateTable::default();
        let policy = limits_only();
        for i in 0..10 {
            let k = keys("203.0.113.9", &format!("sprayed{i}"));
            assert!(fail(&mut table, &k, T0 + i).is_allowed(), "attempt {i}");
        }
        let Decision::Deny(denial) =
            table.attempt(&policy, &keys("203.0.113.9", "next"), 0, T0 + 10)
        else {
            panic!("the 11th username was admitted");
        };
        assert_eq!(
            (denial.dimension, denial.reason),
            (Dimension::Ip, Reason::Banned)
        );
        assert_eq!(denial.retry_after_ms, 15 * 60_000 - 1);
        // Another address in the same subnet is not banned (the subnet's threshold is 30).
        assert!(
            table
                .attempt(&policy, &keys("203.0.113.10", "next"), 0, T0 + 10)
                .is_allowed()
        );
    }

    #[test]
    fn a_source_past_its_long_term_budget_is_throttled_whatever_the_outcome() {
        let mut table = StateTable::default();
        let mut policy = limits_only();
        policy.ip.throttle = Some(crate::gcra::Gcra {
            burst: 3,
            interval_ms: 864_000,
        });
        for i in 0..3 {
            let k = keys("192.0.2.44", "regular");
            let decision = login(&mut table, &policy, &k, Outcome::Success, T0 + i * 2_000);
            assert!(decision.is_allowed());
        }
        let Decision::Deny(denial) =
            table.attempt(&policy, &keys("192.0.2.44", "regular"), 0, T0 + 6_000)
        else {
            panic!("the fourth attempt was admitted");
        };
        assert_eq!(
            (denial.dimension, denial.reason),
            (Dimension::Ip, Reason::Throttled)
        );
    }

    #[test]
    fn a_surge_of_failures_puts_the_service_under_attack_and_tightens_address_limits() {
        let mut table = StateTable::default();
        let mut policy = limits_only();
        if let Some(signal) = policy.global.attack.as_mut() {
            signal.min_attempts = 10;
        }
        let attempt = |table: &mut StateTable, ip: &str, user: &str, now| {
            login(table, &policy, &keys(ip, user), Outcome::Failure, now)
        };
        for i in 0..10 {
            let decision = attempt(&mut table, &format!("10.0.{i}.1"), &format!("u{i}"), T0);
            assert!(admitted_calm(&decision), "{i}");
        }
        // Now 10 of 10 failed: a fresh address gets a quarter of its usual burst of 30.
        let admitted: Vec<Decision> = (0..8)
            .map(|i| attempt(&mut table, "192.0.2.200", &format!("x{i}"), T0 + 1))
            .collect();
        assert!(matches!(
            admitted[0],
            Decision::Allow {
                under_attack: true,
                ..
            }
        ));
        assert_eq!(admitted.iter().filter(|d| d.is_allowed()).count(), 7);
        assert!(matches!(admitted[7], Decision::Deny(d) if d.reason == Reason::RateLimited));
    }

    /// Whether an attempt was admitted while the service was not under attack.
    fn admitted_calm(decision: &Decision) -> bool {
        matches!(
            decision,
            Decision::Allow {
                under_attack: false,
                ..
            }
        )
    }

    /// The default policy with a signal that needs only 10 attempts, and no challenge for a
    /// network new to an account (these tests watch the signal).
    fn sensitive() -> Policy {
        let mut policy = without_networks();
        if let Some(signal) = policy.global.attack.as_mut() {
            signal.min_attempts = 10;
        }
        policy
    }

    /// The default policy without a challenge for a network new to an account.
    fn without_networks() -> Policy {
        let mut policy = Policy::default();
        policy.challenge.unfamiliar_networks = false;
        policy
    }

    /// Ten failures from ten addresses on ten usernames at T0: the sensitive signal's attack.
    fn ten_failures(table: &mut StateTable, policy: &Policy) {
        for i in 0..10 {
            let from = keys(&format!("10.0.{i}.1"), &format!("u{i}"));
            login(table, policy, &from, Outcome::Failure, T0);
        }
    }

    fn under_attack(table: &mut StateTable, policy: &Policy, now: UnixMillis) -> bool {
        // A fresh address and username, asked with an ample proof so it is never challenged.
        let probe = keys("203.0.113.250", "probe");
        let decision = table.attempt(policy, &probe, u64::MAX, now);
        let flag = matches!(
            decision,
            Decision::Allow {
                under_attack: true,
                ..
            }
        );
        if let Decision::Allow { pending, .. } = &decision {
            table.abandon(policy, &probe, pending, now);
        }
        flag
    }

    #[test]
    fn trusted_devices_neither_dilute_nor_feed_the_signal() {
        let mut table = StateTable::default();
        let policy = sensitive();
        let deriver = KeyDeriver::new(b"test", 24, 64, 48).unwrap();
        let cookies = crate::DeviceCookies::new(b"devices");
        // Forty owners logging in from their trusted devices, and a typo on each.
        for i in 0..40 {
            let name = Username::parse(&format!("owner{i}")).unwrap();
            let device = cookies
                .verify(&cookies.issue(&name, [i; 16]), &name)
                .unwrap();
            let ip = format!("192.0.2.{i}").parse().unwrap();
            let from = policy.active_keys(deriver.keys(ip, &name, Some(&device)));
            login(&mut table, &policy, &from, Outcome::Failure, T0);
            login(&mut table, &policy, &from, Outcome::Success, T0);
        }
        assert!(
            !under_attack(&mut table, &policy, T0 + 1),
            "their typos feed nothing"
        );
        // Ten failures of the kind stuffing makes: 10 of 11 counted attempts (the probe's).
        ten_failures(&mut table, &policy);
        assert!(
            under_attack(&mut table, &policy, T0 + 2),
            "their successes dilute nothing"
        );
    }

    #[test]
    fn under_attack_a_clean_source_is_challenged_counted_and_let_in_by_a_proof() {
        let mut table = StateTable::default();
        let policy = sensitive();
        ten_failures(&mut table, &policy);
        let fresh = keys("192.0.2.7", "dana");
        let work = policy.challenge.min_work;
        assert_eq!(
            table.attempt(&policy, &fresh, 0, T0 + 1),
            Decision::Challenge { work }
        );
        assert_eq!(
            table.attempt(&policy, &fresh, work - 1, T0 + 1),
            Decision::Challenge { work },
            "a proof short of the work asked"
        );
        // Challenged attempts count against the address's (tightened) burst of 7.
        for _ in 0..5 {
            table.attempt(&policy, &fresh, 0, T0 + 1);
        }
        assert!(matches!(
            table.attempt(&policy, &fresh, work, T0 + 1),
            Decision::Deny(d) if d.reason == Reason::RateLimited
        ));
        let other = keys("192.0.2.8", "erin");
        assert!(table.attempt(&policy, &other, work, T0 + 1).is_allowed());
    }

    #[test]
    fn a_login_from_a_network_new_to_its_account_is_challenged_until_one_succeeds_there() {
        let mut table = StateTable::default();
        let mut policy = Policy::default();
        policy.challenge.unfamiliar_networks = true;
        let work = policy.challenge.min_work;
        let home = keys("192.0.2.7", "alice");
        assert_eq!(
            table.attempt(&policy, &home, 0, T0),
            Decision::Challenge { work },
            "an account with no history knows no network"
        );
        // A wrong password with a proof teaches nothing.
        login(&mut table, &policy, &home, Outcome::Failure, T0 + 1);
        assert!(matches!(
            table.attempt(&policy, &home, 0, T0 + 2),
            Decision::Challenge { .. }
        ));
        login(&mut table, &policy, &home, Outcome::Success, T0 + 3);
        // Another device at home is in the same /24.
        let laptop = keys("192.0.2.99", "alice");
        assert!(table.attempt(&policy, &laptop, 0, T0 + 4).is_allowed());
        let elsewhere = keys("198.51.100.7", "alice");
        assert_eq!(
            table.attempt(&policy, &elsewhere, 0, T0 + 5),
            Decision::Challenge { work }
        );
        let other_account = keys("192.0.2.7", "bob");
        assert!(
            matches!(
                table.attempt(&policy, &other_account, 0, T0 + 6),
                Decision::Challenge { .. }
            ),
            "a network is familiar to the account that logged in from it"
        );
        let forgotten = policy.challenge.familiar_until(T0 + 3);
        table.sweep(forgotten);
        assert_eq!(
            table.attempt(&policy, &laptop, 0, forgotten),
            Decision::Challenge { work },
            "familiar for familiar_days"
        );
    }

    #[test]
    fn a_burst_of_first_logins_asked_only_for_their_network_does_not_trip_the_signal() {
        let mut table = StateTable::default();
        let mut policy = sensitive();
        policy.challenge.unfamiliar_networks = true;
        let people: Vec<_> = (0..30)
            .map(|i| keys(&format!("172.16.{i}.10"), &format!("p{i}")))
            .collect();
        // Every one is asked before any answers (as many browsers solving at once).
        for person in &people {
            let asked = table.attempt(&policy, person, 0, T0);
            assert!(matches!(asked, Decision::Challenge { .. }), "{asked:?}");
        }
        for person in &people {
            let answered = login(&mut table, &policy, person, Outcome::Success, T0 + 500);
            assert!(admitted_calm(&answered), "{answered:?}");
        }
        assert!(!under_attack(&mut table, &policy, T0 + 600));
    }

    #[test]
    fn unanswered_challenges_keep_the_signal_on() {
        let mut table = StateTable::default();
        let policy = sensitive();
        ten_failures(&mut table, &policy);
        // A flood that is now only challenged, never verified, amid a trickle of successes.
        for i in 0..200u32 {
            let from = keys(
                &format!("10.{}.{}.1", 1 + i / 250, i % 250),
                &format!("v{i}"),
            );
            assert!(matches!(
                table.attempt(&policy, &from, 0, T0 + 1_000),
                Decision::Challenge { .. }
            ));
            if i % 10 == 0 {
                let user = keys(&format!("192.0.2.{}", i / 10 + 1), &format!("legit{i}"));
                login(&mut table, &policy, &user, Outcome::Success, T0 + 1_000);
            }
        }
        assert!(under_attack(&mut table, &policy, T0 + 2_000));
    }

    #[test]
    fn people_answering_their_challenges_do_not_keep_the_signal_on() {
        let mut table = StateTable::default();
        let policy = sensitive();
        ten_failures(&mut table, &policy);
        let hold = policy.global.attack.unwrap().hold_ms;
        // After the attack, a person every 2 s: challenged, answering, getting in.
        let work = policy.challenge.min_work;
        let mut now = T0;
        for i in 0..u32::try_from((hold + 2 * 60_000) / 2_000).unwrap() {
            now = T0 + 2_000 * u64::from(i + 1);
            let person = keys(
                &format!("10.{}.{}.1", 100 + i / 250, i % 250),
                &format!("p{i}"),
            );
            assert!(matches!(
                table.attempt(&policy, &person, 0, now),
                Decision::Challenge { .. } | Decision::Allow { .. }
            ));
            let answered = table.attempt(&policy, &person, work, now);
            assert!(answered.is_allowed(), "{answered:?}");
            settle(
                &mut table,
                &policy,
                &person,
                &answered,
                Outcome::Success,
                now,
            );
        }
        assert!(!under_attack(&mut table, &policy, now + 1));
    }

    #[test]
    fn shed_attempts_count_as_failures_of_the_signal() {
        let mut table = StateTable::default();
        let policy = sensitive();
        for i in 0..10 {
            let from = keys(&format!("10.0.{i}.1"), &format!("u{i}"));
            if let Decision::Allow { pending, .. } = table.attempt(&policy, &from, 0, T0) {
                table.abandon(&policy, &from, &pending, T0);
            }
        }
        assert!(under_attack(&mut table, &policy, T0 + 1));
    }

    #[test]
    fn an_accounts_repeated_successes_count_once_per_window() {
        let policy = sensitive();
        let nine_failures = |table: &mut StateTable| {
            for i in 0..9 {
                let from = keys(&format!("10.0.{i}.1"), &format!("u{i}"));
                login(table, &policy, &from, Outcome::Failure, T0);
            }
        };
        // Logging into its own account 100 times adds one success, not 100: 9 of 10 failed.
        let mut table = StateTable::default();
        let own = keys("198.51.100.9", "mallory");
        for i in 0..100 {
            login(&mut table, &policy, &own, Outcome::Success, T0 + i);
        }
        nine_failures(&mut table);
        assert!(under_attack(&mut table, &policy, T0 + 200));
        // Distinct accounts each count: 9 of 50 failed (and the probe's abandoned attempt).
        let mut table = StateTable::default();
        for i in 0..40 {
            let from = keys(&format!("192.0.2.{}", i + 1), &format!("w{i}"));
            login(&mut table, &policy, &from, Outcome::Success, T0);
        }
        nine_failures(&mut table);
        assert!(!under_attack(&mut table, &policy, T0 + 200));
    }

    #[test]
    fn one_password_failing_on_ten_accounts_trips_the_signal_whatever_the_sources() {
        let mut table = StateTable::default();
        let policy = without_networks();
        let sprayed = KeyDeriver::new(b"test", 24, 64, 48)
            .unwrap()
            .password_digest("Summer2024!");
        for i in 0..10u32 {
            // Each from an address and a /24 of its own, far below every floor.
            let from = keys(&format!("10.{i}.0.1"), &format!("u{i}"));
            let decision = table.attempt(&policy, &from, 0, T0 + u64::from(i));
            assert!(admitted_calm(&decision), "{i}");
            let verified = Verified {
                outcome: Outcome::Failure,
                unknown_username: false,
                password: Some(sprayed),
            };
            table.record(
                &policy,
                &from,
                verified,
                user_of(&from),
                &pending_of(&decision),
                T0 + u64::from(i),
            );
        }
        assert!(under_attack(&mut table, &policy, T0 + 10));
        let global = key_of(&keys("192.0.2.1", "x"), Dimension::Global).to_owned();
        let trip = table.state(&global, T0 + 10).unwrap().attack.trip.unwrap();
        assert_eq!(
            (trip.detector, trip.observed),
            (crate::attack::Detector::PasswordFanOut, 10)
        );
    }

    #[test]
    fn a_success_clears_the_lockout_its_own_admission_started() {
        let mut table = StateTable::default();
        let policy = limits_only();
        let from = keys("198.51.100.1", "frank");
        for i in 0..4 {
            fail(&mut table, &from, T0 + i);
        }
        assert!(login(&mut table, &policy, &from, Outcome::Success, T0 + 4).is_allowed());
        assert!(table.attempt(&policy, &from, 0, T0 + 5).is_allowed());
    }

    #[test]
    fn a_refused_attempt_changes_nothing() {
        let mut table = StateTable::default();
        let from = keys("198.51.100.1", "bob");
        for i in 0..5 {
            fail(&mut table, &from, T0 + i);
        }
        let before = table.state(key_of(&from, Dimension::Username), T0 + 5);
        assert!(matches!(fail(&mut table, &from, T0 + 5), Decision::Deny(_)));
        assert_eq!(
            table.state(key_of(&from, Dimension::Username), T0 + 5),
            before
        );
    }

    #[test]
    fn a_success_does_not_reset_the_ip_counter() {
        let mut table = StateTable::default();
        let policy = limits_only();
        let victim = keys("198.51.100.1", "victim");
        let own = keys("198.51.100.1", "attacker");
        for i in 0..4 {
            fail(&mut table, &victim, T0 + i);
        }
        let ip_before = table.state(key_of(&own, Dimension::Ip), T0 + 4).unwrap();
        assert!(login(&mut table, &policy, &own, Outcome::Success, T0 + 4).is_allowed());
        let ip_after = table.state(key_of(&own, Dimension::Ip), T0 + 4).unwrap();
        assert_eq!(ip_after.failure_tat, ip_before.failure_tat);
        assert_eq!(ip_after.lockout, ip_before.lockout);
    }

    #[test]
    fn a_success_resets_the_username_failures() {
        let mut table = StateTable::default();
        let policy = limits_only();
        let from = keys("198.51.100.1", "carol");
        for i in 0..4 {
            fail(&mut table, &from, T0 + i);
        }
        login(&mut table, &policy, &from, Outcome::Success, T0 + 4);
        for i in 5..9 {
            assert!(fail(&mut table, &from, T0 + i).is_allowed());
        }
    }

    #[test]
    fn a_flood_of_distinct_keys_is_forgotten_once_it_expires() {
        let mut table = StateTable::default();
        let policy = limits_only();
        for i in 0..5_000u32 {
            // One address per /24, so no subnet limit cuts the flood short.
            let ip = format!("10.{}.{}.1", i >> 8, i & 0xff);
            table.attempt(&policy, &keys(&ip, &format!("user{i}")), 0, T0);
        }
        let peak = table.len();
        assert!(peak >= 5_000, "{peak}");
        // A day later every limit has refilled and every failure window has passed: the next
        // write sweeps the table down to the late attempt's own keys: address, subnet, username,
        // username from the address (the global signal counts outcomes, and none came yet).
        table.attempt(&policy, &keys("192.0.2.1", "late"), 0, T0 + 25 * 3_600_000);
        assert_eq!(table.len(), 4);
    }

    fn pending_of(decision: &Decision) -> Vec<LockoutEvent> {
        match decision {
            Decision::Allow { pending, .. } => pending.clone(),
            Decision::Challenge { .. } | Decision::Deny(_) => Vec::new(),
        }
    }

    #[test]
    fn a_success_amid_concurrent_guesses_keeps_their_provisional_failures() {
        let mut table = StateTable::default();
        let policy = limits_only();
        let from = keys("198.51.100.1", "grace");
        // The right password first, then wrong guesses, all admitted before any is verified.
        let admitted: Vec<Decision> = (0..5)
            .map(|i| table.attempt(&policy, &from, 0, T0 + i))
            .collect();
        assert!(admitted.iter().all(Decision::is_allowed));
        assert!(!table.attempt(&policy, &from, 0, T0 + 5).is_allowed());
        settle(
            &mut table,
            &policy,
            &from,
            &admitted[0],
            Outcome::Success,
            T0 + 6,
        );
        // Four guesses are still in flight: one more attempt is admitted, then the lockout.
        let late: Vec<Decision> = (0..10)
            .map(|i| table.attempt(&policy, &from, 0, T0 + 7 + i))
            .collect();
        assert_eq!(late.iter().filter(|d| d.is_allowed()).count(), 1);
        for guess in admitted.iter().skip(1).chain(&late[..1]) {
            settle(&mut table, &policy, &from, guess, Outcome::Failure, T0 + 20);
        }
        assert!(!table.attempt(&policy, &from, 0, T0 + 21).is_allowed());
    }

    #[test]
    fn an_abandoned_attempt_takes_back_its_provisional_failure_and_the_lockout_it_started() {
        let mut table = StateTable::default();
        let policy = limits_only();
        let from = keys("198.51.100.1", "heidi");
        for i in 0..4 {
            fail(&mut table, &from, T0 + i);
        }
        let fifth = table.attempt(&policy, &from, 0, T0 + 4);
        assert_eq!(pending_of(&fifth).len(), 1, "the fifth admission locks");
        table.abandon(&policy, &from, &pending_of(&fifth), T0 + 5);
        // Shed with 503: the client may retry without having locked itself out.
        for i in 0..3 {
            let retry = table.attempt(&policy, &from, 0, T0 + 6 + i);
            assert!(retry.is_allowed(), "retry {i}");
            table.abandon(&policy, &from, &pending_of(&retry), T0 + 6 + i);
        }
        assert!(fail(&mut table, &from, T0 + 10).is_allowed());
        assert!(!table.attempt(&policy, &from, 0, T0 + 11).is_allowed());
    }

    #[test]
    fn a_success_on_the_attempt_that_trips_the_permanent_lock_takes_it_back() {
        let mut table = StateTable::default();
        let mut policy = limits_only();
        if let Some(lockout) = policy.username.lockout.as_mut() {
            lockout.permanent_after = Some(0);
        }
        let from = keys("198.51.100.1", "ivan");
        for i in 0..4 {
            login(&mut table, &policy, &from, Outcome::Failure, T0 + i);
        }
        let tripping = table.attempt(&policy, &from, 0, T0 + 4);
        assert!(
            pending_of(&tripping)
                .iter()
                .any(|l| l.lockout == crate::backoff::Lockout::Permanent)
        );
        settle(
            &mut table,
            &policy,
            &from,
            &tripping,
            Outcome::Success,
            T0 + 5,
        );
        let state = table
            .state(key_of(&from, Dimension::Username), T0 + 6)
            .unwrap_or_default();
        assert!(!state.lockout.permanent);
        assert!(table.attempt(&policy, &from, 0, T0 + 6).is_allowed());
    }

    #[derive(Clone, Debug)]
    enum Event {
        Attempt { ip: u8, user: u8, correct: bool },
        Wait(u64),
    }

    fn events() -> impl Strategy<Value = Vec<Event>> {
        proptest::collection::vec(
            prop_oneof![
                4 => (0u8..4, 0u8..4, any::<bool>())
                    .prop_map(|(ip, user, correct)| Event::Attempt { ip, user, correct }),
                1 => (0u64..120_000).prop_map(Event::Wait),
            ],
            1..80,
        )
    }

    proptest! {
        /// Whatever happened before, a success leaves the IP and subnet state exactly as it was.
        #[test]
        fn a_success_never_lowers_an_ips_or_subnets_counters(events in events()) {
            let policy = limits_only();
            let mut table = StateTable::default();
            let mut now = T0;
            for event in events {
                match event {
                    Event::Wait(ms) => now += ms,
                    Event::Attempt { ip, user, correct } => {
                        let k = keys(&format!("198.51.{ip}.7"), &format!("u{user}"));
                        let decision = table.attempt(&policy, &k, 0, now);
                        if !decision.is_allowed() {
                            continue;
                        }
                        let outcome = if correct { Outcome::Success } else { Outcome::Failure };
                        let watched = [
                            key_of(&k, Dimension::Ip).to_owned(),
                            key_of(&k, Dimension::Subnet).to_owned(),
                        ];
                        let before = watched.clone().map(|key| table.state(&key, now));
                        settle(&mut table, &policy, &k, &decision, outcome, now);
                        let after = watched.map(|key| table.state(&key, now));
                        if outcome == Outcome::Success {
                            prop_assert_eq!(before, after);
                        }
                    }
                }
            }
        }
    }
}
