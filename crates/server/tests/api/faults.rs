//! Failure as a designed mode: Redis dead or frozen (local fallback, fail-closed, recovery) and
//! PostgreSQL down (503 with Retry-After, recovery).

use std::time::Duration;

use portcullis_store::OnError;
use portcullis_testkit::postgres::PostgresServer;
use portcullis_testkit::process::wait_until;
use portcullis_testkit::redis::RedisServer;
use portcullis_testkit::{PASSWORD, TestApp, test_settings};
use serde_json::Value;

use crate::helpers::{
    app_on_private_redis, assert_problem, metrics_text, private_redis_settings, retry_after,
};

async fn readiness(app: &TestApp) -> (u16, Value) {
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn with_redis_dead_the_local_mode_still_counts_and_recovers_when_redis_returns() {
    let mut server = RedisServer::spawn().await;
    let app = app_on_private_redis(&server, OnError::Local).await;
    assert_eq!(app.register("alice", PASSWORD).await.status(), 201);

    // Killed mid-traffic: logins in flight and after it all get a designed answer.
    // (One username, so the address's distinct-username ban stays out of the way.)
    let in_flight =
        futures_util::future::join_all((0..20).map(|_| app.login("bystander", "wrong")));
    let (responses, ()) = tokio::join!(in_flight, async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        server.kill();
    });
    for response in responses {
        assert!(
            [401, 429].contains(&response.status().as_u16()),
            "{}",
            response.status()
        );
    }

    // Every answer is a designed one: counted locally, never a 500.
    for i in 0..5 {
        assert_eq!(
            app.login("alice", "wrong").await.status(),
            401,
            "failure {i}"
        );
    }
    assert_eq!(
        app.login("alice", "wrong").await.status(),
        429,
        "the local lockout holds"
    );
    assert_eq!(
        readiness(&app).await,
        (200, serde_json::json!({ "status": "degraded" }))
    );

    // Redis comes back empty: the breaker's probe (the attack signal's flush, every 250 ms)
    // finds it, the functions are loaded again, and the shared count starts afresh. Readiness
    // tells when, however long a loaded machine takes; a login as the probe would pile up
    // attempts of its own.
    server.restart().await;
    wait_until(Duration::from_secs(10), "the store to recover", || async {
        readiness(&app).await == (200, serde_json::json!({ "status": "ready" }))
    })
    .await;
    assert_eq!(app.login("alice", PASSWORD).await.status(), 200);
    let metrics = metrics_text(&app).await;
    assert!(metrics.contains("portcullis_store_degraded 0"), "{metrics}");
    // The breaker's opening was counted (other tests in this process may have added theirs).
    let degradations = metrics
        .lines()
        .find_map(|line| line.strip_prefix("portcullis_store_degradations_total "))
        .and_then(|count| count.parse::<f64>().ok());
    assert!(degradations.is_some_and(|n| n >= 1.0), "{metrics}");
}

#[tokio::test]
async fn with_redis_dead_the_local_mode_does_not_ask_for_the_networks_only_redis_knows() {
    let mut server = RedisServer::spawn().await;
    let mut settings = private_redis_settings(&server, OnError::Local);
    settings.policy.challenge.unfamiliar_networks = true;
    let app = TestApp::spawn_with(settings).await;
    assert_eq!(app.register("alice", PASSWORD).await.status(), 201);
    // From the network she registered from: familiar, as Redis remembers.
    assert_eq!(app.login("alice", PASSWORD).await.status(), 200);
    server.kill();
    // The replica's memory knows no account's network: it decides without asking, rather than
    // challenge every login without a device cookie until Redis returns.
    assert_eq!(app.login("alice", PASSWORD).await.status(), 200);
    assert_eq!(
        readiness(&app).await,
        (200, serde_json::json!({ "status": "degraded" }))
    );
}

#[tokio::test]
async fn with_redis_dead_the_fail_closed_mode_answers_503_with_retry_after() {
    let mut server = RedisServer::spawn().await;
    let app = app_on_private_redis(&server, OnError::FailClosed).await;
    server.kill();
    for _ in 0..3 {
        let response = app.login("alice", "wrong").await;
        assert_eq!(retry_after(&response), 1);
        assert_problem(response, 503).await;
    }
    assert_eq!(readiness(&app).await.0, 503);
}

#[tokio::test]
async fn a_frozen_redis_costs_a_timeout_then_nothing_until_it_thaws() {
    let server = RedisServer::spawn().await;
    let app = app_on_private_redis(&server, OnError::Local).await;
    app.register("bob", PASSWORD).await;
    server.pause();
    // Requests still answer: the first ones after the call timeout, then the open breaker
    // skips Redis. (The client's own timeout only guards against a hang.)
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for i in 0..4 {
        let response = client
            .post(app.url("/v1/login"))
            .json(&serde_json::json!({ "username": "bob", "password": "wrong" }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i} did not answer: {e}"));
        assert_eq!(response.status(), 401, "request {i}");
    }
    server.resume();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.login("bob", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn with_postgresql_down_logins_answer_503_promptly_and_recover_when_it_returns() {
    let mut postgres = PostgresServer::spawn().await;
    let mut settings = test_settings();
    settings.database.url = postgres.url.clone();
    settings.database.acquire_timeout_ms = 500;
    let app = TestApp::spawn_with(settings).await;
    assert_eq!(app.register("carol", PASSWORD).await.status(), 201);

    postgres.stop();
    // More 503s than the lockout allows failures: a client retrying on 503 must not lock
    // itself out (each admission is abandoned, not counted as a failure).
    for _ in 0..6 {
        let attempt = app.login("carol", PASSWORD).await;
        assert_eq!(retry_after(&attempt), 1);
        let body = assert_problem(attempt, 503).await;
        assert_eq!(body["code"], "unavailable");
    }
    let attempt = app.register("dave", PASSWORD).await;
    assert_eq!(retry_after(&attempt), 1);
    assert_problem(attempt, 503).await;
    assert_eq!(readiness(&app).await.0, 503);

    postgres.start().await;
    wait_until(
        Duration::from_secs(20),
        "login after PostgreSQL returns",
        || async { app.login("carol", PASSWORD).await.status() == 200 },
    )
    .await;
    // Nothing half-written: dave was never created, so he registers now.
    assert_eq!(app.register("dave", PASSWORD).await.status(), 201);
}
