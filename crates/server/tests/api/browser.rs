//! The hosted pages and the admin console in Debian's Chromium, driven by Playwright for Python
//! (`tests/browser/suite.py`; `scripts/test.sh` installs chromium, and PyPI `playwright` into
//! the interop virtualenv), with mail through a real SMTP server. Screenshots of every step go
//! to `target/screenshots/`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use portcullis_store::{Clock, SystemClock};
use portcullis_testkit::{TestApp, test_settings};

use crate::mail::{SmtpServer, smtp_settings};

const TOKEN: &str = "admin-token-for-the-browser-suite-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_registers_logs_in_with_totp_is_throttled_solves_a_challenge_is_unlocked_and_resets_by_mail()
 {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/suite.py");
    let mut settings = test_settings();
    settings.admin.token = Some(TOKEN.into());
    settings.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    // A person's browser solves in well under a second; the suite needs no more.
    settings.policy.challenge.min_work = 5_000;
    settings.policy.challenge.max_work = 50_000;
    let smtp = SmtpServer::running();
    let on_smtp = smtp_settings(&smtp);
    settings.mail = on_smtp.mail;
    settings.server.public_url = on_smtp.server.public_url;
    let (app, ops_port) = TestApp::spawn_with_ops(settings).await;
    // The browser's clock and pyotp's are the system's: the application's follows it.
    let clock = app.clock.clone();
    let follower = tokio::spawn(async move {
        loop {
            clock.advance(SystemClock.now().saturating_sub(clock.now()));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    let python = std::env::var("PORTCULLIS_TEST_PYTHON").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/interop-venv/bin/python"
        )
        .to_owned()
    });
    let address = app.address.clone();
    let maildir = smtp.maildir();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(suite)
            .env("PORTCULLIS_URL", address)
            .env("PORTCULLIS_ADMIN", format!("http://127.0.0.1:{ops_port}"))
            .env("PORTCULLIS_TOKEN", TOKEN)
            .env("SCREENSHOTS", screenshots)
            .env("MAILDIR", maildir)
            .output()
            .map_err(|e| format!("{python}: {e} (scripts/test.sh installs the interop venv)"))
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"));
    follower.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser suite failed (screenshots in target/screenshots):\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches("ok - ").count(), 11, "every step ran");
}
