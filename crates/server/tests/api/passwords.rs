//! Passwords: the NIST rules at registration, the breached-password filter built by
//! `portcullis passwords build-filter` (its false-positive rate measured on a million hashes),
//! logins with a breached password (`flag` and `block`), and password change through the
//! login guard.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use portcullis_accounts::passwords::BreachedFilter;
use portcullis_accounts::settings::BreachedLogin;
use portcullis_server::settings::Settings;
use portcullis_testkit::{PASSWORD, TestApp, test_settings};
use reqwest::Method;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use crate::helpers::{admin_get, assert_problem, device_cookie, retry_after};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const NEW_PASSWORD: &str = "quiet walrus under amber lanterns";
const ADMIN_TOKEN: &str = "admin-token-for-the-password-tests-0123";

/// A HIBP line for `password`.
pub(crate) fn hibp_line(password: &str) -> String {
    format!(
        "{}:42",
        hex::encode_upper(Sha1::digest(password.as_bytes()))
    )
}

/// Runs `portcullis passwords build-filter` on `lines`; returns the filter's path and stdout.
pub(crate) fn build_filter(
    dir: &Path,
    lines: impl Iterator<Item = String>,
) -> (std::path::PathBuf, String) {
    let input = dir.join("pwned.txt");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let out = dir.join("breached.filter");
    let output = Command::new(BIN)
        .args(["passwords", "build-filter"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (out, String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Settings on a database file in `dir`, so apps with other settings can share it.
pub(crate) fn on_file(dir: &Path) -> Settings {
    let mut settings = test_settings();
    settings.database.url = format!("sqlite://{}/accounts.db", dir.display());
    settings.secrets.hmac_key = Some("0123456789abcdef0123456789abcdef-passwords".into());
    settings
}

#[tokio::test]
async fn weak_passwords_are_refused_at_registration_naming_the_rule_and_each_refusal_counts() {
    let app = TestApp::spawn().await;
    let cases = [
        ("bob", "password", "at least 15 characters"),
        ("carol", "12345678", "at least 15 characters"),
        ("dave", "aaaaaaaaaaaaaaaaaaaa", "repeated characters"),
        ("erin", "erin loves long walks", "your username"),
        ("frank", "my portcullis account", "name of this service"),
        ("gina", "baseballfootball", "too easy to guess"),
        ("", PASSWORD, "username"),
    ];
    // The address's burst of 30 registrations gets its reasons...
    for (username, password, reason) in cases.iter().cycle().take(30) {
        let body = assert_problem(app.register(username, password).await, 400).await;
        let said = if body["code"] == "weak_password" {
            body["reason"].as_str().unwrap()
        } else {
            assert_eq!(body["code"], "invalid_username", "{body}");
            body["detail"].as_str().unwrap()
        };
        assert!(said.contains(reason), "{username}: {said}");
        // ("password" is a word of every reason; the others never appear in one.)
        if *password != "password" && *password != PASSWORD {
            assert!(
                !said.contains(password),
                "the reason names the rule, not the password"
            );
        }
    }
    // ...and each counted, whatever its outcome (the rules cost CPU): the next waits, even
    // with a password the rules accept.
    let over = app.register("bob", PASSWORD).await;
    let wait = retry_after(&over);
    assert_problem(over, 429).await;
    app.clock.advance(wait * 1_000);
    assert_eq!(app.register("bob", PASSWORD).await.status(), 201);

    let mut settings = test_settings();
    settings.passwords.min_length = 8;
    let lenient = TestApp::spawn_with(settings).await;
    let body = assert_problem(lenient.register("bob", "sunshine").await, 400).await;
    assert_eq!(
        body["reason"],
        "this is one of the most common passwords; choose one nobody else would"
    );
}

#[tokio::test]
async fn a_filter_of_a_million_hashes_has_under_one_percent_false_positives() {
    let dir = tempfile::tempdir().unwrap();
    // A cheap deterministic generator: the hashes need to be distinct, not secret.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let members: Vec<[u64; 3]> = (0..1_000_000).map(|_| [next(), next(), next()]).collect();
    let lines = members
        .iter()
        .map(|[a, b, c]| format!("{a:016X}{b:016X}{:08X}:{}", c >> 32, c & 0xff));
    let (path, stdout) = build_filter(dir.path(), lines);
    println!("build-filter: {stdout}");
    let bytes = std::fs::metadata(&path).unwrap().len();
    let filter = BreachedFilter::load(&path).unwrap();
    assert_eq!(filter.entries(), 1_000_000);
    assert!(
        members.iter().all(|[a, _, _]| filter.contains_key(*a)),
        "no false negatives"
    );
    let trials = 1_000_000;
    let false_positives = (0..trials).filter(|_| filter.contains_key(next())).count();
    let rate = false_positives as f64 / trials as f64;
    println!(
        "breached filter: 1000000 hashes in {bytes} bytes ({:.2} bits per hash); false-positive \
         rate {:.3}% ({false_positives} of {trials} absent hashes)",
        bytes as f64 * 8.0 / 1e6,
        rate * 100.0
    );
    assert!(rate < 0.01, "false-positive rate {rate}");
}

#[tokio::test]
async fn breached_passwords_are_refused_new_and_flag_or_block_a_login() {
    let dir = tempfile::tempdir().unwrap();
    let breached = "correct horse battery staple";
    let (filter, _) = build_filter(
        dir.path(),
        [hibp_line(breached), hibp_line("hunter2")].into_iter(),
    );

    // Accounts made before the filter existed; bob logged in once from his browser.
    let before = TestApp::spawn_with(on_file(dir.path())).await;
    assert_eq!(before.register("alice", breached).await.status(), 201);
    assert_eq!(before.register("bob", breached).await.status(), 201);
    let bobs_browser = device_cookie(&before.login("bob", breached).await).unwrap();
    drop(before);

    let mut settings = on_file(dir.path());
    settings.passwords.breached_filter = Some(filter.clone());
    settings.passwords.breached_login = Some(BreachedLogin::Flag);
    let app = TestApp::spawn_with(settings.clone()).await;
    let body = assert_problem(app.register("carol", breached).await, 400).await;
    assert_eq!(body["code"], "breached_password");

    // flag: a session, marked, until the password changes.
    let login: Value = app.login("alice", breached).await.json().await.unwrap();
    assert_eq!(login["password_change_required"], true);
    let token = login["token"].as_str().unwrap();
    let session: Value = app.session(token).await.json().await.unwrap();
    assert_eq!(session["password_change_required"], true);
    let refused = app
        .with_bearer(
            Method::POST,
            "/v1/password",
            token,
            &json!({ "current_password": breached, "new_password": breached }),
        )
        .await;
    assert_eq!(
        assert_problem(refused, 400).await["code"],
        "breached_password"
    );
    let changed = app
        .with_bearer(
            Method::POST,
            "/v1/password",
            token,
            &json!({ "current_password": breached, "new_password": NEW_PASSWORD }),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let session: Value = app.session(token).await.json().await.unwrap();
    assert_eq!(session["password_change_required"], false);
    drop(app);

    // block (the default with a filter): no session. From a new device, nothing the sender
    // could use, for whoever holds the leak can send the password; the owner's event is kept.
    settings.passwords.breached_login = None;
    settings.admin.token = Some(ADMIN_TOKEN.into());
    let app = TestApp::spawn_with(settings).await;
    let body = assert_problem(app.login("bob", breached).await, 403).await;
    assert_eq!(body["code"], "password_reset_required");
    assert_eq!(
        body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["code", "detail", "status", "title", "type"],
        "{body}"
    );
    let events = admin_get(&app, ADMIN_TOKEN, "/admin/v1/events?limit=1").await;
    assert_eq!(
        events["events"][0]["kind"], "breached_password_login",
        "{events}"
    );
    // From bob's browser (possession beyond the password): a single-use token that only
    // changes the password.
    let from_his_browser = app
        .client
        .post(app.url("/v1/login"))
        .header("cookie", &bobs_browser)
        .json(&json!({ "username": "bob", "password": breached }))
        .send()
        .await
        .unwrap();
    let body = assert_problem(from_his_browser, 403).await;
    assert_eq!(body["code"], "password_change_required");
    let change_token = body["password_change_token"].as_str().unwrap().to_owned();
    assert!(body.get("token").is_none());
    let as_session = app.session(&change_token).await;
    assert_eq!(as_session.status(), 401, "the change token is no session");
    let change = json!({ "password_change_token": change_token, "new_password": NEW_PASSWORD });
    assert_eq!(
        app.post_json("/v1/password", &change, None).await.status(),
        200
    );
    let again = assert_problem(app.post_json("/v1/password", &change, None).await, 401).await;
    assert_eq!(again["code"], "invalid_token");
    let login: Value = app.login("bob", NEW_PASSWORD).await.json().await.unwrap();
    assert_eq!(login["password_change_required"], false);
}

#[tokio::test]
async fn a_damaged_or_foreign_filter_stops_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let (filter, _) = build_filter(dir.path(), [hibp_line("hunter2")].into_iter());
    let bytes = std::fs::read(&filter).unwrap();
    let truncated = dir.path().join("truncated.filter");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let foreign = dir.path().join("foreign.filter");
    std::fs::write(&foreign, hibp_line("hunter2")).unwrap();
    for (path, why) in [(&truncated, "truncated"), (&foreign, "wrong format")] {
        let output = Command::new(BIN)
            .env("PORTCULLIS__DATABASE__URL", "sqlite::memory:")
            .env("PORTCULLIS__PASSWORDS__BREACHED_FILTER", path)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("passwords.breached_filter") && stderr.contains(why),
            "{stderr}"
        );
    }
    let output = Command::new(BIN)
        .args(["passwords", "build-filter", "missing.txt", "--out", "x"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[tokio::test]
async fn a_password_change_checks_the_current_password_through_the_guard_and_ends_other_sessions() {
    let app = TestApp::spawn().await;
    assert_eq!(app.register("alice", PASSWORD).await.status(), 201);
    let here = app.token("alice", PASSWORD).await;
    let elsewhere = app.token("alice", PASSWORD).await;
    let change =
        |current: &str, new: &str| json!({ "current_password": current, "new_password": new });

    // A weak new password is refused before the current one is even checked.
    for _ in 0..10 {
        let weak = app
            .with_bearer(
                Method::POST,
                "/v1/password",
                &here,
                &change("wrong", "short"),
            )
            .await;
        assert_eq!(assert_problem(weak, 400).await["code"], "weak_password");
    }
    // Wrong current passwords count like failed logins: the account locks.
    for _ in 0..5 {
        let wrong = app
            .with_bearer(
                Method::POST,
                "/v1/password",
                &here,
                &change("wrong", NEW_PASSWORD),
            )
            .await;
        assert_eq!(
            assert_problem(wrong, 401).await["code"],
            "invalid_credentials"
        );
    }
    let locked = app
        .with_bearer(
            Method::POST,
            "/v1/password",
            &here,
            &change(PASSWORD, NEW_PASSWORD),
        )
        .await;
    assert!(retry_after(&locked) > 0);
    assert_eq!(assert_problem(locked, 429).await["code"], "throttled");
    assert_eq!(
        app.login("alice", PASSWORD).await.status(),
        429,
        "the same lockout as logins"
    );

    app.clock.advance(61_000);
    let changed = app
        .with_bearer(
            Method::POST,
            "/v1/password",
            &here,
            &change(PASSWORD, NEW_PASSWORD),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["revoked_sessions"], 1);
    assert_eq!(app.session(&elsewhere).await.status(), 401);
    assert_eq!(app.session(&here).await.status(), 200);
    assert_eq!(app.login("alice", PASSWORD).await.status(), 401);
    assert_eq!(app.login("alice", NEW_PASSWORD).await.status(), 200);

    let anonymous = app
        .post_json("/v1/password", &change(NEW_PASSWORD, PASSWORD), None)
        .await;
    assert_eq!(
        assert_problem(anonymous, 401).await["code"],
        "unauthenticated"
    );
    let both = json!({ "current_password": NEW_PASSWORD, "password_change_token": "x", "new_password": PASSWORD });
    assert_eq!(
        app.with_bearer(Method::POST, "/v1/password", &here, &both)
            .await
            .status(),
        400
    );
}
