//! Hostile and malformed requests: each gets a clear problem+json 4xx and changes nothing.

use portcullis_testkit::{PASSWORD, TestApp};
use reqwest::header::CONTENT_TYPE;
use serde_json::json;

use crate::helpers::assert_problem;

async fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn malformed_bodies_get_the_documented_4xx() {
    let app = TestApp::spawn().await;
    let json = "application/json";
    let nested = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        (
            "truncated JSON",
            json,
            br#"{"username": "a", "pass"#.to_vec(),
            400,
        ),
        ("not an object", json, b"[1, 2]".to_vec(), 400),
        ("deeply nested", json, nested.into_bytes(), 400),
        (
            "invalid UTF-8",
            json,
            b"{\"username\": \"\xff\xfe\", \"password\": \"x\"}".to_vec(),
            400,
        ),
        (
            "missing username",
            json,
            br#"{"password": "a"}"#.to_vec(),
            400,
        ),
        (
            "missing password",
            json,
            br#"{"username": "a"}"#.to_vec(),
            400,
        ),
        (
            "unknown field",
            json,
            br#"{"username": "a", "password": "b", "admin": true}"#.to_vec(),
            400,
        ),
        (
            "wrong type",
            json,
            br#"{"username": 5, "password": "b"}"#.to_vec(),
            400,
        ),
        (
            "NUL in username",
            json,
            b"{\"username\": \"a\\u0000b\", \"password\": \"x\"}".to_vec(),
            400,
        ),
        (
            "empty username",
            json,
            br#"{"username": "  ", "password": "x"}"#.to_vec(),
            400,
        ),
        (
            "empty password",
            json,
            br#"{"username": "a", "password": ""}"#.to_vec(),
            400,
        ),
        (
            "form body",
            "application/x-www-form-urlencoded",
            b"username=a&password=b".to_vec(),
            415,
        ),
        ("10 MB body", json, vec![b' '; 10 * 1024 * 1024], 413),
    ];
    for path in [
        "/v1/login",
        "/v1/users",
        "/v1/login/mfa",
        "/v1/password",
        "/v1/mfa/totp/confirm",
    ] {
        for (name, content_type, body, status) in &cases {
            if path == "/v1/users" && *name == "missing password" {
                // A registration without one is a passkey's (tests/api/passkeys.rs).
                continue;
            }
            let response = post_raw(&app, path, content_type, body.clone()).await;
            assert_eq!(response.status(), *status, "{path}: {name}");
            assert_problem(response, *status).await;
        }
    }
}

#[tokio::test]
async fn an_overlong_password_is_refused_before_hashing() {
    let app = TestApp::spawn().await;
    let long = "x".repeat(1025);
    let body = json!({ "username": "alice", "password": long });
    let problem = assert_problem(app.post_json("/v1/login", &body, None).await, 400).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("1024 bytes"),
        "{problem}"
    );
    let at_limit = json!({ "username": "alice", "password": "x".repeat(1024) });
    assert_eq!(
        app.post_json("/v1/login", &at_limit, None).await.status(),
        401
    );
}

#[tokio::test]
async fn rejected_requests_leave_no_state_behind() {
    let app = TestApp::spawn().await;
    app.register("alice", PASSWORD).await;
    // Far more malformed logins than the address's burst of 30, and than the lockout's 5.
    for _ in 0..60 {
        let body = json!({ "username": "alice", "password": "" });
        assert_eq!(app.post_json("/v1/login", &body, None).await.status(), 400);
    }
    assert_eq!(app.login("alice", PASSWORD).await.status(), 200);
    let taken = json!({ "username": "", "password": PASSWORD });
    assert_eq!(app.post_json("/v1/users", &taken, None).await.status(), 400);
    assert_eq!(app.register("bob", PASSWORD).await.status(), 201);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_a_problem() {
    let app = TestApp::spawn().await;
    assert_problem(
        app.client.get(app.url("/v2/nothing")).send().await.unwrap(),
        404,
    )
    .await;
    // A known path with another method: 405 (openapi.rs checks its `Allow`).
    assert_problem(
        app.client.get(app.url("/v1/login")).send().await.unwrap(),
        405,
    )
    .await;
}

#[tokio::test]
async fn hostile_usernames_are_normalised_or_refused_never_crash() {
    let app = TestApp::spawn().await;
    for name in [
        "\u{202e}evil",
        "ｒｏｏｔ",
        "a\u{0301}",
        "💥",
        "[::1]",
        "x".repeat(300).as_str(),
    ] {
        let body = json!({ "username": name, "password": "guess" });
        let status = app.post_json("/v1/login", &body, None).await.status();
        assert!([400, 401].contains(&status.as_u16()), "{name:?}: {status}");
    }
    let healthy = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(healthy.status(), 200);
}

#[tokio::test]
async fn huge_forwarded_for_headers_and_ipv6_literals_never_crash_the_server() {
    let mut settings = portcullis_testkit::test_settings();
    settings.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let app = TestApp::spawn_with(settings).await;
    let long = (0..10_000)
        .map(|i| format!("10.{}.{}.1", i / 256 % 256, i % 256))
        .collect::<Vec<_>>()
        .join(",");
    let short_enough = (0..1_000)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
        .collect::<Vec<_>>()
        .join(",");
    for xff in [
        long.as_str(),
        short_enough.as_str(),
        "[2001:db8::1]:443",
        "::1",
        "fe80::1%eth0",
        "2001:db8::/64",
    ] {
        let body = json!({ "username": "alice", "password": "guess" });
        let response = app
            .client
            .post(app.url("/v1/login"))
            .header("x-forwarded-for", xff)
            .json(&body)
            .send()
            .await
            .unwrap();
        // An over-long head is refused by the HTTP layer (431/400); anything else is a login.
        let status = response.status().as_u16();
        assert!(
            [400, 401, 429, 431].contains(&status),
            "{status} for {} bytes",
            xff.len()
        );
    }
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
