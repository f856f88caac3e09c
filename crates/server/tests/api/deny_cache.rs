//! The per-replica deny cache: repeated refusals cost no Redis call, stand until the store's
//! deadline and no longer, and an unlock or an allowlist change through one replica reaches
//! every replica's cache within a second.

use std::time::Instant;

use portcullis_store::OnError;
use portcullis_testkit::PASSWORD;
use portcullis_testkit::redis::{RedisServer, command_calls};
use serde_json::json;

use crate::distributed::{post, register, three_replicas, wrong_guesses};
use crate::helpers::{app_on_private_redis, retry_after, within_a_second};

const TOKEN: &str = "admin-token-for-tests-0123456789abcdef";

/// Counter function calls the private Redis has run (`INFO commandstats`).
async fn script_calls(server: &RedisServer) -> u64 {
    let calls = command_calls(&server.url).await;
    ["fcall"].iter().filter_map(|c| calls.get(*c)).sum()
}

#[tokio::test]
async fn repeated_refusals_cost_no_redis_call_and_end_at_the_stores_deadline() {
    let server = RedisServer::spawn().await;
    let app = app_on_private_redis(&server, OnError::Local).await;
    assert_eq!(app.register("alice", PASSWORD).await.status(), 201);
    for _ in 0..5 {
        assert_eq!(app.login("alice", "wrong").await.status(), 401);
    }
    // The store refuses the sixth (and the cache remembers until when).
    let first = app.login("alice", PASSWORD).await;
    assert_eq!(first.status(), 429);
    let wait = retry_after(&first);
    let before = script_calls(&server).await;
    for _ in 0..50 {
        let refused = app.login("alice", PASSWORD).await;
        assert_eq!(refused.status(), 429, "the cache only ever refuses");
        assert!(retry_after(&refused) <= wait);
    }
    assert_eq!(
        script_calls(&server).await,
        before,
        "no Redis call for 50 refusals"
    );

    // Just before the deadline it still refuses; at it, the store decides again.
    app.clock.advance(wait * 1_000 - 1_500);
    assert_eq!(app.login("alice", PASSWORD).await.status(), 429);
    app.clock.advance(1_500);
    assert_eq!(app.login("alice", PASSWORD).await.status(), 200);
    assert!(script_calls(&server).await > before);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unlock_and_an_allowlist_change_through_one_replica_reach_every_replica_within_a_second()
{
    // Challenges off: the sprayer below is to be banned, not challenged.
    let (replicas, redis, _database) = three_replicas(&[
        ("PORTCULLIS__ADMIN__TOKEN", TOKEN.to_owned()),
        ("PORTCULLIS__POLICY__CHALLENGE__MODE", "off".to_owned()),
    ])
    .await;
    let credentials = json!({ "username": "alice", "password": PASSWORD });
    register(&replicas, &credentials).await;
    wrong_guesses(&replicas, "alice", 5, |i| i % 3).await;
    // Every replica refuses the owner now, and remembers it for the lockout's minute.
    for i in 0..3 {
        let refused = post(
            replicas.url(i, "/v1/login"),
            credentials.clone(),
            "192.0.2.1",
        )
        .await;
        assert_eq!(refused.status(), 429);
    }
    let admin = reqwest::Client::new();
    let unlocked = admin
        .post(replicas.url(0, "/admin/v1/unlock"))
        .bearer_auth(TOKEN)
        .json(&json!({ "username": "alice" }))
        .send()
        .await
        .unwrap();
    assert_eq!(unlocked.status(), 200);
    let unlocked_at = Instant::now();
    for i in 1..3 {
        within_a_second(unlocked_at, 200, || {
            post(
                replicas.url(i, "/v1/login"),
                credentials.clone(),
                "192.0.2.1",
            )
        })
        .await;
    }

    // An address banned for spraying (for 15 minutes): refused, and remembered, on every
    // replica...
    let sprayer = "203.0.113.5";
    for n in 0..10 {
        let guess = json!({ "username": format!("ghost{n}"), "password": "x" });
        post(replicas.url(n % 3, "/v1/login"), guess, sprayer).await;
    }
    for i in 0..3 {
        let refused = post(replicas.url(i, "/v1/login"), credentials.clone(), sprayer).await;
        assert_eq!(refused.status(), 429);
    }
    // ...until it is allowlisted through one of them.
    let allowed = admin
        .put(replicas.url(0, "/admin/v1/allowlist"))
        .bearer_auth(TOKEN)
        .json(&json!({ "network": sprayer }))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 201);
    let allowed_at = Instant::now();
    for i in 1..3 {
        within_a_second(allowed_at, 200, || {
            post(replicas.url(i, "/v1/login"), credentials.clone(), sprayer)
        })
        .await;
    }
    redis.cleanup().await;
}
