//! Redis for tests: a shared one with a private key prefix, a private `redis-server`, or a
//! local Redis Cluster of private servers.

use std::process::{Command, Stdio};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage};

use crate::process::{ChildGuard, docker_answers, free_port, wait_until};
use crate::random_hex;

/// The environment variable naming a Redis to test against.
pub const REDIS_URL_ENV: &str = "PORTCULLIS_TEST_REDIS_URL";

/// A Redis and a key prefix no other test uses.
pub struct TestRedis {
    /// `redis://host:port`.
    pub url: String,
    /// The store prefix for this test (keys are `{prefix}:...`).
    pub prefix: String,
    _server: Option<RedisServer>,
    _container: Option<ContainerAsync<GenericImage>>,
}

impl TestRedis {
    /// `PORTCULLIS_TEST_REDIS_URL`, else a Redis container where Docker answers, else a
    /// `redis-server` spawned from the local binary.
    pub async fn start() -> Self {
        let prefix = format!("test-{}", random_hex(6));
        if let Ok(url) = std::env::var(REDIS_URL_ENV) {
            return Self {
                url,
                prefix,
                _server: None,
                _container: None,
            };
        }
        if docker_answers() {
            let container = GenericImage::new("redis", "7-alpine")
                .with_exposed_port(6379.tcp())
                .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
                .start()
                .await
                .expect("starting a Redis container");
            let port = container
                .get_host_port_ipv4(6379)
                .await
                .expect("Redis container port");
            return Self {
                url: format!("redis://127.0.0.1:{port}"),
                prefix,
                _server: None,
                _container: Some(container),
            };
        }
        let server = RedisServer::spawn().await;
        Self {
            url: server.url.clone(),
            prefix,
            _server: Some(server),
            _container: None,
        }
    }

    /// A fresh connection.
    pub async fn connection(&self) -> MultiplexedConnection {
        connect(&self.url).await
    }

    /// Every key this test's prefix owns.
    pub async fn keys(&self) -> Vec<String> {
        let mut conn = self.connection().await;
        scan(&mut conn, &format!("{{{}}}:*", self.prefix)).await
    }

    /// Deletes every key this test's prefix owns (and nothing else).
    pub async fn cleanup(&self) {
        let mut conn = self.connection().await;
        for key in self.keys().await {
            let _: () = redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("DEL");
        }
    }
}

/// Connects to a Redis URL, failing the test with a hint when nothing answers.
pub async fn connect(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .expect("Redis URL")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("no Redis at {url} ({e}); set {REDIS_URL_ENV} or install redis-server")
        })
}

/// One command's figures in `INFO commandstats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandStat {
    /// Calls since the last `CONFIG RESETSTAT`.
    pub calls: u64,
    /// Microseconds Redis spent in them.
    pub usec: u64,
}

/// `INFO commandstats` by command name.
pub async fn command_stats(url: &str) -> std::collections::HashMap<String, CommandStat> {
    let mut conn = connect(url).await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| -> Option<u64> {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))?
                    .parse()
                    .ok()
            };
            Some((
                name.to_owned(),
                CommandStat {
                    calls: field("calls")?,
                    usec: field("usec")?,
                },
            ))
        })
        .collect()
}

/// Calls per command name from `INFO commandstats`.
pub async fn command_calls(url: &str) -> std::collections::HashMap<String, u64> {
    command_stats(url)
        .await
        .into_iter()
        .map(|(name, stat)| (name, stat.calls))
        .collect()
}

/// Every key matching a glob pattern, by SCAN.
pub async fn scan(conn: &mut MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// A `redis-server` of the test's own, on a free loopback port, killed when dropped.
pub struct RedisServer {
    /// `redis://127.0.0.1:port`.
    pub url: String,
    /// The port it listens on.
    pub port: u16,
    child: ChildGuard,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a non-persistent server.
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// Starts a non-persistent server with extra arguments (e.g. cluster mode).
    pub async fn spawn_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = redis_server(port, dir.path(), extra);
        let url = format!("redis://127.0.0.1:{port}");
        let server = Self {
            url: url.clone(),
            port,
            child: ChildGuard(child),
            dir,
        };
        wait_until(Duration::from_secs(10), "redis-server", || async {
            let Ok(client) = redis::Client::open(url.as_str()) else {
                return false;
            };
            match client.get_multiplexed_async_connection().await {
                Ok(mut conn) => redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        })
        .await;
        server
    }

    /// The server's process id (for SIGSTOP/SIGKILL in fault tests).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`STOP`, `CONT`, `KILL`, ...) to the server.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Kills the server; `restart` brings an empty one back on the same port.
    pub fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    /// Starts an empty server on the same port (after `kill`), as a restart without
    /// persistence does.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = ChildGuard(redis_server(self.port, self.dir.path(), &[]));
        let url = self.url.clone();
        wait_until(Duration::from_secs(10), "restarted redis-server", || {
            let url = url.clone();
            async move {
                match redis::Client::open(url.as_str()) {
                    Ok(client) => client.get_multiplexed_async_connection().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
    }

    /// Its data directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// Starts a non-persistent `redis-server` on a loopback port.
fn redis_server(port: u16, dir: &std::path::Path, extra: &[&str]) -> std::process::Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-server ({e}): install it or set {REDIS_URL_ENV}")
        })
}

/// A Redis Cluster of private servers: primaries and, optionally, a replica of each.
pub struct RedisCluster {
    /// The nodes, in the order given to `redis-cli --cluster create`.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `primaries` servers in cluster mode, creates the cluster and waits until it is
    /// ok.
    pub async fn spawn(primaries: usize) -> Self {
        Self::spawn_with_replicas(primaries, 0).await
    }

    /// [`RedisCluster::spawn`] with `replicas` replicas of each primary (for failover), waiting
    /// until every replica has synced.
    pub async fn spawn_with_replicas(primaries: usize, replicas: usize) -> Self {
        let mut nodes = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            nodes.push(
                RedisServer::spawn_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                ])
                .await,
            );
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(created.success(), "redis-cli --cluster create failed");
        for node in &nodes {
            let url = node.url.clone();
            wait_until(Duration::from_secs(20), "cluster state ok", || {
                let url = url.clone();
                async move {
                    let mut conn = connect(&url).await;
                    redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok_and(|info| info.contains("cluster_state:ok"))
                }
            })
            .await;
            wait_until(Duration::from_secs(20), "replica in sync", || {
                let url = url.clone();
                async move {
                    let mut conn = connect(&url).await;
                    redis::cmd("INFO")
                        .arg("replication")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok_and(|info| {
                            info.contains("role:master") || info.contains("master_link_status:up")
                        })
                }
            })
            .await;
        }
        Self { nodes }
    }

    /// The port of the primary that serves `key`'s slot now.
    pub async fn primary_of(&self, key: &str) -> u16 {
        let mut conn = self.any_live_node().await;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("CLUSTER KEYSLOT");
        // Each entry: first slot, last slot, the primary (host, port, id, ...), its replicas.
        let ranges: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .expect("CLUSTER SLOTS");
        ranges
            .iter()
            .find_map(|range| {
                let (start, end): (u16, u16) = (
                    redis::from_redis_value_ref(range.first()?).ok()?,
                    redis::from_redis_value_ref(range.get(1)?).ok()?,
                );
                let (_, port): (String, u16) = match range.get(2)? {
                    redis::Value::Array(node) => (
                        redis::from_redis_value_ref(node.first()?).ok()?,
                        redis::from_redis_value_ref(node.get(1)?).ok()?,
                    ),
                    _ => return None,
                };
                (start..=end).contains(&slot).then_some(port)
            })
            .expect("every slot is served")
    }

    /// A connection to the first node that answers a PING.
    async fn any_live_node(&self) -> MultiplexedConnection {
        for node in &self.nodes {
            if let Ok(client) = redis::Client::open(node.url.as_str())
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return conn;
            }
        }
        panic!("no cluster node answers");
    }

    /// The seed URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// Keys matching a pattern across every node.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for node in &self.nodes {
            keys.extend(scan(&mut connect(&node.url).await, pattern).await);
        }
        keys
    }
}
