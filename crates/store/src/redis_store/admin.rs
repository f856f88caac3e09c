//! The admin side of the Redis store: counters' status, the restrictions index (lockouts and
//! bans, listed and cleared), and the channels where replicas announce changes that make cached
//! refusals stale, and trips.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use portcullis_core::{AttemptKey, KeyState, UnixMillis};
use redis::RedisError;

use super::signal::{self, SharedSignal};
use super::{Conn, RESTRICTIONS, RedisStore, StoredState, Topology};
use crate::StoreError;
use crate::admin::{AdminStore, Invalidation, KeyStatus, Listener, Restriction};

#[async_trait]
impl AdminStore for RedisStore {
    async fn status(&self, keys: &[AttemptKey]) -> Result<Vec<KeyStatus>, StoreError> {
        let counters: Vec<String> = keys.iter().map(|k| self.keyspace.counter(k)).collect();
        let (rows, now) = self
            .calls
            .call("reading key status", |conn| async move {
                let rows = read_counters(&conn, &counters).await?;
                Ok((rows, redis_time(conn).await?))
            })
            .await?;
        let now = self.clock.as_ref().map_or(now, |c| c.now());
        Ok(keys
            .iter()
            .zip(rows)
            .map(|(key, stored)| {
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
        let counters: Vec<String> = keys.iter().map(|k| self.keyspace.counter(k)).collect();
        let index = self.keyspace.single(RESTRICTIONS);
        self.calls
            .call("clearing keys", |conn| async move {
                // A counter and its spray set share a slot; the index has its own.
                let deleted = join_all(counters.iter().map(|counter| {
                    let mut conn = conn.clone();
                    async move {
                        redis::pipe()
                            .cmd("DEL")
                            .arg(counter)
                            .cmd("DEL")
                            .arg(format!("{counter}:sp"))
                            .ignore()
                            .query_async::<(u64,)>(&mut conn)
                            .await
                    }
                }))
                .await
                .into_iter()
                .map(|deleted| deleted.map(|(n,)| n))
                .sum::<Result<u64, RedisError>>()?;
                let mut conn = conn;
                redis::cmd("ZREM")
                    .arg(&index)
                    .arg(&counters)
                    .query_async::<()>(&mut conn)
                    .await?;
                Ok(deleted)
            })
            .await
    }

    async fn restrictions(&self, limit: usize) -> Result<Vec<Restriction>, StoreError> {
        let index = self.keyspace.single(RESTRICTIONS);
        let clock = self.clock.clone();
        let restricted = self
            .calls
            .call("listing restrictions", |mut conn| async move {
                let now = match clock {
                    Some(clock) => clock.now(),
                    None => redis_time(conn.clone()).await?,
                };
                let counters: Vec<String> = redis::pipe()
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(&index)
                    .arg("-inf")
                    .arg(now)
                    .ignore()
                    .cmd("ZRANGE")
                    .arg(&index)
                    .arg(0)
                    .arg(limit.max(1) - 1)
                    .query_async::<(Vec<String>,)>(&mut conn)
                    .await?
                    .0;
                let states = read_counters(&conn, &counters).await?;
                let mut restricted = Vec::new();
                let mut cleared = Vec::new();
                for (counter, stored) in counters.into_iter().zip(states) {
                    let (lockout, spray) = (&stored.state.lockout, &stored.state.spray);
                    if lockout.permanent {
                        restricted.push((counter, None));
                    } else if lockout.locked_until > now || spray.banned_until > now {
                        let until = lockout.locked_until.max(spray.banned_until);
                        restricted.push((counter, Some(until)));
                    } else {
                        // Unlocked, or cleared by a success, before its time.
                        cleared.push(counter);
                    }
                }
                if !cleared.is_empty() {
                    redis::cmd("ZREM")
                        .arg(&index)
                        .arg(&cleared)
                        .query_async::<()>(&mut conn)
                        .await?;
                }
                Ok(restricted)
            })
            .await?;
        Ok(restricted
            .into_iter()
            .map(|(counter, until)| Restriction {
                key: self
                    .keyspace
                    .store_key(&counter)
                    .map_or_else(|| counter.clone(), str::to_owned),
                until,
            })
            .collect())
    }

    async fn announce(&self, change: Invalidation) -> Result<(), StoreError> {
        let channel = self.keyspace.single(INVALIDATE);
        let message = change.message();
        let _receivers: u64 = self
            .calls
            .call("announcing a change", |mut conn| async move {
                redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(&message)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Also hears the trips other replicas judged ([`signal::TRIPS`]), on the same
    /// subscription.
    fn listen(&self, listener: Listener) {
        let channels = Channels {
            changes: self.keyspace.single(INVALIDATE),
            trips: self.keyspace.single(signal::TRIPS),
        };
        let topology = self.topology.clone();
        let signal = self.signal.clone();
        let hear = Hear { listener, signal };
        tokio::spawn(async move {
            // One subscription at a time, for the life of the process; each turn to the next
            // seed node, or to the primary the Sentinels name then.
            for turn in 0.. {
                if let Err(error) = subscribe(&topology, turn, &channels, &hear).await {
                    tracing::warn!(%error, "change subscription lost; resubscribing");
                }
                tokio::time::sleep(RESUBSCRIBE_AFTER).await;
            }
        });
    }
}

/// Where replicas announce changes that make cached refusals stale (classic pub/sub: a
/// Cluster's PUBLISH reaches the subscribers of every node, a primary's its replicas').
const INVALIDATE: &str = "invalidate";
/// The channels a replica subscribes to.
struct Channels {
    /// Changes that make cached refusals stale ([`INVALIDATE`]).
    changes: String,
    /// Trips ([`signal::TRIPS`]).
    trips: String,
}

/// Who hears what a subscription brings.
struct Hear {
    /// Changes, for the caller of `listen`.
    listener: Listener,
    /// Trips, for this replica's side of the signal (none when the policy has none).
    signal: Option<Arc<SharedSignal>>,
}

/// The pause before subscribing again after the subscription failed or ended.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(200);

/// The server a subscription's `turn` listens on.
async fn subscriber(topology: &Topology, turn: usize) -> redis::RedisResult<redis::Client> {
    match topology {
        Topology::Single(url) => redis::Client::open(url.as_str()),
        Topology::Cluster(urls) => redis::Client::open(urls[turn % urls.len()].as_str()),
        Topology::Sentinel(sentinel) => {
            redis::sentinel::SentinelClient::build(
                sentinel.sentinels.clone(),
                sentinel.master_name.clone(),
                Some(sentinel.node_connection_info().into()),
                redis::sentinel::SentinelServerType::Master,
            )?
            .async_get_client()
            .await
        }
    }
}

/// Subscribes to `channels` and hands every change to the listener and every trip to the
/// signal, until the connection fails. A successful (re)subscription is itself announced to the
/// listener as every kind of change: whatever was announced while it was away may have been
/// missed. (A trip missed is read at the next flush.)
async fn subscribe(
    topology: &Topology,
    turn: usize,
    channels: &Channels,
    hear: &Hear,
) -> redis::RedisResult<()> {
    use futures_util::StreamExt as _;
    let client = subscriber(topology, turn).await?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub
        .subscribe(&[&channels.changes, &channels.trips])
        .await?;
    let listener = &hear.listener;
    listener(Invalidation::Unlock);
    listener(Invalidation::Allowlist);
    listener(Invalidation::SessionsEnded(None));
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let payload: String = message.get_payload()?;
        if message.get_channel_name() == channels.trips {
            if let Some(signal) = &hear.signal {
                signal.heard(&payload);
            }
            continue;
        }
        match Invalidation::parse(&payload) {
            Some(change) => listener(change),
            None => tracing::warn!(payload, "unknown change announced; ignored"),
        }
    }
    Ok(())
}

/// Every counter's state (fresh where absent), each GET routed to its own slot.
async fn read_counters(conn: &Conn, counters: &[String]) -> Result<Vec<StoredState>, RedisError> {
    join_all(counters.iter().map(|counter| {
        let mut conn = conn.clone();
        async move {
            let packed: Option<Vec<u8>> = redis::cmd("GET")
                .arg(counter)
                .query_async(&mut conn)
                .await?;
            Ok(StoredState::from_packed(
                packed.as_deref().unwrap_or_default(),
            ))
        }
    }))
    .await
    .into_iter()
    .collect()
}

/// Redis' own time, in Unix milliseconds.
async fn redis_time(mut conn: Conn) -> Result<UnixMillis, RedisError> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
    Ok(secs * 1_000 + micros / 1_000)
}
