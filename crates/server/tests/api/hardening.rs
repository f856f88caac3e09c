//! The holes a hostile review found, each shown closed: concurrent guesses around a success,
//! durable sessions across a Redis restart, the permanent lock as one fact, the operations
//! surface, look-alike usernames, token caching, metrics help text.

use std::time::Duration;

use futures_util::future::join_all;
use portcullis_accounts::settings::RedisSettings;
use portcullis_core::{KeyDeriver, Username};
use portcullis_store::OnError;

use portcullis_testkit::process::wait_until;
use portcullis_testkit::redis::{RedisServer, TestRedis};
use portcullis_testkit::{PASSWORD, TestApp, test_settings};
use redis::AsyncCommands;
use reqwest::Method;
use serde_json::{Value, json};

use crate::distributed::{
    HMAC_KEY as DISTRIBUTED_HMAC_KEY, post, register, three_replicas, wrong_guesses,
};
use crate::helpers::{
    account_key, app_on_private_redis, assert_problem, metrics_text, wait_until_in_flight,
};

const HMAC_KEY: &str = "0123456789abcdef0123456789abcdef-hardening";

const TOKEN: &str = "admin-token-for-hardening-0123456789abcdef";

#[tokio::test]
async fn a_success_amid_concurrent_guesses_frees_at_most_one_more_verification() {
    let redis = TestRedis::start().await;
    let mut settings = test_settings();
    settings.store.redis = Some(RedisSettings {
        url: redis.url.clone(),
        prefix: redis.prefix.clone(),
        timeout_ms: 2_000,
        ..Default::default()
    });
    settings.secrets.hmac_key = Some(HMAC_KEY.into());
    // One hashing thread and slow hashes (hundreds of ms): verifications end in the order the
    // attempts were admitted, long after the admissions, and the right password stays in
    // flight far longer than the store is polled.
    settings.argon2.workers = 1;
    settings.argon2.memory_kib = 65_536;
    settings.argon2.iterations = 4;
    let app = TestApp::spawn_with(settings).await;
    assert_eq!(app.register("grace", PASSWORD).await.status(), 201);
    let account_key = account_key(&redis, HMAC_KEY, "grace");
    let mut conn = redis.connection().await;

    // The right password is admitted first (the guesses wait until the store counts it in
    // flight), then four guesses: all five are in flight when the success is recorded.
    let right = app.login("grace", PASSWORD);
    let guesses = async {
        wait_until_in_flight(&redis, &account_key).await;
        join_all((0..4).map(|_| app.login("grace", "wrong"))).await
    };
    let (right, first) = tokio::join!(right, guesses);
    assert_eq!(right.status(), 200);
    let mut statuses: Vec<u16> = first.iter().map(|r| r.status().as_u16()).collect();
    statuses.push(200);
    // Then 45 more guesses in waves, after the success was recorded.
    for _ in 0..9 {
        let wave = join_all((0..5).map(|_| app.login("grace", "wrong"))).await;
        statuses.extend(wave.iter().map(|r| r.status().as_u16()));
    }
    let verified = statuses.iter().filter(|&&s| s == 200 || s == 401).count();
    println!("{verified} of 50 attempts verified (the right password among them)");
    assert_eq!(statuses.len(), 50);
    assert!(verified <= 6, "{verified} verifications: {statuses:?}");
    assert!(
        statuses.iter().all(|s| [200, 401, 429].contains(s)),
        "{statuses:?}"
    );
    let _: () = conn.del(&account_key).await.unwrap();
    redis.cleanup().await;
}

#[tokio::test]
async fn a_session_survives_redis_restarting_empty() {
    let mut server = RedisServer::spawn().await;
    let app = app_on_private_redis(&server, OnError::Local).await;
    assert_eq!(app.register("ada", PASSWORD).await.status(), 201);
    let token = app.token("ada", PASSWORD).await;
    server.kill();
    server.restart().await;
    assert_eq!(app.session(&token).await.status(), 200);
}

#[tokio::test]
async fn with_redis_dead_in_the_local_mode_a_correct_password_gets_a_working_token() {
    let mut server = RedisServer::spawn().await;
    let app = app_on_private_redis(&server, OnError::Local).await;
    assert_eq!(app.register("bea", PASSWORD).await.status(), 201);
    server.kill();
    let token = app.token("bea", PASSWORD).await;
    assert_eq!(app.session(&token).await.status(), 200);
    let logout = app.logout(&token).await;
    assert_eq!(logout.status(), 204);
    assert_eq!(app.session(&token).await.status(), 401);
}

#[tokio::test]
async fn a_correct_password_on_the_attempt_that_trips_the_permanent_lock_leaves_no_lock() {
    let mut settings = test_settings();
    if let Some(lockout) = settings.policy.username.lockout.as_mut() {
        lockout.permanent_after = Some(0);
    }
    let app = TestApp::spawn_with(settings).await;
    assert_eq!(app.register("ivan", PASSWORD).await.status(), 201);
    for _ in 0..4 {
        assert_eq!(app.login("ivan", "wrong").await.status(), 401);
    }
    // The fifth attempt trips the permanent lock at admission, and is the right password.
    assert_eq!(app.login("ivan", PASSWORD).await.status(), 200);
    assert_eq!(
        app.login("ivan", PASSWORD).await.status(),
        200,
        "no lock anywhere"
    );
}

#[tokio::test]
async fn sessions_beyond_the_cap_evict_the_oldest() {
    let mut settings = test_settings();
    settings.session.max_per_account = 2;
    let app = TestApp::spawn_with(settings).await;
    assert_eq!(app.register("cap", PASSWORD).await.status(), 201);
    let tokens = [
        app.token("cap", PASSWORD).await,
        app.token("cap", PASSWORD).await,
        app.token("cap", PASSWORD).await,
    ];
    assert_eq!(
        app.session(&tokens[0]).await.status(),
        401,
        "the oldest is evicted"
    );
    assert_eq!(app.session(&tokens[1]).await.status(), 200);
    let all = app
        .client
        .post(app.url("/v1/logout/all"))
        .bearer_auth(&tokens[2])
        .send()
        .await
        .unwrap();
    assert_eq!(all.json::<Value>().await.unwrap()["revoked"], 2);
}

#[tokio::test]
async fn a_token_response_is_never_cached() {
    let app = TestApp::spawn().await;
    app.register("nocache", PASSWORD).await;
    let response = app.login("nocache", PASSWORD).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
}

fn trusting_localhost() -> portcullis_server::Settings {
    let mut settings = test_settings();
    settings.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    settings
}

#[tokio::test]
async fn an_unreadable_forwarded_for_from_a_trusted_proxy_is_a_400_and_counts_nothing() {
    let mut settings = trusting_localhost();
    settings.policy.ip.attempts = Some(portcullis_core::gcra::Gcra {
        burst: 2,
        interval_ms: 3_600_000,
    });
    let app = TestApp::spawn_with(settings).await;
    let login = |xff: reqwest::header::HeaderValue| {
        app.client
            .post(app.url("/v1/login"))
            .header("x-forwarded-for", xff)
            .json(&json!({ "username": "x", "password": "y" }))
            .send()
    };
    let plain = || reqwest::header::HeaderValue::from_static("203.0.113.5");
    assert_eq!(login(plain()).await.unwrap().status(), 401);
    assert_eq!(login(plain()).await.unwrap().status(), 401);
    assert_eq!(login(plain()).await.unwrap().status(), 429);
    // A byte above 0x7F used to drop the header, making the proxy the client: a fresh budget.
    for raw in [
        &b"203.0.113.5, \xff"[..],
        b"\xff\xfe",
        b"203.0.113.5, not-an-ip",
        b"",
    ] {
        let value = reqwest::header::HeaderValue::from_bytes(raw).unwrap();
        let body = assert_problem(login(value).await.unwrap(), 400).await;
        assert_eq!(body["code"], "invalid_forwarded_header", "{raw:?}");
    }
    assert_eq!(login(plain()).await.unwrap().status(), 429);
}

#[tokio::test]
async fn the_forwarded_header_is_read_when_configured() {
    let mut settings = trusting_localhost();
    settings.server.forwarded_header = portcullis_server::client_ip::ForwardedHeader::Forwarded;
    settings.policy.ip.attempts = Some(portcullis_core::gcra::Gcra {
        burst: 1,
        interval_ms: 3_600_000,
    });
    let app = TestApp::spawn_with(settings).await;
    let login = |forwarded: &'static str| {
        app.client
            .post(app.url("/v1/login"))
            .header("forwarded", forwarded)
            .json(&json!({ "username": "x", "password": "y" }))
            .send()
    };
    let v6 = "for=\"[2001:db8:cafe::17]:4711\";proto=https";
    assert_eq!(login(v6).await.unwrap().status(), 401);
    assert_eq!(
        login(v6).await.unwrap().status(),
        429,
        "one client, one budget"
    );
    assert_eq!(
        login("for=192.0.2.60").await.unwrap().status(),
        401,
        "another client"
    );
    for bad in [
        "for=_hidden",
        "for=unknown",
        "proto=https",
        "for=\"[2001:db8::1\"",
    ] {
        let body = assert_problem(login(bad).await.unwrap(), 400).await;
        assert_eq!(body["code"], "invalid_forwarded_header", "{bad}");
    }
}

#[tokio::test]
async fn look_alike_and_invisible_usernames_are_refused() {
    let app = TestApp::spawn().await;
    assert_eq!(app.register("admin", PASSWORD).await.status(), 201);
    let body = assert_problem(app.register("\u{430}dmin", PASSWORD).await, 409).await;
    assert_eq!(body["code"], "username_taken");
    for invisible in ["admin\u{200b}", "\u{202e}admin", "ad\u{2060}min"] {
        let body = assert_problem(app.register(invisible, PASSWORD).await, 400).await;
        assert_eq!(body["code"], "invalid_username", "{invisible:?}");
        assert!(
            body["detail"].as_str().unwrap().contains("invisible"),
            "{body}"
        );
    }
    assert_eq!(app.login("admin", PASSWORD).await.status(), 200);
}

/// An app with the admin API on a listener of its own.
async fn with_ops_listener() -> (TestApp, String) {
    let mut settings = test_settings();
    settings.admin.token = Some(TOKEN.into());
    settings.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    let (app, ops_port) = TestApp::spawn_with_ops(settings).await;
    (app, format!("http://127.0.0.1:{ops_port}"))
}

#[tokio::test]
async fn with_an_admin_listener_the_public_one_answers_404_for_admin_and_metrics() {
    let (app, ops) = with_ops_listener().await;
    for path in ["/admin/v1/lockouts", "/metrics"] {
        let public = app
            .client
            .get(app.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_problem(public, 404).await;
        let private = app
            .client
            .get(format!("{ops}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(private.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn wrong_admin_tokens_are_reported_and_throttled_per_source() {
    let mut settings = test_settings();
    settings.admin.token = Some(TOKEN.into());
    settings.policy.ip.attempts = Some(portcullis_core::gcra::Gcra {
        burst: 3,
        interval_ms: 3_600_000,
    });
    let app = TestApp::spawn_with(settings).await;
    let call = |token: &'static str| {
        app.client
            .request(Method::GET, app.url("/admin/v1/lockouts"))
            .bearer_auth(token)
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(call("wrong").await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    assert_eq!(
        call(TOKEN).await.unwrap().status(),
        200,
        "the right token still works"
    );
}

#[tokio::test]
async fn an_allowlist_entry_wider_than_a_slash_8_is_refused_and_changes_nothing() {
    let mut settings = test_settings();
    settings.admin.token = Some(TOKEN.into());
    let app = TestApp::spawn_with(settings).await;
    for network in ["0.0.0.0/0", "10.0.0.0/7", "::/0", "2001::/15"] {
        let response = app
            .client
            .put(app.url("/admin/v1/allowlist"))
            .bearer_auth(TOKEN)
            .json(&json!({ "network": network }))
            .send()
            .await
            .unwrap();
        let body = assert_problem(response, 400).await;
        assert_eq!(body["code"], "invalid_network", "{network}");
    }
    let listing: Value = app
        .client
        .get(app.url("/admin/v1/allowlist"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listing["networks"], json!([]));
}

#[tokio::test]
async fn every_metric_has_help_text_that_promtool_accepts() {
    let app = TestApp::spawn().await;
    app.register("metered", PASSWORD).await;
    app.login("metered", PASSWORD).await;
    app.login("metered", "wrong").await;
    let text = metrics_text(&app).await;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; .ci/run installs it)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && report.trim().is_empty(),
        "promtool: {report}\n{text}"
    );
    assert!(text.contains("# HELP portcullis_logins_total"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanently_locked_account_is_verified_like_any_other_before_it_answers() {
    let permanent = (
        "PORTCULLIS__POLICY__USERNAME__LOCKOUT__PERMANENT_AFTER",
        "0".to_owned(),
    );
    let (replicas, redis, _database) = three_replicas(&[permanent]).await;
    register(
        &replicas,
        &json!({ "username": "locked", "password": PASSWORD }),
    )
    .await;
    wrong_guesses(&replicas, "locked", 5, |i| i % 3).await;
    // The fifth failure locked the account in the database; the attempt store forgets it all.
    redis.cleanup().await;
    let guess = json!({ "username": "locked", "password": "wrong" });
    let answer = post(replicas.url(1, "/v1/login"), guess, "203.0.113.77").await;
    assert_eq!(answer.status(), 429);
    // Six verified failures: the locked account's answer came after its hash, as an unknown
    // name's 401 does (before, it answered at once: an existence oracle).
    wait_until(Duration::from_secs(10), "six verified failures", || async {
        replicas.requests_with_outcome("failure") == 6
    })
    .await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn usernames_in_request_logs_are_keyed_digests_unless_plain_is_asked_for() {
    let deriver = KeyDeriver::new(DISTRIBUTED_HMAC_KEY.as_bytes(), 24, 64, 48).unwrap();
    let digest = deriver.username_digest(&Username::parse("Secret-Typed-Here").unwrap());
    for (setting, expected) in [
        ("digest", digest),
        ("plain", "secret-typed-here".to_owned()),
    ] {
        let logging = ("PORTCULLIS__LOG__USERNAMES", setting.to_owned());
        let (replicas, redis, _database) = three_replicas(&[logging]).await;
        let guess = json!({ "username": "Secret-Typed-Here", "password": "wrong" });
        assert_eq!(
            post(replicas.url(0, "/v1/login"), guess, "203.0.113.78")
                .await
                .status(),
            401
        );
        wait_until(Duration::from_secs(10), "the login logged", || async {
            replicas.requests_with_outcome("failure") == 1
        })
        .await;
        let logged: Vec<String> = replicas
            .logs()
            .iter()
            .filter(|line| line["message"] == "request finished")
            .filter_map(|line| line["span"]["username"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(logged, [expected], "log.usernames = {setting}");
        redis.cleanup().await;
    }
}
