//! The same store against a local 3-primary Redis Cluster.

use std::sync::Arc;

use portcullis_core::{Outcome, Policy};
use portcullis_store::{AttemptStore, Clock};
use portcullis_testkit::redis::RedisCluster;
use proptest::test_runner::{Config, TestRunner};

use crate::differential::{agree, events, policies};
use crate::helpers::{keys, redis_store};

#[tokio::test(flavor = "multi_thread")]
async fn the_store_suite_passes_against_a_redis_cluster() {
    let cluster = RedisCluster::spawn(3).await;
    let policy = Policy::default();
    let store = redis_store(cluster.urls(), true, "cluster", &policy, None);

    // Lockout across the cluster, all keys in one slot, each with a TTL.
    let k = keys(&policy, "198.51.100.4", "alice");
    for _ in 0..5 {
        assert!(store.attempt(&k, 0).await.unwrap().is_allowed());
        store.record(&k, Outcome::Failure, "u", &[]).await.unwrap();
    }
    assert!(!store.attempt(&k, 0).await.unwrap().is_allowed());
    let written = cluster.keys("{cluster}:*").await;
    assert!(written.len() >= 4, "{written:?}");

    // The differential property, on fewer cases (each case is cheap; the cluster is not).
    let urls = cluster.urls();
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases: 12,
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

/// One `CLUSTER SLOTS` entry: first slot, last slot, primary (host, port, id, metadata).
type SlotRange = (u16, u16, (String, u16, String, Vec<String>));

#[tokio::test(flavor = "multi_thread")]
async fn with_the_primary_of_its_slot_killed_the_local_mode_answers_every_attempt() {
    use std::time::Duration;

    use portcullis_store::{Breaker, FallbackStore, MemoryStore, OnError, SystemClock};

    let mut cluster = RedisCluster::spawn(3).await;
    let policy = Policy::default();
    let breaker = Breaker::silent(2, Duration::from_millis(200));
    let redis = Arc::new(crate::helpers::redis_store_with(
        cluster.urls(),
        true,
        "killed",
        &policy,
        None,
        breaker,
    ));
    let store = FallbackStore::new(
        redis.clone(),
        MemoryStore::new(policy, Arc::new(SystemClock)),
        OnError::Local,
    );
    let k = keys(&policy, "198.51.100.8", "bob");
    assert!(store.attempt(&k, 0).await.unwrap().is_allowed());
    assert!(!redis.is_degraded());

    // Every key of the deployment lives in the slot of its hash tag: kill that slot's primary.
    let mut conn = portcullis_testkit::redis::connect(&cluster.nodes[0].url).await;
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("{killed}")
        .query_async(&mut conn)
        .await
        .unwrap();
    let ranges: Vec<SlotRange> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await
        .unwrap();
    let owner = ranges
        .iter()
        .find(|(start, end, _)| (*start..=*end).contains(&slot))
        .map(|(_, _, (_, port, _, _))| *port)
        .unwrap();
    let node = cluster.nodes.iter_mut().find(|n| n.port == owner).unwrap();
    node.kill();

    for i in 0..6 {
        let decision = store
            .attempt(&k, 0)
            .await
            .expect("answered from the local fallback");
        if decision.is_allowed() {
            store.record(&k, Outcome::Failure, "u", &[]).await.unwrap();
        }
        assert!(
            i < 2 || redis.is_degraded(),
            "the breaker opened after two failures"
        );
    }
    assert!(redis.is_degraded());
}
