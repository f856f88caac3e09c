//! The Redis store: every replica shares one view of every attempt and session.
//!
//! The counter logic is the core's, in Lua (`lua/*.lua`, embedded at build time) so each
//! decision is one atomic script call: a refused attempt costs one EVALSHA, a verified one two.
//! Scripts are called by SHA; after a `SCRIPT FLUSH` or a restart the client reloads them on
//! NOSCRIPT. Scripts read Redis `TIME` once per call, so replicas' clocks do not matter.
//!
//! Keys are `{prefix}:...`: the hash tag puts all of a deployment's keys in one Cluster slot,
//! because one attempt's script touches its address, subnet and account counters together.
//! Cluster then buys failover, not sharding (one primary runs far more scripts per second than
//! any fleet can hash passwords). Usernames appear only as HMACs (see `portcullis_core::keys`);
//! every key has a TTL (the security event stream `{prefix}:events` is also capped with
//! `MAXLEN ~`).

mod connection;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::backoff::{Lockout, Strategy};
use portcullis_core::{
    AttemptKey, Decision, Denial, Dimension, KeyPolicy, KeyState, LockoutEvent, Outcome, Policy,
    Reason,
};
use redis::{RedisError, Script, ScriptInvocation};

pub use connection::{Conn, Connections};

use crate::admin::{AdminStore, KeyStatus, Restriction};
use crate::{AttemptStore, Clock, EventLog, SecurityEvent, Session, SessionStore, StoreError};

const COMMON: &str = include_str!("lua/common.lua");
/// The restrictions index: a sorted set of locked or banned keys, scored by when that ends.
const RESTRICTIONS: &str = "restrictions";
/// The fields of a key's state hash (see `lua/common.lua`).
const STATE_FIELDS: [&str; 13] = [
    "at", "ft", "f", "lf", "lu", "tl", "p", "sc", "sw", "sb", "sn", "sl", "tt",
];

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

struct Scripts {
    attempt: Script,
    record: Script,
    restrictions: Script,
    session_create: Script,
    session_revoke: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Self {
            attempt: with_common(include_str!("lua/attempt.lua")),
            record: with_common(include_str!("lua/record.lua")),
            restrictions: with_common(include_str!("lua/restrictions.lua")),
            session_create: with_common(include_str!("lua/session_create.lua")),
            session_revoke: Script::new(include_str!("lua/session_revoke.lua")),
        }
    }
}

/// Attempt counters and sessions in Redis or Redis Cluster.
pub struct RedisStore {
    connections: Connections,
    scripts: Scripts,
    /// `{prefix}:`, the start of every key.
    key_prefix: String,
    /// Each dimension's policy as the scripts read it.
    policy_args: [String; Dimension::ALL.len()],
    timeout: Duration,
    /// Tests move time with this; production leaves it unset and scripts read Redis `TIME`.
    clock: Option<Arc<dyn Clock>>,
}

impl RedisStore {
    /// A store applying `policy`; connects on first use.
    pub fn new(config: &RedisConfig, policy: &Policy) -> Result<Self, StoreError> {
        Ok(Self {
            connections: Connections::new(&config.urls, config.cluster)?,
            scripts: Scripts::new(),
            key_prefix: format!("{{{}}}:", config.prefix),
            policy_args: Dimension::ALL.map(|d| policy_arg(policy.for_dimension(d), d)),
            timeout: config.timeout,
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

    fn now_arg(&self) -> String {
        self.clock
            .as_ref()
            .map(|c| c.now().to_string())
            .unwrap_or_default()
    }

    fn policy_of(&self, dimension: Dimension) -> &str {
        let index = Dimension::ALL
            .iter()
            .position(|&d| d == dimension)
            .unwrap_or_default();
        &self.policy_args[index]
    }

    /// Completes a counter script's call (the keys, each key's policy, the restrictions index
    /// after the script's leading arguments) and runs it: one EVALSHA.
    async fn run_counters(
        &self,
        mut invocation: ScriptInvocation<'_>,
        keys: &[AttemptKey],
    ) -> Result<Vec<i64>, StoreError> {
        for key in keys {
            invocation.key(self.key(&key.key));
        }
        for key in keys {
            invocation.arg(self.policy_of(key.dimension));
        }
        invocation.arg(self.key(RESTRICTIONS));
        self.call(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    /// Runs one Redis call with the timeout; drops the connection after a failure.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let conn = tokio::time::timeout(self.timeout, self.connections.get())
            .await
            .map_err(|_| StoreError::Unavailable("redis connect timed out".to_owned()))??;
        match tokio::time::timeout(self.timeout, f(conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if error.is_io_error() || error.is_connection_dropped() || error.is_timeout() {
                    self.connections.reset();
                }
                Err(StoreError::Unavailable(format!("redis: {error}")))
            }
            Err(_) => {
                self.connections.reset();
                Err(StoreError::Unavailable("redis call timed out".to_owned()))
            }
        }
    }
}

/// A dimension's policy as the 26 comma-separated numbers `common.lua` parses.
fn policy_arg(policy: &KeyPolicy, dimension: Dimension) -> String {
    let gcra = |g: Option<portcullis_core::gcra::Gcra>| {
        g.map_or((0, 0), |g| (u64::from(g.burst), g.interval_ms))
    };
    let (ab, ai) = gcra(policy.attempts);
    let (fb, fi) = gcra(policy.failures);
    let (tb, ti) = gcra(policy.throttle);
    let lockout = match &policy.lockout {
        Some(b) => format!(
            "{},{},{},{},{},{},{},{}",
            b.max_failures,
            match b.strategy {
                Strategy::Multiple => 0,
                Strategy::Linear => 1,
            },
            b.wait_increment_ms,
            b.max_wait_ms,
            b.failure_reset_ms,
            b.quick_login_check_ms,
            b.min_quick_login_wait_ms,
            b.permanent_after.map_or(-1, i64::from),
        ),
        None => "0,0,0,0,0,0,0,-1".to_owned(),
    };
    let resets = u8::from(dimension.resets_on_success());
    let spray = policy.spray.map_or_else(
        || "0,0,0,0,0,0".to_owned(),
        |s| {
            format!(
                "{},{},{},{},{},{}",
                s.max_usernames,
                s.window_ms,
                s.first_ban_ms,
                s.ban_multiplier,
                s.max_ban_ms,
                s.level_reset_ms
            )
        },
    );
    let attack = policy.attack.map_or_else(
        || "0,0,0,0".to_owned(),
        |a| {
            format!(
                "{},{},{},{}",
                a.window_ms, a.min_attempts, a.failure_percent, a.tighten_factor
            )
        },
    );
    let tightens = u8::from(dimension.tightens_under_attack());
    format!("{ab},{ai},{fb},{fi},{lockout},{resets},{spray},{tb},{ti},{attack},{tightens}")
}

fn reason(code: i64) -> Option<Reason> {
    match code {
        1 => Some(Reason::RateLimited),
        2 => Some(Reason::TooManyFailures),
        3 => Some(Reason::LockedOut),
        4 => Some(Reason::Banned),
        5 => Some(Reason::Throttled),
        _ => None,
    }
}

/// Reads the attempt script's answer (see `lua/attempt.lua`).
fn decision(reply: &[i64], keys: &[AttemptKey]) -> Result<Decision, StoreError> {
    let malformed = || StoreError::Unavailable(format!("unexpected attempt reply {reply:?}"));
    let key_at = |i: i64| {
        usize::try_from(i - 1)
            .ok()
            .and_then(|i| keys.get(i))
            .ok_or_else(malformed)
    };
    match reply {
        [1, i, code, retry] => Ok(Decision::Deny(Denial {
            dimension: key_at(*i)?.dimension,
            reason: reason(*code).ok_or_else(malformed)?,
            retry_after_ms: u64::try_from(*retry).map_err(|_| malformed())?,
        })),
        [0, under_attack, rest @ ..] if rest.len() % 3 == 0 => {
            let pending = rest
                .chunks(3)
                .map(|event| {
                    let lockout = match event[1] {
                        2 => Lockout::Permanent,
                        _ => Lockout::Temporary {
                            until: u64::try_from(event[2]).map_err(|_| malformed())?,
                        },
                    };
                    Ok(LockoutEvent {
                        key: key_at(event[0])?.clone(),
                        lockout,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            Ok(Decision::Allow {
                pending,
                under_attack: *under_attack == 1,
            })
        }
        _ => Err(malformed()),
    }
}

/// Reads the record script's answer: `{i, until, ...}` for each ban it started.
fn bans(reply: &[i64], keys: &[AttemptKey]) -> Result<Vec<LockoutEvent>, StoreError> {
    let malformed = || StoreError::Unavailable(format!("unexpected record reply {reply:?}"));
    if !reply.len().is_multiple_of(2) {
        return Err(malformed());
    }
    reply
        .chunks(2)
        .map(|ban| {
            let key = usize::try_from(ban[0] - 1)
                .ok()
                .and_then(|i| keys.get(i))
                .ok_or_else(malformed)?;
            Ok(LockoutEvent {
                key: key.clone(),
                lockout: Lockout::Ban {
                    until: u64::try_from(ban[1]).map_err(|_| malformed())?,
                },
            })
        })
        .collect()
}

#[async_trait]
impl AttemptStore for RedisStore {
    async fn attempt(&self, keys: &[AttemptKey]) -> Result<Decision, StoreError> {
        let mut invocation = self.scripts.attempt.prepare_invoke();
        invocation.arg(self.now_arg());
        decision(&self.run_counters(invocation, keys).await?, keys)
    }

    async fn record(
        &self,
        keys: &[AttemptKey],
        outcome: Outcome,
        username: &str,
    ) -> Result<Vec<LockoutEvent>, StoreError> {
        let mut invocation = self.scripts.record.prepare_invoke();
        invocation
            .arg(self.now_arg())
            .arg(match outcome {
                Outcome::Failure => "f",
                Outcome::Success => "s",
            })
            .arg(username);
        bans(&self.run_counters(invocation, keys).await?, keys)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(
            |mut conn| async move { redis::cmd("PING").query_async::<String>(&mut conn).await },
        )
        .await
        .map(drop)
    }
}

#[async_trait]
impl AdminStore for RedisStore {
    async fn status(&self, keys: &[AttemptKey]) -> Result<Vec<KeyStatus>, StoreError> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HMGET")
                .arg(self.key(&key.key))
                .arg(&STATE_FIELDS[..]);
        }
        let (rows, now): (Vec<Vec<Option<u64>>>, u64) = self
            .call(|mut conn| async move {
                let rows = pipe.query_async(&mut conn).await?;
                let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
                Ok((rows, secs * 1_000 + micros / 1_000))
            })
            .await?;
        let now = self.clock.as_ref().map_or(now, |c| c.now());
        Ok(keys
            .iter()
            .zip(rows)
            .map(|(key, row)| {
                let field = |i: usize| row.get(i).copied().flatten().unwrap_or(0);
                let small = |i: usize| u32::try_from(field(i)).unwrap_or(u32::MAX);
                let mut state = KeyState::default();
                state.lockout.failures = small(2);
                state.lockout.locked_until = field(4);
                state.lockout.permanent = field(6) == 1;
                state.spray.banned_until = field(9);
                state.spray.bans = small(10);
                KeyStatus::new(key, &state, small(7), now)
            })
            .collect())
    }

    async fn clear(&self, keys: &[AttemptKey]) -> Result<u64, StoreError> {
        let mut pipe = redis::pipe();
        for key in keys {
            let full = self.key(&key.key);
            pipe.cmd("DEL").arg(&full);
            pipe.cmd("DEL").arg(format!("{full}:sp")).ignore();
            pipe.cmd("ZREM")
                .arg(self.key(RESTRICTIONS))
                .arg(&full)
                .ignore();
        }
        let deleted: Vec<u64> = self
            .call(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await?;
        Ok(deleted.iter().sum())
    }

    async fn restrictions(&self, limit: usize) -> Result<Vec<Restriction>, StoreError> {
        let mut invocation = self.scripts.restrictions.prepare_invoke();
        invocation
            .key(self.key(RESTRICTIONS))
            .arg(self.now_arg())
            .arg(limit.max(1));
        let reply: Vec<(String, i64)> = self
            .call(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        Ok(reply
            .into_iter()
            .map(|(key, until)| Restriction {
                key: key
                    .strip_prefix(&self.key_prefix)
                    .map_or(key.clone(), str::to_owned),
                until: u64::try_from(until).ok(),
            })
            .collect())
    }
}

/// The stream keeps about this many events (`MAXLEN ~`)...
const STREAM_EVENTS: usize = 10_000;
/// ...and disappears after this long without one, like every other key.
const STREAM_TTL_MS: u64 = 7 * 24 * 3_600_000;

#[async_trait]
impl EventLog for RedisStore {
    async fn append(&self, event: &SecurityEvent) -> Result<(), StoreError> {
        let payload = serde_json::to_string(event)
            .map_err(|e| StoreError::Unavailable(format!("encoding an event: {e}")))?;
        let key = self.key("events");
        let kind = event.kind.as_str();
        self.call(|mut conn| async move {
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

    async fn recent(&self, count: usize) -> Result<Vec<SecurityEvent>, StoreError> {
        let key = self.key("events");
        let entries: Vec<(String, Vec<(String, String)>)> = self
            .call(|mut conn| async move {
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
            .filter_map(|(_, fields)| {
                let (_, payload) = fields.iter().find(|(name, _)| name == "event")?;
                serde_json::from_str(payload).ok()
            })
            .collect())
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(
        &self,
        digest: &str,
        subject: &str,
        ttl_ms: u64,
    ) -> Result<Session, StoreError> {
        let mut invocation = self.scripts.session_create.prepare_invoke();
        invocation
            .key(self.key(&format!("s:{digest}")))
            .key(self.key(&format!("as:{subject}")))
            .arg(self.now_arg())
            .arg(subject)
            .arg(ttl_ms)
            .arg(digest);
        let expires_at: u64 = self
            .call(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        Ok(Session {
            subject: subject.to_owned(),
            expires_at,
        })
    }

    async fn get(&self, digest: &str) -> Result<Option<Session>, StoreError> {
        let key = self.key(&format!("s:{digest}"));
        let (subject, expires_at): (Option<String>, Option<u64>) = self
            .call(|mut conn| async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("sub")
                    .arg("exp")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let now = self.clock.as_ref().map_or(0, |c| c.now());
        Ok(match (subject, expires_at) {
            (Some(subject), Some(expires_at)) if expires_at > now => Some(Session {
                subject,
                expires_at,
            }),
            _ => None,
        })
    }

    async fn revoke(&self, digest: &str) -> Result<bool, StoreError> {
        self.revoke_sessions(digest, "1").await.map(|n| n > 0)
    }

    async fn revoke_all(&self, digest: &str) -> Result<u64, StoreError> {
        self.revoke_sessions(digest, "all").await
    }
}

impl RedisStore {
    async fn revoke_sessions(&self, digest: &str, scope: &str) -> Result<u64, StoreError> {
        let mut invocation = self.scripts.session_revoke.prepare_invoke();
        invocation
            .key(self.key(&format!("s:{digest}")))
            .arg(scope)
            .arg(self.key("s:"))
            .arg(self.key("as:"));
        self.call(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
    }
}
