//! The store on a Redis primary with one replica and Sentinels: it follows a failover (and a
//! planned switch) without a restart, decides every attempt while no primary answers, and what a
//! failover loses is measured and bounded (`docs/failure-modes.md`, "Redis failover"); it logs
//! in to servers that require a password.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use portcullis_core::{Dimension, KeyPolicy, Outcome, Policy};
use portcullis_store::{
    AdminStore, AttemptStore, Breaker, FallbackStore, Invalidation, OnError, RedisConfig,
    RedisStore, SentinelConfig, Sharding, SystemClock, Topology,
};
use portcullis_testkit::process::wait_until;
use portcullis_testkit::redis::{connect, scan};
use portcullis_testkit::sentinel::{MASTER_NAME, RedisSentinel};

use crate::helpers::keys;

/// Attackers failing at once, each with one call in flight.
const WORKERS: usize = 8;
/// Failures each account takes: below its lockout, so every attempt is admitted and counted.
const FAILURES_PER_ACCOUNT: u32 = 3;

/// Only the account's lockout: each failure is one increment of one key, so a lost increment
/// is a failure the attacker got for free.
fn lockout_only() -> Policy {
    let defaults = Policy::default();
    Policy {
        global: KeyPolicy::default(),
        ip: KeyPolicy::default(),
        subnet: KeyPolicy::default(),
        network: KeyPolicy::default(),
        username_ip: KeyPolicy::default(),
        username: KeyPolicy {
            lockout: defaults.username.lockout,
            ..KeyPolicy::default()
        },
        ..defaults
    }
}

/// The store's settings for the primary `set`'s Sentinels name, logging in with `password`.
fn config(set: &RedisSentinel, password: Option<&str>) -> RedisConfig {
    RedisConfig {
        topology: Topology::Sentinel(SentinelConfig {
            master_name: MASTER_NAME.to_owned(),
            sentinels: set.sentinel_urls(),
            password: password.map(str::to_owned),
        }),
        prefix: "failover".to_owned(),
        sharding: Sharding::SingleSlot,
        timeout: Duration::from_millis(300),
    }
}

/// A store on `set`, whose breaker opens after two failures and probes every 500 ms.
fn store_on(set: &RedisSentinel, policy: &Policy) -> Arc<RedisStore> {
    let breaker = Breaker::silent(2, Duration::from_millis(500));
    Arc::new(RedisStore::new(&config(set, None), policy, breaker).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_failover_is_followed_without_a_restart_and_loses_at_most_the_calls_in_flight() {
    let mut set = RedisSentinel::spawn(3).await;
    let policy = lockout_only();
    let redis = store_on(&set, &policy);
    let store = FallbackStore::new(redis.clone(), policy, Arc::new(SystemClock), OnError::Local);

    // An account locked well before the failover: its lockout must survive it, and end.
    let locked = keys(&policy, "192.0.2.1", "locked-before");
    for _ in 0..5 {
        assert!(redis.attempt(&locked, 0).await.unwrap().is_allowed());
        redis
            .record(&locked, Outcome::Failure.into(), "u", &[])
            .await
            .unwrap();
    }
    let lock = redis.status(&locked).await.unwrap()[0].locked_until;
    assert!(lock.is_some(), "five failures lock the account");
    // Announced changes (unlocks), heard through the primary the Sentinels name.
    let unlocks = Arc::new(AtomicU64::new(0));
    let heard = unlocks.clone();
    redis.listen(Arc::new(move |change| {
        if change == Invalidation::Unlock {
            heard.fetch_add(1, Ordering::Relaxed);
        }
    }));
    wait_until(Duration::from_secs(10), "the subscription", || {
        let unlocks = unlocks.clone();
        async move { unlocks.load(Ordering::Relaxed) >= 1 }
    })
    .await;

    // The attackers: each fails on accounts of its own, FAILURES_PER_ACCOUNT each, counting
    // what Redis acknowledged; a call that fails (no primary) is simply not counted.
    let stop = Arc::new(AtomicBool::new(false));
    let refused_while_down = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (redis, stop) = (redis.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Vec::new();
            let mut account = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{worker}-{account}");
                let k = keys(&policy, "192.0.2.2", &name);
                let mut acknowledged = 0u32;
                for _ in 0..FAILURES_PER_ACCOUNT {
                    if let Ok(decision) = redis.attempt(&k, 0).await {
                        assert!(decision.is_allowed(), "{name}: below the lockout");
                        if redis
                            .record(&k, Outcome::Failure.into(), "u", &[])
                            .await
                            .is_ok()
                        {
                            acknowledged += 1;
                        }
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                tally.push((name, acknowledged));
                account += 1;
            }
            tally
        }));
    }
    // And a login through the fallback store every 20 ms: each one is decided, failover or not.
    let prober = {
        let (stop, refused) = (stop.clone(), refused_while_down.clone());
        let store = Arc::new(store);
        tokio::spawn(async move {
            let k = keys(&policy, "192.0.2.3", "prober");
            while !stop.load(Ordering::Relaxed) {
                match store.attempt(&k, 0).await {
                    Ok(decision) if decision.is_allowed() => {
                        store
                            .record(&k, Outcome::Success.into(), "u", &[])
                            .await
                            .expect("a success is recorded, here or locally");
                    }
                    Ok(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => panic!("an attempt went undecided: {error}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = Instant::now();
    set.fail_over().await;
    let promoted = killed.elapsed();
    // The store finds the new primary itself: a fresh account is counted in Redis again.
    let fresh = keys(&policy, "192.0.2.4", "after-failover");
    wait_until(
        Duration::from_secs(30),
        "the store to use the new primary",
        || {
            let (redis, fresh) = (&redis, &fresh);
            async move { redis.attempt(fresh, 0).await.is_ok() && !redis.is_degraded() }
        },
    )
    .await;
    let recovered = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut tallies = Vec::new();
    for worker in workers {
        tallies.push(worker.await.unwrap());
    }
    prober.await.unwrap();

    // What the new primary holds, account by account, against what Redis acknowledged.
    let (mut acknowledged, mut lost, mut accounts) = (0u64, 0u64, 0u64);
    for tally in &tallies {
        for (name, count) in tally {
            let held = redis
                .status(&keys(&policy, "192.0.2.2", name))
                .await
                .unwrap()[0]
                .failures;
            acknowledged += u64::from(*count);
            lost += u64::from(count.saturating_sub(held));
            accounts += 1;
        }
    }
    let figures = format!(
        "a Sentinel failover under {WORKERS} attackers: the replica promoted {:.1} s after the \
         primary was killed, the store on it {:.1} s after; {acknowledged} failures on \
         {accounts} accounts acknowledged by Redis, {lost} of them lost; {} probe logins refused\n",
        promoted.as_secs_f64(),
        recovered.as_secs_f64(),
        refused_while_down.load(Ordering::Relaxed)
    );
    eprint!("{figures}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fault-figures");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("sentinel-failover.txt"), &figures).unwrap();
    assert!(acknowledged > 0, "the attackers ran");
    // Replication trails the primary's replies by at most what it had in hand as it died: one
    // call per attacker.
    assert!(
        lost <= WORKERS as u64,
        "{lost} acknowledged failures lost in one failover"
    );
    assert!(recovered < Duration::from_secs(20), "{recovered:?}");
    assert_eq!(
        refused_while_down.load(Ordering::Relaxed),
        0,
        "the local fallback admitted the prober's logins"
    );

    // The lockout from before survived, and still ends: no key is kept forever, and an
    // administrator can lift it on the new primary.
    let status = redis.status(&locked).await.unwrap();
    assert_eq!(status[0].dimension, Dimension::Username);
    assert_eq!(status[0].locked_until, lock, "the lockout was replicated");
    // The subscription followed too: an unlock announced now is heard.
    let before = unlocks.load(Ordering::Relaxed);
    wait_until(
        Duration::from_secs(20),
        "an announcement after the failover",
        || {
            let (redis, unlocks) = (&redis, &unlocks);
            async move {
                redis.announce(Invalidation::Unlock).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                unlocks.load(Ordering::Relaxed) > before + 1
            }
        },
    )
    .await;
    let new_primary = format!("redis://{}", set.primary_address().await);
    let mut conn = connect(&new_primary).await;
    for key in scan(&mut conn, "{failover}:*").await {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no expiry on the new primary ({ttl})");
    }
    assert_eq!(redis.clear(&locked).await.unwrap(), 1);
    assert_eq!(redis.status(&locked).await.unwrap()[0].locked_until, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_planned_switch_of_the_primary_is_followed_too() {
    // The old primary stays up, demoted to a replica: the store must not stay with it.
    let set = RedisSentinel::spawn(3).await;
    let policy = lockout_only();
    let redis = store_on(&set, &policy);
    let before = keys(&policy, "192.0.2.5", "before-switch");
    assert!(redis.attempt(&before, 0).await.unwrap().is_allowed());
    set.switch_over().await;
    // Until the Sentinels have demoted it, the old primary may still take a write (and lose it
    // when it is demoted): each try counts a failure for an account of its own, until one shows
    // on the new primary.
    let tries = std::cell::Cell::new(0);
    wait_until(
        Duration::from_secs(30),
        "the store's writes on the new primary",
        || {
            tries.set(tries.get() + 1);
            let k = keys(
                &policy,
                "192.0.2.5",
                &format!("after-switch-{}", tries.get()),
            );
            let (redis, new_primary) = (&redis, &set.replica.url);
            async move {
                let counted = redis.attempt(&k, 0).await.is_ok()
                    && redis
                        .record(&k, Outcome::Failure.into(), "u", &[])
                        .await
                        .is_ok();
                let counter = redis.keyspace().counter(&k[0]);
                counted
                    && redis::cmd("EXISTS")
                        .arg(&counter)
                        .query_async::<bool>(&mut connect(new_primary).await)
                        .await
                        .unwrap()
            }
        },
    )
    .await;
    assert_eq!(set.primary_address().await, set.replica.address);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_password_on_the_servers_the_store_logs_in_to_the_primary_the_sentinels_name() {
    const PASSWORD: &str = "sentinel-test-password";
    let set = RedisSentinel::spawn(1).await;
    // The Sentinel learns the password first (or it would count the primary down), then the
    // replica (to keep syncing), then the primary.
    let mut sentinel = connect(&set.sentinels[0].url).await;
    let _: () = redis::cmd("SENTINEL")
        .arg("SET")
        .arg(MASTER_NAME)
        .arg("auth-pass")
        .arg(PASSWORD)
        .query_async(&mut sentinel)
        .await
        .unwrap();
    for (server, settings) in [
        (
            &set.replica,
            &["masterauth", PASSWORD, "requirepass", PASSWORD][..],
        ),
        (&set.primary, &["requirepass", PASSWORD][..]),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(settings)
            .query_async(&mut connect(&server.url).await)
            .await
            .unwrap();
    }
    let policy = lockout_only();
    let k = keys(&policy, "192.0.2.6", "behind-a-password");
    let breaker = || Breaker::silent(1_000, Duration::from_secs(1));
    let without = RedisStore::new(&config(&set, None), &policy, breaker()).unwrap();
    assert!(without.attempt(&k, 0).await.is_err(), "refused without it");
    let with = RedisStore::new(&config(&set, Some(PASSWORD)), &policy, breaker()).unwrap();
    assert!(with.attempt(&k, 0).await.unwrap().is_allowed());
    let mut primary = redis::Client::open(format!("redis://:{PASSWORD}@{}", set.primary.address))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert!(!scan(&mut primary, "{failover}:*").await.is_empty());
}
