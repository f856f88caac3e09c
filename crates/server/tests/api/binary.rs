//! The `portcullis` binary itself: configuration layers, start-up errors, logs, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portcullis_testkit::NETWORKS_OFF;
use portcullis_testkit::process::wait_until;

use crate::helpers::pyotp_code;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// A command with a clean `PORTCULLIS__` environment and a scratch working directory.
fn portcullis(dir: &tempfile::TempDir) -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("PORTCULLIS__") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command
        .current_dir(dir.path())
        .env("PORTCULLIS__ARGON2__MEMORY_KIB", "256")
        .env("PORTCULLIS__ARGON2__ITERATIONS", "1");
    command
}

/// Runs a command that should fail at start-up; returns its stderr.
fn startup_error(mut command: Command) -> String {
    let output = command.output().expect("run portcullis");
    assert!(!output.status.success(), "started although misconfigured");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Starts the server and waits for the log line with its address.
fn start(mut command: Command) -> (Child, String, Vec<String>) {
    let mut child = command
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn portcullis");
    let stderr = child.stderr.take().unwrap();
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stderr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        lines.push(line.clone());
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let address: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            // Keep draining stderr so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in reader.lines() {});
            return (child, address, lines);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("portcullis did not start: {lines:?}");
}

async fn get(address: &str, path: &str) -> reqwest::StatusCode {
    reqwest::get(format!("http://{address}{path}"))
        .await
        .expect("request")
        .status()
}

#[tokio::test]
async fn a_config_file_is_read_and_embedded_defaults_serve_healthz() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("portcullis.toml"),
        "[server]\nport = 0\n[session]\nttl_secs = 60\n",
    )
    .unwrap();
    let mut command = portcullis(&dir);
    command.args(["--config", "portcullis.toml"]);
    let (mut child, address, lines) = start(command);
    assert_eq!(get(&address, "/healthz").await, 200);
    assert!(
        lines.iter().any(|l| l.contains("embedded defaults")),
        "{lines:?}"
    );
    assert!(
        dir.path().join("data/portcullis.db").exists(),
        "SQLite file under data/"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn an_unknown_setting_fails_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = portcullis(&dir);
    command.env("PORTCULLIS__SERVER__PROT", "8080");
    let stderr = startup_error(command);
    assert!(stderr.contains("prot"), "{stderr}");
}

#[test]
fn a_log_level_that_is_not_a_filter_fails_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = portcullis(&dir);
    command.env("PORTCULLIS__LOG_LEVEL", "portcullis_server=loud");
    let stderr = startup_error(command);
    assert!(
        stderr.contains("log_level: not a tracing filter"),
        "{stderr}"
    );
}

/// `RUST_LOG` overrides `log_level` for a while, by hand: a typo in it must not leave the
/// operator guessing which one applies.
#[test]
fn a_rust_log_that_is_not_a_filter_is_named_and_log_level_applies() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = portcullis(&dir);
    command
        .env("RUST_LOG", "portcullis_server=loud")
        .env("PORTCULLIS__SERVER__PORT", "0");
    let (mut child, _address, lines) = start(command);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("RUST_LOG is not a tracing filter") && l.contains("WARN")),
        "{lines:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn an_unknown_sharding_fails_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = portcullis(&dir);
    command.env("PORTCULLIS__STORE__REDIS__SHARDING", "per_tenant");
    let stderr = startup_error(command);
    assert!(stderr.contains("store.redis.sharding"), "{stderr}");
}

#[test]
fn sentinel_settings_that_cannot_work_fail_start_up_naming_the_setting() {
    let named = "SENTINEL__MASTER_NAME";
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[
                (named, "portcullis"),
                ("SENTINEL__ADDRESSES", "redis://s:26379"),
            ],
            "store.redis.sentinel.addresses",
        ),
        (
            &[(named, ""), ("SENTINEL__ADDRESSES", "s:26379")],
            "store.redis.sentinel.master_name",
        ),
        (
            &[
                (named, "portcullis"),
                ("SENTINEL__ADDRESSES", "s:26379"),
                ("URL", "redis://127.0.0.1:6379"),
            ],
            "leave store.redis.url",
        ),
    ];
    for (settings, complaint) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut command = portcullis(&dir);
        for (name, value) in settings {
            command.env(format!("PORTCULLIS__STORE__REDIS__{name}"), value);
        }
        let stderr = startup_error(command);
        assert!(stderr.contains(complaint), "{settings:?}: {stderr}");
    }
}

#[test]
fn a_trusted_proxy_network_wider_than_a_slash_8_fails_start_up_naming_the_setting() {
    for network in ["0.0.0.0/0", "::/0"] {
        let dir = tempfile::tempdir().unwrap();
        let mut command = portcullis(&dir);
        command.env("PORTCULLIS__SERVER__TRUSTED_PROXIES", network);
        let stderr = startup_error(command);
        assert!(stderr.contains("server.trusted_proxies"), "{stderr}");
        assert!(stderr.contains("wider than"), "{stderr}");
    }
}

#[test]
fn an_impossible_policy_fails_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = portcullis(&dir);
    command.env("PORTCULLIS__POLICY__IP__ATTEMPTS__BURST", "0");
    let stderr = startup_error(command);
    assert!(
        stderr.contains("policy.ip.attempts: burst must be at least 1"),
        "{stderr}"
    );
}

#[test]
fn invalid_argon2_parameters_fail_start_up_naming_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = portcullis(&dir);
    command
        .env("PORTCULLIS__SERVER__PORT", "0")
        .env("PORTCULLIS__ARGON2__MEMORY_KIB", "1");
    let stderr = startup_error(command);
    assert!(stderr.contains("argon2.memory_kib"), "{stderr}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = portcullis(&dir);
    command
        .env("PORTCULLIS__SERVER__PORT", "0")
        .env("PORTCULLIS__LOG_FORMAT", "json");
    let (mut child, _address, lines) = start(command);
    child.kill().unwrap();
    child.wait().unwrap();
    for line in &lines {
        let parsed: serde_json::Value = serde_json::from_str(line).expect(line);
        assert!(parsed["level"].is_string(), "{line}");
    }
}

/// Sends `signal` (`TERM`, `INT`) to the child.
fn send(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Waits for the child to exit (successfully) within `within`.
fn exits_within(child: &mut Child, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            return;
        }
        assert!(Instant::now() < deadline, "still running");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn sigterm_stops_the_server_gracefully_and_a_second_signal_cuts_the_drain_short() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = portcullis(&dir);
    command
        .env("PORTCULLIS__SERVER__PORT", "0")
        .env("PORTCULLIS__SERVER__DRAIN_SECS", "600");
    let (mut child, address, _) = start(command);
    assert_eq!(get(&address, "/healthz").await, 200);
    send(&child, "TERM");
    // Draining: still serving, no longer ready.
    wait_until(Duration::from_secs(10), "readyz to fail", || async {
        get(&address, "/readyz").await == 503
    })
    .await;
    assert_eq!(get(&address, "/healthz").await, 200);
    // A ten-minute drain, cut short by Ctrl-C.
    send(&child, "INT");
    exits_within(&mut child, Duration::from_secs(20));
}

#[tokio::test]
async fn on_sigterm_a_replica_drains_then_refuses_new_connections_while_logins_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = portcullis(&dir);
    // Long enough that a loaded CI machine still sees the drain before the listener closes.
    const DRAIN: Duration = Duration::from_secs(6);
    // A slow hash (about a second), so a login is surely in flight when the drain ends.
    command
        .env("PORTCULLIS__SERVER__PORT", "0")
        .env(
            "PORTCULLIS__SERVER__DRAIN_SECS",
            DRAIN.as_secs().to_string(),
        )
        .env("PORTCULLIS__ARGON2__MEMORY_KIB", "131072")
        .env("PORTCULLIS__ARGON2__ITERATIONS", "8")
        // Checked, not challenged for a network new to the (unknown) account.
        .env(NETWORKS_OFF.0, NETWORKS_OFF.1);
    let (mut child, address, _) = start(command);
    let login = |address: String| async move {
        reqwest::Client::new()
            .post(format!("http://{address}/v1/login"))
            .json(&serde_json::json!({ "username": "nobody", "password": "guess" }))
            .send()
            .await
            .map(|r| r.status().as_u16())
    };
    let signalled = Instant::now();
    send(&child, "TERM");
    wait_until(Duration::from_secs(10), "readyz to fail", || async {
        get(&address, "/readyz").await == 503
    })
    .await;
    // While it drains it serves everything, and each answer closes its connection, so a proxy
    // keeps none to reuse once the listener closes.
    let answer = reqwest::get(format!("http://{address}/healthz"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["connection"], "close");
    assert_eq!(
        login(address.clone()).await.unwrap(),
        401,
        "a login while draining"
    );
    // A login sent just before the drain ends is still in flight when the listener closes.
    tokio::time::sleep(DRAIN.saturating_sub(signalled.elapsed() + Duration::from_millis(300)))
        .await;
    let in_flight = tokio::spawn(login(address.clone()));
    wait_until(Duration::from_secs(10), "the listener to close", || async {
        reqwest::get(format!("http://{address}/healthz"))
            .await
            .is_err()
    })
    .await;
    assert_eq!(
        in_flight.await.unwrap().expect("in-flight login answered"),
        401
    );
    exits_within(&mut child, Duration::from_secs(30));
}

#[test]
fn a_distributed_deployment_without_the_hmac_secret_fails_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = portcullis(&dir);
    command.env("PORTCULLIS__STORE__REDIS__URL", "redis://127.0.0.1:6379");
    let stderr = startup_error(command);
    assert!(stderr.contains("secrets.hmac_key"), "{stderr}");
    assert!(stderr.contains("PORTCULLIS__SECRETS__HMAC_KEY"), "{stderr}");
}

#[tokio::test]
async fn the_migrate_command_prepares_a_postgresql_database() {
    let database = portcullis_testkit::postgres::TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = portcullis(&dir);
    command
        .arg("migrate")
        .env("PORTCULLIS__DATABASE__URL", &database.url);
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut command = portcullis(&dir);
    command
        .env("PORTCULLIS__DATABASE__URL", &database.url)
        .env("PORTCULLIS__DATABASE__MIGRATE_ON_START", "false")
        .env("PORTCULLIS__SERVER__PORT", "0");
    let (mut child, address, _) = start(command);
    let registered = reqwest::Client::new()
        .post(format!("http://{address}/v1/users"))
        .json(&serde_json::json!({ "username": "pg", "password": "correct horse battery" }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn users_import_with_an_email_column_takes_the_addresses_as_verified() {
    use portcullis_accounts::accounts::Accounts;
    use portcullis_core::Username;
    let dir = tempfile::tempdir().unwrap();
    let csv = "username,email,password\n\
               Erin, Erin@Example.com ,amber kettle, orbit 1\n\
               frank,,amber kettle, orbit 2\n\
               gina,not an address,amber kettle, orbit 3\n\
               hank,erin@example.com,amber kettle, orbit 4\n";
    std::fs::write(dir.path().join("users.csv"), csv).unwrap();
    let mut command = portcullis(&dir);
    command.args(["users", "import", "users.csv"]);
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    // hank's address is erin's: a verified address belongs to one account.
    assert!(
        stdout.contains(
            "imported 2, skipped 1 existing, rejected 1 invalid lines and 0 weak passwords"
        ),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut database = portcullis_testkit::test_settings().database;
    database.url = format!("sqlite://{}/data/portcullis.db", dir.path().display());
    let accounts = Accounts::connect(&database).await.unwrap();
    let email = |name: &'static str| {
        let accounts = &accounts;
        async move {
            let account = accounts
                .find(&Username::parse(name).unwrap())
                .await
                .unwrap();
            account.map(|a| a.email)
        }
    };
    assert_eq!(
        email("erin").await,
        Some(Some("erin@example.com".to_owned()))
    );
    assert_eq!(email("frank").await, Some(None));
    assert_eq!(email("gina").await, None);
    assert_eq!(email("hank").await, None);
}

#[tokio::test]
async fn users_import_creates_accounts_in_parallel_skips_existing_ones_and_takes_totp_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("username,password\n");
    for i in 0..40 {
        csv.push_str(&format!("User{i},amber kettle, orbit {i}\n"));
    }
    csv.push_str("user0,amber kettle, orbit again\nno-comma-line\nweakling,password1\n");
    std::fs::write(dir.path().join("users.csv"), csv).unwrap();
    let mut command = portcullis(&dir);
    command.args(["users", "import", "users.csv"]);
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(
            "imported 40, skipped 1 existing, rejected 1 invalid lines and 1 weak passwords"
        ),
        "{stdout}"
    );

    // Their TOTP secrets, as another identity provider exports them.
    let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let totp = format!(
        "username,totp_secret\nUser8,{secret}\nuser8,{secret}\nnobody,{secret}\nuser9,xyz\n"
    );
    std::fs::write(dir.path().join("totp.csv"), totp).unwrap();
    let mut command = portcullis(&dir);
    command.args(["users", "import-totp", "totp.csv"]);
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(
            "imported 1 second factors, kept 1 existing, 1 unknown accounts, rejected 1 invalid lines"
        ),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mut command = portcullis(&dir);
    // The imported passwords are checked, not the challenge of each account's first login
    // from its network (challenge.rs tests that).
    command
        .env("PORTCULLIS__SERVER__PORT", "0")
        .env(NETWORKS_OFF.0, NETWORKS_OFF.1);
    let (mut child, address, _) = start(command);
    let client = reqwest::Client::new();
    let login = |username: &'static str, password: &'static str| {
        client
            .post(format!("http://{address}/v1/login"))
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()
    };
    assert_eq!(
        login("user7", "amber kettle, orbit 7")
            .await
            .unwrap()
            .status(),
        200
    );
    let first: serde_json::Value = login("user8", "amber kettle, orbit 8")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["code"], "mfa_required", "{first}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let uri = format!("otpauth://totp/Portcullis:user8?secret={secret}&issuer=Portcullis");
    let second = client
        .post(format!("http://{address}/v1/login/mfa"))
        .json(
            &serde_json::json!({ "mfa_token": first["mfa_token"], "code": pyotp_code(&uri, now) }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        second.status(),
        200,
        "the imported secret is the second factor"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn an_all_digit_secret_from_the_environment_stays_a_string() {
    // Parsed as a number, these 40 digits became `1.2345678901234568e39`: 21 characters, too
    // short for the admin token's 32, and not the token the operator gave.
    let token = "1234567890123456789012345678901234567890";
    let dir = tempfile::tempdir().unwrap();
    let mut command = portcullis(&dir);
    command
        .env("PORTCULLIS__SERVER__PORT", "0")
        .env("PORTCULLIS__ADMIN__TOKEN", token)
        .env(
            "PORTCULLIS__SERVER__TRUSTED_PROXIES",
            "10.0.0.0/8,192.0.2.1",
        );
    let (mut child, address, _) = start(command);
    let status = reqwest::Client::new()
        .get(format!("http://{address}/admin/v1/lockouts"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200);
}
