//! `examples/fastapi`: the fixed app (`app.py`, under uvicorn) behind a real nginx doing forward
//! authentication (`deploy/nginx/forward-auth.conf`) against a real Portcullis with access tokens
//! on and the next key of a rotation published; the example's own suite
//! (`examples/fastapi/tests`) runs against them and must pass. And the seed's app
//! (`seed_app.py`) next to Portcullis under the same leaked list.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use portcullis_drill::plan::Plan;
use portcullis_drill::scenario::Scenario;
use portcullis_drill::{Options, Target};
use portcullis_testkit::nginx::Nginx;
use portcullis_testkit::process::{ChildGuard, free_port, wait_until};
use portcullis_testkit::replicas::Replicas;
use portcullis_testkit::{PASSWORD, TestApp, test_settings};
use secrecy::SecretString;

use crate::helpers::python;

const ISSUER: &str = "https://login.example";
const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/fastapi")
        .canonicalize()
        .unwrap()
}

fn private_pem(seed: u8) -> String {
    SigningKey::from_bytes(&[seed; 32])
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap()
        .to_string()
}

/// An app of the example (`module:app`) under uvicorn on `port`, with `env`; it reads the proxy's
/// headers itself (nginx on loopback).
pub(crate) async fn uvicorn(module: &str, port: u16, env: &[(&str, String)]) -> ChildGuard {
    let child = Command::new(python())
        .args(["-m", "uvicorn", module, "--app-dir"])
        .arg(example())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--no-proxy-headers")
        .args(["--log-level", "warning"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .spawn()
        .expect("uvicorn (scripts/test.sh installs examples/fastapi/requirements.txt)");
    let guard = ChildGuard(child);
    wait_until(
        Duration::from_secs(30),
        "uvicorn to listen",
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    guard
}

/// nginx on `port` in front of the app at `app`, with forward authentication to `portcullis`
/// everywhere but `/api/`, where the app checks access tokens itself (and passes logins on).
pub(crate) async fn front(port: u16, app: u16, portcullis: &str) -> Nginx {
    let snippet = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/nginx/forward-auth.conf")
        .canonicalize()
        .unwrap();
    let http = format!(
        "upstream portcullis {{ server {portcullis}; keepalive 8; }}\n\
         upstream app {{ server 127.0.0.1:{app}; keepalive 8; }}\n\
         server {{\n listen 127.0.0.1:{port};\n include {};\n\
           location / {{ proxy_pass http://app; }}\n\
           location /api/ {{ auth_request off; proxy_pass http://app; }}\n}}\n",
        snippet.display()
    );
    Nginx::start(&http, port).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_apps_own_suite_passes_against_portcullis_and_nginx() {
    let (nginx_port, app_port) = (free_port(), free_port());
    let next = SigningKey::from_bytes(&[43; 32])
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let mut settings = test_settings();
    settings.tokens.access.enabled = true;
    settings.tokens.access.issuer = ISSUER.to_owned();
    settings.tokens.access.extra_public_keys = next;
    settings.secrets.signing_key = Some(SecretString::from(private_pem(42)));
    settings.server.public_url = Some(format!("http://127.0.0.1:{nginx_port}"));
    settings.server.return_hosts = vec![format!("127.0.0.1:{nginx_port}")];
    // nginx and the app's pass-through login both reach it from loopback.
    settings.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let portcullis = TestApp::spawn_with(settings).await;
    assert_eq!(
        portcullis.register("fastapi-user", PASSWORD).await.status(),
        201
    );

    let _app = uvicorn(
        "app:app",
        app_port,
        &[
            ("PORTCULLIS_URL", portcullis.address.clone()),
            ("PORTCULLIS_ISSUER", ISSUER.to_owned()),
        ],
    )
    .await;
    let nginx = front(
        nginx_port,
        app_port,
        portcullis.address.trim_start_matches("http://"),
    )
    .await;

    let output = Command::new(python())
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(example().join("tests"))
        .env("APP_URL", format!("http://127.0.0.1:{nginx_port}"))
        .env("TEST_USERNAME", "fastapi-user")
        .env("TEST_PASSWORD", PASSWORD)
        .env("SIGNING_KEY_SEED", hex::encode([42u8; 32]))
        .env("NEXT_KEY_SEED", hex::encode([43u8; 32]))
        .env("ISSUER", ISSUER)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stderr);
    println!("{report}");
    assert!(
        output.status.success(),
        "examples/fastapi/tests failed:\n{report}\nnginx: {}",
        nginx.error_log()
    );
    assert!(report.contains("Ran 8 tests"), "{report}");
}

/// The seed's app and Portcullis under the same small list (`drill/scenarios/smoke-fastapi.toml`,
/// the short form of the comparison `scripts/bench-fastapi.sh` makes): the app hands over every
/// account whose password was reused, Portcullis none, and every legitimate user gets in on
/// both. Portcullis is one replica of the binary on its embedded defaults (memory store,
/// SQLite), seeded with the same accounts; it trusts the drill's address as a proxy.
#[tokio::test(flavor = "multi_thread")]
async fn the_seed_app_gives_a_leaked_list_every_reused_account_and_portcullis_none() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let scenario = Scenario::load(&root.join("drill/scenarios/smoke-fastapi.toml")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let run = |target: Target| Options {
        scenario: scenario.clone(),
        target,
        bin: BIN.into(),
        policy_off: false,
        cheap_seeding: true,
        source: None,
        out_dir: work.path().to_owned(),
    };

    // Before: the seed's app, with the scenario's accounts (what `portcullis-drill accounts`
    // prints).
    let users = work.path().join("users.csv");
    let lines: String = Plan::new(&scenario)
        .accounts
        .iter()
        .map(|a| format!("{},{}\n", a.username, a.password))
        .collect();
    std::fs::write(&users, lines).unwrap();
    let port = free_port();
    let seed_app = uvicorn(
        "seed_app:app",
        port,
        &[("SEED_USERS", users.display().to_string())],
    )
    .await;
    let url = format!("http://127.0.0.1:{port}");
    let before = portcullis_drill::run(&run(Target::PlainApp { url }))
        .await
        .unwrap();
    drop(seed_app);

    // After: Portcullis.
    let database = format!("sqlite://{}/portcullis.db?mode=rwc", work.path().display());
    let replicas = Replicas::spawn(
        Path::new(BIN),
        1,
        &[
            ("PORTCULLIS__DATABASE__URL", database.clone()),
            (
                "PORTCULLIS__SERVER__TRUSTED_PROXIES",
                "127.0.0.1".to_owned(),
            ),
        ],
    )
    .await;
    let after = portcullis_drill::run(&run(Target::Running {
        url: replicas.url(0, ""),
        policy_off_url: None,
        seed_env: vec![("PORTCULLIS__DATABASE__URL".to_owned(), database)],
    }))
    .await
    .unwrap();

    println!("{}\n{}", before.table(), after.table());
    let ([before], [after]) = (before.runs.as_slice(), after.runs.as_slice()) else {
        panic!("one run each");
    };
    assert!(
        !before.policy,
        "the seed's app is reported as the policy-off run"
    );
    let hits = before.attacker.hits_in_list;
    assert!(hits > 0);
    assert_eq!(
        before.attacker.compromised_accounts, hits,
        "the seed's app gives every one away"
    );
    assert_eq!(after.attacker.compromised_accounts, 0, "Portcullis none");
    assert!(
        after.verified() < before.verified(),
        "and checks fewer guesses"
    );
    for run in [before, after] {
        assert!(run.legit.logins > 0);
        assert_eq!(
            run.legit.success_rate, 1.0,
            "every legitimate login gets in"
        );
    }
}
