//! Random sequences of attempts (from IPv4, IPv6 and 6to4 addresses, with and without trusted
//! devices and solved challenges), outcomes (verified or abandoned) and time steps through the
//! core's reference model (the memory store) and the Redis store give identical decisions
//! (challenges and their work included), Retry-After values, bans, key status and restrictions
//! index.

use std::sync::Arc;

use portcullis_core::attack::Assessment;
use portcullis_core::{ChallengeMode, Decision, Outcome, Policy};
use portcullis_store::{AdminStore, AttemptStore, Clock, ManualClock, MemoryStore, RedisStore};
use portcullis_testkit::random_hex;
use portcullis_testkit::redis::TestRedis;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::helpers::{T0, device_keys, digest, redis_store, tight_policy};

/// How an admitted attempt ends.
#[derive(Clone, Copy, Debug)]
pub enum Settle {
    Success,
    Failure,
    /// Never verified (shed with 503).
    Abandon,
}

#[derive(Clone, Debug)]
pub enum Event {
    /// An attempt, from trusted device number `device` if any, carrying a proof of
    /// `PROOFS[proof]`; if admitted, it is settled.
    Attempt {
        ip: u8,
        user: u8,
        device: Option<u8>,
        proof: u8,
        settle: Settle,
    },
    Wait(u64),
}

pub fn events() -> impl Strategy<Value = Vec<Event>> {
    proptest::collection::vec(
        prop_oneof![
            6 => (0u8..6, 0u8..3, proptest::option::weighted(0.3, 0u8..2), 0u8..4, settles())
                .prop_map(|(ip, user, device, proof, settle)| {
                    Event::Attempt { ip, user, device, proof, settle }
                }),
            1 => (0u64..4_000).prop_map(Event::Wait),
            1 => Just(Event::Wait(0)),
        ],
        1..60,
    )
}

fn settles() -> impl Strategy<Value = Settle> {
    prop_oneof![6 => Just(Settle::Failure), 2 => Just(Settle::Success), 1 => Just(Settle::Abandon)]
}

/// Proofs an attempt may carry: none, short of or within the tight policy's work, ample.
const PROOFS: [u64; 4] = [0, 100, 550, u64::MAX];

/// Addresses: three IPv4 /24s, two /64s of one IPv6 /48, and 6to4 for the first IPv4 address.
fn address(ip: u8) -> String {
    match ip {
        0..3 => format!("198.51.{ip}.9"),
        3 | 4 => format!("2001:db8:0:{ip}::9"),
        _ => "2002:c633:9::1".to_owned(),
    }
}

pub fn policies() -> impl Strategy<Value = Policy> {
    let mut always = tight_policy();
    always.challenge.mode = ChallengeMode::Always;
    prop_oneof![Just(tight_policy()), Just(Policy::default()), Just(always)]
}

/// Plays `events` through the memory store and a Redis store from `make`; panics on the
/// first difference.
pub async fn agree(policy: Policy, events: &[Event], make: impl Fn(Arc<dyn Clock>) -> RedisStore) {
    let clock = Arc::new(ManualClock::new(T0));
    let memory = MemoryStore::new(policy, clock.clone());
    let redis = make(clock.clone());
    // The store's background task flushes at start-up, before any attempt: so does this run.
    redis.flush_signal().await.unwrap();
    for (step, event) in events.iter().enumerate() {
        match event {
            Event::Wait(ms) => {
                clock.advance(*ms);
                // The store rolls its signal whenever it flushes, attempts or none (every
                // 250 ms): so does this run, in the quiet too.
                redis.flush_signal().await.unwrap();
            }
            Event::Attempt {
                ip,
                user,
                device,
                proof,
                settle,
            } => {
                let k = device_keys(&policy, &address(*ip), &format!("user{user}"), *device);
                let proof = PROOFS[usize::from(*proof)];
                let expected = memory.attempt(&k, proof).await.unwrap();
                // The reference model's signal is exact; the store's is shared every 250 ms.
                redis.flush_signal().await.unwrap();
                let actual = redis.attempt(&k, proof).await.unwrap();
                assert_eq!(actual, expected, "step {step}: {event:?}");
                if let Decision::Allow { pending, .. } = &expected {
                    let user = digest(&format!("user{user}"));
                    let outcome = match settle {
                        Settle::Success => Some(Outcome::Success),
                        Settle::Failure => Some(Outcome::Failure),
                        Settle::Abandon => None,
                    };
                    if let Some(outcome) = outcome {
                        let expected = memory
                            .record(&k, outcome.into(), &user, pending)
                            .await
                            .unwrap();
                        let actual = redis
                            .record(&k, outcome.into(), &user, pending)
                            .await
                            .unwrap();
                        assert_eq!(actual, expected, "step {step}: bans of {event:?}");
                    } else {
                        memory.abandon(&k, pending).await.unwrap();
                        redis.abandon(&k, pending).await.unwrap();
                    }
                }
                let expected = memory.status(&k).await.unwrap();
                let actual = redis.status(&k).await.unwrap();
                assert_eq!(actual, expected, "step {step}: status after {event:?}");
                // The signal as the admin API shows it: every detector's reading (so every
                // count, challenges issued and answered too, and the baseline's shares) and when
                // the trip started and ends. (Not the trip's detector and figures: those of
                // whichever judgement extended it last, which the stores make at moments of their
                // own; nor `warm`: they start the history's clock at different moments.)
                redis.flush_signal().await.unwrap();
                let shown = |signal: Option<Assessment>| {
                    signal.map(|a| (a.readings, a.trip.map(|t| (t.since, t.until))))
                };
                let expected = shown(memory.attack_signal());
                let actual = shown(redis.attack_signal());
                assert_eq!(actual, expected, "step {step}: the signal after {event:?}");
                let mut expected = memory.restrictions(1_000).await.unwrap();
                let mut actual = redis.restrictions(1_000).await.unwrap();
                expected.sort_by(|a, b| a.key.cmp(&b.key));
                actual.sort_by(|a, b| a.key.cmp(&b.key));
                assert_eq!(
                    actual, expected,
                    "step {step}: restrictions after {event:?}"
                );
            }
        }
    }
}

/// [`agree`] with a Redis store on `redis`, under a prefix of its own (returned).
async fn agree_on(redis: &TestRedis, policy: Policy, events: &[Event]) -> String {
    let prefix = format!("{}-{}", redis.prefix, random_hex(4));
    agree(policy, events, |clock| {
        redis_store(
            vec![redis.url.clone()],
            false,
            &prefix,
            &policy,
            Some(clock),
        )
    })
    .await;
    prefix
}

/// One Redis for every case (cases are cheap; starting a server is not), each case under a
/// prefix of its own, removed after it.
#[tokio::test(flavor = "multi_thread")]
async fn the_redis_store_decides_exactly_like_the_core() {
    let redis = TestRedis::start().await;
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases: 48,
            // Replays the seeds in proptest-regressions/, as the proptest! macro would.
            source_file: Some(file!()),
            ..Config::default()
        });
        runner
            .run(&(policies(), events()), |(policy, events)| {
                handle.block_on(async {
                    let prefix = agree_on(&redis, policy, &events).await;
                    let mut conn = redis.connection().await;
                    let pattern = format!("{{{prefix}}}:*");
                    for key in portcullis_testkit::redis::scan(&mut conn, &pattern).await {
                        let _: () = redis::cmd("DEL")
                            .arg(key)
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                    }
                });
                Ok(())
            })
            .map_err(|failure| failure.to_string())
    })
    .await
    .unwrap();
    assert!(result.is_ok(), "{result:?}");
}

/// A store that rolled its signal before the first attempt (its start-up flush) and in the
/// quiet after keeps the history the core keeps: the baseline is not warm on a quiet stretch
/// before any attempt, so three failed accounts right after the first bucket trip neither.
#[tokio::test(flavor = "multi_thread")]
async fn quiet_before_the_first_attempt_is_no_history() {
    let redis = TestRedis::start().await;
    let attempt = |ip, user, settle| Event::Attempt {
        ip,
        user,
        device: None,
        proof: 3,
        settle,
    };
    let events = [
        Event::Wait(3_000),
        attempt(0, 0, Settle::Abandon),
        Event::Wait(1_000),
        attempt(1, 0, Settle::Failure),
        attempt(2, 1, Settle::Failure),
        attempt(3, 2, Settle::Failure),
    ];
    agree_on(&redis, tight_policy(), &events).await;
}
