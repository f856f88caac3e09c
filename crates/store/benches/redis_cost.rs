//! What attempts cost Redis, read from every primary's `INFO commandstats` after
//! `CONFIG RESETSTAT`: on a private `redis-server` and on a private 3-primary Redis Cluster
//! (keys in one slot, then sharded per subject), each under a residential-style load (a fresh address, subnet and username for every attempt,
//! verified and failed: one attempt call, then one record call) and under a refused load (one
//! address over its limit).
//!
//! `cargo bench -p portcullis-store --bench redis_cost` prints a markdown table
//! (`scripts/benchmarks.sh` puts it in BENCHMARKS.md). Env: `ATTEMPTS` (default 20000),
//! `CONCURRENCY` (default 32).

// Benchmark set-up fails loudly; the no-panic lints guard request paths only.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use portcullis_core::{AttemptKey, Decision, KeyDeriver, Outcome, Policy, Username};
use portcullis_store::{AttemptStore, Breaker, RedisConfig, RedisStore, Sharding};
use portcullis_testkit::redis::{CommandStat, RedisCluster, RedisServer, command_stats, connect};

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

/// A fresh address (in its own /24) and username for attempt `i`.
fn residential(
    deriver: &KeyDeriver,
    policy: &Policy,
    run: u32,
    i: u32,
) -> (Vec<AttemptKey>, String) {
    let ip = IpAddr::V4(Ipv4Addr::from(0x0A00_0001 + (i << 8)));
    let username = Username::parse(&format!("r{run}u{i}")).unwrap();
    let digest = deriver.username_digest(&username);
    (
        policy.active_keys(deriver.keys_for_digest(ip, &digest, None)),
        digest,
    )
}

async fn measure(label: &str, store: &RedisStore, primaries: &[String]) -> Vec<Phase> {
    let attempts: u32 = std::env::var("ATTEMPTS").map_or(20_000, |v| v.parse().unwrap());
    let concurrency: usize = std::env::var("CONCURRENCY").map_or(32, |v| v.parse().unwrap());
    let policy = Policy::default();
    let deriver = KeyDeriver::new(b"redis-cost", 24, 64, 48).unwrap();
    let run = std::process::id();
    // Warm up: the scripts are loaded and the connections open.
    for i in 0..100 {
        let (keys, _) = residential(&deriver, &policy, run, attempts + i);
        store.attempt(&keys, 0).await.unwrap();
    }

    let mut phases = Vec::new();
    reset_stats(primaries).await;
    let started = Instant::now();
    let admitted: Vec<_> = stream::iter(0..attempts)
        .map(|i| {
            let (keys, digest) = residential(&deriver, &policy, run, i);
            async move {
                match store.attempt(&keys, 0).await.unwrap() {
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
    phases.push(Phase {
        name: "attempt, fresh address",
        attempts: attempts.into(),
        per_primary: script_cost(primaries).await,
        wall: started.elapsed(),
    });

    reset_stats(primaries).await;
    let started = Instant::now();
    stream::iter(admitted)
        .map(|(keys, digest, pending)| async move {
            store
                .record(&keys, Outcome::Failure, &digest, &pending)
                .await
                .unwrap();
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    phases.push(Phase {
        name: "record a failure",
        attempts: attempts.into(),
        per_primary: script_cost(primaries).await,
        wall: started.elapsed(),
    });

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
    phases.push(Phase {
        name: "attempt, refused",
        attempts: attempts.into(),
        per_primary: script_cost(primaries).await,
        wall: started.elapsed(),
    });
    eprintln!("{label}: measured");
    phases
}

fn store(urls: Vec<String>, cluster: bool, sharding: Sharding) -> RedisStore {
    let config = RedisConfig {
        urls,
        cluster,
        prefix: "cost".to_owned(),
        sharding,
        timeout: Duration::from_secs(2),
    };
    RedisStore::new(
        &config,
        &Policy::default(),
        Breaker::silent(1_000, Duration::from_secs(1)),
    )
    .unwrap()
}

#[tokio::main]
async fn main() {
    let single = RedisServer::spawn().await;
    let single_urls = vec![single.url.clone()];
    let single_phases = measure(
        "one redis",
        &store(single_urls.clone(), false, Sharding::SingleSlot),
        &single_urls,
    )
    .await;

    let cluster = RedisCluster::spawn(3).await;
    let cluster_urls = cluster.urls();
    let mut clustered = Vec::new();
    for (label, sharding) in [
        ("3-primary Cluster, single_slot", Sharding::SingleSlot),
        ("3-primary Cluster, per_subject", Sharding::PerSubject),
    ] {
        let store = store(cluster_urls.clone(), true, sharding);
        clustered.push((label, measure(label, &store, &cluster_urls).await));
    }

    println!(
        "| Redis | load | calls | usec_per_call | Redis CPU per attempt (µs, all primaries) | calls per primary | attempts/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, phases) in [("one primary", single_phases)]
        .into_iter()
        .chain(clustered)
    {
        for phase in phases {
            println!(
                "| {label} | {} | {} | {:.1} | {:.1} | {} | {:.0} |",
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
