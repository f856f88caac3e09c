//! One multiplexed Redis connection per store, checked out of a deadpool-redis pool.
//!
//! deadpool-redis health-checks a connection (UNWATCH + PING) every time it is checked out. A
//! multiplexed connection already serves any number of concurrent calls, so the store checks one
//! out once, keeps it, and goes back to the pool only after an error: no PING per request.

use std::sync::{Mutex, PoisonError};

use deadpool_redis::Runtime;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::StoreError;

/// A single-node or cluster connection; both pipeline concurrent calls.
#[derive(Clone)]
pub enum Conn {
    /// One Redis server.
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
}

/// The pool and the connection currently checked out of it.
pub struct Connections {
    pool: Pool,
    current: Mutex<Option<Conn>>,
    /// Held while a connection is being made, so a burst of calls makes one, not hundreds.
    connecting: tokio::sync::Mutex<()>,
}

impl Connections {
    /// A pool for `urls` (one URL, or a cluster's seed nodes). Connects lazily.
    pub fn new(urls: &[String], cluster: bool) -> Result<Self, StoreError> {
        let pool = if cluster {
            let config = deadpool_redis::cluster::Config::from_urls(urls.to_vec());
            Pool::Cluster(
                config
                    .create_pool(Some(Runtime::Tokio1))
                    .map_err(|e| StoreError::Misconfigured(format!("redis cluster pool: {e}")))?,
            )
        } else {
            let url = urls.first().ok_or_else(|| {
                StoreError::Misconfigured("store.redis.url: no URL given".to_owned())
            })?;
            let config = deadpool_redis::Config::from_url(url.as_str());
            Pool::Single(
                config
                    .create_pool(Some(Runtime::Tokio1))
                    .map_err(|e| StoreError::Misconfigured(format!("redis pool: {e}")))?,
            )
        };
        Ok(Self {
            pool,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    /// The kept connection, or a fresh one from the pool.
    pub async fn get(&self) -> Result<Conn, StoreError> {
        if let Some(conn) = self.lock().clone() {
            return Ok(conn);
        }
        let _connecting = self.connecting.lock().await;
        // Another call may have connected while this one waited.
        if let Some(conn) = self.lock().clone() {
            return Ok(conn);
        }
        let conn = match &self.pool {
            Pool::Single(pool) => {
                let object = pool.get().await.map_err(unavailable)?;
                Conn::Single(deadpool_redis::Connection::take(object))
            }
            Pool::Cluster(pool) => {
                let object = pool.get().await.map_err(unavailable)?;
                Conn::Cluster(deadpool_redis::cluster::Connection::take(object))
            }
        };
        *self.lock() = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the kept connection after an error, so the next call gets a fresh one.
    pub fn reset(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Conn>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::unavailable("connecting to redis", error)
}
