//! The store against a local 3-primary Redis Cluster, keys sharded per subject (the default on
//! a Cluster): decisions, the lockout guarantee, compensation and failover.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::gcra::Gcra;
use portcullis_core::{Decision, Dimension, Outcome, Reason};
use portcullis_store::{
    AdminStore, AttemptStore, Breaker, Clock, FallbackStore, OnError, RedisConfig, RedisStore,
    Sharding, SystemClock, Topology,
};
use portcullis_testkit::process::wait_until;
use portcullis_testkit::redis::RedisCluster;
use proptest::test_runner::{Config, TestRunner};

use crate::differential::{agree, events, policies};
use crate::helpers::{admitted_of_200_concurrent_guesses, keys, redis_store, without_networks};

#[tokio::test(flavor = "multi_thread")]
async fn sharded_per_subject_the_store_decides_like_the_core_across_primaries() {
    let cluster = RedisCluster::spawn(3).await;
    let policy = without_networks();
    let store = redis_store(cluster.urls(), true, "cluster", &policy, None);

    // Lockout across the cluster; each address's and the account's keys in slots of their own.
    let k = keys(&policy, "198.51.100.4", "alice");
    for _ in 0..5 {
        assert!(store.attempt(&k, 0).await.unwrap().is_allowed());
        store
            .record(&k, Outcome::Failure.into(), "u", &[])
            .await
            .unwrap();
    }
    assert!(!store.attempt(&k, 0).await.unwrap().is_allowed());
    let mut primaries = HashSet::new();
    for key in &k {
        let counter = store.keyspace().counter(key);
        primaries.insert(cluster.primary_of(&counter).await);
    }
    assert!(primaries.len() >= 2, "one attempt's keys span primaries");
    let written = cluster.keys("cluster:*").await;
    assert!(written.len() >= 4, "{written:?}");

    // The differential property, on fewer cases (each case is cheap; the cluster is not).
    let urls = cluster.urls();
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases: 16,
            ..Config::default()
        });
        runner
            .run(&(policies(), events()), |(policy, events)| {
                let prefix = format!("diff-{}", portcullis_testkit::random_hex(4));
                handle.block_on(agree(policy, &events, |clock: Arc<dyn Clock>| {
                    redis_store(urls.clone(), true, &prefix, &policy, Some(clock))
                }));
                Ok(())
            })
            .map_err(|failure| failure.to_string())
    })
    .await
    .unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_hammering_one_account_on_a_sharded_cluster_admit_exactly_the_lockout() {
    let cluster = RedisCluster::spawn(3).await;
    let policy = without_networks();
    let replicas: Vec<Arc<dyn AttemptStore>> = (0..3)
        .map(|_| {
            Arc::new(redis_store(cluster.urls(), true, "hammer", &policy, None))
                as Arc<dyn AttemptStore>
        })
        .collect();
    // 200 guesses from 200 addresses (in one address block), over three replicas at once.
    let admitted = admitted_of_200_concurrent_guesses(&policy, &replicas).await;
    assert_eq!(admitted, 5, "the default lockout admits exactly 5 failures");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_on_one_slot_takes_back_what_the_others_counted() {
    let cluster = RedisCluster::spawn(3).await;
    // Two attempts per address an hour; the account locks after 5 failures.
    let mut policy = without_networks();
    policy.ip.attempts = Some(Gcra {
        burst: 2,
        interval_ms: 3_600_000,
    });
    let store = redis_store(cluster.urls(), true, "compensate", &policy, None);
    let k = keys(&policy, "203.0.113.5", "carol");
    let username = k
        .iter()
        .find(|k| k.dimension == Dimension::Username)
        .unwrap()
        .clone();
    for _ in 0..2 {
        assert!(store.attempt(&k, 0).await.unwrap().is_allowed());
        store
            .record(&k, Outcome::Failure.into(), "u", &[])
            .await
            .unwrap();
    }
    // The address refuses; the account's slot had counted a provisional failure, and the
    // compensating call took it back.
    for _ in 0..10 {
        let Decision::Deny(denial) = store.attempt(&k, 0).await.unwrap() else {
            panic!("the address's budget is spent");
        };
        assert_eq!(
            (denial.dimension, denial.reason),
            (Dimension::Ip, Reason::RateLimited)
        );
    }
    let status = store.status(std::slice::from_ref(&username)).await.unwrap();
    assert_eq!(status[0].failures, 2, "{status:?}");
    assert_eq!(status[0].locked_until, None, "{status:?}");
    // So carol has exactly her three remaining failures from elsewhere.
    let mut admitted = 0;
    for i in 0..6 {
        let other = keys(&policy, &format!("192.0.2.{i}"), "carol");
        if store.attempt(&other, 0).await.unwrap().is_allowed() {
            store
                .record(&other, Outcome::Failure.into(), "u", &[])
                .await
                .unwrap();
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_challenge_asked_by_one_slot_takes_back_the_account_admission_of_another() {
    let cluster = RedisCluster::spawn(3).await;
    let policy = without_networks();
    let store = redis_store(cluster.urls(), true, "challenge", &policy, None);
    // An address that failed for three usernames is risky (30% of its ten before a ban).
    for user in ["u1", "u2", "u3"] {
        let k = keys(&policy, "203.0.113.77", user);
        assert!(store.attempt(&k, u64::MAX).await.unwrap().is_allowed());
        store
            .record(
                &k,
                Outcome::Failure.into(),
                &crate::helpers::digest(user),
                &[],
            )
            .await
            .unwrap();
    }
    let k = keys(&policy, "203.0.113.77", "dave");
    for _ in 0..8 {
        assert!(
            matches!(
                store.attempt(&k, 0).await.unwrap(),
                Decision::Challenge { .. }
            ),
            "the risky address is challenged"
        );
    }
    // dave's slot admitted each of those before the address's slot asked for the challenge;
    // every admission was taken back.
    let username: Vec<_> = k
        .iter()
        .filter(|k| k.dimension == Dimension::Username)
        .cloned()
        .collect();
    let status = store.status(&username).await.unwrap();
    assert_eq!(status[0].failures, 0, "{status:?}");
    assert_eq!(status[0].locked_until, None, "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_primary_opens_the_breaker_and_the_store_recovers_after_failover() {
    let mut cluster = RedisCluster::spawn_with_replicas(3, 1).await;
    let policy = without_networks();
    // Two calls time out well before the replica takes over (after the nodes' 2 s timeout),
    // and the breaker stays open while the loop below runs.
    let config = RedisConfig {
        topology: Topology::Cluster(cluster.urls()),
        prefix: "killed".to_owned(),
        sharding: Sharding::PerSubject,
        timeout: Duration::from_millis(300),
    };
    let breaker = Breaker::silent(2, Duration::from_secs(1));
    let redis = Arc::new(RedisStore::new(&config, &policy, breaker).unwrap());
    let store = FallbackStore::new(redis.clone(), policy, Arc::new(SystemClock), OnError::Local);
    let k = keys(&policy, "198.51.100.8", "bob");
    assert!(store.attempt(&k, 0).await.unwrap().is_allowed());
    assert!(!redis.is_degraded());

    // Kill the primary of bob's account slot.
    let username = k
        .iter()
        .find(|k| k.dimension == Dimension::Username)
        .unwrap();
    let counter = redis.keyspace().counter(username);
    let owner = cluster.primary_of(&counter).await;
    cluster
        .nodes
        .iter_mut()
        .find(|n| n.address == owner)
        .unwrap()
        .kill();

    for i in 0..6 {
        let decision = store
            .attempt(&k, 0)
            .await
            .expect("answered from the local fallback");
        if decision.is_allowed() {
            store
                .record(&k, Outcome::Failure.into(), "u", &[])
                .await
                .unwrap();
        }
        assert!(
            i < 2 || redis.is_degraded(),
            "the breaker opened after two failures"
        );
    }
    assert!(redis.is_degraded());

    // The replica takes over the slot; after a cool-down the breaker lets a call through, and
    // the store answers from Redis again.
    wait_until(Duration::from_secs(30), "failover", || async {
        cluster.primary_of(&counter).await != owner
    })
    .await;
    let fresh = keys(&policy, "198.51.100.9", "bob-after");
    wait_until(Duration::from_secs(30), "the store to recover", || {
        let (store, redis, fresh) = (&store, &redis, &fresh);
        async move { store.attempt(fresh, 0).await.is_ok() && !redis.is_degraded() }
    })
    .await;
    let status = redis.status(&fresh).await.unwrap();
    assert!(
        status.iter().any(|s| s.failures >= 1),
        "the attempt was counted in Redis: {status:?}"
    );
}
