//! The Redis store: every replica shares one view of every attempt.
//!
//! The counter logic is the core's, in Lua (`lua/*.lua`, embedded at build time), loaded as one
//! Redis Functions library so each decision is one atomic `FCALL`: a refused attempt costs one
//! call, a verified one two. The library is generated with the policy's numbers in it and named
//! by its SHA-1, so the tables and functions are built once when it loads, not on every call,
//! and replicas with another policy (a rolling deploy) use a library of their own. After a
//! restart, a failover or a `FUNCTION FLUSH` the first call finds no function, and the store
//! loads the library (on every primary) and calls again. Functions read Redis `TIME` once per
//! call, so replicas' clocks do not matter. Functions need Redis 7.0 or later.
//!
//! The contract with Lua is by name: the policy reaches the functions as a generated table with
//! the core's field names ([`policy_lua`]), each key's dimension by name, and replies come back
//! as JSON decoded into the structs below. Every call goes through [`RedisStore::call`]: one
//! timeout, one circuit breaker, one classification of errors (unavailable vs. protocol).
//!
//! A solved challenge is consumed with `SET {prefix}:proof:<nonce> NX PX <its remaining life>`,
//! so it admits one attempt across every replica.
//!
//! Keys are `{prefix}:...`: the hash tag puts all of a deployment's keys in one Cluster slot,
//! because one attempt's call touches its address, subnet and account counters together.
//! Cluster then buys failover, not sharding. A counter is `{prefix}:c:<key>`, one packed string
//! (`lua/common.lua`, [`state`]). Usernames appear only as HMACs (see `portcullis_core::keys`);
//! every key has a TTL (the security event stream `{prefix}:events` is also capped with
//! `MAXLEN ~`).

mod connection;
mod policy_lua;
mod state;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::backoff::Lockout;
use portcullis_core::decision::started_on;
use portcullis_core::{
    AttemptKey, Decision, Denial, KeyState, LockoutEvent, Outcome, Policy, Reason, UnixMillis,
};
use redis::{Cmd, ErrorKind, RedisError, ServerErrorKind};
use serde::Deserialize;

pub use connection::{Conn, Connections};
pub use state::StoredState;

use crate::admin::{AdminStore, Invalidation, KeyStatus, Listener, Restriction};
use crate::{
    AttemptStore, Breaker, Clock, EventLog, RecordedEvent, SecurityEvent, StoreError, SystemClock,
};

const COMMON: &str = include_str!("lua/common.lua");
/// The restrictions index: a sorted set of locked or banned keys, scored by when that ends.
const RESTRICTIONS: &str = "restrictions";

/// Where and how to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// One URL, or a cluster's seed nodes.
    pub urls: Vec<String>,
    /// Whether `urls` are Redis Cluster nodes.
    pub cluster: bool,
    /// Key prefix (becomes the hash tag), so deployments can share a Redis.
    pub prefix: String,
    /// Longest wait for one Redis call.
    pub timeout: Duration,
}

/// Where counter keys start, after the prefix: `c` for the packed layout.
const COUNTERS: &str = "c:";

/// The counter functions, as one Redis Functions library generated for a policy.
struct Library {
    /// `#!lua name=portcullis_<sha>` and the code.
    code: String,
    attempt: String,
    record: String,
    restrictions: String,
}

impl Library {
    fn new(policy: &Policy) -> Result<Self, StoreError> {
        let prelude = policy_lua::prelude(policy)?;
        let wrap =
            |name: &str, body: &str| format!("local function {name}(KEYS, ARGV)\n{body}\nend\n");
        let body = format!(
            "{prelude}{COMMON}\n{}{}{}",
            wrap("attempt", include_str!("lua/attempt.lua")),
            wrap("record", include_str!("lua/record.lua")),
            wrap("restrictions", include_str!("lua/restrictions.lua")),
        );
        // The library's name is the SHA-1 of everything in it: the policy included.
        let sha = redis::Script::new(&body).get_hash().to_owned();
        let sha = &sha[..16];
        let name = |function: &str| format!("portcullis_{function}_{sha}");
        let mut code = format!("#!lua name=portcullis_{sha}\n{body}");
        for function in ["attempt", "record", "restrictions"] {
            code.push_str(&format!(
                "redis.register_function('{}', {function})\n",
                name(function)
            ));
        }
        Ok(Self {
            code,
            attempt: name("attempt"),
            record: name("record"),
            restrictions: name("restrictions"),
        })
    }
}

/// Whether Redis answered that a function does not exist (after a restart, a failover or a
/// `FUNCTION FLUSH`: the library must be loaded again).
fn is_missing_function(error: &RedisError) -> bool {
    error.to_string().contains("Function not found")
}

/// Attempt counters, the restrictions index and security events in Redis or Redis Cluster.
pub struct RedisStore {
    connections: Connections,
    /// The nodes to subscribe to for announced changes (any node hears a Cluster's PUBLISH).
    urls: Vec<String>,
    library: Library,
    /// `{prefix}:`, the start of every key.
    key_prefix: String,
    /// The policy the scripts apply (also: when a state read back has expired).
    policy: Policy,
    timeout: Duration,
    /// Every call passes it: one view of whether Redis answers, for every trait served.
    breaker: Breaker,
    /// Tests move time with this; production leaves it unset and scripts read Redis `TIME`.
    clock: Option<Arc<dyn Clock>>,
}

/// The breaker is open: the call was not tried.
#[derive(Debug, thiserror::Error)]
#[error("circuit breaker open")]
pub struct BreakerOpen;

/// The call did not answer within the timeout.
#[derive(Debug, thiserror::Error)]
#[error("redis call timed out")]
pub struct TimedOut;

impl RedisStore {
    /// A store applying `policy`, calling through `breaker`; connects on first use.
    pub fn new(
        config: &RedisConfig,
        policy: &Policy,
        breaker: Breaker,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            connections: Connections::new(&config.urls, config.cluster)?,
            urls: config.urls.clone(),
            library: Library::new(policy)?,
            policy: *policy,
            key_prefix: format!("{{{}}}:", config.prefix),
            timeout: config.timeout,
            breaker,
            clock: None,
        })
    }

    /// The same store, reading time from `clock` instead of Redis `TIME` (for tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The full Redis key of a store key.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    /// The full Redis key of a counter.
    pub fn counter_key(&self, key: &AttemptKey) -> String {
        format!("{}{COUNTERS}{}", self.key_prefix, key.key)
    }

    /// Whether the breaker is open (calls fail fast).
    pub fn is_degraded(&self) -> bool {
        self.breaker.is_open()
    }

    fn now_arg(&self) -> String {
        self.clock
            .as_ref()
            .map(|c| c.now().to_string())
            .unwrap_or_default()
    }

    /// Runs a counter function: the keys, then `now` and the restrictions index, then `args`,
    /// then each key's dimension (and what `per_key` adds for it). One FCALL; the JSON reply
    /// decoded by name.
    async fn run_counters<T: for<'de> Deserialize<'de>>(
        &self,
        doing: &'static str,
        function: &str,
        keys: &[AttemptKey],
        args: &[&str],
        per_key: impl Fn(&AttemptKey) -> Option<&'static str>,
    ) -> Result<T, StoreError> {
        let mut call = redis::cmd("FCALL");
        call.arg(function).arg(keys.len());
        for key in keys {
            call.arg(self.counter_key(key));
        }
        call.arg(self.now_arg()).arg(self.key(RESTRICTIONS));
        for arg in args {
            call.arg(*arg);
        }
        for key in keys {
            call.arg(key.dimension.as_str());
            if let Some(extra) = per_key(key) {
                call.arg(extra);
            }
        }
        let reply: String = self.call_function(doing, call).await?;
        serde_json::from_str(&reply)
            .map_err(|e| StoreError::Protocol(format!("{doing}: reply {reply:?}: {e}")))
    }

    /// One FCALL; when the function is missing, loads the library (on every primary) and calls
    /// again, in the same round of the breaker.
    async fn call_function(&self, doing: &'static str, call: Cmd) -> Result<String, StoreError> {
        let code = &self.library.code;
        self.call(doing, |mut conn| async move {
            match call.query_async(&mut conn).await {
                Err(error) if is_missing_function(&error) => {
                    redis::cmd("FUNCTION")
                        .arg("LOAD")
                        .arg("REPLACE")
                        .arg(code)
                        .query_async::<()>(&mut conn)
                        .await?;
                    call.query_async(&mut conn).await
                }
                answer => answer,
            }
        })
        .await
    }

    /// Runs one Redis call through the breaker, with the timeout; drops the connection after
    /// an I/O failure. Only unavailability counts against the breaker.
    async fn call<T, F, Fut>(&self, doing: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        if !self.breaker.permits() {
            return Err(StoreError::unavailable(doing, BreakerOpen));
        }
        let result = self.try_call(doing, f).await;
        match &result {
            Err(StoreError::Unavailable { .. }) => self.breaker.failed(),
            Err(error @ StoreError::Protocol(_)) => {
                self.breaker.succeeded();
                tracing::error!(error = %error, "redis answered something this code does not understand");
            }
            Ok(_) | Err(StoreError::Misconfigured(_)) => self.breaker.succeeded(),
        }
        result
    }

    async fn try_call<T, F, Fut>(&self, doing: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let conn = match tokio::time::timeout(self.timeout, self.connections.get()).await {
            Ok(conn) => conn?,
            Err(_) => return Err(StoreError::unavailable(doing, TimedOut)),
        };
        match tokio::time::timeout(self.timeout, f(conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) if is_protocol_error(&error) => {
                Err(StoreError::Protocol(format!("{doing}: {error}")))
            }
            Ok(Err(error)) => {
                if error.is_io_error() || error.is_connection_dropped() || error.is_timeout() {
                    self.connections.reset();
                }
                Err(StoreError::unavailable(doing, error))
            }
            Err(_) => {
                self.connections.reset();
                Err(StoreError::unavailable(doing, TimedOut))
            }
        }
    }

    /// Whether Redis answers a PING (for readiness; never per request).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call("pinging", |mut conn| async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .map(drop)
    }
}

/// A reply this code does not understand (a script error, a type mismatch): a bug to fix, not
/// an outage to wait out.
fn is_protocol_error(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Parse
            | ErrorKind::UnexpectedReturnType
            | ErrorKind::Extension
            | ErrorKind::Server(ServerErrorKind::ResponseError)
    )
}

/// The attempt script's reply (see `lua/attempt.lua`).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum AttemptReply {
    Refused {
        key: usize,
        reason: Reason,
        retry_after_ms: u64,
    },
    Challenged {
        work: u64,
    },
    Admitted {
        under_attack: bool,
        #[serde(default)]
        pending: Vec<PendingReply>,
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

/// The record script's reply (see `lua/record.lua`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordReply {
    #[serde(default)]
    bans: Vec<BanReply>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanReply {
    key: usize,
    until: u64,
}

/// The restrictions script's reply (see `lua/restrictions.lua`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestrictionsReply {
    #[serde(default)]
    restrictions: Vec<RestrictionReply>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestrictionReply {
    key: String,
    until: Option<u64>,
}

/// The attempt key a script names by its 1-based position in KEYS.
fn key_at(keys: &[AttemptKey], index: usize) -> Result<&AttemptKey, StoreError> {
    index
        .checked_sub(1)
        .and_then(|i| keys.get(i))
        .ok_or_else(|| StoreError::Protocol(format!("reply names key {index} of {}", keys.len())))
}

/// The lockout kind a script is told an admission started on `key`.
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
        let reply: AttemptReply = self
            .run_counters(
                "deciding an attempt",
                &self.library.attempt,
                keys,
                &[&proof_work.to_string()],
                |_| None,
            )
            .await?;
        Ok(match reply {
            AttemptReply::Refused {
                key,
                reason,
                retry_after_ms,
            } => Decision::Deny(Denial {
                dimension: key_at(keys, key)?.dimension,
                reason,
                retry_after_ms,
            }),
            AttemptReply::Challenged { work } => Decision::Challenge { work },
            AttemptReply::Admitted {
                under_attack,
                pending,
            } => Decision::Allow {
                pending: pending
                    .into_iter()
                    .map(|p| {
                        Ok(LockoutEvent {
                            key: key_at(keys, p.key)?.clone(),
                            lockout: match p.lockout {
                                LockoutKind::Temporary => Lockout::Temporary { until: p.until },
                                LockoutKind::Permanent => Lockout::Permanent,
                            },
                        })
                    })
                    .collect::<Result<_, StoreError>>()?,
                under_attack,
            },
        })
    }

    async fn record(
        &self,
        keys: &[AttemptKey],
        outcome: Outcome,
        username: &str,
        pending: &[LockoutEvent],
    ) -> Result<Vec<LockoutEvent>, StoreError> {
        let outcome = match outcome {
            Outcome::Failure => "failure",
            Outcome::Success => "success",
        };
        let reply: RecordReply = self
            .run_counters(
                "recording an outcome",
                &self.library.record,
                keys,
                &[outcome, username],
                |key| started_arg(pending, key),
            )
            .await?;
        reply
            .bans
            .into_iter()
            .map(|ban| {
                Ok(LockoutEvent {
                    key: key_at(keys, ban.key)?.clone(),
                    lockout: Lockout::Ban { until: ban.until },
                })
            })
            .collect()
    }

    async fn abandon(
        &self,
        keys: &[AttemptKey],
        pending: &[LockoutEvent],
    ) -> Result<(), StoreError> {
        let _: RecordReply = self
            .run_counters(
                "abandoning an attempt",
                &self.library.record,
                keys,
                &["abandoned", ""],
                |key| started_arg(pending, key),
            )
            .await?;
        Ok(())
    }

    async fn consume_proof(&self, id: &str, expires_at: UnixMillis) -> Result<bool, StoreError> {
        let now = match &self.clock {
            Some(clock) => clock.now(),
            None => SystemClock.now(),
        };
        let Some(ttl) = expires_at.checked_sub(now).filter(|&ttl| ttl > 0) else {
            return Ok(false);
        };
        let key = self.key(&format!("proof:{id}"));
        let set: Option<String> = self
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

#[async_trait]
impl AdminStore for RedisStore {
    async fn status(&self, keys: &[AttemptKey]) -> Result<Vec<KeyStatus>, StoreError> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("GET").arg(self.counter_key(key));
        }
        let (rows, now): (Vec<Option<Vec<u8>>>, u64) = self
            .call("reading key status", |mut conn| async move {
                let rows = pipe.query_async(&mut conn).await?;
                let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
                Ok((rows, secs * 1_000 + micros / 1_000))
            })
            .await?;
        let now = self.clock.as_ref().map_or(now, |c| c.now());
        Ok(keys
            .iter()
            .zip(rows)
            .map(|(key, packed)| {
                let stored = state::StoredState::from_packed(packed.as_deref().unwrap_or_default());
                // Past its expiry a state reads as fresh, as in the reference model, whether or
                // not Redis has dropped the key yet (its TTL runs on Redis' own clock).
                let expires_at = stored.expires_at(self.policy.for_dimension(key.dimension));
                if expires_at.is_none_or(|at| at > now) {
                    KeyStatus::new(key, &stored.state, stored.distinct_usernames, now)
                } else {
                    KeyStatus::new(key, &KeyState::default(), 0, now)
                }
            })
            .collect())
    }

    async fn clear(&self, keys: &[AttemptKey]) -> Result<u64, StoreError> {
        let mut pipe = redis::pipe();
        for key in keys {
            let full = self.counter_key(key);
            pipe.cmd("DEL").arg(&full);
            pipe.cmd("DEL").arg(format!("{full}:sp")).ignore();
            pipe.cmd("ZREM")
                .arg(self.key(RESTRICTIONS))
                .arg(&full)
                .ignore();
        }
        let deleted: Vec<u64> = self
            .call("clearing keys", |mut conn| async move {
                pipe.query_async(&mut conn).await
            })
            .await?;
        Ok(deleted.iter().sum())
    }

    async fn restrictions(&self, limit: usize) -> Result<Vec<Restriction>, StoreError> {
        let mut call = redis::cmd("FCALL");
        call.arg(&self.library.restrictions)
            .arg(1)
            .arg(self.key(RESTRICTIONS))
            .arg(self.now_arg())
            .arg(limit.max(1));
        let reply: String = self.call_function("listing restrictions", call).await?;
        let reply: RestrictionsReply = serde_json::from_str(&reply)
            .map_err(|e| StoreError::Protocol(format!("restrictions reply {reply:?}: {e}")))?;
        Ok(reply
            .restrictions
            .into_iter()
            .map(|r| Restriction {
                key: r
                    .key
                    .strip_prefix(&self.key_prefix)
                    .and_then(|k| k.strip_prefix(COUNTERS))
                    .map_or(r.key.clone(), str::to_owned),
                until: r.until,
            })
            .collect())
    }

    async fn announce(&self, change: Invalidation) -> Result<(), StoreError> {
        let channel = self.key(INVALIDATE);
        let _receivers: u64 = self
            .call("announcing a change", |mut conn| async move {
                redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(change.as_str())
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }

    fn listen(&self, listener: Listener) {
        let channel = self.key(INVALIDATE);
        let urls = self.urls.clone();
        tokio::spawn(async move {
            // Round the seed nodes, one subscription at a time, for the life of the process.
            for url in urls.iter().cycle() {
                if let Err(error) = subscribe(url, &channel, &listener).await {
                    tracing::warn!(%error, url = %url, "change subscription lost; resubscribing");
                }
                tokio::time::sleep(RESUBSCRIBE_AFTER).await;
            }
        });
    }
}

/// Where replicas announce changes that make cached refusals stale (classic pub/sub: a
/// Cluster's PUBLISH reaches the subscribers of every node).
const INVALIDATE: &str = "invalidate";
/// The pause before subscribing again after the subscription failed or ended.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(200);

/// Subscribes to `channel` on `url` and hands every change to `listener`, until the connection
/// fails. A successful (re)subscription is itself announced to the listener as both kinds of
/// change: whatever was announced while it was away may have been missed.
async fn subscribe(url: &str, channel: &str, listener: &Listener) -> redis::RedisResult<()> {
    use futures_util::StreamExt as _;
    let client = redis::Client::open(url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    listener(Invalidation::Unlock);
    listener(Invalidation::Allowlist);
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let payload: String = message.get_payload()?;
        match Invalidation::parse(&payload) {
            Some(change) => listener(change),
            None => tracing::warn!(payload, "unknown change announced; ignored"),
        }
    }
    Ok(())
}

/// The stream keeps about this many events (`MAXLEN ~`)...
const STREAM_EVENTS: usize = 10_000;
/// ...and disappears after this long without one, like every other key.
const STREAM_TTL_MS: u64 = 7 * 24 * 3_600_000;

#[async_trait]
impl EventLog for RedisStore {
    async fn append(&self, event: &SecurityEvent) -> Result<(), StoreError> {
        let payload = serde_json::to_string(event)
            .map_err(|e| StoreError::Protocol(format!("encoding an event: {e}")))?;
        let key = self.key("events");
        let kind = event.kind.as_str();
        self.call("appending an event", |mut conn| async move {
            // One round trip: the entry, then the stream's TTL.
            redis::pipe()
                .cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_EVENTS)
                .arg("*")
                .arg("kind")
                .arg(kind)
                .arg("event")
                .arg(payload)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(STREAM_TTL_MS)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn recent(&self, count: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let key = self.key("events");
        let entries: Vec<(String, Vec<(String, String)>)> = self
            .call("reading events", |mut conn| async move {
                redis::cmd("XREVRANGE")
                    .arg(key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(entries
            .iter()
            .filter_map(|(id, fields)| {
                // A stream id is `<milliseconds>-<sequence>`.
                let at = id.split('-').next()?.parse().ok()?;
                let (_, payload) = fields.iter().find(|(name, _)| name == "event")?;
                let event = serde_json::from_str(payload).ok()?;
                Some(RecordedEvent { at, event })
            })
            .collect())
    }
}
