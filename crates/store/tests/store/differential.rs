//! Random sequences of attempts, outcomes and time steps through the core's reference model
//! (the memory store) and the Redis store give identical decisions and Retry-After values.

use std::sync::Arc;

use portcullis_core::{Outcome, Policy};
use portcullis_store::{AttemptStore, Clock, ManualClock, MemoryStore, RedisStore};
use portcullis_testkit::random_hex;
use portcullis_testkit::redis::TestRedis;
use proptest::prelude::*;

use crate::helpers::{T0, device_keys, digest, redis_store, tight_policy};

#[derive(Clone, Debug)]
pub enum Event {
    /// An attempt, from trusted device number `device` if any; if admitted, the given outcome
    /// is recorded.
    Attempt {
        ip: u8,
        user: u8,
        device: Option<u8>,
        succeeds: bool,
    },
    Wait(u64),
}

pub fn events() -> impl Strategy<Value = Vec<Event>> {
    proptest::collection::vec(
        prop_oneof![
            6 => (0u8..3, 0u8..3, proptest::option::weighted(0.3, 0u8..2), proptest::bool::weighted(0.2))
                .prop_map(|(ip, user, device, succeeds)| Event::Attempt { ip, user, device, succeeds }),
            1 => (0u64..4_000).prop_map(Event::Wait),
            1 => Just(Event::Wait(0)),
        ],
        1..60,
    )
}

pub fn policies() -> impl Strategy<Value = Policy> {
    prop_oneof![Just(tight_policy()), Just(Policy::default())]
}

/// Plays `events` through the memory store and a Redis store from `make`; panics on the
/// first difference.
pub async fn agree(policy: Policy, events: &[Event], make: impl Fn(Arc<dyn Clock>) -> RedisStore) {
    let clock = Arc::new(ManualClock::new(T0));
    let memory = MemoryStore::new(policy, clock.clone());
    let redis = make(clock.clone());
    for (step, event) in events.iter().enumerate() {
        match event {
            Event::Wait(ms) => clock.advance(*ms),
            Event::Attempt {
                ip,
                user,
                device,
                succeeds,
            } => {
                let k = device_keys(
                    &policy,
                    &format!("198.51.{ip}.9"),
                    &format!("user{user}"),
                    *device,
                );
                let expected = memory.attempt(&k).await.unwrap();
                let actual = redis.attempt(&k).await.unwrap();
                assert_eq!(actual, expected, "step {step}: {event:?}");
                if expected.is_allowed() {
                    let outcome = if *succeeds {
                        Outcome::Success
                    } else {
                        Outcome::Failure
                    };
                    let user = digest(&format!("user{user}"));
                    let expected = memory.record(&k, outcome, &user).await.unwrap();
                    let actual = redis.record(&k, outcome, &user).await.unwrap();
                    assert_eq!(actual, expected, "step {step}: bans of {event:?}");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_redis_store_decides_exactly_like_the_core(policy in policies(), events in events()) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let redis = TestRedis::start().await;
            let prefix = format!("{}-{}", redis.prefix, random_hex(4));
            agree(policy, &events, |clock| {
                redis_store(vec![redis.url.clone()], false, &prefix, &policy, Some(clock))
            })
            .await;
            let mut conn = redis.connection().await;
            for key in portcullis_testkit::redis::scan(&mut conn, &format!("{{{prefix}}}:*")).await {
                let _: () = redis::cmd("DEL").arg(key).query_async(&mut conn).await.unwrap();
            }
        });
    }
}
