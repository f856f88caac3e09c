//! The login guard: every attempt that verifies a password is admitted by it first.
//!
//! Two steps, typed: [`LoginGuard::admit`] derives the attempt's keys and asks the store (one
//! store call, plus one to consume a solved challenge when the request carries one); a refusal
//! or a challenge answer is an error before any database or Argon2 work. An admission is an
//! [`Admission`] that must be settled: [`Admission::finish`] with the verified outcome (a
//! second store call), or [`Admission::abandon`] when the attempt was never verified (the hash
//! queue or the database answered 503), which takes back its provisional lockout failure.
//!
//! An admission waits in the hash queue, and the service may come under attack meanwhile: on
//! a flood, the guesses admitted just before the signal tripped fill the queue. So when its
//! turn comes an attempt is decided again against the signal as this replica sees it then
//! ([`Admission::challenge_now`], no store call), and one that would now be challenged is
//! ([`Admission::challenge`]) instead of being verified.

use std::net::IpAddr;
use std::sync::Arc;

use portcullis_core::backoff::Lockout;
use portcullis_core::{
    AttemptKey, Decision, Denial, DeviceId, Dimension, KeyDeriver, LockoutEvent, Outcome, Policy,
    Username, Verified,
};
use portcullis_store::AttemptStore;

use crate::allowlist::Allowlist;
use crate::challenge::Challenges;
use crate::deny_cache::DenyCache;
use crate::error::Error;
use crate::instruments::{self, StoreOp};
use crate::recent_decisions::{Counted, RecentDecisions};
use crate::refusal_log::{self, Refusal, RefusalLog};
use crate::security_events::SecurityEvents;
use crate::settings::UsernameLogging;

/// Applies the policy around password checks.
#[derive(Clone)]
pub struct LoginGuard {
    policy: Policy,
    deriver: KeyDeriver,
    store: Arc<dyn AttemptStore>,
    events: SecurityEvents,
    allowlist: Allowlist,
    challenges: Challenges,
    /// The store's refusals this replica remembers (with a shared store only).
    deny_cache: Option<DenyCache>,
    /// How usernames appear in request logs.
    log_usernames: UsernameLogging,
    /// This replica's decisions of the last minutes (the admin console's view).
    recent: RecentDecisions,
    /// Refusals not yet written to the log (summarised per key and interval).
    refusals: RefusalLog,
}

/// An admitted attempt, counted provisionally as a lockout failure until it is settled.
#[must_use = "an admission is settled with `finish` or `abandon`"]
pub struct Admission<'a> {
    guard: &'a LoginGuard,
    keys: Vec<AttemptKey>,
    /// The username's keyed hash (for the store's distinct-username count).
    digest: String,
    /// The lockouts the admission started provisionally.
    pending: Vec<LockoutEvent>,
    /// The work of the solved challenge it carried (0: none).
    proof_work: u64,
}

/// What settling a verified attempt found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    /// The lockout of the username this failure started, if any: a permanent one must be
    /// written to the accounts database, which owns permanent locks, and either is told to the
    /// account's owner.
    pub account_lockout: Option<Lockout>,
}

impl LoginGuard {
    /// A guard applying `policy` with keys from `deriver`, counting in `store`, reporting
    /// lockouts and bans to `events`, asking `challenges` where the policy says, refusing what
    /// `deny_cache` remembers without asking the store, logging usernames as `log_usernames`
    /// says, counting its decisions in `recent`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        policy: Policy,
        deriver: KeyDeriver,
        store: Arc<dyn AttemptStore>,
        events: SecurityEvents,
        allowlist: Allowlist,
        challenges: Challenges,
        deny_cache: Option<DenyCache>,
        log_usernames: UsernameLogging,
        recent: RecentDecisions,
    ) -> Self {
        Self {
            policy,
            deriver,
            store,
            events,
            allowlist,
            challenges,
            deny_cache,
            log_usernames,
            recent,
            refusals: RefusalLog::default(),
        }
    }

    /// This replica's decisions of the last minutes.
    pub fn recent_decisions(&self) -> &RecentDecisions {
        &self.recent
    }

    /// Forgets every refusal this replica remembers (an unlock or an allowlist change).
    pub fn forget_refusals(&self) {
        if let Some(cache) = &self.deny_cache {
            cache.clear();
        }
    }

    /// The challenges the guard asks for (`GET /v1/challenge` issues one of the least work).
    pub fn challenges(&self) -> &Challenges {
        &self.challenges
    }

    /// Records the username into the request span: its keyed `digest` (computed here unless
    /// given) by default, since people type passwords into username fields; the name itself
    /// with `log.usernames = "plain"`.
    pub fn log_username(&self, username: &Username, digest: Option<&str>) {
        let span = tracing::Span::current();
        match (self.log_usernames, digest) {
            (UsernameLogging::Plain, _) => span.record("username", username.as_str()),
            (UsernameLogging::Digest, Some(digest)) => span.record("username", digest),
            (UsernameLogging::Digest, None) => {
                span.record("username", self.deriver.username_digest(username))
            }
        };
    }

    /// Keeps the keys the policy limits; allowlisted sources skip the address, subnet and
    /// network limits, never the account's.
    fn limited(&self, ip: IpAddr, keys: Vec<AttemptKey>) -> Vec<AttemptKey> {
        let mut keys = self.policy.active_keys(keys);
        if self.allowlist.contains(ip) {
            keys.retain(|k| !k.dimension.is_source());
        }
        keys
    }

    /// Admits an attempt by `username` from `ip` (from a trusted `device`, if it presented
    /// one, carrying the `altcha` payload of a solved challenge, if any), or refuses it before
    /// any password work: `Error::Throttled`, or `Error::ChallengeRequired` with a fresh
    /// challenge.
    pub async fn admit(
        &self,
        ip: IpAddr,
        username: &Username,
        device: Option<&DeviceId>,
        altcha: Option<&str>,
    ) -> Result<Admission<'_>, Error> {
        // One keyed hash per attempt, for the keys and for the store's distinct-username count.
        let digest = self.deriver.username_digest(username);
        // Whom the attempt names goes into the request's span before the decision when the
        // decision's own lines (DEBUG) can print; otherwise after it, unless it was a summarised
        // refusal (see `refusal_log::request_lines`).
        let lines = refusal_log::request_lines();
        if lines {
            self.log_username(username, Some(&digest));
        }
        let keys = self.limited(ip, self.deriver.keys_for_digest(ip, &digest, device));
        let decided = self.decide(&keys, altcha).await;
        if !lines && !decided.as_ref().is_err_and(Error::is_summarised) {
            self.log_username(username, Some(&digest));
        }
        let Decided {
            pending,
            proof_work,
        } = decided?;
        Ok(Admission {
            guard: self,
            keys,
            digest,
            pending,
            proof_work,
        })
    }

    /// Derives keys for administration (the same derivation attempts use).
    pub fn deriver(&self) -> &KeyDeriver {
        &self.deriver
    }

    /// Admits a passkey assertion from `ip` (carrying the `altcha` payload of a solved
    /// challenge, if any) against its source's address, subnet and network only: a passkey
    /// cannot be guessed, so a failed assertion is the source's, never the account's.
    /// The credential id it presents stands for the username in the source's distinct-accounts
    /// count.
    pub async fn admit_assertion(
        &self,
        ip: IpAddr,
        credential_id: &[u8],
        altcha: Option<&str>,
    ) -> Result<Admission<'_>, Error> {
        let keys = self.limited(ip, self.deriver.source_keys(ip));
        let Decided {
            pending,
            proof_work,
        } = self.decide(&keys, altcha).await?;
        Ok(Admission {
            guard: self,
            keys,
            digest: self.deriver.credential_digest(credential_id),
            pending,
            proof_work,
        })
    }

    /// Counts an attempt that is not a password check (a registration, a failed admin
    /// authentication) against its source's address, subnet and network only; a risky source
    /// must carry a solved challenge (`altcha`), as a login must.
    pub async fn admit_source(&self, ip: IpAddr, altcha: Option<&str>) -> Result<(), Error> {
        let keys = self.limited(ip, self.deriver.source_keys(ip));
        let Decided { pending, .. } = self.decide(&keys, altcha).await?;
        let has_lockout = keys
            .iter()
            .any(|k| self.policy.for_dimension(k.dimension).lockout.is_some());
        if has_lockout {
            // Not a password check: a lockout a policy put on a source counts no failure here.
            self.store.abandon(&keys, &pending).await?;
        }
        Ok(())
    }

    /// Makes `ip`'s network familiar to `username`'s account: it was registered from there, so
    /// its owner's first login from it is not challenged as coming from a new network (see
    /// `portcullis_core::familiar`). A store that does not answer costs only that challenge: it
    /// is logged, not the registration's error.
    pub async fn remember_network(&self, ip: IpAddr, username: &Username) {
        let keys = self.limited(ip, self.deriver.keys(ip, username, None));
        if let Err(error) = self.store.remember_network(&keys).await {
            tracing::warn!(%error, "the registration's network was not remembered");
        }
    }

    /// Reports a refusal of `keys` (metrics, recent decisions, span, the summarised log) and
    /// answers it with 429.
    fn refused(&self, keys: &[AttemptKey], denial: Denial) -> Error {
        instruments::refused(&denial);
        self.recent.count(Counted::Denied(denial.reason));
        if let Some(key) = keys.iter().find(|k| k.dimension == denial.dimension) {
            self.refusals.count(key, Refusal::Denied(denial.reason));
        }
        if refusal_log::request_lines() {
            let span = tracing::Span::current();
            span.record("outcome", "denied");
            span.record("reason", denial.reason.as_str());
            tracing::debug!(
                dimension = denial.dimension.as_str(),
                reason = denial.reason.as_str(),
                retry_after_ms = denial.retry_after_ms,
                "attempt refused before verification"
            );
        }
        Error::Throttled {
            retry_after_secs: denial.retry_after_secs(),
        }
    }

    /// Asks the store, with the work the `altcha` payload proves (consumed once).
    async fn decide(&self, keys: &[AttemptKey], altcha: Option<&str>) -> Result<Decided, Error> {
        if let Some(denial) = self.deny_cache.as_ref().and_then(|c| c.refusal(keys)) {
            // The attempt call, and the proof's consumption, never happen.
            instruments::deny_cache_hit(1 + u64::from(altcha.is_some()));
            return Err(self.refused(keys, denial));
        }
        let carried = self.challenges.prove(self.store.as_ref(), altcha).await?;
        let decision = self.store.attempt(keys, carried.work);
        match instruments::store_call(StoreOp::Attempt, decision).await? {
            Decision::Allow {
                pending,
                under_attack,
            } => {
                // The service-wide signal, as of this attempt (per-address limits tighten).
                metrics::gauge!("portcullis_under_attack").set(f64::from(u8::from(under_attack)));
                metrics::counter!("portcullis_decisions_total", "outcome" => "allowed")
                    .increment(1);
                self.recent.count(Counted::Allowed);
                Ok(Decided {
                    pending,
                    proof_work: carried.work,
                })
            }
            Decision::Challenge { work } => {
                metrics::counter!("portcullis_decisions_total", "outcome" => "challenged")
                    .increment(1);
                self.recent.count(Counted::Challenged);
                tracing::debug!(work, "attempt challenged before verification");
                Err(self.challenged(keys, work, carried.presented))
            }
            Decision::Deny(denial) => {
                if let Some(cache) = &self.deny_cache {
                    cache.remember(keys, &denial);
                }
                Err(self.refused(keys, denial))
            }
        }
    }

    /// Answers an attempt touching `keys` with a challenge of `work` (`failed`: it carried a
    /// solution that did not count), counted against its source (its address, the one a
    /// challenge answers to) in the summarised log.
    fn challenged(&self, keys: &[AttemptKey], work: u64, failed: bool) -> Error {
        let source = keys
            .iter()
            .find(|k| k.dimension.is_source())
            .or(keys.first());
        if let Some(key) = source {
            self.refusals.count(key, Refusal::Challenged);
        }
        if refusal_log::request_lines() {
            tracing::Span::current().record("outcome", "challenged");
        }
        match self.challenges.issue(work) {
            Ok(challenge) => Error::ChallengeRequired {
                challenge: Box::new(challenge),
                failed,
            },
            Err(error) => error,
        }
    }
}

/// What admitting an attempt decided.
struct Decided {
    /// The lockouts the attempt started provisionally.
    pending: Vec<LockoutEvent>,
    /// The work of the solved challenge it carried (0: none).
    proof_work: u64,
}

impl Admission<'_> {
    /// The work of the challenge this attempt would be asked for if it came now, if it would
    /// be: the service came under attack, as this replica sees it, since it was admitted, and
    /// it has no trusted device and carried no solved challenge. Decided without a store call,
    /// at the work the least risk asks (its risk was judged at admission).
    pub fn challenge_now(&self) -> Option<u64> {
        let challenge = &self.guard.policy.challenge;
        let trusted_device = self.keys.iter().any(|k| k.dimension == Dimension::Device);
        // Its network was judged at admission: an unfamiliar one is proven by now.
        let unproven = |under_attack| {
            challenge
                .required(0, trusted_device, under_attack, false)
                .filter(|&work| self.proof_work < work)
        };
        // The signal is read only for an attempt it could send to a challenge (not the owner's
        // device, not a solved challenge, not with challenges off).
        unproven(true)?;
        let under_attack = self
            .guard
            .store
            .attack_signal()
            .is_some_and(|signal| signal.shows_attack());
        unproven(under_attack)
    }

    /// Answers with a challenge of `work` (from [`Self::challenge_now`]) an attempt that was
    /// admitted but not verified, or whose verification is withheld. It is settled as
    /// abandoned: the signal counts it as a failure, as an unanswered challenge counts, and its
    /// lockout failure is taken back (its sender learnt nothing of the password).
    pub async fn challenge(self, work: u64) -> Error {
        let guard = self.guard;
        let keys = self.keys.clone();
        self.abandon().await;
        metrics::counter!("portcullis_challenged_at_turn_total").increment(1);
        tracing::debug!(
            work,
            "admitted attempt challenged at or after its hash turn"
        );
        guard.challenged(&keys, work, false)
    }

    /// Settles a verified attempt with its outcome (`known_account`: the username names an
    /// account; `password`: the one tried, if a password was, whose keyed digest feeds the
    /// password fan-out when it was wrong); reports the lockouts and bans a failure started.
    pub async fn finish(
        self,
        outcome: Outcome,
        known_account: bool,
        password: Option<&str>,
    ) -> Result<Finished, Error> {
        let guard = self.guard;
        let verified = Verified {
            outcome,
            unknown_username: !known_account,
            password: password
                .filter(|_| outcome == Outcome::Failure)
                .map(|password| guard.deriver.password_digest(password)),
        };
        let bans = instruments::store_call(
            StoreOp::Record,
            guard
                .store
                .record(&self.keys, verified, &self.digest, &self.pending),
        )
        .await?;
        tracing::Span::current().record("outcome", outcome_name(outcome));
        metrics::counter!("portcullis_logins_total", "outcome" => outcome_name(outcome))
            .increment(1);
        let mut account_lockout = None;
        if outcome == Outcome::Failure {
            // Lockouts stand once the attempt that started them failed; bans start with it.
            guard.events.report_lockouts(&self.pending).await;
            guard.events.report_lockouts(&bans).await;
            account_lockout = self
                .pending
                .iter()
                .filter(|l| l.key.dimension == Dimension::Username)
                .map(|l| l.lockout)
                .max_by_key(|lockout| *lockout == Lockout::Permanent);
        }
        Ok(Finished { account_lockout })
    }

    /// Settles an attempt that was never verified: its provisional lockout failure (and any
    /// lockout that started) is taken back; it still counted as an attempt. A store failure
    /// here is logged, never answered: the caller is already answering 503.
    pub async fn abandon(self) {
        let guard = self.guard;
        let result = instruments::store_call(
            StoreOp::Abandon,
            guard.store.abandon(&self.keys, &self.pending),
        )
        .await;
        tracing::Span::current().record("outcome", "abandoned");
        metrics::counter!("portcullis_logins_total", "outcome" => "abandoned").increment(1);
        if let Err(error) = result {
            tracing::warn!(error = %error, "abandoned attempt not settled in the store");
        }
    }
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
    }
}

#[cfg(test)]
mod tests {
    use portcullis_core::{DeviceCookies, Policy};
    use portcullis_store::{ManualClock, MemoryStore};

    use super::*;
    use crate::accounts::Accounts;

    /// A guard on the default policy without the challenge of a network new to an account (the
    /// tests here watch the signal; every fresh account would be challenged).
    async fn guard() -> LoginGuard {
        let mut policy = Policy::default();
        policy.challenge.unfamiliar_networks = false;
        let clock = Arc::new(ManualClock::default());
        let store = Arc::new(MemoryStore::new(policy, clock.clone()));
        let accounts = Accounts::in_memory().await;
        LoginGuard::new(
            policy,
            KeyDeriver::new(b"k", 24, 64, 48).unwrap(),
            store.clone(),
            SecurityEvents::new(store),
            Allowlist::load(accounts.pool()).await.unwrap(),
            Challenges::new(b"c", 1_000, clock.clone()),
            None,
            UsernameLogging::Digest,
            RecentDecisions::new(clock),
        )
    }

    fn name(username: &str) -> Username {
        Username::parse(username).unwrap()
    }

    #[tokio::test]
    async fn an_attempt_admitted_before_the_service_came_under_attack_is_challenged_at_its_turn() {
        let guard = guard().await;
        let alice = name("alice");
        let cookies = DeviceCookies::new(b"d");
        let device = cookies
            .verify(&cookies.issue(&alice, [1; 16]), &alice)
            .unwrap();
        let untrusted = guard
            .admit("192.0.2.1".parse().unwrap(), &alice, None, None)
            .await
            .unwrap();
        let trusted = guard
            .admit("192.0.2.1".parse().unwrap(), &alice, Some(&device), None)
            .await
            .unwrap();
        assert_eq!(untrusted.challenge_now(), None, "not under attack yet");
        // A list fails on 20 accounts from 20 networks: the floor trips.
        for i in 0..20u8 {
            let ip: IpAddr = format!("198.51.{i}.7").parse().unwrap();
            let guess = guard
                .admit(ip, &name(&format!("user{i}")), None, None)
                .await
                .unwrap();
            assert_eq!(
                guess.challenge_now(),
                None,
                "guess {i} came before the trip"
            );
            guess
                .finish(Outcome::Failure, true, Some(&format!("guess{i}")))
                .await
                .unwrap();
        }
        let work = untrusted.challenge_now().expect("challenged now");
        assert_eq!(work, Policy::default().challenge.min_work);
        assert_eq!(trusted.challenge_now(), None, "the owner's device goes on");
        match untrusted.challenge(work).await {
            Error::ChallengeRequired { failed, .. } => assert!(!failed),
            other => panic!("expected a challenge, got {other:?}"),
        }
        trusted.abandon().await;
    }
}
