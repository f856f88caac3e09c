//! Redis store behaviour: TTLs, hidden usernames, script reloading, round trips, atomicity.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use portcullis_core::attack::{Detector, Trip};
use portcullis_core::{Decision, Dimension, Outcome, Policy, Reason, Verified};
use portcullis_store::redis_store::StoredState;
use portcullis_store::{AdminStore, AttemptStore, Clock, Invalidation, ManualClock, RedisStore};
use portcullis_testkit::process::wait_until;
use portcullis_testkit::redis::{RedisServer, TestRedis, command_calls, connect};

use crate::helpers::{T0, digest, keys, redis_store, tight_policy, without_networks};

#[tokio::test]
async fn every_key_a_scenario_writes_has_a_ttl_and_no_plain_username() {
    let redis = TestRedis::start().await;
    let policy = tight_policy();
    let store = redis_store(vec![redis.url.clone()], false, &redis.prefix, &policy, None);
    for i in 0..20 {
        let k = keys(
            &policy,
            &format!("203.0.113.{}", i % 4),
            &format!("victim{}", i % 3),
        );
        // Solving any challenge (a network new to the account asks for one).
        if store.attempt(&k, u64::MAX).await.unwrap().is_allowed() {
            let outcome = if i % 5 == 0 {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            store.record(&k, outcome.into(), "u", &[]).await.unwrap();
        }
    }
    let written = redis.keys().await;
    assert!(written.len() >= 5, "{written:?}");
    assert!(
        written.iter().any(|key| key.ends_with(":fam")),
        "the accounts' familiar networks: {written:?}"
    );
    let mut conn = redis.connection().await;
    for key in &written {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
        assert!(!key.contains("victim"), "{key} shows a username");
        assert!(
            key.starts_with(&format!("{{{}}}:", redis.prefix)),
            "{key} lacks the hash tag"
        );
    }
    redis.cleanup().await;
}

#[tokio::test]
async fn a_counter_expires_from_redis_within_a_second_after_its_state() {
    // Redis' clock (no injected one): the functions set absolute deadlines (PXAT), rounded up
    // to the second. Too early would forget a limit; much later would keep dead keys.
    let redis = TestRedis::start().await;
    let policy = without_networks();
    let store = redis_store(vec![redis.url.clone()], false, &redis.prefix, &policy, None);
    let k = keys(&policy, "203.0.113.7", "expiring");
    assert!(store.attempt(&k, 0).await.unwrap().is_allowed());
    store
        .record(&k, Outcome::Failure.into(), "u", &[])
        .await
        .unwrap();
    let mut conn = redis.connection().await;
    let mut checked = 0;
    for key in k.iter().filter(|k| k.dimension != Dimension::Global) {
        let counter = store.keyspace().counter(key);
        let packed: Vec<u8> = redis::cmd("GET")
            .arg(&counter)
            .query_async(&mut conn)
            .await
            .unwrap();
        let state = StoredState::from_packed(&packed);
        let expires_at = state
            .expires_at(policy.for_dimension(key.dimension))
            .expect("not permanently locked");
        let deadline: u64 = redis::cmd("PEXPIRETIME")
            .arg(&counter)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            deadline >= expires_at
                && deadline < expires_at + 1_000
                && deadline.is_multiple_of(1_000),
            "{counter}: expires from Redis at {deadline}, its state at {expires_at}"
        );
        checked += 1;
    }
    assert_eq!(checked, 4, "the address, its /24, the account and the pair");
    redis.cleanup().await;
}

#[tokio::test]
async fn a_counter_written_under_another_policy_keeps_its_history() {
    // A rolling deploy: replicas without the address's spray limit (so another layout for its
    // counters) read what replicas with it wrote, and go on counting from there.
    let redis = TestRedis::start().await;
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let before = without_networks();
    let mut after = before;
    after.ip.spray = None;
    let url = || vec![redis.url.clone()];
    let old = redis_store(url(), false, &redis.prefix, &before, Some(clock.clone()));
    let new = redis_store(url(), false, &redis.prefix, &after, Some(clock));
    let burst = before.ip.attempts.unwrap().burst;
    for i in 0..burst {
        let k = keys(&before, "198.51.100.9", &format!("u{i}"));
        assert!(
            old.attempt(&k, 0).await.unwrap().is_allowed(),
            "attempt {i}"
        );
    }
    let k = keys(&after, "198.51.100.9", "one-more");
    match new.attempt(&k, 0).await.unwrap() {
        Decision::Deny(denial) => {
            assert_eq!(denial.dimension, Dimension::Ip);
            assert_eq!(denial.reason, Reason::RateLimited);
        }
        other => panic!("the address's burst was spent under the old layout: {other:?}"),
    }
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_functions_are_reloaded_once_by_a_burst_after_function_flush() {
    // A private server: FUNCTION FLUSH must not disturb anyone else.
    let server = RedisServer::spawn().await;
    let policy = without_networks();
    let store = Arc::new(redis_store(
        vec![server.url.clone()],
        false,
        "flush",
        &policy,
        None,
    ));
    let k = keys(&policy, "192.0.2.1", "alice");
    assert!(store.attempt(&k, 0).await.unwrap().is_allowed());
    let mut conn = connect(&server.url).await;
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    // A burst finds the library gone together (as after a restart): it is loaded once, not
    // once per call, so the reload is no storm on the server that has just come back.
    let before = command_calls(&server.url).await;
    let burst = (0..500u32).map(|n| {
        let store = store.clone();
        let k = keys(&policy, &format!("10.{}.0.1", n & 0xff), &format!("u{n}"));
        async move { store.attempt(&k, 0).await }
    });
    // Every call is decided (the default policy refuses some of these: not an error).
    for decision in join_all(burst).await {
        decision.unwrap();
    }
    let loads = sent(&before, &command_calls(&server.url).await);
    assert_eq!(loads.get("function|load"), Some(&1), "{loads:?}");
    store
        .record(&k, Outcome::Failure.into(), "u", &[])
        .await
        .unwrap();
}

/// Commands the functions run inside Redis: `INFO commandstats` counts them too, but they cost
/// no round trip.
const INSIDE_SCRIPTS: [&str; 10] = [
    "get",
    "mget",
    "set",
    "pexpire",
    "pexpireat",
    "time",
    "del",
    "sismember",
    "sadd",
    "info",
];

/// Commands the client sent between two snapshots.
fn sent(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> HashMap<String, u64> {
    after
        .iter()
        .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
        .filter(|(name, calls)| *calls > 0 && !INSIDE_SCRIPTS.contains(&name.as_str()))
        .collect()
}

#[tokio::test]
async fn a_denied_attempt_costs_one_command_and_a_verified_one_two_with_no_ping() {
    let server = RedisServer::spawn().await;
    let policy = without_networks();
    let store = redis_store(vec![server.url.clone()], false, "budget", &policy, None);
    let k = keys(&policy, "192.0.2.1", "alice");
    // Warm up: connect and load the scripts, so the deltas below are the steady state.
    assert!(store.attempt(&k, 0).await.unwrap().is_allowed());
    store
        .record(&k, Outcome::Failure.into(), "u", &[])
        .await
        .unwrap();

    // A verified attempt: attempt + record.
    let fresh = keys(&policy, "192.0.2.2", "bob");
    let before = command_calls(&server.url).await;
    assert!(store.attempt(&fresh, 0).await.unwrap().is_allowed());
    store
        .record(&fresh, Outcome::Failure.into(), "u", &[])
        .await
        .unwrap();
    let verified = sent(&before, &command_calls(&server.url).await);
    assert_eq!(
        verified,
        HashMap::from([("fcall".to_owned(), 2)]),
        "verified attempt"
    );

    // Lock the account out, then a refused attempt: one FCALL and nothing else.
    for _ in 0..5 {
        if store.attempt(&fresh, 0).await.unwrap().is_allowed() {
            store
                .record(&fresh, Outcome::Failure.into(), "u", &[])
                .await
                .unwrap();
        }
    }
    let before = command_calls(&server.url).await;
    let refused = store.attempt(&fresh, 0).await.unwrap();
    assert!(matches!(refused, Decision::Deny(d) if d.reason == Reason::LockedOut));
    let denied = sent(&before, &command_calls(&server.url).await);
    assert_eq!(
        denied,
        HashMap::from([("fcall".to_owned(), 1)]),
        "refused attempt"
    );
}

#[tokio::test]
async fn replicas_hammering_one_username_admit_no_more_than_the_lockout_allows() {
    let redis = TestRedis::start().await;
    let policy = without_networks();
    let replicas: Vec<Arc<dyn AttemptStore>> = (0..3)
        .map(|_| {
            Arc::new(redis_store(
                vec![redis.url.clone()],
                false,
                &redis.prefix,
                &policy,
                None,
            )) as Arc<dyn AttemptStore>
        })
        .collect();
    let admitted = crate::helpers::admitted_of_200_concurrent_guesses(&policy, &replicas).await;
    assert_eq!(admitted, 5, "the default lockout admits exactly 5 failures");
    redis.cleanup().await;
}

#[tokio::test]
async fn without_an_injected_clock_scripts_use_redis_time() {
    let redis = TestRedis::start().await;
    let policy = without_networks();
    let store = redis_store(vec![redis.url.clone()], false, &redis.prefix, &policy, None);
    let k = keys(&policy, "192.0.2.7", "timed");
    for _ in 0..5 {
        assert!(store.attempt(&k, 0).await.unwrap().is_allowed());
        store
            .record(&k, Outcome::Failure.into(), "u", &[])
            .await
            .unwrap();
    }
    let Decision::Deny(denial) = store.attempt(&k, 0).await.unwrap() else {
        panic!("sixth attempt admitted");
    };
    assert!(
        (59_000..=60_000).contains(&denial.retry_after_ms),
        "{denial:?}"
    );
    redis.cleanup().await;
}

#[tokio::test]
async fn lockouts_and_bans_are_listed_from_the_index_and_cleared_by_an_unlock() {
    use portcullis_store::AdminStore;

    let redis = TestRedis::start().await;
    let policy = crate::helpers::tight_policy();
    let store = redis_store(vec![redis.url.clone()], false, &redis.prefix, &policy, None);
    let k = keys(&policy, "192.0.2.9", "locked");
    for _ in 0..3 {
        // With an ample proof: the failing address is challenged, and this client solves.
        if store.attempt(&k, u64::MAX).await.unwrap().is_allowed() {
            store
                .record(&k, Outcome::Failure.into(), "u", &[])
                .await
                .unwrap();
        }
    }
    let listed = store.restrictions(100).await.unwrap();
    let username_key = &k
        .iter()
        .find(|k| k.dimension == portcullis_core::Dimension::Username)
        .unwrap()
        .key;
    assert!(listed.iter().any(|r| &r.key == username_key), "{listed:?}");
    let status = store.status(&k).await.unwrap();
    let username = status.iter().find(|s| &s.key == username_key).unwrap();
    assert!(
        username.locked_until.is_some() && username.failures >= 2,
        "{username:?}"
    );

    assert!(store.clear(&k).await.unwrap() >= 1);
    assert!(store.restrictions(100).await.unwrap().is_empty());
    // Unlocked (with a proof: the account never logged in from this network).
    assert!(store.attempt(&k, u64::MAX).await.unwrap().is_allowed());
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_100k_distinct_keys_leaves_nothing_behind_after_its_ttl() {
    use portcullis_core::KeyPolicy;
    use portcullis_core::gcra::Gcra;

    // A private server, so its key count and memory are this test's alone.
    let server = RedisServer::spawn().await;
    let policy = Policy {
        ip: KeyPolicy {
            // Each key lives 20 s: long enough for the whole flood to be counted at its peak.
            attempts: Some(Gcra {
                burst: 1,
                interval_ms: 20_000,
            }),
            ..KeyPolicy::default()
        },
        subnet: KeyPolicy::default(),
        username: KeyPolicy::default(),
        username_ip: KeyPolicy::default(),
        device: KeyPolicy::default(),
        global: KeyPolicy::default(),
        ..Policy::default()
    };
    let store = Arc::new(redis_store(
        vec![server.url.clone()],
        false,
        "flood",
        &policy,
        None,
    ));
    let mut conn = connect(&server.url).await;
    let memory = |info: String| {
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = memory(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .unwrap(),
    );
    for chunk in 0..100u32 {
        let attempts = (0..1_000u32).map(|i| {
            let store = store.clone();
            let n = chunk * 1_000 + i;
            let k = keys(
                &policy,
                &format!("10.{}.{}.{}", n >> 16, (n >> 8) & 0xff, n & 0xff),
                "x",
            );
            async move { store.attempt(&k, 0).await.unwrap() }
        });
        join_all(attempts).await;
    }
    let peak_keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    let peak = memory(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .unwrap(),
    );
    assert_eq!(peak_keys, 100_000);
    portcullis_testkit::process::wait_until(std::time::Duration::from_secs(60), "expiry", || {
        let url = server.url.clone();
        async move {
            let mut conn = connect(&url).await;
            redis::cmd("DBSIZE")
                .query_async::<u64>(&mut conn)
                .await
                .unwrap()
                == 0
        }
    })
    .await;
    let after = memory(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .unwrap(),
    );
    // A measurement for the record (shown with --nocapture), not a timed assertion.
    println!("redis used_memory: before {before}, at 100k keys {peak}, after expiry {after}");
    assert!(
        after < before + (peak - before) / 4,
        "memory did not come back: before {before}, peak {peak}, after {after}"
    );
}

#[tokio::test]
async fn with_the_policy_disabled_the_scripts_admit_everything_and_write_nothing() {
    let redis = TestRedis::start().await;
    let policy = Policy {
        enabled: false,
        ..Policy::default()
    };
    let store = redis_store(vec![redis.url.clone()], false, &redis.prefix, &policy, None);
    let k = keys(&policy, "192.0.2.3", "anyone");
    assert!(k.is_empty());
    for _ in 0..10 {
        assert!(store.attempt(&k, 0).await.unwrap().is_allowed());
        assert!(
            store
                .record(&k, Outcome::Failure.into(), "u", &[])
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert!(redis.keys().await.is_empty());
}

#[tokio::test]
async fn a_reply_the_code_cannot_read_is_a_protocol_error_and_never_trips_the_breaker() {
    use portcullis_store::{AdminStore, Breaker, StoreError};
    let redis = TestRedis::start().await;
    let policy = without_networks();
    let breaker = Breaker::silent(1, std::time::Duration::from_secs(60));
    let store = crate::helpers::redis_store_with(
        portcullis_store::Topology::Single(redis.url.clone()),
        portcullis_store::Sharding::SingleSlot,
        &redis.prefix,
        &policy,
        None,
        breaker,
    );
    // A restrictions index of the wrong type: the script fails inside Redis (WRONGTYPE).
    let mut conn = redis.connection().await;
    let index = format!("{{{}}}:restrictions", redis.prefix);
    let _: () = redis::cmd("SET")
        .arg(&index)
        .arg("not a sorted set")
        .query_async(&mut conn)
        .await
        .unwrap();
    let error = store.restrictions(10).await.unwrap_err();
    assert!(matches!(error, StoreError::Protocol(_)), "{error:?}");
    assert!(!store.is_degraded(), "a bug is not an outage");
    let k = keys(&policy, "198.51.100.40", "proto");
    assert!(store.attempt(&k, 0).await.unwrap().is_allowed());
    redis.cleanup().await;
}

/// The password fan-out across two replicas: a password failing on one account each time stays
/// in its replica (no key in Redis); one failing on `fan_out_usernames` (here 3) distinct accounts
/// trips once the replicas have shared them, which may take one more account per replica
/// holding a first one back.
#[tokio::test]
async fn a_password_failing_across_accounts_and_replicas_trips_the_fan_out() {
    let redis = TestRedis::start().await;
    let mut policy = without_networks();
    // Only the fan-out may trip: the floor needs more attempts than this test makes.
    if let Some(attack) = policy.global.attack.as_mut() {
        attack.min_attempts = 1_000;
        attack.fan_out_usernames = 3;
    }
    let replicas = replicas(&redis, &policy, 3);
    // The third only listens: it hears the trip at once, announced.
    let hearing = &replicas[2];
    subscribed(hearing).await;
    // Each from an address and network of its own: no source looks risky.
    let sources = std::sync::atomic::AtomicU8::new(0);
    let fail = |replica: usize, user: String, password: u64| {
        let store = &replicas[replica];
        let policy = &policy;
        let source = sources.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let from = format!("10.{source}.0.1");
            fail_once(store, policy, &from, &user, Some(password)).await;
            store.flush_signal().await.unwrap();
        }
    };
    let tripped_by_fan_out = |replica: usize| {
        replicas[replica]
            .attack_signal()
            .and_then(|a| a.trip)
            .is_some_and(|t| t.detector == Detector::PasswordFanOut)
    };
    let fan_out_keys = || async {
        redis
            .keys()
            .await
            .into_iter()
            .filter(|k| k.contains(":fanout:"))
            .count()
    };

    // Typos: each password fails once, or again on its own account.
    for i in 0..5 {
        fail(0, format!("typist{i}"), 1_000 + i).await;
        fail(0, format!("typist{i}"), 1_000 + i).await;
    }
    assert_eq!(
        fan_out_keys().await,
        0,
        "a password failing on one account stays local"
    );

    // One password on two accounts at replica 0 (shared: 2), then a third at replica 1, which
    // holds it back as its own first: 3 distinct accounts, 2 seen.
    fail(0, "victim0".to_owned(), 7).await;
    fail(0, "victim1".to_owned(), 7).await;
    fail(1, "victim2".to_owned(), 7).await;
    assert_eq!(fan_out_keys().await, 1);
    for replica in [0, 1] {
        replicas[replica].flush_signal().await.unwrap();
        assert!(
            !tripped_by_fan_out(replica),
            "replica {replica}: 2 of 3 shared"
        );
    }
    // A fourth at replica 1 shares both of its own.
    fail(1, "victim3".to_owned(), 7).await;
    assert!(tripped_by_fan_out(1));
    assert_eq!(heard_trip(hearing).await.detector, Detector::PasswordFanOut);
    replicas[0].flush_signal().await.unwrap();
    redis.cleanup().await;
}

/// `n` replicas of one deployment on `redis`, on one injected clock.
fn replicas(redis: &TestRedis, policy: &Policy, n: usize) -> Vec<RedisStore> {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    (0..n)
        .map(|_| {
            let url = vec![redis.url.clone()];
            redis_store(url, false, &redis.prefix, policy, Some(clock.clone()))
        })
        .collect()
}

/// A wrong `password` (its keyed digest) for `user` from `ip`, admitted and recorded at
/// `store`.
async fn fail_once(
    store: &RedisStore,
    policy: &Policy,
    ip: &str,
    user: &str,
    password: Option<u64>,
) {
    let k = keys(policy, ip, user);
    let decision = store.attempt(&k, 0).await.unwrap();
    let Decision::Allow { pending, .. } = decision else {
        panic!("{user} refused: {decision:?}");
    };
    let wrong = Verified {
        outcome: Outcome::Failure,
        unknown_username: false,
        password,
    };
    store
        .record(&k, wrong, &digest(user), &pending)
        .await
        .unwrap();
}

/// Subscribes `store` to the replicas' channels, and waits until it listens (the listener hears
/// a subscription as every kind of change).
async fn subscribed(store: &RedisStore) {
    let listening = Arc::new(AtomicBool::new(false));
    let heard = listening.clone();
    store.listen(Arc::new(move |change| {
        if change == Invalidation::Unlock {
            heard.store(true, Ordering::Relaxed);
        }
    }));
    wait_until(Duration::from_secs(10), "the subscription", || {
        let listening = listening.clone();
        async move { listening.load(Ordering::Relaxed) }
    })
    .await;
}

/// The trip `store` holds, once it holds one.
async fn heard_trip(store: &RedisStore) -> Trip {
    wait_until(Duration::from_secs(10), "the trip announced", || async {
        store.attack_signal().and_then(|a| a.trip).is_some()
    })
    .await;
    store.attack_signal().and_then(|a| a.trip).unwrap()
}

/// A trip reaches every replica the moment one judges it, on the trips channel, not at their
/// next flush: here a replica that never flushes (it makes no attempt, so its flush task never
/// starts, and it never reads the shared history) holds the trip the attempt that tipped the
/// floor started at another.
#[tokio::test]
async fn a_trip_is_heard_at_once_by_a_replica_that_never_flushed() {
    let redis = TestRedis::start().await;
    let mut policy = without_networks();
    if let Some(attack) = policy.global.attack.as_mut() {
        attack.min_attempts = 4;
    }
    let replicas = replicas(&redis, &policy, 2);
    let (judging, hearing) = (&replicas[0], &replicas[1]);
    subscribed(hearing).await;
    // Four failures from four networks, no device: the floor's share, at its least.
    for i in 0..4 {
        fail_once(
            judging,
            &policy,
            &format!("10.{i}.0.1"),
            &format!("victim{i}"),
            None,
        )
        .await;
    }
    assert!(hearing.attack_signal().and_then(|a| a.trip).is_none());
    // The fifth is judged on them, and trips.
    let k = keys(&policy, "10.9.0.1", "victim9");
    judging.attempt(&k, 0).await.unwrap();
    let judged = judging.attack_signal().and_then(|a| a.trip);
    assert_eq!(judged.map(|t| t.detector), Some(Detector::Floor));
    assert_eq!(Some(heard_trip(hearing).await), judged);
    assert!(hearing.attack_signal().unwrap().shows_attack());
    redis.cleanup().await;
}
