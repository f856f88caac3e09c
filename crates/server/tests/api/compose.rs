//! The compose stack for real: `docker-compose.yml` with the local images (`scripts/images.sh`
//! writes `.env.local-images`) and `deploy/compose/drill.yml` on top: Redis, PostgreSQL, the
//! migration job, three replicas, nginx and Prometheus, as containers. The drill's
//! `smoke-challenge` scenario runs against it through nginx, Prometheus must scrape all three
//! replicas, and nginx's HTTPS port must answer with the dev certificate. `docker-compose down
//! -v` runs whatever happens (the stack's `Drop`). What the stack and the drill said goes to
//! `target/compose-test/` (scripts/test.sh prints it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use portcullis_drill::scenario::Scenario;
use portcullis_drill::{Options, Target};
use portcullis_testkit::container::{docker_answers, local_images};
use portcullis_testkit::process::wait_until;
use portcullis_testkit::random_hex;

use crate::https::{curl, dev_certs};
use crate::local_stack::query;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A compose project of the test's own, taken down with its volumes when dropped.
struct Stack {
    project: String,
    env: Vec<(String, String)>,
    certs: tempfile::TempDir,
}

impl Stack {
    fn up(out: &Path) -> Self {
        assert!(docker_answers(), "the compose test needs a Docker engine");
        let (certs, cert_dir) = dev_certs();
        let mut env = local_images();
        env.extend(
            [
                ("POSTGRES_PASSWORD", random_hex(16)),
                ("PORTCULLIS_HMAC_KEY", random_hex(32)),
                ("PORTCULLIS_ADMIN_TOKEN", random_hex(32)),
                ("PORTCULLIS_CERT_DIR", cert_dir.display().to_string()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        let stack = Self {
            project: std::env::var("PORTCULLIS_TEST_COMPOSE_PROJECT")
                .unwrap_or_else(|_| format!("portcullis-test-{}", random_hex(4))),
            env,
            certs,
        };
        // `up` waits for the replicas' healthchecks before it starts nginx (depends_on).
        let output = stack.compose(&["up", "-d"]);
        std::fs::write(out.join("up.log"), &output.stderr).unwrap();
        assert!(
            output.status.success(),
            "docker-compose up failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&stack.compose(&["logs", "--tail", "30"]).stdout)
        );
        stack
    }

    fn compose(&self, args: &[&str]) -> Output {
        let repo = repo();
        Command::new("docker-compose")
            .current_dir(&repo)
            .args(["-p", &self.project])
            .arg("-f")
            .arg(repo.join("docker-compose.yml"))
            .arg("-f")
            .arg(repo.join("deploy/compose/drill.yml"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("docker-compose (Docker Compose)")
    }

    /// `NAME STATUS` of every running container of the project.
    fn statuses(&self) -> Vec<String> {
        let output = Command::new("docker")
            .args(["ps", "--format", "{{.Names}} {{.Status}}", "--filter"])
            .arg(format!("label=com.docker.compose.project={}", self.project))
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn secret(&self, name: &str) -> &str {
        let (_, value) = self.env.iter().find(|(k, _)| k == name).unwrap();
        value
    }

    /// The loopback port a service's `port` is published on.
    fn port(&self, service: &str, port: &str) -> u16 {
        let output = self.compose(&["port", service, port]);
        let text = String::from_utf8_lossy(&output.stdout);
        text.trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{service}:{port} is not published: {text}"))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_stack_holds_a_drill_is_scraped_by_prometheus_and_serves_https() {
    let out = repo().join("target/compose-test");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let stack = Stack::up(&out);
    let url = "http://127.0.0.1:8080";
    let client = reqwest::Client::new();
    wait_until(Duration::from_secs(60), "nginx to answer", || async {
        client
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    // The drill seeds its accounts into the stack's PostgreSQL, then attacks through nginx.
    let database = format!(
        "postgres://portcullis:{}@127.0.0.1:{}/portcullis",
        stack.secret("POSTGRES_PASSWORD"),
        stack.port("postgres", "5432")
    );
    let scenario = Scenario::load(&repo().join("drill/scenarios/smoke-challenge.toml")).unwrap();
    let options = Options {
        scenario,
        target: Target::Running {
            url: url.to_owned(),
            policy_off_url: None,
            seed_env: vec![
                ("PORTCULLIS__DATABASE__URL".to_owned(), database),
                (
                    "PORTCULLIS__SECRETS__HMAC_KEY".to_owned(),
                    stack.secret("PORTCULLIS_HMAC_KEY").to_owned(),
                ),
            ],
        },
        bin: BIN.into(),
        policy_off: false,
        cheap_seeding: true,
        source: None,
        out_dir: out.clone(),
    };
    let report = portcullis_drill::run(&options).await.unwrap();
    let table = report.table();
    std::fs::write(out.join("drill.txt"), &table).unwrap();
    let [on] = report.runs.as_slice() else {
        panic!("one run expected: {table}");
    };
    // The defences hold: the spray is challenged from its fourth username and compromises
    // nothing; every legitimate user gets in. Had the replicas seen nginx's or the gateway's
    // address instead of the drill's clients, the users would be refused with the attacker.
    assert_eq!(on.attacker.compromised_accounts, 0, "{table}");
    assert!(on.attacker.challenged >= 10, "{table}");
    assert!(on.legit.logins >= 12, "{table}");
    assert_eq!(on.legit.succeeded, on.legit.logins, "{table}");

    // Prometheus scrapes all three replicas' operations listeners.
    wait_until(
        Duration::from_secs(60),
        "three replicas scraped",
        || async {
            query(&client, "http://127.0.0.1:9091", r#"up{job="portcullis"}"#).await
                == [1.0, 1.0, 1.0]
        },
    )
    .await;

    // Every image's own healthcheck passes: the seven long-running services (the migration
    // has exited) all say healthy.
    wait_until(Duration::from_secs(60), "every service healthy", || async {
        let statuses = stack.statuses();
        statuses.len() == 7 && statuses.iter().all(|s| s.ends_with("(healthy)"))
    })
    .await;

    // nginx's HTTPS port answers with the dev certificate, trusted through its CA only.
    let ca = stack.certs.path().join("ca.pem");
    let (ok, answer) =
        tokio::task::spawn_blocking(move || curl("https://localhost:8443/healthz", &ca))
            .await
            .unwrap();
    assert!(ok && answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("strict-transport-security"), "{answer}");
    std::fs::write(
        out.join("checks.txt"),
        format!(
            "prometheus: up{{job=\"portcullis\"}} = 1 on 3 replicas\nhealthchecks:\n  {}\nhttps://localhost:8443/healthz: 200 with the dev certificate\n",
            stack.statuses().join("\n  ")
        ),
    )
    .unwrap();
}
