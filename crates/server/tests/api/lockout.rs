use portcullis_testkit::{PASSWORD, TestApp, test_settings};

use crate::helpers::{assert_problem, retry_after};

/// An app that believes `X-Forwarded-For` from the test client, so each request can come
/// from a different address.
async fn behind_a_trusted_proxy() -> TestApp {
    let mut settings = test_settings();
    settings.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    TestApp::spawn_with(settings).await
}

#[tokio::test]
async fn the_sixth_wrong_password_is_refused_from_any_ip_until_the_lockout_expires() {
    let app = behind_a_trusted_proxy().await;
    app.register("alice", PASSWORD).await;
    for i in 0..5 {
        let from = format!("198.51.{i}.10");
        let response = app.login_from(Some(&from), "alice", "wrong").await;
        assert_eq!(response.status(), 401, "failure {i}");
    }
    let sixth = app.login_from(Some("203.0.113.99"), "Alice", "wrong").await;
    assert_eq!(retry_after(&sixth), 60);
    assert_problem(sixth, 429).await;
    // The right password does not get through a lockout either.
    let owner = app.login_from(Some("192.0.2.1"), "alice", PASSWORD).await;
    assert_eq!(owner.status(), 429);

    app.clock.advance(60_000);
    let after = app.login_from(Some("192.0.2.1"), "alice", PASSWORD).await;
    assert_eq!(after.status(), 200);
}

#[tokio::test]
async fn an_unknown_username_locks_out_exactly_like_a_known_one() {
    let app = behind_a_trusted_proxy().await;
    app.register("known", PASSWORD).await;
    for name in ["known", "ghost"] {
        for i in 0..5 {
            let from = format!("198.51.100.{i}");
            assert_eq!(
                app.login_from(Some(&from), name, "wrong").await.status(),
                401
            );
        }
        let sixth = app.login_from(Some("203.0.113.1"), name, "wrong").await;
        assert_eq!(sixth.status(), 429, "{name}");
        assert_eq!(retry_after(&sixth), 60, "{name}");
    }
}

#[tokio::test]
async fn a_success_resets_the_account_failures() {
    let app = behind_a_trusted_proxy().await;
    app.register("carol", PASSWORD).await;
    for _ in 0..4 {
        app.login("carol", "wrong").await;
    }
    assert_eq!(app.login("carol", PASSWORD).await.status(), 200);
    for i in 0..4 {
        assert_eq!(
            app.login("carol", "wrong").await.status(),
            401,
            "failure {i}"
        );
    }
    assert_eq!(app.login("carol", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn a_refused_attempt_does_not_extend_the_lockout() {
    let app = behind_a_trusted_proxy().await;
    for _ in 0..5 {
        app.login("dave", "wrong").await;
    }
    for _ in 0..10 {
        assert_eq!(app.login("dave", "wrong").await.status(), 429);
    }
    app.clock.advance(60_000);
    // Still only 5 failures counted: the next failure is the sixth, which locks nothing.
    assert_eq!(app.login("dave", "wrong").await.status(), 401);
}

#[tokio::test]
async fn with_the_policy_disabled_every_attempt_is_verified() {
    let mut settings = test_settings();
    settings.policy.enabled = false;
    let app = TestApp::spawn_with(settings).await;
    app.register("erin", PASSWORD).await;
    for i in 0..12 {
        assert_eq!(
            app.login("erin", "wrong").await.status(),
            401,
            "same account {i}"
        );
        let other = format!("sprayed{i}");
        assert_eq!(
            app.login(&other, "wrong").await.status(),
            401,
            "distinct account {i}"
        );
    }
    assert_eq!(app.login("erin", PASSWORD).await.status(), 200);
}
