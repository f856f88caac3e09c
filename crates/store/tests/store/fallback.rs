//! The fallback while Redis does not answer (`store.on_error = local`): what a replica decides
//! alone reaches Redis once it answers again.

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::{Decision, Outcome, Policy};
use portcullis_store::{
    AttemptStore, Breaker, FallbackStore, OnError, RedisConfig, RedisStore, Sharding, SystemClock,
    Topology,
};
use portcullis_testkit::process::wait_until;
use portcullis_testkit::redis::RedisServer;

use crate::helpers::keys;

/// A success recorded while Redis was down (the replica deciding alone, which knows no
/// account's networks) still makes its network familiar: once Redis answers again it is told,
/// so the owner's next login from that network, from another address in it, is not challenged
/// for the network. Without that, the owner would answer a challenge for a network they had
/// just logged in from.
#[tokio::test]
async fn a_success_redis_missed_makes_its_network_familiar_once_redis_answers() {
    let mut server = RedisServer::spawn().await;
    // The default policy challenges a network new to its account.
    let policy = Policy::default();
    let config = RedisConfig {
        topology: Topology::Single(server.url.clone()),
        prefix: "missed".to_owned(),
        sharding: Sharding::SingleSlot,
        timeout: Duration::from_millis(500),
    };
    let redis = Arc::new(
        RedisStore::new(
            &config,
            &policy,
            Breaker::silent(100, Duration::from_secs(1)),
        )
        .unwrap(),
    );
    let store = FallbackStore::new(redis, policy, Arc::new(SystemClock), OnError::Local);
    let home = keys(&policy, "198.51.100.10", "ana");
    let roaming = keys(&policy, "198.51.100.20", "ana");
    // While Redis answers, a network new to the account is challenged.
    let first = store.attempt(&home, 0).await.unwrap();
    assert!(matches!(first, Decision::Challenge { .. }), "{first:?}");

    // Redis goes; the replica admits and records the login alone.
    server.kill();
    let alone = store.attempt(&home, 0).await.unwrap();
    assert!(alone.is_allowed(), "{alone:?}");
    store
        .record(&home, Outcome::Success.into(), "ana", &[])
        .await
        .unwrap();

    // Redis comes back empty (no persistence), and learns the network from the replica.
    server.restart().await;
    wait_until(
        Duration::from_secs(30),
        "the network to be familiar in Redis",
        || {
            let (store, roaming) = (&store, &roaming);
            async move {
                store
                    .attempt(roaming, 0)
                    .await
                    .is_ok_and(|decision| decision.is_allowed())
            }
        },
    )
    .await;
    // Another account that only Redis was ever asked about is still challenged: the rule
    // itself is on.
    let stranger = store
        .attempt(&keys(&policy, "198.51.100.30", "bo"), 0)
        .await
        .unwrap();
    assert!(
        matches!(stranger, Decision::Challenge { .. }),
        "{stranger:?}"
    );
}
