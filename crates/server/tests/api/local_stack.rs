//! Smoke test of `scripts/local-stack.sh`: the compose topology (Redis, PostgreSQL, migration,
//! three replicas, nginx with the shared config, optionally Prometheus) from local processes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use portcullis_testkit::PASSWORD;
use portcullis_testkit::process::{free_port, wait_until};
use portcullis_testkit::replicas::REQUEST_LINES;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// The stack, brought down (and its state removed) when dropped.
struct Stack {
    script: std::path::PathBuf,
    dir: tempfile::TempDir,
    url: String,
}

impl Stack {
    fn up(env: &[(&str, &str)]) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/local-stack.sh");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().to_string();
        let mut command = Command::new("bash");
        command.arg(&script).arg("up");
        for (key, _) in std::env::vars() {
            if key.starts_with("PORTCULLIS__") {
                command.env_remove(key);
            }
        }
        command
            .env("PORTCULLIS_STACK_DIR", dir.path().join("stack"))
            .env("PORTCULLIS_STACK_PORT", &port)
            .env("PORTCULLIS_BIN", BIN)
            .env("PORTCULLIS__ARGON2__MEMORY_KIB", "256")
            .env("PORTCULLIS__ARGON2__ITERATIONS", "1")
            .env("PORTCULLIS__LOG_LEVEL", REQUEST_LINES)
            .envs(env.iter().copied());
        let output = command.output().expect("run scripts/local-stack.sh");
        let stack = Self {
            script,
            dir,
            url: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        };
        assert!(
            output.status.success(),
            "local stack failed (is nginx installed? .ci/run installs nginx-light): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        stack
    }

    fn replica_logs(&self) -> Vec<Value> {
        (1..=3)
            .flat_map(|i| {
                let path = self.dir.path().join(format!("stack/replica{i}.log"));
                std::fs::read_to_string(path)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect::<Vec<Value>>()
            })
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("down")
            .env("PORTCULLIS_STACK_DIR", self.dir.path().join("stack"))
            .status();
    }
}

/// Registers alice through nginx (her account then knows this client's network).
async fn register_alice(client: &reqwest::Client, url: &str) {
    let registered = client
        .post(format!("{url}/v1/users"))
        .json(&json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
}

async fn login(
    client: &reqwest::Client,
    url: &str,
    spoof: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(format!("{url}/v1/login"))
        .header("x-forwarded-for", spoof)
        .json(&json!({ "username": "alice", "password": password }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn through_nginx_a_spoofed_forwarded_for_counts_against_the_real_client() {
    // Four attempts per address, so the fifth shows which address was counted.
    let stack = Stack::up(&[
        ("PORTCULLIS__POLICY__IP__ATTEMPTS__BURST", "4"),
        ("PORTCULLIS__POLICY__IP__ATTEMPTS__INTERVAL_MS", "3600000"),
    ]);
    let client = reqwest::Client::new();
    register_alice(&client, &stack.url).await;

    let ok: Value = login(&client, &stack.url, "1.1.1.1", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let token = ok["token"].as_str().expect("token through nginx");
    let session = client
        .get(format!("{}/v1/session", stack.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 200);

    assert_eq!(
        login(&client, &stack.url, "2.2.2.2", "wrong")
            .await
            .status(),
        401
    );
    assert_eq!(
        login(&client, &stack.url, "3.3.3.3", "wrong")
            .await
            .status(),
        401
    );
    assert_eq!(
        login(&client, &stack.url, "4.4.4.4", PASSWORD)
            .await
            .status(),
        429
    );

    // The log writer is non-blocking: a line may reach the file just after its response.
    let counted = || -> Vec<String> {
        stack
            .replica_logs()
            .iter()
            .filter(|l| l["span"]["path"] == "/v1/login" && l["message"] == "request finished")
            .map(|l| {
                l["span"]["client_ip"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    wait_until(Duration::from_secs(10), "four login lines", || {
        let lines = counted().len();
        async move { lines >= 4 }
    })
    .await;
    let counted = counted();
    assert_eq!(counted.len(), 4, "{counted:?}");
    assert!(counted.iter().all(|ip| ip == "127.0.0.1"), "{counted:?}");
}

/// A Prometheus HTTP API answer.
/// A Prometheus HTTP API answer; `null` while Prometheus does not answer yet (callers poll).
async fn prometheus_api(client: &reqwest::Client, url: String) -> Value {
    match client.get(url).send().await {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Prometheus' answer to an instant query: the samples' values (none while it does not
/// answer).
pub(crate) async fn query(client: &reqwest::Client, prometheus: &str, promql: &str) -> Vec<f64> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let answer = prometheus_api(client, format!("{prometheus}/api/v1/query?query={encoded}")).await;
    answer["data"]["result"]
        .as_array()
        .map(|samples| {
            samples
                .iter()
                .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn prometheus_scrapes_every_replica_with_the_alert_rules_loaded() {
    let prometheus_port = free_port().to_string();
    let stack = Stack::up(&[("PORTCULLIS_STACK_PROMETHEUS_PORT", &prometheus_port)]);
    let prometheus = format!("http://127.0.0.1:{prometheus_port}");
    let client = reqwest::Client::new();

    let rules = prometheus_api(&client, format!("{prometheus}/api/v1/rules")).await;
    let alerts: BTreeSet<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        alerts,
        BTreeSet::from([
            "PortcullisChallengesUnanswered",
            "PortcullisHashQueueShedding",
            "PortcullisMailFailing",
            "PortcullisMailGivenUp",
            "PortcullisStoreDegraded",
            "PortcullisStoreFlapping",
            "PortcullisUnderAttack"
        ])
    );

    // A failed login through nginx lands on one replica; the sum over the scraped replicas
    // shows it once every replica is up. (Alice registers first, from this client's network:
    // an unknown name from a network new to it would be challenged, not checked.)
    register_alice(&client, &stack.url).await;
    assert_eq!(
        login(&client, &stack.url, "1.1.1.1", "wrong")
            .await
            .status(),
        401
    );
    wait_until(
        Duration::from_secs(30),
        "three replicas scraped",
        || async {
            query(&client, &prometheus, r#"up{job="portcullis"}"#).await == [1.0, 1.0, 1.0]
        },
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "the failed login scraped",
        || async { query(&client, &prometheus, "sum(portcullis_logins_total)").await == [1.0] },
    )
    .await;
}
