//! A Redis primary, its replica and Sentinels watching them, for failover tests: containers on a
//! network of their own where a Docker engine answers (the test process reaches their addresses
//! through the bridge), else local processes on loopback.
//!
//! The Sentinels call the primary down after 1 s without an answer and need a majority of
//! themselves to agree, as a production set of three does; a failover then takes 2 to 4 s.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::container::{Container, Network, REDIS_IMAGE, docker_answers};
use crate::process::{ChildGuard, free_port, wait_until};
use crate::redis::{Backend, RedisServer, connect};

/// The name the Sentinels monitor the primary under.
pub const MASTER_NAME: &str = "portcullis";
/// How long the primary may be silent before a Sentinel calls it down.
const DOWN_AFTER_MS: u64 = 1_000;

/// A primary, one replica of it and `n` Sentinels, removed when dropped.
pub struct RedisSentinel {
    /// The server that was primary at start.
    pub primary: RedisServer,
    /// Its replica, which a failover promotes.
    pub replica: RedisServer,
    /// The Sentinels (`redis://host:26379`-like URLs in `url`).
    pub sentinels: Vec<RedisServer>,
    /// Removed after the servers (fields drop in order).
    _network: Option<Network>,
}

impl RedisSentinel {
    /// Starts the primary, its replica (waiting until it has synced) and `sentinels` Sentinels
    /// (waiting until each sees the replica).
    pub async fn spawn(sentinels: usize) -> Self {
        let network = docker_answers().then(Network::create);
        let primary = RedisServer::on(network.as_ref(), &[]).await;
        let (host, port) = primary.address.rsplit_once(':').expect("host:port");
        let replica = RedisServer::on(network.as_ref(), &["--replicaof", host, port]).await;
        wait_until(Duration::from_secs(20), "the replica to sync", || {
            let url = replica.url.clone();
            async move { replication(&url).await.contains("master_link_status:up") }
        })
        .await;
        let quorum = sentinels / 2 + 1;
        let config = format!(
            "sentinel monitor {MASTER_NAME} {host} {port} {quorum}\n\
             sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
             sentinel failover-timeout {MASTER_NAME} 10000\n"
        );
        let mut nodes = Vec::new();
        for _ in 0..sentinels {
            nodes.push(sentinel(network.as_ref(), &config).await);
        }
        let set = Self {
            primary,
            replica,
            sentinels: nodes,
            _network: network,
        };
        for node in &set.sentinels {
            wait_until(
                Duration::from_secs(20),
                "a Sentinel to see the replica",
                || {
                    let url = node.url.clone();
                    async move {
                        let mut conn = connect(&url).await;
                        redis::cmd("SENTINEL")
                            .arg("REPLICAS")
                            .arg(MASTER_NAME)
                            .query_async::<Vec<redis::Value>>(&mut conn)
                            .await
                            .is_ok_and(|replicas| !replicas.is_empty())
                    }
                },
            )
            .await;
        }
        set
    }

    /// The Sentinels' URLs.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(|s| s.url.clone()).collect()
    }

    /// The Sentinels' addresses (`host:port`), as `store.redis.sentinel.addresses` takes them.
    pub fn sentinel_addresses(&self) -> Vec<String> {
        self.sentinels.iter().map(|s| s.address.clone()).collect()
    }

    /// The address (`host:port`) the first Sentinel that answers names as the primary now.
    pub async fn primary_address(&self) -> String {
        for node in &self.sentinels {
            let mut conn = connect(&node.url).await;
            if let Ok((host, port)) = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(MASTER_NAME)
                .query_async::<(String, u16)>(&mut conn)
                .await
            {
                return format!("{host}:{port}");
            }
        }
        panic!("no Sentinel answers");
    }

    /// Kills the primary and waits until the Sentinels have promoted the replica and it
    /// accepts writes.
    pub async fn fail_over(&mut self) {
        self.primary.kill();
        self.wait_for_promotion().await;
    }

    /// Asks a Sentinel to hand the primary's role to the replica while both run (a planned
    /// switch: the old primary becomes a replica), and waits until the replica accepts writes.
    pub async fn switch_over(&self) {
        let mut conn = connect(&self.sentinels[0].url).await;
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER_NAME)
            .query_async(&mut conn)
            .await
            .expect("SENTINEL FAILOVER");
        self.wait_for_promotion().await;
    }

    /// Waits until the Sentinels name the replica as the primary, and it takes writes.
    async fn wait_for_promotion(&self) {
        let replica = self.replica.address.clone();
        wait_until(
            Duration::from_secs(30),
            "the Sentinels to promote the replica",
            || {
                let replica = replica.clone();
                async move { self.primary_address().await == replica }
            },
        )
        .await;
        wait_until(
            Duration::from_secs(10),
            "the new primary to take writes",
            || {
                let url = self.replica.url.clone();
                async move { replication(&url).await.contains("role:master") }
            },
        )
        .await;
    }
}

/// `INFO replication` of the server at `url` (empty when it does not answer).
async fn replication(url: &str) -> String {
    let Ok(client) = redis::Client::open(url) else {
        return String::new();
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return String::new();
    };
    redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .unwrap_or_default()
}

/// A Sentinel with `config`: in a container on `network`, else a local process.
async fn sentinel(network: Option<&Network>, config: &str) -> RedisServer {
    // A Sentinel rewrites its configuration file, so it gets one of its own to write.
    let node = match network {
        Some(network) => {
            let script = format!(
                "printf '%s' 'port 26379\n{config}' > /tmp/sentinel.conf && \
                 exec redis-server /tmp/sentinel.conf --sentinel"
            );
            let container = Container::run(
                REDIS_IMAGE,
                &["--network", &network.name],
                &["sh", "-c", &script],
            );
            RedisServer::new(
                format!("{}:26379", container.ip()),
                Backend::Container(container),
            )
        }
        None => {
            let port = free_port();
            let dir = tempfile::tempdir().expect("temp dir");
            let file = dir.path().join("sentinel.conf");
            std::fs::write(&file, format!("port {port}\nbind 127.0.0.1\n{config}"))
                .expect("write sentinel.conf");
            let child = Command::new("redis-server")
                .arg(&file)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run redis-server --sentinel");
            RedisServer::new(
                format!("127.0.0.1:{port}"),
                Backend::Process {
                    child: ChildGuard(child),
                    port,
                    dir,
                },
            )
        }
    };
    node.wait_ready("redis sentinel").await;
    node
}
