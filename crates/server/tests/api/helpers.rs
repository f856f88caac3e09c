//! Small assertions shared by the API tests.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use portcullis_accounts::settings::RedisSettings;
use portcullis_core::{KeyDeriver, Username};
use portcullis_server::settings::Settings;
use portcullis_store::redis_store::{Keyspace, StoredState};
use portcullis_store::{OnError, Sharding};
use portcullis_testkit::process::wait_until;
use portcullis_testkit::redis::{RedisServer, TestRedis};
use portcullis_testkit::{PASSWORD, TestApp, test_settings};
use redis::AsyncCommands;
use reqwest::Response;
use serde_json::Value;

/// Asserts a problem+json answer with the given status; returns its body.
pub async fn assert_problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string(), "{body}");
    body
}

/// The `Retry-After` header in seconds.
pub fn retry_after(response: &Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .expect("Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Registers variants of one name eight times at once: exactly one 201, seven 409.
pub async fn assert_one_account_per_normalised_name(app: &TestApp) {
    let names = ["Race", "race ", "RACE", "ｒａｃｅ"];
    let attempts = (0..8).map(|i| app.register(names[i % names.len()], PASSWORD));
    let statuses: Vec<u16> = join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let count = |status| statuses.iter().filter(|&&s| s == status).count();
    assert_eq!((count(201), count(409)), (1, 7), "{statuses:?}");
}

/// An app on a Redis of the test's own (which the test may kill, freeze or restart empty),
/// with a short timeout and a quick breaker.
pub async fn app_on_private_redis(server: &RedisServer, on_error: OnError) -> TestApp {
    TestApp::spawn_with(private_redis_settings(server, on_error)).await
}

/// [`app_on_private_redis`]'s settings.
pub fn private_redis_settings(server: &RedisServer, on_error: OnError) -> Settings {
    let mut settings = test_settings();
    settings.store.redis = Some(RedisSettings {
        url: server.url.clone(),
        prefix: "private".to_owned(),
        timeout_ms: 200,
        ..Default::default()
    });
    settings.store.on_error = on_error;
    settings.store.breaker_failures = 2;
    settings.store.breaker_cool_down_ms = 200;
    settings.secrets.hmac_key = Some("0123456789abcdef0123456789abcdef-private".into());
    settings
}

/// The app's `/metrics` text.
pub async fn metrics_text(app: &TestApp) -> String {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    response.text().await.unwrap()
}

/// The JSON answer of an admin API `GET` of `path` with `token`.
pub async fn admin_get(app: &TestApp, token: &str, path: &str) -> Value {
    let response = app
        .client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

/// The `name=value` of the device cookie a response sets, with its attributes checked.
pub fn device_cookie(response: &reqwest::Response) -> Option<String> {
    let header = response
        .headers()
        .get("set-cookie")?
        .to_str()
        .unwrap()
        .to_owned();
    assert!(header.contains("HttpOnly"), "{header}");
    assert!(header.contains("SameSite=Strict"), "{header}");
    assert!(header.contains("Secure"), "{header}");
    header.split(';').next().map(str::to_owned)
}

/// The interpreter of the interop venv (`scripts/test.sh` installs it).
pub fn python() -> String {
    std::env::var("PORTCULLIS_TEST_PYTHON").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/interop-venv/bin/python"
        )
        .to_owned()
    })
}

/// The interpreter of the interop venv and the path of `script` in `tests/interop`.
pub fn interop_command(script: &str) -> (String, String) {
    let script = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    (python(), script)
}

/// Runs an interop script of `tests/interop` with the pinned independent implementations
/// (`scripts/test.sh` installs them in `target/interop-venv`); returns its trimmed stdout.
pub fn interop(script: &str, args: &[&str], stdin: &str) -> String {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let (python, script) = interop_command(script);
    let mut child = Command::new(&python)
        .arg(&script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e} (scripts/test.sh installs the interop venv)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{script} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The TOTP code of an `otpauth://` URI at `unix_ms`, computed by PyPI `pyotp`.
pub fn pyotp_code(otpauth_uri: &str, unix_ms: u64) -> String {
    let seconds = (unix_ms / 1_000).to_string();
    interop("totp_reference.py", &["code", &seconds], otpauth_uri)
}

/// Tests that load both cores for a minute or more take turns: the compose stacks (which also
/// publish the same ports, so one at a time) and the browser suites (whose page timeouts a
/// machine loaded by a stack and its drill can outrun: CI saw a navigation time out).
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Polls `attempt` until it answers `status`, failing once a second has passed `since` (the
/// change it waits for: each request's round trip paces the loop, the replicas being other
/// processes on real time); returns how long after `since` it answered.
pub async fn within_a_second<F, Fut>(since: Instant, status: u16, attempt: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = reqwest::Response>,
{
    loop {
        if attempt().await.status() == status {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "not {status} within 1 s"
        );
    }
}

/// The Redis key of `username`'s account counter, on `redis` (one slot) with keys derived from
/// `hmac_key` (`secrets.hmac_key`).
pub fn account_key(redis: &TestRedis, hmac_key: &str, username: &str) -> String {
    let deriver = KeyDeriver::new(hmac_key.as_bytes(), 24, 64, 48).unwrap();
    Keyspace::new(&redis.prefix, Sharding::SingleSlot)
        .counter(&deriver.username_key(&Username::parse(username).unwrap()))
}

/// Waits until the account counter `key` counts an attempt in flight: admitted, not settled.
pub async fn wait_until_in_flight(redis: &TestRedis, key: &str) {
    let conn = redis.connection().await;
    wait_until(Duration::from_secs(10), "an attempt admitted", || {
        let mut conn = conn.clone();
        async move {
            let packed: Option<Vec<u8>> = conn.get(key).await.unwrap_or_default();
            packed.is_some_and(|packed| {
                StoredState::from_packed(&packed).state.lockout.in_flight >= 1
            })
        }
    })
    .await;
}
