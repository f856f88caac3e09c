//! Device cookies: an attacker who locks an account out does not lock its owner out of a
//! device the owner has logged in from; untrusted clients stay locked out.

use portcullis_core::ChallengeMode;
use portcullis_testkit::{PASSWORD, TestApp, test_settings};
use serde_json::json;

use crate::helpers::device_cookie;

async fn login_with(
    app: &TestApp,
    from: &str,
    cookie: Option<&str>,
    username: &str,
    password: &str,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/v1/login"))
        .header("x-forwarded-for", from)
        .json(&json!({ "username": username, "password": password }));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

async fn behind_a_trusted_proxy() -> TestApp {
    let mut settings = test_settings();
    settings.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    TestApp::spawn_with(settings).await
}

#[tokio::test]
async fn an_account_locked_by_an_attacker_still_logs_in_from_its_owners_trusted_device() {
    let app = behind_a_trusted_proxy().await;
    app.register("alice", PASSWORD).await;
    let first = login_with(&app, "192.0.2.1", None, "alice", PASSWORD).await;
    assert_eq!(first.status(), 200);
    let cookie = device_cookie(&first).expect("a new device gets a cookie");

    for i in 0..5 {
        let from = format!("198.51.100.{i}");
        assert_eq!(
            login_with(&app, &from, None, "alice", "guess")
                .await
                .status(),
            401
        );
    }
    // The untrusted half: without the cookie the account is locked, even with the password.
    let untrusted = login_with(&app, "192.0.2.1", None, "alice", PASSWORD).await;
    assert_eq!(untrusted.status(), 429);
    // The trusted half: the owner's device is counted apart and gets in.
    let trusted = login_with(&app, "192.0.2.1", Some(&cookie), "alice", PASSWORD).await;
    assert_eq!(trusted.status(), 200);
    assert!(
        device_cookie(&trusted).is_none(),
        "a known device keeps its cookie"
    );
}

#[tokio::test]
async fn a_cookie_proves_nothing_for_another_username_or_when_forged() {
    let app = behind_a_trusted_proxy().await;
    app.register("alice", PASSWORD).await;
    app.register("bob", PASSWORD).await;
    let first = login_with(&app, "192.0.2.1", None, "alice", PASSWORD).await;
    let cookie = device_cookie(&first).unwrap();
    let forged = format!("{}0", &cookie[..cookie.len() - 1]);
    for i in 0..5 {
        let from = format!("198.51.100.{i}");
        login_with(&app, &from, None, "bob", "guess").await;
    }
    for presented in [cookie.as_str(), forged.as_str()] {
        let response = login_with(&app, "192.0.2.1", Some(presented), "bob", PASSWORD).await;
        assert_eq!(response.status(), 429, "{presented}");
    }
}

#[tokio::test]
async fn wrong_passwords_from_a_trusted_device_lock_that_device() {
    // The device's own lockout alone: with challenges on, a failing device is also challenged
    // (see challenge.rs).
    let mut settings = test_settings();
    settings.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    settings.policy.challenge.mode = ChallengeMode::Off;
    let app = TestApp::spawn_with(settings).await;
    app.register("alice", PASSWORD).await;
    let cookie =
        device_cookie(&login_with(&app, "192.0.2.1", None, "alice", PASSWORD).await).unwrap();
    for _ in 0..5 {
        let response = login_with(&app, "192.0.2.1", Some(&cookie), "alice", "typo").await;
        assert_eq!(response.status(), 401);
    }
    let locked = login_with(&app, "192.0.2.1", Some(&cookie), "alice", PASSWORD).await;
    assert_eq!(locked.status(), 429);
    // The account itself was not touched: another client may still log in.
    let other = login_with(&app, "203.0.113.5", None, "alice", PASSWORD).await;
    assert_eq!(other.status(), 200);
}
