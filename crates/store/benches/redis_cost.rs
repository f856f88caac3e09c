//! What attempts cost Redis, read from every primary's `INFO commandstats` after `CONFIG
//! RESETSTAT`: on a private `redis-server` and on a private 3-primary Redis Cluster (keys in one
//! slot, then sharded per subject), each under a residential-style load (a fresh address, subnet
//! and username for every attempt, its challenge solved (the account's first login from that
//! network), verified and failed: one attempt call, then one record call),
//! the same once those failures have put the service under attack (every attempt challenged before
//! hashing) and under a refused load (one address over its limit). Next to the fresh-address
//! attempts, Redis' own floor for the same calls: a function that reads `TIME` and, for each of the
//! same keys, does a `GET` and a `SET PXAT` of a counter's size and nothing else (what one counter
//! per subject costs however cheap the logic). Beside each store phase, what sharing the
//! under-attack signal cost (its flushes' commands, off the attempt path: counts, HyperLogLogs,
//! the shared history; the phase's last flush included), per attempt; the failures recorded
//! carry each password twice, on two accounts, the fan-out's worst case (a password failing
//! once stays in its replica; from its second account on, it counts in the fan-out's sketch).
//!
//! `INFO commandstats` times a call by the wall clock. On a machine with fewer cores than
//! processes, a server preempted mid-call by the load generator would report the wait as its
//! cost, so once the servers run the generator lowers its own priority (nice 10): the figures
//! are then the servers' work, and attempts/s what the slowed generator sent.
//!
//! `cargo bench -p portcullis-store --bench redis_cost` prints a markdown table
//! (`scripts/benchmarks.sh` puts it in BENCHMARKS.md). Env: `ATTEMPTS` (default 20000),
//! `CONCURRENCY` (default 32).

// Benchmark set-up fails loudly; the no-panic lints guard request paths only.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use portcullis_core::{
    AttemptKey, Decision, Dimension, KeyDeriver, Outcome, Policy, Username, Verified,
};
use portcullis_store::redis_store::{Connections, Keyspace};
use portcullis_store::{AttemptStore, Breaker, RedisConfig, RedisStore, Sharding, Topology};
use portcullis_testkit::redis::{CommandStat, RedisCluster, RedisServer, command_stats, connect};

/// The proof a residential attempt carries: each is a fresh account's first login from its
/// network, which the default policy challenges, and this load's clients solve.
const SOLVED: u64 = u64::MAX;

async fn reset_stats(urls: &[String]) {
    for url in urls {
        let mut conn = connect(url).await;
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// The commands a client sends (the scripts' own calls are counted inside them too).
const TOP_LEVEL: [&str; 4] = ["evalsha", "eval", "fcall", "fcall_ro"];

/// The commands the signal's flushes send (`redis_store::signal`).
const SIGNAL: [&str; 8] = [
    "hincrby", "bitfield", "pexpire", "hmget", "pfadd", "pfcount", "hset", "hgetall",
];

/// Microseconds of the signal's flushes on every primary.
async fn signal_cost(urls: &[String]) -> u64 {
    let mut usec = 0;
    for url in urls {
        let stats = command_stats(url).await;
        usec += SIGNAL
            .iter()
            .filter_map(|name| stats.get(*name))
            .map(|stat| stat.usec)
            .sum::<u64>();
    }
    usec
}

/// Per primary: top-level calls and their microseconds.
async fn script_cost(urls: &[String]) -> Vec<CommandStat> {
    let mut per_primary = Vec::new();
    for url in urls {
        let stats = command_stats(url).await;
        let mut total = CommandStat::default();
        for name in TOP_LEVEL {
            if let Some(stat) = stats.get(name) {
                total.calls += stat.calls;
                total.usec += stat.usec;
            }
        }
        per_primary.push(total);
    }
    per_primary
}

/// One phase's figures.
struct Phase {
    name: &'static str,
    attempts: u64,
    per_primary: Vec<CommandStat>,
    /// Microseconds of the signal's flushes (`None`: the phase does not go through the store).
    signal_usec: Option<u64>,
    wall: Duration,
}

impl Phase {
    fn calls(&self) -> u64 {
        self.per_primary.iter().map(|s| s.calls).sum()
    }

    fn usec(&self) -> u64 {
        self.per_primary.iter().map(|s| s.usec).sum()
    }

    fn shares(&self) -> String {
        let calls = self.calls().max(1) as f64;
        self.per_primary
            .iter()
            .map(|s| format!("{:.0}%", 100.0 * s.calls as f64 / calls))
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

/// A store phase's figures, read once the store has shared what the phase counted: the
/// signal's last flush is the phase's own, not the next one's.
async fn finished(
    name: &'static str,
    attempts: u32,
    store: &RedisStore,
    primaries: &[String],
    started: Instant,
) -> Phase {
    let wall = started.elapsed();
    store.flush_signal().await.unwrap();
    Phase {
        name,
        attempts: attempts.into(),
        per_primary: script_cost(primaries).await,
        signal_usec: Some(signal_cost(primaries).await),
        wall,
    }
}

/// A fresh address (in its own /24, the /24s scattered over the address space as a botnet's
/// are) and username for attempt `i`.
fn residential(
    deriver: &KeyDeriver,
    policy: &Policy,
    run: u32,
    i: u32,
) -> (Vec<AttemptKey>, String) {
    // An odd multiplier permutes the 2^24 /24s: distinct for every i, in every /16.
    let subnet = i.wrapping_mul(0x9E37_79B1) & 0x00FF_FFFF;
    let ip = IpAddr::V4(Ipv4Addr::from((subnet << 8) | 1));
    let username = Username::parse(&format!("r{run}u{i}")).unwrap();
    let digest = deriver.username_digest(&username);
    (
        policy.active_keys(deriver.keys_for_digest(ip, &digest, None)),
        digest,
    )
}

/// A function doing what any design with one counter per subject must: `TIME`, then a `GET`
/// and a `SET` of 161 bytes (a packed counter) per key, expiring as the store's do (`PXAT`, an
/// absolute deadline given as text: ten minutes from now).
fn floor_library() -> String {
    // Library code has no `string` while it loads: the counter and deadline are literals.
    let counter = "x".repeat(161);
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 600_000;
    format!(
        "#!lua name=portcullis_floor
redis.register_function('portcullis_floor', function(KEYS, ARGV)
  redis.call('TIME')
  for _, key in ipairs(KEYS) do
    redis.call('GET', key)
    redis.call('SET', key, '{counter}', 'PXAT', '{deadline}')
  end
  return '{{}}'
end)"
    )
}

/// The floor under the fresh-address attempts: the same keys (under another prefix, so they
/// are as fresh), one `FCALL` of [`floor_library`]'s function per slot the store calls, sent at once.
async fn floor(
    config: &RedisConfig,
    primaries: &[String],
    attempts: u32,
    concurrency: usize,
) -> Phase {
    for url in primaries {
        let _: () = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(floor_library())
            .query_async(&mut connect(url).await)
            .await
            .unwrap();
    }
    let conn = Connections::new(&config.topology)
        .unwrap()
        .get()
        .await
        .unwrap();
    let keyspace = Keyspace::new("floor", config.sharding);
    let policy = Policy::default();
    let deriver = KeyDeriver::new(b"redis-cost", 24, 64, 48).unwrap();
    let run = std::process::id();
    reset_stats(primaries).await;
    let started = Instant::now();
    stream::iter(0..attempts)
        .map(|i| {
            let (keys, _) = residential(&deriver, &policy, run, i);
            let (keyspace, conn) = (&keyspace, conn.clone());
            async move {
                // The signal's key is off the attempt path (as in the store).
                let mut groups: HashMap<_, Vec<String>> = HashMap::new();
                for key in keys.iter().filter(|k| k.dimension != Dimension::Global) {
                    let group = groups.entry(keyspace.group(key)).or_default();
                    group.push(keyspace.counter(key));
                }
                futures_util::future::try_join_all(groups.into_values().map(|counters| {
                    let mut conn = conn.clone();
                    async move {
                        redis::cmd("FCALL")
                            .arg("portcullis_floor")
                            .arg(counters.len())
                            .arg(&counters)
                            .query_async::<String>(&mut conn)
                            .await
                    }
                }))
                .await
                .unwrap();
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    Phase {
        name: "floor: TIME + GET + SET PXAT per key, same calls",
        attempts: attempts.into(),
        per_primary: script_cost(primaries).await,
        signal_usec: None,
        wall: started.elapsed(),
    }
}

async fn measure(label: &str, config: &RedisConfig, primaries: &[String]) -> Vec<Phase> {
    let store = &store(config);
    let attempts: u32 = std::env::var("ATTEMPTS").map_or(20_000, |v| v.parse().unwrap());
    let concurrency: usize = std::env::var("CONCURRENCY").map_or(32, |v| v.parse().unwrap());
    let policy = Policy::default();
    let deriver = KeyDeriver::new(b"redis-cost", 24, 64, 48).unwrap();
    let run = std::process::id();
    // Warm up: the scripts are loaded and the connections open.
    for i in 0..100 {
        let (keys, _) = residential(&deriver, &policy, run, attempts + i);
        store.attempt(&keys, SOLVED).await.unwrap();
    }

    let mut phases = Vec::new();
    reset_stats(primaries).await;
    let started = Instant::now();
    let admitted: Vec<_> = stream::iter(0..attempts)
        .map(|i| {
            let (keys, digest) = residential(&deriver, &policy, run, i);
            async move {
                match store.attempt(&keys, SOLVED).await.unwrap() {
                    Decision::Allow { pending, .. } => Some((keys, digest, pending)),
                    _ => None,
                }
            }
        })
        .buffer_unordered(concurrency)
        .filter_map(|a| async move { a })
        .collect()
        .await;
    assert_eq!(
        admitted.len(),
        attempts as usize,
        "every fresh address is admitted"
    );
    phases.push(
        finished(
            "attempt, fresh address",
            attempts,
            store,
            primaries,
            started,
        )
        .await,
    );
    phases.push(floor(config, primaries, attempts, concurrency).await);

    reset_stats(primaries).await;
    let started = Instant::now();
    stream::iter(admitted.into_iter().enumerate())
        .map(|(i, (keys, digest, pending))| async move {
            let wrong = Verified {
                outcome: Outcome::Failure,
                unknown_username: false,
                password: Some(i as u64 / 2),
            };
            store.record(&keys, wrong, &digest, &pending).await.unwrap();
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    phases.push(finished("record a failure", attempts, store, primaries, started).await);

    // Those failures put the service under attack: from now on a fresh address without a
    // proof is challenged before any password is checked (as a botnet that does not solve
    // meets the service once the signal is on), counted against the address's limits alone.
    reset_stats(primaries).await;
    let started = Instant::now();
    stream::iter(0..attempts)
        .map(|i| {
            let (keys, _) = residential(&deriver, &policy, run, 2 * attempts + i);
            async move {
                let decision = store.attempt(&keys, 0).await.unwrap();
                assert!(
                    matches!(decision, Decision::Challenge { .. }),
                    "under attack, a fresh address is challenged: {decision:?}"
                );
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    phases.push(
        finished(
            "attempt, fresh address, under attack (challenged)",
            attempts,
            store,
            primaries,
            started,
        )
        .await,
    );

    // One address over its limits: every attempt refused.
    let (keys, _) = residential(&deriver, &policy, run, attempts + 1_000);
    for _ in 0..200 {
        store.attempt(&keys, 0).await.unwrap();
    }
    reset_stats(primaries).await;
    let started = Instant::now();
    let keys = &keys;
    stream::iter(0..attempts)
        .map(|_| async move {
            let decision = store.attempt(keys, 0).await.unwrap();
            assert!(matches!(decision, Decision::Deny(_)), "over its limits");
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    phases.push(finished("attempt, refused", attempts, store, primaries, started).await);
    eprintln!("{label}: measured");
    phases
}

fn config(topology: Topology, sharding: Sharding) -> RedisConfig {
    RedisConfig {
        topology,
        // A prefix per layout: the two Cluster runs share the servers, and one's signal (its
        // trip in the shared history) must not carry into the other's.
        prefix: format!("cost-{sharding:?}").to_lowercase(),
        sharding,
        timeout: Duration::from_secs(2),
    }
}

fn store(config: &RedisConfig) -> RedisStore {
    RedisStore::new(
        config,
        &Policy::default(),
        Breaker::silent(1_000, Duration::from_secs(1)),
    )
    .unwrap()
}

/// Lowers every thread of this process to nice 10 (the servers it spawned keep theirs).
fn yield_to_the_servers() {
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let tid = task.unwrap().file_name();
        let status = std::process::Command::new("renice")
            .args(["-n", "10", "-p"])
            .arg(&tid)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "renice {tid:?}");
    }
}

#[tokio::main]
async fn main() {
    let single = RedisServer::spawn().await;
    let cluster = RedisCluster::spawn(3).await;
    yield_to_the_servers();
    let single_urls = vec![single.url.clone()];
    let single_phases = measure(
        "one redis",
        &config(Topology::Single(single.url.clone()), Sharding::SingleSlot),
        &single_urls,
    )
    .await;

    let cluster_urls = cluster.urls();
    let mut clustered = Vec::new();
    for (label, sharding) in [
        ("3-primary Cluster, single_slot", Sharding::SingleSlot),
        ("3-primary Cluster, per_subject", Sharding::PerSubject),
    ] {
        let config = config(Topology::Cluster(cluster_urls.clone()), sharding);
        clustered.push((label, measure(label, &config, &cluster_urls).await));
    }

    println!(
        "| Redis | load | calls | usec_per_call | Redis CPU per attempt (µs, all primaries) | signal sharing µs per attempt | calls per primary | attempts/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (label, phases) in [("one primary", single_phases)]
        .into_iter()
        .chain(clustered)
    {
        for phase in phases {
            let signal = phase.signal_usec.map_or("–".to_owned(), |usec| {
                format!("{:.2}", usec as f64 / phase.attempts as f64)
            });
            println!(
                "| {label} | {} | {} | {:.1} | {:.1} | {signal} | {} | {:.0} |",
                phase.name,
                phase.calls(),
                phase.usec() as f64 / phase.calls().max(1) as f64,
                phase.usec() as f64 / phase.attempts as f64,
                phase.shares(),
                phase.attempts as f64 / phase.wall.as_secs_f64(),
            );
        }
    }
}
