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
    let store = replica(&server, policy);
    let roaming = keys(&policy, "198.51.100.20", "ana");
    succeed_while_redis_is_down(&mut server, &store, &policy).await;

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

/// A replica that stops before Redis has asked it anything again hands the networks it kept
/// over on its way out, so they are not lost with its memory.
#[tokio::test]
async fn a_replica_handing_over_tells_redis_the_networks_it_kept() {
    let mut server = RedisServer::spawn().await;
    let policy = Policy::default();
    let store = replica(&server, policy);
    succeed_while_redis_is_down(&mut server, &store, &policy).await;
    server.restart().await;

    // Another replica, whose calls to Redis tell it nothing, sees the network once the first
    // has handed over (the first hand-over may meet a connection Redis's restart left stale;
    // it keeps what it could not tell, so the next one does).
    let other = redis_store(&server, &policy);
    let roaming = keys(&policy, "198.51.100.20", "ana");
    wait_until(
        Duration::from_secs(30),
        "the handed-over network to be familiar in Redis",
        || {
            let (store, other, roaming) = (&store, &other, &roaming);
            async move {
                // Ignored: an error is the stale connection, and the next round retries.
                let _ = store.hand_over().await;
                other
                    .attempt(roaming, 0)
                    .await
                    .is_ok_and(|decision| decision.is_allowed())
            }
        },
    )
    .await;
}

/// A replica's store on `server`: Redis, and counting alone while Redis does not answer.
fn replica(server: &RedisServer, policy: Policy) -> FallbackStore {
    let redis = redis_store(server, &policy);
    FallbackStore::new(redis, policy, Arc::new(SystemClock), OnError::Local)
}

/// A Redis store on `server`, whose calls give up after 500 ms.
fn redis_store(server: &RedisServer, policy: &Policy) -> Arc<RedisStore> {
    let config = RedisConfig {
        topology: Topology::Single(server.url.clone()),
        prefix: "missed".to_owned(),
        sharding: Sharding::SingleSlot,
        timeout: Duration::from_millis(500),
    };
    let breaker = Breaker::silent(100, Duration::from_secs(1));
    Arc::new(RedisStore::new(&config, policy, breaker).unwrap())
}

/// `ana` is challenged for her home network while Redis answers; then Redis is killed, and the
/// replica admits and records her login from it alone.
async fn succeed_while_redis_is_down(
    server: &mut RedisServer,
    store: &FallbackStore,
    policy: &Policy,
) {
    let home = keys(policy, "198.51.100.10", "ana");
    let first = store.attempt(&home, 0).await.unwrap();
    assert!(matches!(first, Decision::Challenge { .. }), "{first:?}");

    server.kill();
    let alone = store.attempt(&home, 0).await.unwrap();
    assert!(alone.is_allowed(), "{alone:?}");
    store
        .record(&home, Outcome::Success.into(), "ana", &[])
        .await
        .unwrap();
}
