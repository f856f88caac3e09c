//! The hosted pages and the admin console in Debian's Chromium, driven by Playwright for Python
//! (`tests/browser/suite.py`; `scripts/test.sh` installs chromium, and PyPI `playwright` into
//! the interop virtualenv), with mail through a real SMTP server; and passkeys on the pages with
//! Chromium's virtual authenticator (`tests/browser/passkeys.py`). Screenshots of every step go
//! to `target/screenshots/`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use portcullis_store::{Clock, SystemClock};
use portcullis_testkit::{TestApp, test_settings};

use crate::helpers::HEAVY;
use crate::mail::{SmtpServer, smtp_settings};

const TOKEN: &str = "admin-token-for-the-browser-suite-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_registers_logs_in_with_totp_is_throttled_solves_a_challenge_is_unlocked_and_resets_by_mail()
 {
    let _turn = HEAVY.lock().await;
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/suite.py");
    let mut settings = test_settings();
    settings.admin.token = Some(TOKEN.into());
    settings.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    // A person's browser solves in well under a second; the suite needs no more.
    settings.policy.challenge.min_work = 5_000;
    settings.policy.challenge.max_work = 50_000;
    // Three people share 127.0.0.1 within seconds here, and every view of the login page asks
    // for passkey options (counted once against the address, as an attempt): a burst of 30
    // would throttle the suite itself.
    settings.policy.ip.attempts = Some(portcullis_core::gcra::Gcra {
        burst: 100,
        interval_ms: 1_000,
    });
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

    let mut script = Command::new(python());
    script
        .arg(suite)
        .env("PORTCULLIS_URL", &app.address)
        .env("PORTCULLIS_ADMIN", format!("http://127.0.0.1:{ops_port}"))
        .env("PORTCULLIS_TOKEN", TOKEN)
        .env("MAILDIR", smtp.maildir());
    let steps = run(script).await;
    follower.abort();
    assert_eq!(steps, 11, "every step ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_enrols_a_passkey_uses_it_after_the_password_signs_in_by_autofill_and_the_button_and_removes_it()
 {
    let _turn = HEAVY.lock().await;
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/passkeys.py");
    // No public address: the relying party is `localhost` on the listener's port, as with the
    // embedded default.
    let app = TestApp::spawn_with(test_settings()).await;
    let port = url::Url::parse(&app.address).unwrap().port().unwrap();
    let mut script = Command::new(python());
    script
        .arg(suite)
        .env("PORTCULLIS_URL", format!("http://localhost:{port}"));
    assert_eq!(run(script).await, 7, "every step ran");
}

/// The interop virtualenv's python.
fn python() -> String {
    std::env::var("PORTCULLIS_TEST_PYTHON").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/interop-venv/bin/python"
        )
        .to_owned()
    })
}

/// Runs a browser script (screenshots to `target/screenshots/`), asserts it passed, and returns
/// how many steps it reported `ok`.
async fn run(mut script: Command) -> usize {
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    // The scripts share a module; its bytecode stays out of the source tree.
    script
        .env("SCREENSHOTS", screenshots)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let output = tokio::task::spawn_blocking(move || script.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (scripts/test.sh installs the interop venv)",
                python()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser suite failed (screenshots in target/screenshots):\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.matches("ok - ").count()
}
