//! The Redis store: every replica shares one view of every attempt.
//!
//! The counter logic is the core's, in Lua (`lua/*.lua`, embedded at build time), loaded as one
//! Redis Functions library. The library is generated with the policy's numbers in it and named
//! by its SHA-1, so the tables and functions are built once when it loads, not on every call,
//! and replicas with another policy (a rolling deploy) use a library of their own. After a
//! restart, a failover or a `FUNCTION FLUSH` the first call finds no function, and the store
//! loads the library and calls again (once for a burst of calls that found it missing). Functions read Redis `TIME` once per call, so replicas'
//! clocks do not matter. Functions need Redis 7.0 or later.
//!
//! Where keys live is [`keyspace`]'s: in one slot (`single_slot`), or an address block's keys
//! and an account's keys each in a slot of their own (`per_subject`). An attempt's keys are
//! grouped by slot and each group is one `FCALL`, all sent at once (one round trip however
//! many slots):
//! - each call decides its keys and, unless one refuses, counts the attempt on them at once
//!   (rate limits, and lockout admissions held by the attempt's stamp);
//! - the store combines the answers: the longest refusal wins; the work asked follows the
//!   highest risk. If a call refused, or the attempt turns out to need a challenge that a call
//!   did not see, a compensating `release` call takes back what the other calls counted, so a
//!   refused attempt changes no counter. Until it lands (one round trip) those keys show the
//!   attempt counted: a concurrent attempt on them may be refused that would not have been,
//!   never admitted that should not be, so the lockout guarantee holds (`docs/failure-modes.md`).
//!
//! A refused attempt costs one call per slot; a verified one adds one per slot its outcome
//! touches. The under-attack signal is off this path ([`signal`]).
//!
//! The contract with Lua is by name: the policy reaches the functions as a generated table with
//! the core's field names ([`policy_lua`]), each key's dimension by name, and replies come back
//! as JSON decoded into the structs below. Every call goes through [`calls::Calls`].
//!
//! A solved challenge is consumed with `SET <proof key> NX PX <its remaining life>`, so it
//! admits one attempt across every replica. A counter is one packed string (`lua/common.lua`,
//! [`state`]). Usernames appear only as HMACs (see `portcullis_core::keys`); every key has a
//! TTL (the security event stream is also capped with `MAXLEN ~`).
//!
//! This module decides attempts; [`admin`] serves the admin views (status, the restrictions
//! index, the change channel) and [`events`] the security event stream.

mod admin;
mod calls;
mod connection;
mod events;
pub mod keyspace;
mod policy_lua;
mod signal;
mod state;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::attack::{Assessment, ChallengeStep, Sign};
use portcullis_core::backoff::Lockout;
use portcullis_core::decision::started_on;
use portcullis_core::familiar;
use portcullis_core::{
    AttemptKey, Decision, Denial, Dimension, KeyPolicy, LockoutEvent, Outcome, Policy, Reason,
    UnixMillis, Verified,
};
use redis::{Cmd, RedisError};
use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use calls::{BreakerOpen, TimedOut};
pub use connection::{Conn, Connections};
pub use keyspace::{Keyspace, Sharding};
pub use state::StoredState;

use crate::{AttemptStore, Breaker, Clock, StoreError, SystemClock};
use calls::{Breaking, Calls};
use signal::SharedSignal;

const BIND: &str = include_str!("lua/bind.lua");
const COMMON: &str = include_str!("lua/common.lua");

/// Where and how to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// Which Redis deployment holds the counters.
    pub topology: Topology,
    /// Key prefix, so deployments can share a Redis.
    pub prefix: String,
    /// How keys spread over Cluster slots.
    pub sharding: Sharding,
    /// Longest wait for one Redis call.
    pub timeout: Duration,
}

/// The Redis deployments the store supports.
#[derive(Clone, Debug)]
pub enum Topology {
    /// One server, by its URL.
    Single(String),
    /// A Redis Cluster, by its seed nodes' URLs.
    Cluster(Vec<String>),
    /// A primary and its replicas, found through the Sentinels that watch them.
    Sentinel(SentinelConfig),
}

/// A primary found through Sentinel.
#[derive(Clone, Debug)]
pub struct SentinelConfig {
    /// The name the Sentinels monitor the primary under.
    pub master_name: String,
    /// The Sentinels' URLs (`redis://host:26379`), asked in turn.
    pub sentinels: Vec<String>,
    /// The data nodes' password, when they require one (the Sentinels' own goes in their URLs).
    pub password: Option<String>,
}

impl SentinelConfig {
    /// How to log in to the primary the Sentinels name.
    fn node_connection_info(&self) -> deadpool_redis::sentinel::SentinelNodeConnectionInfo {
        deadpool_redis::sentinel::SentinelNodeConnectionInfo {
            tls_mode: None,
            redis_connection_info: Some(deadpool_redis::RedisConnectionInfo {
                password: self.password.clone(),
                ..Default::default()
            }),
        }
    }
}

/// The counter functions, as one Redis Functions library generated for a policy.
struct Library {
    /// `#!lua name=portcullis_<sha>` and the code.
    code: String,
    attempt: String,
    record: String,
    release: String,
    restrict: String,
    remember: String,
    /// How many times this store has loaded the library, and the lock a load holds: calls that
    /// find it missing together (after a restart) load it once, not once each.
    loads: AtomicU64,
    loading: tokio::sync::Mutex<()>,
}

impl Library {
    fn new(policy: &Policy) -> Result<Self, StoreError> {
        let prelude = policy_lua::prelude(policy)?;
        let wrap = |name: &str, body: &str| {
            format!(
                "local function {name}(KEYS, ARGV)\nif not bound then bind() end\n{body}\nend\n"
            )
        };
        let body = format!(
            "{BIND}{prelude}{COMMON}\n{}{}{}{}{}",
            wrap("attempt", include_str!("lua/attempt.lua")),
            wrap("record", include_str!("lua/record.lua")),
            wrap("release", include_str!("lua/release.lua")),
            wrap("restrict", include_str!("lua/restrict.lua")),
            wrap("remember", include_str!("lua/remember.lua")),
        );
        // The library's name is the SHA-1 of everything in it: the policy included.
        let sha = redis::Script::new(&body).get_hash().to_owned();
        let sha = &sha[..16];
        let name = |function: &str| format!("portcullis_{function}_{sha}");
        let mut code = format!("#!lua name=portcullis_{sha}\n{body}");
        for function in ["attempt", "record", "release", "restrict", "remember"] {
            code.push_str(&format!(
                "redis.register_function('{}', {function})\n",
                name(function)
            ));
        }
        Ok(Self {
            code,
            attempt: name("attempt"),
            record: name("record"),
            release: name("release"),
            restrict: name("restrict"),
            remember: name("remember"),
            loads: AtomicU64::new(0),
            loading: tokio::sync::Mutex::new(()),
        })
    }

    /// Loads the library, unless another call has loaded it since this one read `seen` from
    /// `loads` (before it was sent). A Cluster sends `FUNCTION LOAD` to every primary.
    async fn load(&self, conn: &mut Conn, seen: u64) -> Result<(), RedisError> {
        let _loading = self.loading.lock().await;
        if self.loads.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(&self.code)
            .query_async::<()>(conn)
            .await?;
        self.loads.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

/// Whether Redis answered that a function does not exist (after a restart, a failover or a
/// `FUNCTION FLUSH`: the library must be loaded again).
fn is_missing_function(error: &RedisError) -> bool {
    error.to_string().contains("Function not found")
}

/// The restrictions index: a sorted set of locked or banned counters, scored by when that ends.
const RESTRICTIONS: &str = "restrictions";

/// Attempt counters, the restrictions index and security events in Redis or Redis Cluster.
pub struct RedisStore {
    calls: Arc<Calls>,
    /// Where to subscribe to announced changes.
    topology: Topology,
    library: Library,
    keyspace: Keyspace,
    /// The policy the functions apply (also: when a state read back has expired).
    policy: Policy,
    /// The under-attack signal (none when the policy has none).
    signal: Option<Arc<SharedSignal>>,
    /// Whether the signal's flush task runs (started by the first attempt).
    sharing: AtomicBool,
    /// The next attempt's stamp (random start, so replicas' stamps do not meet).
    stamps: AtomicU64,
    /// Tests move time with this; production leaves it unset and functions read Redis `TIME`.
    clock: Option<Arc<dyn Clock>>,
}

impl RedisStore {
    /// A store applying `policy`, calling through `breaker`; connects on first use.
    pub fn new(
        config: &RedisConfig,
        policy: &Policy,
        breaker: Breaker,
    ) -> Result<Self, StoreError> {
        let seed = random_seed();
        Ok(Self {
            calls: Arc::new(Calls {
                connections: Connections::new(&config.topology)?,
                timeout: config.timeout,
                breaker,
            }),
            topology: config.topology.clone(),
            library: Library::new(policy)?,
            keyspace: Keyspace::new(&config.prefix, config.sharding),
            policy: *policy,
            signal: policy
                .global
                .attack
                .map(|attack| Arc::new(SharedSignal::new(attack, seed))),
            sharing: AtomicBool::new(false),
            // Stamps travel as Lua numbers: below 2^53, with room to count up.
            stamps: AtomicU64::new(seed % (1 << 52) + 1),
            clock: None,
        })
    }

    /// The same store, reading time from `clock` instead of Redis `TIME` (for tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Where this store's keys live.
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    /// Whether the breaker is open (calls fail fast).
    pub fn is_degraded(&self) -> bool {
        self.calls.breaker.is_open()
    }

    /// Adds this replica's signal counts and reads the service's back now, instead of at the
    /// next flush (tests that compare decisions step by step).
    pub async fn flush_signal(&self) -> Result<(), StoreError> {
        match &self.signal {
            Some(signal) => signal.flush(&self.calls, &self.keyspace, self.now()).await,
            None => Ok(()),
        }
    }

    /// The time the store's side of the signal goes by: the injected clock, else the system's.
    fn now(&self) -> UnixMillis {
        self.clock
            .as_ref()
            .map_or_else(|| SystemClock.now(), |c| c.now())
    }

    fn now_arg(&self) -> String {
        self.clock
            .as_ref()
            .map(|c| c.now().to_string())
            .unwrap_or_default()
    }

    /// Starts the signal's flush task once, from the first attempt (in the runtime, with the
    /// clock the store ended up with). Every attempt asks, so the common answer is a read, not
    /// a write every core would contend for.
    fn share_signal(&self) {
        if let Some(signal) = &self.signal
            && !self.sharing.load(Ordering::Relaxed)
            && !self.sharing.swap(true, Ordering::Relaxed)
        {
            let clock = self.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
            SharedSignal::share(signal, &self.calls, self.keyspace.clone(), clock);
        }
    }

    /// Runs a counter function on `keys` (one slot's, through [`Calls::together`]): the keys,
    /// then `now`, then `args`, then each key's dimension (and what `per_key` adds for it). One
    /// FCALL; the JSON reply decoded by name.
    async fn run_counters<T: DeserializeOwned>(
        &self,
        doing: &'static str,
        function: &str,
        keys: &[&AttemptKey],
        args: &[&str],
        per_key: impl Fn(&AttemptKey) -> Option<&'static str>,
    ) -> Result<T, StoreError> {
        let mut call = redis::cmd("FCALL");
        call.arg(function).arg(keys.len());
        for key in keys {
            call.arg(self.keyspace.counter(key));
        }
        call.arg(self.now_arg());
        for arg in args {
            call.arg(*arg);
        }
        for key in keys {
            call.arg(key.dimension.as_str());
            if let Some(extra) = per_key(key) {
                call.arg(extra);
            }
        }
        // The caller runs a slot's call with the others, for the breaker as one.
        self.call_function(doing, call, Breaking::Unreported).await
    }

    /// One FCALL, its JSON reply decoded; when the function is missing, loads the library and
    /// calls again, in the same round of the breaker.
    async fn call_function<T: DeserializeOwned>(
        &self,
        doing: &'static str,
        call: Cmd,
        breaker: Breaking,
    ) -> Result<T, StoreError> {
        let library = &self.library;
        let run = |mut conn: Conn| async move {
            let seen = library.loads.load(Ordering::Acquire);
            match call.query_async(&mut conn).await {
                Err(error) if is_missing_function(&error) => {
                    library.load(&mut conn, seen).await?;
                    call.query_async(&mut conn).await
                }
                answer => answer,
            }
        };
        let reply: String = match breaker {
            Breaking::Reported => self.calls.call(doing, run).await?,
            Breaking::Unreported => self.calls.try_call(doing, run).await?,
        };
        serde_json::from_str(&reply)
            .map_err(|e| StoreError::Protocol(format!("{doing}: reply {reply:?}: {e}")))
    }

    /// Whether Redis answers a PING (for readiness; never per request).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.calls
            .call("pinging", |mut conn| async move {
                redis::cmd("PING").query_async::<String>(&mut conn).await
            })
            .await
            .map(drop)
    }

    /// The attempt's keys the functions count, grouped by slot: indices into `keys`, in order.
    /// The global key is among them only for a limit besides the signal (which is shared off
    /// the attempt path), so by default no key is written by every attempt.
    fn groups(&self, keys: &[AttemptKey], counts: impl Fn(&AttemptKey) -> bool) -> Vec<Vec<usize>> {
        let mut groups: Vec<(Cow<'_, str>, Vec<usize>)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let p = self.policy.for_dimension(key.dimension);
            let limits = p.attempts.is_some()
                || p.throttle.is_some()
                || p.failures.is_some()
                || p.lockout.is_some()
                || p.spray.is_some();
            if !limits || !counts(key) {
                continue;
            }
            let group = self.keyspace.group(key);
            match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, members)) => members.push(i),
                None => groups.push((group, vec![i])),
            }
        }
        groups.into_iter().map(|(_, members)| members).collect()
    }

    /// Adds restricted counters to the restrictions index (an admin view: a failure is logged,
    /// and the decision stands).
    async fn index_restrictions(&self, restricted: &[LockoutEvent]) {
        if restricted.is_empty() {
            return;
        }
        let mut call = redis::cmd("FCALL");
        call.arg(&self.library.restrict)
            .arg(1)
            .arg(self.keyspace.single(RESTRICTIONS))
            .arg(self.now_arg());
        for event in restricted {
            call.arg(self.keyspace.counter(&event.key));
            match event.lockout {
                Lockout::Temporary { until } | Lockout::Ban { until } => call.arg(until),
                Lockout::Permanent => call.arg("permanent"),
            };
        }
        if let Err(error) = self
            .call_function::<Empty>("indexing a restriction", call, Breaking::Reported)
            .await
        {
            tracing::warn!(%error, "a restriction was not indexed; /admin/v1/lockouts will miss it");
        }
    }

    /// Takes back what `attempt` counted in the calls that did not refuse: all of it when
    /// `refused`, else (a challenge) the lockout admissions (`started`: the lockouts they
    /// started).
    async fn release(
        &self,
        attempt: &Counted<'_>,
        refused: bool,
        breaker: Breaking,
    ) -> Result<(), StoreError> {
        let Counted {
            keys,
            counted,
            started,
            under_attack,
            stamp,
        } = *attempt;
        let calls = counted.iter().filter_map(|(group, reply)| {
            let admitted = match reply {
                AttemptReply::Admitted { .. } => true,
                AttemptReply::Challenged { .. } if refused => false,
                _ => return None,
            };
            let members: Vec<&AttemptKey> = group.iter().map(|&i| &keys[i]).collect();
            let args = [
                if refused { "refused" } else { "challenged" },
                flag(under_attack),
                stamp,
                flag(admitted),
            ];
            Some(async move {
                self.run_counters::<Empty>(
                    "releasing an attempt",
                    &self.library.release,
                    &members,
                    &args,
                    |key| started_arg(started, key),
                )
                .await
            })
        });
        let doing = "releasing an attempt";
        let released = self.calls.together(doing, breaker, calls).await?;
        released.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(())
    }

    /// Settles an admitted attempt (`outcome`: 'success', 'failure' or 'abandoned') on every
    /// slot it touches; returns the bans it started and, for a success, whether it is the
    /// account's first in the signal's window (`None`: no username key said).
    async fn settle(
        &self,
        doing: &'static str,
        keys: &[AttemptKey],
        outcome: &str,
        username: &str,
        pending: &[LockoutEvent],
    ) -> Result<(Vec<LockoutEvent>, Option<bool>), StoreError> {
        let failed = outcome == "failure";
        let success = outcome == "success";
        let signal = self.signal_of(keys).is_some();
        let remembers = self.policy.challenge.unfamiliar_networks;
        let touches = |key: &AttemptKey| {
            let p: &KeyPolicy = self.policy.for_dimension(key.dimension);
            p.lockout.is_some()
                || (failed && (p.failures.is_some() || p.spray.is_some()))
                || (success && (signal || remembers) && key.dimension == Dimension::Username)
        };
        let groups = self.groups(keys, touches);
        let calls = groups.iter().map(|group| async move {
            let members: Vec<&AttemptKey> = group.iter().map(|&i| &keys[i]).collect();
            let reply: RecordReply = self
                .run_counters(
                    doing,
                    &self.library.record,
                    &members,
                    &[outcome, username, network_arg(keys)],
                    |key| started_arg(pending, key),
                )
                .await?;
            let bans = reply
                .bans
                .into_iter()
                .map(|ban| {
                    Ok(LockoutEvent {
                        key: (*key_at(&members, ban.key)?).clone(),
                        lockout: Lockout::Ban { until: ban.until },
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok::<_, StoreError>((bans, reply.first_success))
        });
        let mut bans = Vec::new();
        let mut first_success = None;
        let settled = self
            .calls
            .together(doing, Breaking::Reported, calls)
            .await?;
        for result in settled {
            let (started, first) = result?;
            bans.extend(started);
            first_success = first_success.or(first);
        }
        self.index_restrictions(&bans).await;
        Ok((bans, first_success))
    }

    /// The signal, if the attempt counts in it: as in the core, where the signal is the global
    /// key's, only an attempt with that key does (none while the policy is disabled).
    fn signal_of(&self, keys: &[AttemptKey]) -> Option<&SharedSignal> {
        let global = keys.iter().any(|k| k.dimension == Dimension::Global);
        self.signal.as_deref().filter(|_| global)
    }

    /// The signal an attempt touching `keys` counts in: none from a trusted device (stuffing
    /// never has one).
    fn counting_signal(&self, keys: &[AttemptKey]) -> Option<&SharedSignal> {
        self.signal_of(keys)
            .filter(|_| !keys.iter().any(|k| k.dimension == Dimension::Device))
    }

    /// Counts a finished attempt's `sign` in the signal (a verified failure with its account's
    /// keyed hash and its password's digest).
    fn count_in_signal(
        &self,
        keys: &[AttemptKey],
        sign: Sign,
        username: Option<&str>,
        password: Option<u64>,
    ) {
        if let Some(signal) = self.counting_signal(keys) {
            signal.count(self.now(), sign, username, password);
        }
    }
}

/// What an attempt's calls counted, for a release to take back.
#[derive(Clone, Copy)]
struct Counted<'a> {
    keys: &'a [AttemptKey],
    /// Each slot that answered (its keys' indices) and its reply.
    counted: &'a [(Vec<usize>, AttemptReply)],
    /// The lockouts their admissions started.
    started: &'a [LockoutEvent],
    under_attack: bool,
    stamp: &'a str,
}

/// The key text of the attempt's network, for the functions (`''`: none).
fn network_arg(keys: &[AttemptKey]) -> &str {
    familiar::network_of(keys).map_or("", |k| k.key.as_str())
}

fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

/// A seed from the process's random hasher keys (no extra dependency for two numbers).
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::process::id())
}

/// A reply with nothing in it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// The attempt function's reply (see `lua/attempt.lua`).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum AttemptReply {
    Refused {
        key: usize,
        reason: Reason,
        retry_after_ms: u64,
    },
    Challenged {
        risk: u64,
        /// The attempt's network is new to the account these keys hold.
        #[serde(default)]
        unfamiliar: bool,
    },
    Admitted {
        risk: u64,
        #[serde(default)]
        pending: Vec<PendingReply>,
        #[serde(default)]
        unfamiliar: bool,
    },
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LockoutKind {
    Temporary,
    Permanent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PendingReply {
    key: usize,
    lockout: LockoutKind,
    until: u64,
}

/// The record function's reply (see `lua/record.lua`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordReply {
    #[serde(default)]
    bans: Vec<BanReply>,
    first_success: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanReply {
    key: usize,
    until: u64,
}

/// The attempt key a function names by its 1-based position in KEYS.
fn key_at<'k>(keys: &[&'k AttemptKey], index: usize) -> Result<&'k AttemptKey, StoreError> {
    index
        .checked_sub(1)
        .and_then(|i| keys.get(i))
        .copied()
        .ok_or_else(|| StoreError::Protocol(format!("reply names key {index} of {}", keys.len())))
}

/// The lockout kind a function is told an admission started on `key`.
fn started_arg(pending: &[LockoutEvent], key: &AttemptKey) -> Option<&'static str> {
    Some(match started_on(pending, key) {
        Some(Lockout::Temporary { .. }) => "temporary",
        Some(Lockout::Permanent) => "permanent",
        Some(Lockout::Ban { .. }) | None => "",
    })
}

#[async_trait]
impl AttemptStore for RedisStore {
    async fn attempt(&self, keys: &[AttemptKey], proof_work: u64) -> Result<Decision, StoreError> {
        self.share_signal();
        let judged = self.signal_of(keys).map(|signal| signal.judge(self.now()));
        let under_attack = judged.is_some_and(|judged| judged.under_attack);
        let trusted = keys.iter().any(|k| k.dimension == Dimension::Device);
        let stamp = self.stamps.fetch_add(1, Ordering::Relaxed).to_string();
        let proof = proof_work.to_string();
        let args = [
            proof.as_str(),
            flag(under_attack),
            flag(trusted),
            stamp.as_str(),
            network_arg(keys),
        ];
        let groups = self.groups(keys, |_| true);
        let calls = groups.iter().map(|group| {
            let members: Vec<&AttemptKey> = group.iter().map(|&i| &keys[i]).collect();
            async move {
                self.run_counters::<AttemptReply>(
                    "deciding an attempt",
                    &self.library.attempt,
                    &members,
                    &args,
                    |_| None,
                )
                .await
            }
        });
        let replies = self
            .calls
            .together("deciding an attempt", Breaking::Reported, calls)
            .await?;
        let mut counted = Vec::new();
        let mut failure = None;
        for (group, reply) in groups.into_iter().zip(replies) {
            match reply {
                Ok(reply) => counted.push((group, reply)),
                // Unavailability first: it is what the fallback answers.
                Err(error)
                    if failure.is_none() || matches!(error, StoreError::Unavailable { .. }) =>
                {
                    failure = Some(error)
                }
                Err(_) => {}
            }
        }
        let started = started_lockouts(keys, &counted)?;
        let attempt = Counted {
            keys,
            counted: &counted,
            started: &started,
            under_attack,
            stamp: &stamp,
        };
        if let Some(error) = failure {
            // A slot did not answer: what the others counted is taken back (as far as Redis
            // answers), and the error decides (the fallback counts the attempt locally).
            let release = self.release(&attempt, true, Breaking::Unreported);
            if let Err(also) = release.await {
                tracing::warn!(error = %also, "an unfinished attempt was not taken back");
            }
            return Err(error);
        }
        let (decision, signal_counts) = combine(
            &self.policy,
            keys,
            &counted,
            started.clone(),
            proof_work,
            trusted,
            under_attack,
        )?;
        if let (Some(signal), Some(judged)) = (self.signal_of(keys), judged)
            && decision.counts()
            && let Some(trip) = signal.keep(judged)
        {
            // The attempt that tipped it does not wait for the others to hear.
            let (calls, keyspace) = (self.calls.clone(), self.keyspace.clone());
            tokio::spawn(async move { signal::announce(&calls, &keyspace, trip).await });
        }
        // A challenge counts as a failed attempt until an attempt answers it (one only the
        // network asked for, not at all).
        let signal = self.counting_signal(keys).filter(|_| signal_counts);
        if let Some(signal) = signal.filter(|_| proof_work > 0 && decision.counts()) {
            signal.count_challenge(self.now(), ChallengeStep::Answered);
        }
        match &decision {
            Decision::Deny(_) => {
                self.release(&attempt, true, Breaking::Reported).await?;
            }
            Decision::Challenge { .. } => {
                self.release(&attempt, false, Breaking::Reported).await?;
                if let Some(signal) = signal {
                    signal.count_challenge(self.now(), ChallengeStep::Issued);
                }
            }
            Decision::Allow { pending, .. } => self.index_restrictions(pending).await,
        }
        Ok(decision)
    }

    async fn record(
        &self,
        keys: &[AttemptKey],
        verified: Verified,
        username: &str,
        pending: &[LockoutEvent],
    ) -> Result<Vec<LockoutEvent>, StoreError> {
        let outcome = verified.outcome;
        let name = match outcome {
            Outcome::Failure => "failure",
            Outcome::Success => "success",
        };
        let (bans, first_success) = self
            .settle("recording an outcome", keys, name, username, pending)
            .await?;
        // A success counts once per account per bucket (the username key says which).
        match outcome {
            Outcome::Failure => {
                let sign = Sign {
                    failed: true,
                    unknown_username: verified.unknown_username,
                    first_failure_of_account: false,
                };
                self.count_in_signal(keys, sign, Some(username), verified.password);
            }
            Outcome::Success if first_success.unwrap_or(true) => {
                self.count_in_signal(keys, Sign::default(), None, None)
            }
            Outcome::Success => {}
        }
        Ok(bans)
    }

    async fn remember_network(&self, keys: &[AttemptKey]) -> Result<(), StoreError> {
        let (Some(account), Some(network), true) = (
            familiar::account_of(keys),
            familiar::network_of(keys),
            self.policy.challenge.unfamiliar_networks,
        ) else {
            return Ok(());
        };
        let doing = "remembering a network";
        let (members, args) = ([account], [network.key.as_str()]);
        let call =
            self.run_counters::<Empty>(doing, &self.library.remember, &members, &args, |_| None);
        let results = self
            .calls
            .together(doing, Breaking::Reported, [call])
            .await?;
        results.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(())
    }

    async fn abandon(
        &self,
        keys: &[AttemptKey],
        pending: &[LockoutEvent],
    ) -> Result<(), StoreError> {
        self.settle("abandoning an attempt", keys, "abandoned", "", pending)
            .await?;
        self.count_in_signal(keys, Sign::FAILED, None, None);
        Ok(())
    }

    fn attack_signal(&self) -> Option<Assessment> {
        self.signal.as_ref().map(|signal| signal.assess(self.now()))
    }

    async fn hand_over(&self) -> Result<(), StoreError> {
        self.flush_signal().await
    }

    async fn consume_proof(&self, id: &str, expires_at: UnixMillis) -> Result<bool, StoreError> {
        let Some(ttl) = expires_at.checked_sub(self.now()).filter(|&ttl| ttl > 0) else {
            return Ok(false);
        };
        let key = self.keyspace.proof(id);
        let set: Option<String> = self
            .calls
            .call("consuming a solved challenge", |mut conn| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }
}

/// The lockouts the slots' admissions started (`counted`: each answering group and its reply).
fn started_lockouts(
    keys: &[AttemptKey],
    counted: &[(Vec<usize>, AttemptReply)],
) -> Result<Vec<LockoutEvent>, StoreError> {
    let mut started = Vec::new();
    for (group, reply) in counted {
        let AttemptReply::Admitted { pending, .. } = reply else {
            continue;
        };
        let members: Vec<&AttemptKey> = group.iter().map(|&i| &keys[i]).collect();
        for lockout in pending {
            started.push(LockoutEvent {
                key: key_at(&members, lockout.key)?.clone(),
                lockout: match lockout.lockout {
                    LockoutKind::Temporary => Lockout::Temporary {
                        until: lockout.until,
                    },
                    LockoutKind::Permanent => Lockout::Permanent,
                },
            });
        }
    }
    Ok(started)
}

/// The decision the slots' answers make together (`counted`: each answering group and its
/// reply; `started`: the lockouts their admissions started): the longest refusal (the first key on a tie, as in the core), else a challenge if
/// any slot asked for one or the highest risk asks for more work than the proof carries, else
/// admitted with every lockout the admissions started; and whether the under-attack signal
/// counts the attempt's challenge, asked or answered (`ChallengePolicy::signal_counts`).
fn combine(
    policy: &Policy,
    keys: &[AttemptKey],
    counted: &[(Vec<usize>, AttemptReply)],
    started: Vec<LockoutEvent>,
    proof_work: u64,
    trusted: bool,
    under_attack: bool,
) -> Result<(Decision, bool), StoreError> {
    let mut refusal: Option<(usize, Denial)> = None;
    let mut risk = 0;
    let mut challenged = false;
    let mut unfamiliar = false;
    for (group, reply) in counted {
        let at = |index: usize| {
            index
                .checked_sub(1)
                .and_then(|i| group.get(i))
                .copied()
                .ok_or_else(|| StoreError::Protocol(format!("reply names key {index}")))
        };
        match reply {
            AttemptReply::Refused {
                key,
                reason,
                retry_after_ms,
            } => {
                let index = at(*key)?;
                let longer = refusal.as_ref().is_none_or(|(first, denial)| {
                    *retry_after_ms > denial.retry_after_ms
                        || (*retry_after_ms == denial.retry_after_ms && index < *first)
                });
                if longer {
                    let denial = Denial {
                        dimension: keys[index].dimension,
                        reason: *reason,
                        retry_after_ms: *retry_after_ms,
                    };
                    refusal = Some((index, denial));
                }
            }
            AttemptReply::Challenged {
                risk: r,
                unfamiliar: u,
            } => {
                challenged = true;
                risk = risk.max(*r);
                unfamiliar |= u;
            }
            AttemptReply::Admitted {
                risk: r,
                unfamiliar: u,
                ..
            } => {
                risk = risk.max(*r);
                unfamiliar |= u;
            }
        }
    }
    let challenge = &policy.challenge;
    let signal_counts = challenge.signal_counts(risk, trusted, under_attack, unfamiliar);
    if let Some((_, denial)) = refusal {
        return Ok((Decision::Deny(denial), signal_counts));
    }
    let decision = match challenge.required(risk, trusted, under_attack, unfamiliar) {
        Some(work) if challenged || proof_work < work => Decision::Challenge { work },
        None if challenged => {
            return Err(StoreError::Protocol(
                "a slot asked for a challenge the policy does not".to_owned(),
            ));
        }
        _ => Decision::Allow {
            pending: started,
            under_attack,
        },
    };
    Ok((decision, signal_counts))
}
