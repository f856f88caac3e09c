//! One multiplexed Redis connection per store, checked out of a deadpool-redis pool.
//!
//! The pool knows the [`Topology`]: one server, a Cluster's seed nodes, or Sentinels that name
//! the primary. Every new connection asks them again, so after a Sentinel failover the first
//! connect after an error reaches the new primary (redis-rs checks its `ROLE` first).
//!
//! deadpool-redis health-checks a connection (UNWATCH + PING) every time it is checked out. A
//! multiplexed connection already serves any number of concurrent calls, so the store checks one
//! out once, keeps it, and goes back to the pool only after an error: no PING per request.
//!
//! Connecting runs in a task of its own, which every waiting call shares: a call that gives up
//! at its timeout leaves it to finish. A cluster client connects to every seed node first, and
//! a dead host's address answers nothing at all (no refusal) until the connect times out;
//! bounded by each call's timeout, such a connect would be cancelled forever, and the store
//! would never come back after a failover. The task itself is bounded by the client's own
//! timeouts (redis 1.x: 1 s to connect to a node, 0.5 s for each reply of the handshake).

use std::sync::{Arc, Mutex};

use deadpool_redis::Runtime;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::Topology;
use crate::{StoreError, lock};

/// A single-server or cluster connection; both pipeline concurrent calls.
#[derive(Clone)]
pub enum Conn {
    /// One Redis server: alone, or the primary the Sentinels name.
    Single(MultiplexedConnection),
    /// A Redis Cluster (routes each call by its keys' slot).
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Pool {
    Single(deadpool_redis::Pool),
    Cluster(deadpool_redis::cluster::Pool),
    Sentinel(deadpool_redis::sentinel::Pool),
}

/// The pool and the connection currently checked out of it.
pub struct Connections {
    shared: Arc<Shared>,
}

/// What the connecting task and the calls share.
struct Shared {
    pool: Pool,
    current: Mutex<Option<Conn>>,
    /// The connect under way, if any: every call that needs a connection waits for this one,
    /// so a burst of calls makes one, not hundreds.
    pending: Mutex<Option<Pending>>,
}

/// The outcome of a connect, once it is known.
type Pending = tokio::sync::watch::Receiver<Option<Result<Conn, Arc<ConnectError>>>>;

/// Why a connect failed (shared by every call that waited for it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(String);

impl Connections {
    /// A pool for `topology`. Connects lazily.
    pub fn new(topology: &Topology) -> Result<Self, StoreError> {
        let misconfigured = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Misconfigured(format!("{what}: {e}"))
        };
        let pool = match topology {
            Topology::Single(url) => Pool::Single(
                deadpool_redis::Config::from_url(url.as_str())
                    .create_pool(Some(Runtime::Tokio1))
                    .map_err(|e| misconfigured("redis pool", &e))?,
            ),
            Topology::Cluster(urls) => Pool::Cluster(
                deadpool_redis::cluster::Config::from_urls(urls.clone())
                    .create_pool(Some(Runtime::Tokio1))
                    .map_err(|e| misconfigured("redis cluster pool", &e))?,
            ),
            Topology::Sentinel(sentinel) => Pool::Sentinel(
                deadpool_redis::sentinel::Config::from_urls(
                    sentinel.sentinels.clone(),
                    sentinel.master_name.clone(),
                    deadpool_redis::sentinel::SentinelServerType::Master,
                )
                .with_node_connection_info(Some(sentinel.node_connection_info()))
                .create_pool(Some(Runtime::Tokio1))
                .map_err(|e| misconfigured("redis sentinel pool", &e))?,
            ),
        };
        Ok(Self {
            shared: Arc::new(Shared {
                pool,
                current: Mutex::new(None),
                pending: Mutex::new(None),
            }),
        })
    }

    /// The kept connection, or the one being made (starting to make one if none is).
    pub async fn get(&self) -> Result<Conn, StoreError> {
        if let Some(conn) = lock(&self.shared.current).clone() {
            return Ok(conn);
        }
        let mut pending = {
            let mut slot = lock(&self.shared.pending);
            match &*slot {
                Some(pending) => pending.clone(),
                None => {
                    let pending = self.spawn_connect();
                    *slot = Some(pending.clone());
                    pending
                }
            }
        };
        let Ok(outcome) = pending.wait_for(Option::is_some).await.map(|o| o.clone()) else {
            // The task ended without a word (it cannot, short of a panic): let the next call
            // start another.
            *lock(&self.shared.pending) = None;
            return Err(unavailable(ConnectError(
                "the connecting task ended".to_owned(),
            )));
        };
        match outcome {
            Some(Ok(conn)) => Ok(conn),
            Some(Err(error)) => Err(unavailable(error)),
            None => Err(unavailable(ConnectError("no connection".to_owned()))),
        }
    }

    /// Starts a task that checks a connection out of the pool, keeps it, and tells the waiters.
    fn spawn_connect(&self) -> Pending {
        let (tell, pending) = tokio::sync::watch::channel(None);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let outcome = match &shared.pool {
                Pool::Single(pool) => pool
                    .get()
                    .await
                    .map(|object| Conn::Single(deadpool_redis::Connection::take(object)))
                    .map_err(|e| Arc::new(ConnectError(e.to_string()))),
                Pool::Cluster(pool) => pool
                    .get()
                    .await
                    .map(|object| Conn::Cluster(deadpool_redis::cluster::Connection::take(object)))
                    .map_err(|e| Arc::new(ConnectError(e.to_string()))),
                Pool::Sentinel(pool) => pool
                    .get()
                    .await
                    .map(|object| Conn::Single(deadpool_redis::sentinel::Connection::take(object)))
                    .map_err(|e| Arc::new(ConnectError(e.to_string()))),
            };
            if let Ok(conn) = &outcome {
                *lock(&shared.current) = Some(conn.clone());
            }
            *lock(&shared.pending) = None;
            let _ = tell.send(Some(outcome));
        });
        pending
    }

    /// Forgets the kept connection after an error, so the next call gets a fresh one.
    pub fn reset(&self) {
        *lock(&self.shared.current) = None;
    }
}

fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::unavailable("connecting to redis", error)
}
