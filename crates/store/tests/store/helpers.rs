//! Shared set-up: policies, keys and store constructors.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::attack::AttackSignal;
use portcullis_core::backoff::{Backoff, Strategy};
use portcullis_core::gcra::Gcra;
use portcullis_core::spray::Spray;
use portcullis_core::{
    AttemptKey, ChallengeMode, ChallengePolicy, DeviceCookies, KeyDeriver, KeyPolicy, Outcome,
    Policy, Username,
};
use portcullis_store::{AttemptStore, Breaker, Clock, RedisConfig, RedisStore, Sharding, Topology};

pub const T0: u64 = 1_700_000_000_000;

/// A policy with small numbers, so short sequences reach every rule.
pub fn tight_policy() -> Policy {
    Policy {
        ip: KeyPolicy {
            attempts: Some(Gcra {
                burst: 6,
                interval_ms: 1_000,
            }),
            throttle: Some(Gcra {
                burst: 8,
                interval_ms: 4_000,
            }),
            failures: Some(Gcra {
                burst: 4,
                interval_ms: 5_000,
            }),
            lockout: None,
            spray: Some(Spray {
                max_usernames: 3,
                window_ms: 5_000,
                first_ban_ms: 2_000,
                ban_multiplier: 3,
                max_ban_ms: 10_000,
                level_reset_ms: 60_000,
            }),
            attack: None,
        },
        subnet: KeyPolicy {
            attempts: Some(Gcra {
                burst: 10,
                interval_ms: 500,
            }),
            throttle: None,
            failures: None,
            lockout: None,
            spray: None,
            attack: None,
        },
        username: KeyPolicy {
            attempts: None,
            throttle: None,
            failures: None,
            lockout: Some(Backoff {
                max_failures: 3,
                strategy: Strategy::Linear,
                wait_increment_ms: 2_000,
                max_wait_ms: 7_000,
                failure_reset_ms: 30_000,
                quick_login_check_ms: 300,
                min_quick_login_wait_ms: 1_500,
                permanent_after: Some(3),
            }),
            spray: None,
            attack: None,
        },
        username_ip: KeyPolicy {
            attempts: None,
            throttle: None,
            failures: None,
            lockout: Some(Backoff {
                max_failures: 2,
                strategy: Strategy::Multiple,
                wait_increment_ms: 3_000,
                max_wait_ms: 10_000,
                failure_reset_ms: 20_000,
                quick_login_check_ms: 0,
                min_quick_login_wait_ms: 0,
                permanent_after: None,
            }),
            spray: None,
            attack: None,
        },
        global: KeyPolicy {
            attempts: Some(Gcra {
                burst: 40,
                interval_ms: 100,
            }),
            // The detectors on a short clock, so the generated runs warm the baseline and trip
            // them: the stores must agree on the baseline, the buckets and the trips too.
            attack: Some(AttackSignal {
                window_ms: 3_000,
                min_attempts: 5,
                failure_percent: 60,
                tighten_factor: 2,
                bucket_ms: 500,
                baseline_half_life_ms: 5_000,
                warm_up_ms: 2_000,
                min_z: 3,
                min_excess: 2,
                hold_ms: 1_500,
                fan_out_usernames: 3,
                fan_out_window_ms: 10_000,
            }),
            throttle: None,
            failures: None,
            lockout: None,
            spray: None,
        },
        network: KeyPolicy {
            throttle: Some(Gcra {
                burst: 12,
                interval_ms: 2_000,
            }),
            failures: Some(Gcra {
                burst: 6,
                interval_ms: 3_000,
            }),
            spray: Some(Spray {
                max_usernames: 4,
                window_ms: 6_000,
                first_ban_ms: 3_000,
                ban_multiplier: 2,
                max_ban_ms: 12_000,
                level_reset_ms: 60_000,
            }),
            ..KeyPolicy::default()
        },
        challenge: ChallengePolicy {
            mode: ChallengeMode::Risk,
            risk_percent: 30,
            min_work: 100,
            max_work: 1_000,
            // The accounts' networks too: which ones each remembers, and when one is new.
            unfamiliar_networks: true,
            familiar_days: 1,
        },
        ..Policy::default()
    }
}

/// The default policy without the challenge of a network new to an account: these tests watch
/// the counters, and every fresh account would be challenged (the differential test and the
/// familiar networks' own tests have it on).
pub fn without_networks() -> Policy {
    let mut policy = Policy::default();
    policy.challenge.unfamiliar_networks = false;
    policy
}

/// The keyed hash of a username, as the server passes it to `record`.
pub fn digest(user: &str) -> String {
    let deriver = KeyDeriver::new(b"test-secret", 24, 64, 48).unwrap();
    deriver.username_digest(&Username::parse(user).unwrap())
}

/// The active keys of an attempt by `user` from `ip`.
pub fn keys(policy: &Policy, ip: &str, user: &str) -> Vec<AttemptKey> {
    device_keys(policy, ip, user, None)
}

/// The active keys of an attempt by `user` from `ip`, from trusted device number `device`.
pub fn device_keys(policy: &Policy, ip: &str, user: &str, device: Option<u8>) -> Vec<AttemptKey> {
    let deriver = KeyDeriver::new(b"test-secret", 24, 64, 48).unwrap();
    let ip: IpAddr = ip.parse().unwrap();
    let username = Username::parse(user).unwrap();
    let cookies = DeviceCookies::new(b"test-device");
    let device = device.map(|d| {
        let cookie = cookies.issue(&username, [d; 16]);
        cookies.verify(&cookie, &username).unwrap()
    });
    policy.active_keys(deriver.keys(ip, &username, device.as_ref()))
}

/// A Redis store on `urls` with `prefix`, reading time from Redis unless a clock is given; keys
/// sharded per subject on a cluster, as the server's default.
pub fn redis_store(
    urls: Vec<String>,
    cluster: bool,
    prefix: &str,
    policy: &Policy,
    clock: Option<Arc<dyn Clock>>,
) -> RedisStore {
    let breaker = Breaker::silent(3, Duration::from_secs(1));
    let (topology, sharding) = if cluster {
        (Topology::Cluster(urls), Sharding::PerSubject)
    } else {
        (Topology::Single(urls[0].clone()), Sharding::SingleSlot)
    };
    redis_store_with(topology, sharding, prefix, policy, clock, breaker)
}

/// [`redis_store`] calling through `breaker`.
pub fn redis_store_with(
    topology: Topology,
    sharding: Sharding,
    prefix: &str,
    policy: &Policy,
    clock: Option<Arc<dyn Clock>>,
    breaker: Breaker,
) -> RedisStore {
    let config = RedisConfig {
        topology,
        prefix: prefix.to_owned(),
        sharding,
        timeout: Duration::from_secs(2),
    };
    let store = RedisStore::new(&config, policy, breaker).unwrap();
    match clock {
        Some(clock) => store.with_clock(clock),
        None => store,
    }
}

/// 200 wrong guesses at one account ("target") from 200 addresses, spread over `replicas` all
/// at once; how many were admitted (each verified and failed).
pub async fn admitted_of_200_concurrent_guesses(
    policy: &Policy,
    replicas: &[Arc<dyn AttemptStore>],
) -> usize {
    let attempts = (0..200).map(|i| {
        let store = replicas[i % replicas.len()].clone();
        let k = keys(policy, &format!("198.51.{}.{}", i / 100, i % 100), "target");
        async move {
            let decision = store.attempt(&k, 0).await.unwrap();
            if decision.is_allowed() {
                store
                    .record(&k, Outcome::Failure.into(), "u", &[])
                    .await
                    .unwrap();
            }
            decision.is_allowed()
        }
    });
    futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|a| *a)
        .count()
}
