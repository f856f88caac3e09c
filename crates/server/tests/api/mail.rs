//! Mail to the account's owner through a real SMTP server (PyPI `aiosmtpd`, run as a process
//! into a Maildir, read back with Python's `email`): verification links followed from the
//! message, the old address told, a verified address kept to one account, mail waiting while
//! SMTP is down, and three replicas on one PostgreSQL sending each message exactly once.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portcullis_accounts::settings::MailTransport;
use portcullis_server::settings::Settings;
use portcullis_testkit::process::wait_until;
use portcullis_testkit::{PASSWORD, TestApp, test_settings};
use reqwest::Method;
use serde_json::{Value, json};

use crate::distributed::{post, three_replicas};
use crate::helpers::{admin_get, assert_problem, interop, interop_command, metrics_text};

const PUBLIC_URL: &str = "https://login.example.test";
pub(crate) const ADMIN_TOKEN: &str = "admin-token-for-the-mail-tests-0123456789";

/// An aiosmtpd process delivering into a Maildir of its own; killed when dropped.
pub(crate) struct SmtpServer {
    port: u16,
    maildir: tempfile::TempDir,
    process: Option<Child>,
}

impl SmtpServer {
    /// A server on a free port, not started yet.
    fn on_free_port() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            port,
            maildir: tempfile::tempdir().unwrap(),
            process: None,
        }
    }

    /// A server listening.
    pub(crate) fn running() -> Self {
        let mut server = Self::on_free_port();
        server.start();
        server
    }

    fn start(&mut self) {
        use std::io::BufRead as _;
        let (python, script) = interop_command("smtp_server.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .args(["serve", &self.port.to_string()])
            .arg(self.maildir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{python}: {e} (scripts/test.sh installs the interop venv)")
            });
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "the SMTP server did not start");
        self.process = Some(child);
    }

    /// The Maildir (the script makes it).
    pub(crate) fn maildir(&self) -> std::path::PathBuf {
        self.maildir.path().join("Maildir")
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The delivered messages, oldest first.
    pub(crate) fn messages(&self) -> Vec<Value> {
        let maildir = self.maildir();
        let maildir = maildir.to_str().unwrap();
        serde_json::from_str(&interop("smtp_server.py", &["read", maildir], "")).unwrap()
    }

    /// Waits (up to 20 s) until `count` messages were delivered; returns them.
    pub(crate) async fn wait_for(&self, count: usize) -> Vec<Value> {
        self.wait_for_matching(&format!("{count} messages"), count, |_| true)
            .await
    }

    /// Waits (up to 20 s) until `count` messages with `subject` were delivered; returns them.
    pub(crate) async fn wait_for_subject(&self, subject: &str, count: usize) -> Vec<Value> {
        self.wait_for_matching(&format!("{count} × {subject:?}"), count, |m| {
            m["subject"] == subject
        })
        .await
    }

    /// Waits (up to 20 s: the SMTP server is another process, whose delivery no injected clock
    /// moves) until `count` delivered messages match; returns those.
    async fn wait_for_matching(
        &self,
        what: &str,
        count: usize,
        matches: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let matching = || -> Vec<Value> { self.messages().into_iter().filter(&matches).collect() };
        wait_until(Duration::from_secs(20), what, || async {
            matching().len() >= count
        })
        .await;
        matching()
    }

    /// The subjects of the delivered messages, oldest first.
    pub(crate) fn subjects(&self) -> Vec<String> {
        self.messages()
            .iter()
            .map(|m| m["subject"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

pub(crate) fn smtp_settings(smtp: &SmtpServer) -> Settings {
    let mut settings = test_settings();
    settings.mail.transport = MailTransport::Smtp;
    settings.mail.smtp_url = Some(smtp.url());
    settings.mail.from = "Portcullis <no-reply@example.test>".to_owned();
    settings.mail.poll_ms = 50;
    settings.server.public_url = Some(PUBLIC_URL.to_owned());
    settings.admin.token = Some(ADMIN_TOKEN.into());
    settings
}

/// The token of the link to `page` in `message`'s text, checked to be in its HTML too.
pub(crate) fn link_token(message: &Value, page: &str) -> String {
    let text = message["text"].as_str().unwrap();
    let prefix = format!("{PUBLIC_URL}{page}?token=");
    let start = text
        .find(&prefix)
        .unwrap_or_else(|| panic!("no link in {text}"))
        + prefix.len();
    let token: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert_eq!(token.len(), 43, "{text}");
    let html = message["html"].as_str().unwrap();
    assert!(html.contains(&format!("{prefix}{token}")), "{html}");
    token
}

async fn set_address(
    app: &TestApp,
    session: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    app.with_bearer(
        Method::POST,
        "/v1/email",
        session,
        &json!({ "email": email, "current_password": password }),
    )
    .await
}

pub(crate) async fn verify(app: &TestApp, token: &str) -> reqwest::Response {
    app.post_json("/v1/email/verify", &json!({ "token": token }), None)
        .await
}

#[tokio::test]
async fn a_verification_link_by_smtp_verifies_once_and_a_change_tells_the_old_address() {
    let smtp = SmtpServer::running();
    let app = TestApp::spawn_with(smtp_settings(&smtp)).await;
    app.register("alice", PASSWORD).await;
    let alice = app.token("alice", PASSWORD).await;

    // Bad input and a wrong password change nothing and send nothing.
    let bad = assert_problem(
        set_address(&app, &alice, "not an address", PASSWORD).await,
        400,
    )
    .await;
    assert_eq!(bad["code"], "invalid_email");
    let wrong = set_address(&app, &alice, "alice@example.com", "not her password").await;
    assert_eq!(
        assert_problem(wrong, 401).await["code"],
        "invalid_credentials"
    );

    let pending = set_address(&app, &alice, "  Alice@Example.COM ", PASSWORD).await;
    assert_eq!(pending.status(), 202);
    let pending: Value = pending.json().await.unwrap();
    assert_eq!(pending["email"], "alice@example.com");
    let messages = smtp.wait_for(1).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    assert_eq!(message["to"], "alice@example.com");
    assert_eq!(message["from"], "Portcullis <no-reply@example.test>");
    assert_eq!(message["subject"], "Verify your address for alice");
    assert!(
        message["headers"]["Content-Type"]
            .as_str()
            .unwrap()
            .starts_with("multipart/alternative"),
        "{message}"
    );
    let token = link_token(message, "/verify-email");

    // The link opens a page whose button posts the token (a scanner following links uses
    // nothing up); the API takes it once.
    let page = app
        .client
        .get(app.url(&format!("/verify-email?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains(&token));
    let verified = verify(&app, &token).await;
    assert_eq!(verified.status(), 200);
    let verified: Value = verified.json().await.unwrap();
    assert_eq!(verified["email"], "alice@example.com");
    let again = assert_problem(verify(&app, &token).await, 400).await;
    assert_eq!(again["code"], "invalid_link");
    let forged = assert_problem(verify(&app, &"A".repeat(43)).await, 400).await;
    assert_eq!(forged["code"], "invalid_link");

    // A new address: its own link, and once verified, the old address is told.
    assert_eq!(
        set_address(&app, &alice, "alice@new.example", PASSWORD)
            .await
            .status(),
        202
    );
    let messages = smtp.wait_for(2).await;
    assert_eq!(messages[1]["to"], "alice@new.example");
    assert_eq!(
        verify(&app, &link_token(&messages[1], "/verify-email"))
            .await
            .status(),
        200
    );
    let messages = smtp.wait_for(3).await;
    assert_eq!(messages[2]["to"], "alice@example.com");
    assert_eq!(messages[2]["subject"], "The address of alice changed");
    assert!(
        messages[2]["text"]
            .as_str()
            .unwrap()
            .contains("was changed")
    );

    // Another account may ask for it (the answer says nothing about who holds it), but the
    // link cannot take it: a verified address belongs to one account.
    app.register("bob", PASSWORD).await;
    let bob = app.token("bob", PASSWORD).await;
    assert_eq!(
        set_address(&app, &bob, "alice@new.example", PASSWORD)
            .await
            .status(),
        202
    );
    let messages = smtp.wait_for(4).await;
    let taken = assert_problem(
        verify(&app, &link_token(&messages[3], "/verify-email")).await,
        409,
    )
    .await;
    assert_eq!(taken["code"], "email_taken");
    assert_eq!(smtp.messages().len(), 4, "nothing more was sent");
}

#[tokio::test]
async fn an_address_given_at_registration_gets_its_link_and_a_bad_one_creates_nothing() {
    let smtp = SmtpServer::running();
    let app = TestApp::spawn_with(smtp_settings(&smtp)).await;
    let with_email =
        |email: &str| json!({ "username": "carol", "password": PASSWORD, "email": email });
    let refused = app
        .post_json("/v1/users", &with_email("carol at example.com"), None)
        .await;
    assert_eq!(assert_problem(refused, 400).await["code"], "invalid_email");
    let created = app
        .post_json("/v1/users", &with_email("Carol@Example.com"), None)
        .await;
    assert_eq!(created.status(), 201, "the refused one created nothing");
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["email"], "carol@example.com");
    let messages = smtp.wait_for(1).await;
    assert_eq!(messages[0]["to"], "carol@example.com");
    assert_eq!(
        verify(&app, &link_token(&messages[0], "/verify-email"))
            .await
            .status(),
        200
    );
    // Without an address, the answer has none.
    let plain: Value = app.register("dave", PASSWORD).await.json().await.unwrap();
    assert!(plain.get("email").is_none(), "{plain}");
}

#[tokio::test]
async fn an_address_gets_at_most_three_verification_links_an_hour_whichever_accounts_ask() {
    let smtp = SmtpServer::running();
    let app = TestApp::spawn_with(smtp_settings(&smtp)).await;
    for name in ["alice", "bob"] {
        assert_eq!(app.register(name, PASSWORD).await.status(), 201);
    }
    let alice = app.token("alice", PASSWORD).await;
    let bob = app.token("bob", PASSWORD).await;
    for _ in 0..3 {
        let asked = set_address(&app, &alice, "stranger@example.com", PASSWORD).await;
        assert_eq!(asked.status(), 202);
        app.clock.advance(60_000);
    }
    // A fourth, from another account too: the stranger's mailbox has had its share.
    for session in [&alice, &bob] {
        let capped = set_address(&app, session, "stranger@example.com", PASSWORD).await;
        let retry_after: u64 = capped.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(assert_problem(capped, 429).await["code"], "throttled");
        assert_eq!(
            retry_after,
            3_600 - 3 * 60,
            "until the oldest link is an hour old"
        );
    }
    // Another address is not held back, and an hour after the first link the stranger's is not.
    let own = set_address(&app, &bob, "bob@example.com", PASSWORD).await;
    assert_eq!(own.status(), 202);
    outbox_settled(&app.url("/admin/v1/outbox"), 4).await;
    app.clock.advance(3_600_000);
    let later = set_address(&app, &alice, "stranger@example.com", PASSWORD).await;
    assert_eq!(later.status(), 202);
    let to_stranger = smtp
        .wait_for(5)
        .await
        .iter()
        .filter(|m| m["to"] == "stranger@example.com")
        .count();
    assert_eq!(to_stranger, 4);
}

#[tokio::test]
async fn mail_waits_while_smtp_is_down_and_goes_out_once_when_it_returns() {
    let mut smtp = SmtpServer::on_free_port();
    let app = TestApp::spawn_with(smtp_settings(&smtp)).await;
    app.register("alice", PASSWORD).await;
    let alice = app.token("alice", PASSWORD).await;
    assert_eq!(
        set_address(&app, &alice, "alice@example.com", PASSWORD)
            .await
            .status(),
        202
    );
    // The sender (its own task, on real time) tries, fails, and keeps the message, saying why.
    wait_until(Duration::from_secs(10), "a failed attempt", || async {
        let outbox = admin_get(&app, ADMIN_TOKEN, "/admin/v1/outbox").await;
        outbox["unsent"][0]["attempts"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let kept = admin_get(&app, ADMIN_TOKEN, "/admin/v1/outbox").await;
    assert_eq!(kept["queued"], 1, "{kept}");
    let unsent = &kept["unsent"][0];
    assert_eq!(unsent["kind"], "verify_address", "{kept}");
    assert_eq!(unsent["state"], "queued", "{kept}");
    assert!(
        unsent["last_error"].as_str().unwrap().contains("SMTP"),
        "{kept}"
    );
    assert!(
        metric(
            &metrics_text(&app).await,
            "portcullis_mail_send_failures_total"
        ) >= 1.0
    );
    // Down for a minute, then back: the retry finds it.
    app.clock.advance(60_000);
    smtp.start();
    let messages = smtp.wait_for(1).await;
    assert_eq!(messages[0]["to"], "alice@example.com");
    let after = outbox_settled(&app.url("/admin/v1/outbox"), 1).await;
    assert_eq!(after["failed"], 0, "{after}");
    assert_eq!(smtp.messages().len(), 1, "sent once");
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_on_one_postgresql_send_each_message_exactly_once() {
    let smtp = SmtpServer::running();
    let env = [
        ("PORTCULLIS__MAIL__TRANSPORT", "smtp".to_owned()),
        ("PORTCULLIS__MAIL__SMTP_URL", smtp.url()),
        ("PORTCULLIS__MAIL__POLL_MS", "50".to_owned()),
        ("PORTCULLIS__SERVER__PUBLIC_URL", PUBLIC_URL.to_owned()),
        ("PORTCULLIS__ADMIN__TOKEN", ADMIN_TOKEN.to_owned()),
    ];
    let (replicas, _redis, _database) = three_replicas(&env).await;
    const USERS: usize = 24;
    for i in 0..USERS {
        let credentials = json!({ "username": format!("user{i}"), "password": PASSWORD });
        let from = format!("192.0.2.{}", i + 1);
        let replica = i % replicas.len();
        let registered = post(
            replicas.url(replica, "/v1/users"),
            credentials.clone(),
            &from,
        )
        .await;
        assert_eq!(registered.status(), 201);
        let login: Value = post(replicas.url(replica, "/v1/login"), credentials, &from)
            .await
            .json()
            .await
            .unwrap();
        let set = reqwest::Client::new()
            .post(replicas.url(replica, "/v1/email"))
            .header("x-forwarded-for", &from)
            .bearer_auth(login["token"].as_str().unwrap())
            .json(&json!({ "email": format!("user{i}@example.com"), "current_password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(set.status(), 202);
    }
    smtp.wait_for(USERS).await;
    // Once every message is marked sent, no replica sends one again: count then.
    outbox_settled(&replicas.url(0, "/admin/v1/outbox"), USERS as u64).await;
    let mut per_recipient: BTreeMap<String, usize> = BTreeMap::new();
    for message in smtp.messages() {
        *per_recipient
            .entry(message["to"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_recipient.len(), USERS, "{per_recipient:?}");
    assert!(per_recipient.values().all(|&n| n == 1), "{per_recipient:?}");
}

/// Waits (up to 20 s) until the outbox at `url` (`GET /admin/v1/outbox`) has nothing queued and
/// `sent` messages marked sent: from then on no sender sends them again. Returns it.
pub(crate) async fn outbox_settled(url: &str, sent: u64) -> Value {
    let outbox = || async {
        reqwest::Client::new()
            .get(url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let what = format!("the outbox with nothing queued and {sent} sent");
    wait_until(Duration::from_secs(20), &what, || async {
        let outbox = outbox().await;
        outbox["queued"] == 0 && outbox["sent"] == sent
    })
    .await;
    outbox().await
}

/// The value of the sample `name` (with its labels) in a metrics page (0 when absent).
fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}
