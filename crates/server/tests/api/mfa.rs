//! TOTP second factors: enrolment read by an independent implementation (PyPI `pyotp`, which
//! computes every code here), logins in two steps, recovery codes, the limits of
//! `policy.mfa`, replays (also across replicas), bad input, and secrets sealed at rest.

use portcullis_server::Application;
use portcullis_store::{Clock, SystemClock};
use portcullis_testkit::{PASSWORD, TestApp, test_settings};
use reqwest::Method;
use serde_json::{Value, json};

use crate::distributed::{post, register, three_replicas};
use crate::helpers::{assert_problem, device_cookie, pyotp_code, retry_after};
use crate::passwords::{build_filter, hibp_line, on_file};

const STEP_MS: u64 = 30_000;

/// An account with a confirmed second factor.
pub(crate) struct Enrolled {
    /// The `otpauth://` URI the server gave.
    pub(crate) uri: String,
    /// The recovery codes the confirmation gave.
    recovery_codes: Vec<String>,
}

/// Registers `username`, enrols TOTP with its session and confirms it with pyotp's code.
async fn enrolled(app: &TestApp, username: &str) -> Enrolled {
    assert_eq!(app.register(username, PASSWORD).await.status(), 201);
    let token = app.token(username, PASSWORD).await;
    enrol(app, username, &token).await
}

/// Enrols TOTP for `username` with its session `token` and confirms it with pyotp's code.
pub(crate) async fn enrol(app: &TestApp, username: &str, token: &str) -> Enrolled {
    let enrolment = app
        .with_bearer(Method::POST, "/v1/mfa/totp", token, &json!({}))
        .await;
    assert_eq!(enrolment.status(), 201);
    let enrolment: Value = enrolment.json().await.unwrap();
    let uri = enrolment["otpauth_uri"].as_str().unwrap().to_owned();
    assert!(
        uri.starts_with(&format!("otpauth://totp/Portcullis:{username}?")),
        "{uri}"
    );
    assert!(uri.contains(enrolment["secret"].as_str().unwrap()), "{uri}");
    assert!(enrolment["qr_svg"].as_str().unwrap().starts_with("<?xml"));
    let code = pyotp_code(&uri, app.clock.now());
    let confirmed = app
        .with_bearer(
            Method::POST,
            "/v1/mfa/totp/confirm",
            token,
            &json!({ "code": code }),
        )
        .await;
    assert_eq!(confirmed.status(), 200);
    let confirmed: Value = confirmed.json().await.unwrap();
    let recovery_codes: Vec<String> =
        serde_json::from_value(confirmed["recovery_codes"].clone()).unwrap();
    // The confirming code's step is used: move on to the next one.
    app.clock.advance(STEP_MS);
    Enrolled {
        uri,
        recovery_codes,
    }
}

/// The first step of a login with a right password: the `mfa_token`.
async fn mfa_token(app: &TestApp, username: &str) -> String {
    let body = assert_problem(app.login(username, PASSWORD).await, 401).await;
    assert_eq!(body["code"], "mfa_required", "{body}");
    body["mfa_token"].as_str().unwrap().to_owned()
}

async fn second_step(app: &TestApp, body: Value) -> reqwest::Response {
    app.post_json("/v1/login/mfa", &body, None).await
}

#[tokio::test]
async fn a_second_factor_enrolled_from_pyotp_guards_the_login_and_a_wrong_password_reveals_none() {
    let app = TestApp::spawn().await;
    let alice = enrolled(&app, "alice").await;
    assert_eq!(app.register("bob", PASSWORD).await.status(), 201);

    // A wrong password answers alike with and without a second factor.
    let with = assert_problem(app.login("alice", "wrong").await, 401).await;
    let without = assert_problem(app.login("bob", "wrong").await, 401).await;
    assert_eq!(with, without);
    assert!(with.get("mfa_token").is_none());

    let token = mfa_token(&app, "alice").await;
    let code = pyotp_code(&alice.uri, app.clock.now());
    let response = second_step(&app, json!({ "mfa_token": token, "code": code })).await;
    assert_eq!(response.status(), 200);
    assert!(
        device_cookie(&response).is_some(),
        "a new browser gets its cookie after the second step"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["password_change_required"], false);
    let session = app.session(body["token"].as_str().unwrap()).await;
    assert_eq!(session.status(), 200);
}

#[tokio::test]
async fn a_breached_password_may_be_changed_in_band_after_its_second_factor() {
    let dir = tempfile::tempdir().unwrap();
    let (filter, _) = build_filter(dir.path(), [hibp_line(PASSWORD)].into_iter());
    let mut settings = on_file(dir.path());
    let before = TestApp::spawn_with(settings.clone()).await;
    let alice = enrolled(&before, "alice").await;
    drop(before);
    // Block mode (the default with a filter): the password alone still gets only the second
    // step, and the second factor proves what the leak cannot.
    settings.passwords.breached_filter = Some(filter);
    let app = TestApp::spawn_with(settings).await;
    app.clock.advance(2 * STEP_MS);
    let token = mfa_token(&app, "alice").await;
    let code = pyotp_code(&alice.uri, app.clock.now());
    let answer = second_step(&app, json!({ "mfa_token": token, "code": code })).await;
    let body = assert_problem(answer, 403).await;
    assert_eq!(body["code"], "password_change_required", "{body}");
    assert!(body["password_change_token"].is_string(), "{body}");
    assert!(body.get("token").is_none());
}

#[tokio::test]
async fn malformed_replayed_and_wrong_codes_and_spent_tokens_are_refused_with_their_codes() {
    let app = TestApp::spawn().await;
    let alice = enrolled(&app, "alice").await;
    let token = mfa_token(&app, "alice").await;
    for code in ["abcdef", "12345", "1234567", " 123456", "123 456"] {
        let body = assert_problem(
            second_step(&app, json!({ "mfa_token": token, "code": code })).await,
            400,
        )
        .await;
        assert_eq!(body["code"], "malformed_code", "{code}");
    }
    let both =
        json!({ "mfa_token": token, "code": "123456", "recovery_code": alice.recovery_codes[0] });
    assert_eq!(
        assert_problem(second_step(&app, both).await, 400).await["code"],
        "malformed_code"
    );
    let body = assert_problem(
        second_step(
            &app,
            json!({ "mfa_token": "x".repeat(43), "code": "123456" }),
        )
        .await,
        401,
    )
    .await;
    assert_eq!(body["code"], "invalid_token");

    // Malformed codes counted nothing: the token still takes its right code.
    let code = pyotp_code(&alice.uri, app.clock.now());
    let logged_in = second_step(&app, json!({ "mfa_token": token, "code": code })).await;
    assert_eq!(logged_in.status(), 200);
    // The token is used; a new one refuses the replayed code without counting it.
    let used = assert_problem(
        second_step(&app, json!({ "mfa_token": token, "code": code })).await,
        401,
    )
    .await;
    assert_eq!(used["code"], "invalid_token");
    let token = mfa_token(&app, "alice").await;
    for _ in 0..6 {
        let replayed = assert_problem(
            second_step(&app, json!({ "mfa_token": token, "code": code })).await,
            401,
        )
        .await;
        assert_eq!(replayed["code"], "code_replayed");
    }
    let next = pyotp_code(&alice.uri, app.clock.now() + STEP_MS);
    assert_eq!(
        second_step(&app, json!({ "mfa_token": token, "code": next }))
            .await
            .status(),
        200
    );

    // An expired token.
    let token = mfa_token(&app, "alice").await;
    app.clock.advance(301_000);
    let code = pyotp_code(&alice.uri, app.clock.now());
    let expired = assert_problem(
        second_step(&app, json!({ "mfa_token": token, "code": code })).await,
        401,
    )
    .await;
    assert_eq!(expired["code"], "invalid_token");
}

#[tokio::test]
async fn wrong_codes_lock_the_second_factor_with_back_off_and_a_login_tries_five() {
    let mut settings = test_settings();
    // Long enough for the waits below: the budget, not the token's life, ends this login.
    settings.mfa.token_ttl_secs = 3_600;
    let app = TestApp::spawn_with(settings).await;
    let alice = enrolled(&app, "alice").await;
    let wrong = |code: &str| {
        if code == "000000" {
            "111111".to_owned()
        } else {
            "000000".to_owned()
        }
    };
    let token = mfa_token(&app, "alice").await;
    let right = pyotp_code(&alice.uri, app.clock.now());
    for _ in 0..3 {
        let body = assert_problem(
            second_step(&app, json!({ "mfa_token": token, "code": wrong(&right) })).await,
            401,
        )
        .await;
        assert_eq!(body["code"], "invalid_code");
    }
    let locked = second_step(&app, json!({ "mfa_token": token, "code": right })).await;
    assert_eq!(retry_after(&locked), 30);
    assert_eq!(assert_problem(locked, 429).await["code"], "mfa_throttled");
    // A new login does not lift the account's lockout.
    let other = mfa_token(&app, "alice").await;
    assert_eq!(
        second_step(&app, json!({ "mfa_token": other, "code": right }))
            .await
            .status(),
        429
    );

    app.clock.advance(STEP_MS);
    let right = pyotp_code(&alice.uri, app.clock.now());
    // The fourth failure locks for two steps; the fifth code of this login is its last.
    let body = assert_problem(
        second_step(&app, json!({ "mfa_token": token, "code": wrong(&right) })).await,
        401,
    )
    .await;
    assert_eq!(body["code"], "invalid_code");
    let locked = second_step(&app, json!({ "mfa_token": token, "code": right })).await;
    assert_eq!(retry_after(&locked), 60);
    app.clock.advance(2 * STEP_MS);
    let right = pyotp_code(&alice.uri, app.clock.now());
    assert_eq!(
        second_step(&app, json!({ "mfa_token": token, "code": right }))
            .await
            .status(),
        200,
        "the fifth code"
    );

    let token = mfa_token(&app, "alice").await;
    for _ in 0..5 {
        // Past each lockout (30, 60, 90 s), so every code is tried.
        app.clock.advance(100_000);
        let body = assert_problem(
            second_step(&app, json!({ "mfa_token": token, "code": "000000" })).await,
            401,
        )
        .await;
        assert_eq!(body["code"], "invalid_code");
    }
    app.clock.advance(100_000);
    let right = pyotp_code(&alice.uri, app.clock.now());
    let spent = second_step(&app, json!({ "mfa_token": token, "code": right })).await;
    let body = assert_problem(spent, 429).await;
    assert_eq!(body["code"], "mfa_throttled");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("log in with your password again"),
        "{body}"
    );
}

#[tokio::test]
async fn recovery_codes_log_in_once_each_and_removal_needs_a_second_factor() {
    let app = TestApp::spawn().await;
    let alice = enrolled(&app, "alice").await;
    assert_eq!(alice.recovery_codes.len(), 10);
    let recovery = alice.recovery_codes[3].to_uppercase();
    let token = mfa_token(&app, "alice").await;
    let response = second_step(
        &app,
        json!({ "mfa_token": token, "recovery_code": recovery }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let session: Value = response.json().await.unwrap();
    let session = session["token"].as_str().unwrap().to_owned();
    let token = mfa_token(&app, "alice").await;
    let again = assert_problem(
        second_step(
            &app,
            json!({ "mfa_token": token, "recovery_code": recovery }),
        )
        .await,
        401,
    )
    .await;
    assert_eq!(again["code"], "code_replayed");
    let unknown = assert_problem(
        second_step(
            &app,
            json!({ "mfa_token": token, "recovery_code": "aaaa-aaaa-aaaa-aaaa" }),
        )
        .await,
        401,
    )
    .await;
    assert_eq!(unknown["code"], "invalid_code");

    let enrol_again = app
        .with_bearer(Method::POST, "/v1/mfa/totp", &session, &json!({}))
        .await;
    assert_eq!(
        assert_problem(enrol_again, 409).await["code"],
        "mfa_already_enabled"
    );
    let without = app
        .with_bearer(
            Method::DELETE,
            "/v1/mfa/totp",
            &session,
            &json!({ "code": "000000" }),
        )
        .await;
    assert_eq!(assert_problem(without, 401).await["code"], "invalid_code");
    let code = pyotp_code(&alice.uri, app.clock.now());
    let removed = app
        .with_bearer(
            Method::DELETE,
            "/v1/mfa/totp",
            &session,
            &json!({ "code": code }),
        )
        .await;
    assert_eq!(removed.status(), 204);
    assert_eq!(
        app.login("alice", PASSWORD).await.status(),
        200,
        "one step again"
    );
    let confirm = app
        .with_bearer(
            Method::POST,
            "/v1/mfa/totp/confirm",
            &session,
            &json!({ "code": code }),
        )
        .await;
    assert_eq!(
        assert_problem(confirm, 409).await["code"],
        "mfa_not_enrolled"
    );
    let anonymous = app.post_json("/v1/mfa/totp", &json!({}), None).await;
    assert_eq!(
        assert_problem(anonymous, 401).await["code"],
        "unauthenticated"
    );
}

#[tokio::test]
async fn totp_secrets_are_sealed_at_rest_and_another_key_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings();
    settings.database.url = format!("sqlite://{}/accounts.db", dir.path().display());
    settings.secrets.hmac_key = Some("0123456789abcdef0123456789abcdef-sealing".into());
    let app = TestApp::spawn_with(settings.clone()).await;
    let alice = enrolled(&app, "alice").await;
    drop(app);

    let accounts = portcullis_accounts::accounts::Accounts::connect(&settings.database)
        .await
        .unwrap();
    let sealed: String = sqlx::query_scalar("SELECT sealed_secret FROM totp_factors")
        .fetch_one(&accounts.pool())
        .await
        .unwrap();
    let secret = alice
        .uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(
        !sealed.contains(secret) && !sealed.contains(&secret.to_lowercase()),
        "{sealed}"
    );

    settings.secrets.hmac_key = Some("another-key-another-key-another-key".into());
    let refused = Application::build(settings)
        .await
        .err()
        .expect("start-up refused");
    assert!(
        format!("{refused:#}").contains("secrets.hmac_key"),
        "{refused:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_code_sent_to_two_replicas_at_once_logs_in_once() {
    let (replicas, redis, _database) = three_replicas(&[]).await;
    let credentials = json!({ "username": "alice", "password": PASSWORD });
    register(&replicas, &credentials).await;
    let login: Value = post(
        replicas.url(0, "/v1/login"),
        credentials.clone(),
        "192.0.2.1",
    )
    .await
    .json()
    .await
    .unwrap();
    let session = login["token"].as_str().unwrap();
    let client = reqwest::Client::new();
    let enrolment: Value = client
        .post(replicas.url(0, "/v1/mfa/totp"))
        .bearer_auth(session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uri = enrolment["otpauth_uri"].as_str().unwrap();
    let now = SystemClock.now();
    let confirmed = client
        .post(replicas.url(1, "/v1/mfa/totp/confirm"))
        .bearer_auth(session)
        .json(&json!({ "code": pyotp_code(uri, now) }))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 200);

    let mut tokens = Vec::new();
    for i in 1..3 {
        let body = post(
            replicas.url(i, "/v1/login"),
            credentials.clone(),
            "192.0.2.1",
        )
        .await;
        let body = assert_problem(body, 401).await;
        tokens.push(body["mfa_token"].as_str().unwrap().to_owned());
    }
    // The next step's code (within the ±1 window), sent to replicas 1 and 2 at once.
    let code = pyotp_code(uri, now + STEP_MS);
    let attempts = tokens.iter().enumerate().map(|(i, token)| {
        post(
            replicas.url(i + 1, "/v1/login/mfa"),
            json!({ "mfa_token": token, "code": code }),
            "192.0.2.1",
        )
    });
    let mut statuses: Vec<u16> = futures_util::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401], "exactly one replica accepts the code");
    redis.cleanup().await;
}
