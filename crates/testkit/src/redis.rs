//! Redis for tests: a Redis with a private key prefix, a private server (a container, else a
//! local `redis-server`), or a Redis Cluster of private servers.

use std::process::{Command, Stdio};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::container::{Container, Network, REDIS_IMAGE, docker_answers};
use crate::process::{ChildGuard, free_port, wait_until};
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
}

impl TestRedis {
    /// `PORTCULLIS_TEST_REDIS_URL`, else a private [`RedisServer`].
    pub async fn start() -> Self {
        let prefix = format!("test-{}", random_hex(6));
        if let Ok(url) = std::env::var(REDIS_URL_ENV) {
            return Self {
                url,
                prefix,
                _server: None,
            };
        }
        let server = RedisServer::spawn().await;
        Self {
            url: server.url.clone(),
            prefix,
            _server: Some(server),
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

/// A Redis of the test's own, gone when dropped: a container of the local image where a Docker
/// engine answers, else a `redis-server` from the local binary on a loopback port.
pub struct RedisServer {
    /// `redis://host:port`.
    pub url: String,
    /// `host:port`, as Redis Cluster names the node.
    pub address: String,
    backend: Backend,
}

/// Where a [`RedisServer`] runs.
pub(crate) enum Backend {
    Container(Container),
    Process {
        child: ChildGuard,
        port: u16,
        dir: tempfile::TempDir,
    },
}

/// What every test server runs with: no persistence, and no protected mode (the container's
/// clients come from another network, with no password).
const SERVER_ARGS: [&str; 6] = ["--save", "", "--appendonly", "no", "--protected-mode", "no"];

impl RedisServer {
    /// Starts a non-persistent server.
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// Starts a non-persistent server with extra arguments, reachable on loopback.
    async fn spawn_with(extra: &[&str]) -> Self {
        let port = free_port();
        let server = if docker_answers() {
            // A fixed host port, so that a restarted container answers where it did.
            let publish = format!("127.0.0.1:{port}:6379");
            let container = redis_container(&["--publish", &publish], extra);
            Self::new(format!("127.0.0.1:{port}"), Backend::Container(container))
        } else {
            let dir = tempfile::tempdir().expect("temp dir");
            let child = ChildGuard(redis_server(port, dir.path(), extra));
            Self::new(
                format!("127.0.0.1:{port}"),
                Backend::Process { child, port, dir },
            )
        };
        server.wait_ready("redis-server").await;
        server
    }

    /// Starts a cluster-mode node (see [`RedisServer::on`]).
    async fn cluster_node(network: Option<&Network>) -> Self {
        Self::on(
            network,
            &["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
        )
        .await
    }

    /// Starts a server with extra arguments: on `network`, at its address there, in a
    /// container; else a local process.
    pub(crate) async fn on(network: Option<&Network>, extra: &[&str]) -> Self {
        let Some(network) = network else {
            return Self::spawn_with(extra).await;
        };
        let container = redis_container(&["--network", &network.name], extra);
        let node = Self::new(
            format!("{}:6379", container.ip()),
            Backend::Container(container),
        );
        node.wait_ready("redis-server").await;
        node
    }

    pub(crate) fn new(address: String, backend: Backend) -> Self {
        Self {
            url: format!("redis://{address}"),
            address,
            backend,
        }
    }

    pub(crate) async fn wait_ready(&self, what: &str) {
        let url = self.url.clone();
        wait_until(Duration::from_secs(10), what, || {
            let url = url.clone();
            async move {
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
            }
        })
        .await;
    }

    /// Freezes the server: connections stay open, nothing is answered (a hung primary).
    pub fn pause(&self) {
        match &self.backend {
            Backend::Container(container) => container.pause(),
            Backend::Process { child, .. } => signal(child.id(), "STOP"),
        }
    }

    /// Lets a paused server answer again.
    pub fn resume(&self) {
        match &self.backend {
            Backend::Container(container) => container.unpause(),
            Backend::Process { child, .. } => signal(child.id(), "CONT"),
        }
    }

    /// Kills the server; `restart` brings an empty one back at the same address.
    pub fn kill(&mut self) {
        match &mut self.backend {
            Backend::Container(container) => container.kill(),
            Backend::Process { child, .. } => {
                let _ = child.0.kill();
                let _ = child.0.wait();
            }
        }
    }

    /// Starts an empty server at the same address (after `kill`), as a restart without
    /// persistence does.
    pub async fn restart(&mut self) {
        match &mut self.backend {
            Backend::Container(container) => container.start(),
            Backend::Process { child, port, dir } => {
                let _ = child.0.kill();
                let _ = child.0.wait();
                *child = ChildGuard(redis_server(*port, dir.path(), &[]));
            }
        }
        self.wait_ready("restarted redis-server").await;
    }
}

/// Sends a signal (`STOP`, `CONT`) to a process.
fn signal(pid: u32, name: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{name} failed");
}

/// A container of the local Redis image running `redis-server` with [`SERVER_ARGS`] and `extra`.
fn redis_container(options: &[&str], extra: &[&str]) -> Container {
    let command: Vec<&str> = ["redis-server"]
        .into_iter()
        .chain(SERVER_ARGS)
        .chain(extra.iter().copied())
        .collect();
    Container::run(REDIS_IMAGE, options, &command)
}

/// Starts a non-persistent `redis-server` on a loopback port.
fn redis_server(port: u16, dir: &std::path::Path, extra: &[&str]) -> std::process::Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(SERVER_ARGS)
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-server ({e}): build scripts/images.sh's images, install redis-server or set {REDIS_URL_ENV}")
        })
}

/// A Redis Cluster of private servers: primaries and, optionally, a replica of each. With a
/// Docker engine, containers on a network of their own, each announcing its address there
/// (which the test process reaches through the bridge); else local processes.
pub struct RedisCluster {
    /// The nodes, in the order given to `redis-cli --cluster create`.
    pub nodes: Vec<RedisServer>,
    /// Removed after the nodes (fields drop in order).
    _network: Option<Network>,
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
        let network = docker_answers().then(Network::create);
        let mut nodes = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            nodes.push(RedisServer::cluster_node(network.as_ref()).await);
        }
        // redis-cli from the first node's container where there is one, so the host needs none.
        let mut create = match &nodes[0].backend {
            Backend::Container(container) => container.exec("redis-cli"),
            Backend::Process { .. } => Command::new("redis-cli"),
        };
        let created = create
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| n.address.as_str()))
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
        Self {
            nodes,
            _network: network,
        }
    }

    /// The address (`host:port`) of the primary that serves `key`'s slot now.
    pub async fn primary_of(&self, key: &str) -> String {
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
                let (host, port): (String, u16) = match range.get(2)? {
                    redis::Value::Array(node) => (
                        redis::from_redis_value_ref(node.first()?).ok()?,
                        redis::from_redis_value_ref(node.get(1)?).ok()?,
                    ),
                    _ => return None,
                };
                (start..=end)
                    .contains(&slot)
                    .then(|| format!("{host}:{port}"))
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
