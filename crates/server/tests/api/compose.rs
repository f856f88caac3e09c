//! The compose stack for real: `docker-compose.yml` with the local images (`scripts/images.sh`
//! writes `.env.local-images`) and `deploy/compose/drill.yml` on top: Redis, PostgreSQL, the
//! migration job, three replicas, nginx and Prometheus, as containers. The drill's
//! `smoke-challenge` scenario runs against it through nginx, Prometheus must scrape all three
//! replicas, and nginx's HTTPS port must answer with the dev certificate.
//!
//! Faults, each in a stack of its own under the drill's `smoke-rolling` load
//! (`docs/failure-modes.md`, "Faults under load"):
//! - the replicas restart one at a time, and no login may fail;
//! - one replica is cut off from Redis (the `cache` network) and heals;
//! - with `deploy/compose/sentinel.yml`, the Redis primary is killed and Sentinel fails over;
//! - every replica's Redis link gets 50 ms slower (`tests/compose/redis-link.yml`, a
//!   [`SlowLink`] in this process);
//! - 5% of the packets to and from Redis are dropped (nftables inside its network namespace);
//! - PostgreSQL stops and starts.
//!
//! `docker-compose down -v` runs whatever happens (the stack's `Drop`); one stack at a time,
//! since they publish the same ports. What the stacks and the drills said goes to
//! `target/compose-test/` (scripts/test.sh prints it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use portcullis_drill::report::{DrillReport, RunReport};
use tokio::task::JoinHandle;

use portcullis_drill::scenario::Scenario;
use portcullis_drill::{Options, Target};
use portcullis_testkit::container::{docker_answers, local_images};
use portcullis_testkit::link::SlowLink;
use portcullis_testkit::process::{free_port, wait_until};
use portcullis_testkit::{PASSWORD, random_hex};

use crate::helpers::HEAVY;
use crate::https::{curl, dev_certs};
use crate::local_stack::query;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
/// nginx's published HTTP port.
const NGINX: &str = "http://127.0.0.1:8080";
/// The stack's replicas, as compose names them.
const REPLICAS: [&str; 3] = ["replica1", "replica2", "replica3"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh directory under `target/compose-test/` for what a test's stack and drill say.
fn out_dir(name: &str) -> PathBuf {
    let out = repo().join("target/compose-test").join(name);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    out
}

/// A compose project of the test's own, taken down with its volumes when dropped.
struct Stack {
    project: String,
    /// Compose files on top of docker-compose.yml and deploy/compose/drill.yml.
    overlays: Vec<&'static str>,
    env: Vec<(String, String)>,
    certs: tempfile::TempDir,
    /// Where what the stack said goes.
    out: PathBuf,
}

impl Stack {
    fn up(out: &Path) -> Self {
        Self::up_with(out, &[], &[])
    }

    /// [`Stack::up`] with more compose files (`deploy/compose/sentinel.yml`) on top, and the
    /// variables they read.
    fn up_with(out: &Path, overlays: &[&'static str], variables: &[(&str, String)]) -> Self {
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
        env.extend(variables.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let stack = Self {
            project: std::env::var("PORTCULLIS_TEST_COMPOSE_PROJECT")
                .unwrap_or_else(|_| format!("portcullis-test-{}", random_hex(4))),
            overlays: overlays.to_vec(),
            env,
            certs,
            out: out.to_owned(),
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
            .args(
                self.overlays
                    .iter()
                    .flat_map(|o| ["-f".into(), repo.join(o)]),
            )
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

    /// Waits until nginx answers on its published port.
    async fn wait_for_nginx(&self, client: &reqwest::Client) {
        wait_until(Duration::from_secs(60), "nginx to answer", || async {
            client
                .get(format!("{NGINX}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
    }

    /// The drill's `scenario` against this stack: it seeds its accounts into the stack's
    /// PostgreSQL, then logs in and attacks through nginx.
    fn drill(&self, scenario: &str, out: &Path) -> Options {
        let database = format!(
            "postgres://portcullis:{}@127.0.0.1:{}/portcullis",
            self.secret("POSTGRES_PASSWORD"),
            self.port("postgres", "5432")
        );
        let path = repo().join(format!("drill/scenarios/{scenario}.toml"));
        Options {
            scenario: Scenario::load(&path).unwrap(),
            target: Target::Running {
                url: NGINX.to_owned(),
                policy_off_url: None,
                seed_env: vec![
                    ("PORTCULLIS__DATABASE__URL".to_owned(), database),
                    (
                        "PORTCULLIS__SECRETS__HMAC_KEY".to_owned(),
                        self.secret("PORTCULLIS_HMAC_KEY").to_owned(),
                    ),
                ],
            },
            bin: BIN.into(),
            policy_off: false,
            cheap_seeding: true,
            source: None,
            out_dir: out.to_owned(),
        }
    }

    /// The drill's `smoke-rolling` load through nginx, in the background, once users are
    /// logging in (replica1's own count, on its published admin port): the load a fault is
    /// injected under.
    async fn under_load(&self, out: &Path) -> JoinHandle<anyhow::Result<DrillReport>> {
        let client = reqwest::Client::new();
        self.wait_for_nginx(&client).await;
        let options = self.drill("smoke-rolling", out);
        let drill = tokio::spawn(async move { portcullis_drill::run(&options).await });
        wait_until(Duration::from_secs(120), "logins under way", || async {
            logins_served(&client).await >= 20.0
        })
        .await;
        drill
    }

    /// Restarts `service` (it drains first: compose's stop waits for it) and waits until its
    /// healthcheck passes again.
    async fn restart(&self, service: &str) {
        let output = self.compose(&["restart", "-t", "40", service]);
        assert!(
            output.status.success(),
            "docker-compose restart {service}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        wait_until(
            Duration::from_secs(60),
            "the restarted replica healthy",
            || {
                let healthy = self.status(service).ends_with("(healthy)");
                async move { healthy }
            },
        )
        .await;
    }

    /// Kills a service's container at once (SIGKILL), as a crash or a lost host would.
    fn kill(&self, service: &str) {
        docker(&["kill", &self.container(service)]);
    }

    /// Drops `percent` of the packets to and from Redis's port inside a service's network
    /// namespace (nftables, entered from the host with nsenter), or stops dropping them.
    fn packet_loss(&self, service: &str, percent: Option<u8>) {
        let pid = docker(&[
            "inspect",
            "--format",
            "{{.State.Pid}}",
            &self.container(service),
        ]);
        let rules = match percent {
            Some(percent) => format!(
                "table inet portcullis_loss {{\n\
                   chain input {{ type filter hook input priority 0; tcp dport 6379 numgen random mod 100 < {percent} drop; }}\n\
                   chain output {{ type filter hook output priority 0; tcp sport 6379 numgen random mod 100 < {percent} drop; }}\n\
                 }}\n"
            ),
            None => "delete table inet portcullis_loss\n".to_owned(),
        };
        let mut nft = Command::new("nsenter")
            .args(["-t", &pid, "-n", "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("nsenter (util-linux) and nft (nftables)");
        std::io::Write::write_all(&mut nft.stdin.take().unwrap(), rules.as_bytes()).unwrap();
        let output = nft.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "nft in {service}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// How many times the replicas' Redis breakers have opened, in all (each replica's own
    /// metrics, asked inside it).
    fn degradations(&self) -> f64 {
        REPLICAS
            .iter()
            .map(|replica| {
                let metrics = self.exec(replica, &["curl", "-s", "http://127.0.0.1:9090/metrics"]);
                metrics
                    .lines()
                    .find_map(|line| line.strip_prefix("portcullis_store_degradations_total "))
                    .and_then(|n| n.parse::<f64>().ok())
                    .unwrap_or(0.0)
            })
            .sum()
    }

    /// A service's addresses, on each of its networks.
    fn addresses(&self, service: &str) -> Vec<String> {
        let format = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}";
        docker(&["inspect", "--format", format, &self.container(service)])
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// A command's output, run in a service's container.
    fn exec(&self, service: &str, command: &[&str]) -> String {
        let output = Command::new("docker")
            .args(["exec", &self.container(service)])
            .args(command)
            .output()
            .expect("docker exec");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The id of a service's container.
    fn container(&self, service: &str) -> String {
        let output = self.compose(&["ps", "-q", service]);
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// What a replica's `/readyz` answers, asked from inside its container.
    fn readyz(&self, service: &str) -> String {
        self.exec(service, &["curl", "-s", "http://127.0.0.1:8080/readyz"])
    }

    /// Cuts a service off the cache network (Redis), or joins it again.
    fn cache_network(&self, service: &str, connected: bool) {
        let verb = if connected { "connect" } else { "disconnect" };
        let network = format!("{}_cache", self.project);
        docker(&["network", verb, &network, &self.container(service)]);
    }

    /// The `docker ps` status of a service's container.
    fn status(&self, service: &str) -> String {
        let output = Command::new("docker")
            .args(["ps", "--format", "{{.Status}}"])
            .arg("--filter")
            .arg(format!("label=com.docker.compose.project={}", self.project))
            .arg("--filter")
            .arg(format!("label=com.docker.compose.service={service}"))
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
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
        // nginx's complaints (its access log would be every request).
        let logs = self.compose(&["logs", "--no-color", "nginx"]);
        let complaints: String = String::from_utf8_lossy(&logs.stdout)
            .lines()
            .filter(|line| line.contains("[error]") || line.contains("[warn]"))
            .map(|line| format!("{line}\n"))
            .collect();
        let _ = std::fs::write(self.out.join("nginx-errors.log"), complaints);
        if !self.overlays.is_empty() {
            let logs = self.compose(&["logs", "--no-color", "redis-replica", "sentinel1"]);
            let _ = std::fs::write(self.out.join("sentinel.log"), &logs.stdout);
        }
        let _ = self.compose(&["down", "-v", "--remove-orphans"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_stack_holds_a_drill_is_scraped_by_prometheus_and_serves_https() {
    let _turn = HEAVY.lock().await;
    let out = out_dir("drill");
    let stack = Stack::up(&out);
    let client = reqwest::Client::new();
    stack.wait_for_nginx(&client).await;
    let report = portcullis_drill::run(&stack.drill("smoke-challenge", &out))
        .await
        .unwrap();
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

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_of_the_replicas_under_load_fails_no_login() {
    let _turn = HEAVY.lock().await;
    let out = out_dir("rolling");
    let stack = Stack::up(&out);
    let drill = stack.under_load(&out).await;
    // Each replica in turn is stopped (it drains, then its in-flight logins finish) and started.
    let hammer = Hammer::start(8);
    let mut restarted = Vec::new();
    for replica in REPLICAS {
        stack.restart(replica).await;
        restarted.push(format!("{replica}: restarted, healthy again"));
    }
    let answers = hammer.stop().await;
    restarted.push(format!(
        "malformed logins sent flat out meanwhile, by answer: {answers:?}"
    ));
    let (run, table) = outcome(drill, &out, &restarted.join("\n")).await;
    // No login failed, the attacker's included: nothing answered 5xx or dropped a connection.
    // The spray's counts outlived every replica: from its fourth username on it was refused or
    // challenged, so three guesses at most reached a password.
    assert_held(&run, &table, 3);
    assert_eq!(run.attacker.attempts, 50, "{table}");
    assert_eq!(run.attacker.compromised_accounts, 0, "{table}");
    // Flat out, every request got its answer: without the drain and nginx's shorter
    // keep-alive, 29% were 502; without nginx sending on a POST that a stopping replica never
    // read (a connection still in its listen backlog as it closed), 1 to 6 in 35 000 to 50 000
    // were (docs/failure-modes.md).
    let answered = answers.get("400").copied().unwrap_or(0);
    let total: usize = answers.values().sum();
    assert!(answered >= 1_000, "{answers:?}");
    assert_eq!(answered, total, "{answers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_cut_off_from_redis_decides_alone_and_rejoins_when_the_link_heals() {
    let _turn = HEAVY.lock().await;
    let out = out_dir("partition");
    let stack = Stack::up(&out);
    let drill = stack.under_load(&out).await;
    // replica1 loses Redis for 20 s; PostgreSQL, nginx and the other replicas still reach it.
    stack.cache_network("replica1", false);
    let cut = Instant::now();
    wait_until(Duration::from_secs(60), "replica1 degraded", || {
        let degraded = stack.readyz("replica1").contains("degraded");
        async move { degraded }
    })
    .await;
    let degraded_after = cut.elapsed();
    for other in ["replica2", "replica3"] {
        let answer = stack.readyz(other);
        assert!(answer.contains(r#""ready""#), "{other}: {answer}");
    }
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(cut.elapsed())).await;
    stack.cache_network("replica1", true);
    let healed = Instant::now();
    wait_until(Duration::from_secs(60), "replica1 ready again", || {
        let ready = stack.readyz("replica1").contains(r#""ready""#);
        async move { ready }
    })
    .await;
    let ready_after = healed.elapsed();
    let fault = format!(
        "replica1 cut off from Redis for 20 s: degraded after {:.1} s, ready {:.1} s after the link healed",
        degraded_after.as_secs_f64(),
        ready_after.as_secs_f64()
    );
    let (run, table) = outcome(drill, &out, &fault).await;
    // store.on_error = local: replica1 decided alone, so no login failed and nothing answered
    // 5xx. The spray's guesses through it counted against its own limits only, which admit
    // three more, and the guess in flight as the link went may reach neither count: at most 4
    // more than the 3 without the fault (6 and 7 seen; a hit among them is compromised).
    assert_held(&run, &table, 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_primary_killed_under_load_is_failed_over_by_sentinel_and_followed() {
    let _turn = HEAVY.lock().await;
    let out = out_dir("failover");
    let stack = Stack::up_with(&out, &["deploy/compose/sentinel.yml"], &[]);
    let drill = stack.under_load(&out).await;
    let primary = || {
        let answer = stack.exec(
            "sentinel1",
            &[
                "redis-cli",
                "-p",
                "26379",
                "sentinel",
                "get-master-addr-by-name",
                "portcullis",
            ],
        );
        answer.lines().next().unwrap_or_default().to_owned()
    };
    // deploy/compose/sentinel.yml's fixed addresses: Redis, then its replica.
    assert_eq!(primary(), "10.203.1.100");
    stack.kill("redis");
    let killed = Instant::now();
    // A split vote waits out twice the failover timeout (10 s) before the next election.
    wait_until(Duration::from_secs(90), "the Sentinels to promote", || {
        let promoted = primary() == "10.203.1.101";
        async move { promoted }
    })
    .await;
    let promoted_after = killed.elapsed();
    // Every replica finds the new primary through the Sentinels on its own, with no restart:
    // each is ready and connected to it.
    wait_until(
        Duration::from_secs(60),
        "every replica on the new primary",
        || {
            let clients = stack.exec("redis-replica", &["redis-cli", "client", "list"]);
            let on_it = REPLICAS.iter().all(|replica| {
                stack.readyz(replica).contains(r#""ready""#)
                    && stack
                        .addresses(replica)
                        .iter()
                        .any(|ip| clients.contains(&format!("addr={ip}:")))
            });
            async move { on_it }
        },
    )
    .await;
    let followed_after = killed.elapsed();
    let fault = format!(
        "Redis primary killed: the Sentinels promoted its replica after {:.1} s; all three \
         replicas ready and counting on it after {:.1} s",
        promoted_after.as_secs_f64(),
        followed_after.as_secs_f64()
    );
    let (run, table) = outcome(drill, &out, &fault).await;
    // store.on_error = local while no primary answered: every attempt was decided, no login
    // failed and nothing answered 5xx. The spray's guesses in those seconds counted on each
    // replica alone (three more each at most, and one in flight each as the primary went).
    assert_held(&run, &table, 15);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_under_load_sheds_logins_locks_nobody_and_loses_nothing() {
    let _turn = HEAVY.lock().await;
    let out = out_dir("postgres");
    let stack = Stack::up(&out);
    let client = reqwest::Client::new();
    stack.wait_for_nginx(&client).await;
    // An account of the test's own, signed in before the fault.
    let member = Member::join(&client).await;
    let login = |password: &'static str| member.login(&client, password);
    let drill = stack.under_load(&out).await;
    let accounts = || {
        stack.exec(
            "postgres",
            &[
                "psql",
                "-U",
                "portcullis",
                "-tAc",
                "SELECT count(*) FROM accounts",
            ],
        )
    };
    let before = accounts();

    let stop = stack.compose(&["stop", "postgres"]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let stopped = Instant::now();
    // Wrong passwords while the database is away: each is shed with 503 before it is verified,
    // and none counts toward the account's lockout (5 failures).
    let mut shed = Vec::new();
    for _ in 0..6 {
        let answer = login("not-the-password").await.unwrap();
        let retry = answer.headers().contains_key("retry-after");
        shed.push((
            answer.status().as_u16(),
            retry,
            answer.text().await.unwrap(),
        ));
    }
    assert!(
        shed.iter()
            .all(|(status, retry, _)| *status == 503 && *retry),
        "{shed:?}"
    );
    let shed: Vec<u16> = shed.into_iter().map(|(status, ..)| status).collect();
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed())).await;
    let start = stack.compose(&["start", "postgres"]);
    assert!(
        start.status.success(),
        "{}",
        String::from_utf8_lossy(&start.stderr)
    );
    let started = Instant::now();
    // The first login the database answers again gets in: the 503s locked nothing.
    let first = std::cell::Cell::new(0);
    wait_until(Duration::from_secs(60), "logins answered again", || {
        let (answer, first) = (login(PASSWORD), &first);
        async move {
            first.set(answer.await.map_or(503, |a| a.status().as_u16()));
            first.get() != 503
        }
    })
    .await;
    assert_eq!(first.get(), 200, "the right password after the outage");
    let fault = format!(
        "PostgreSQL stopped for {:.1} s; logins answered again {:.1} s after it started; six wrong passwords meanwhile answered {shed:?}",
        (started - stopped).as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    // The session from before the fault is still valid, and nothing was lost.
    let valid = client
        .get(format!("{NGINX}/v1/session"))
        .bearer_auth(&member.token)
        .send()
        .await
        .unwrap();
    assert_eq!(valid.status(), 200, "{:?}", valid.text().await);
    assert_eq!(accounts(), before, "accounts before and after the restart");
    let (run, table) = outcome(drill, &out, &fault).await;
    // The users' logins during the outage were shed (503), never refused as failures: nobody
    // was locked out or throttled, and the spray gained nothing.
    assert!(run.legit.logins >= 150, "{table}");
    assert_eq!(run.legit.locked_out, 0, "{table}");
    assert!(run.legit.succeeded * 10 >= run.legit.logins * 7, "{table}");
    assert_eq!(run.attacker.errors, 0, "{table}");
    assert!(run.attacker.failed + run.attacker.succeeded <= 3, "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_ms_more_on_every_replicas_redis_link_costs_its_round_trips_and_never_flaps() {
    let _turn = HEAVY.lock().await;
    let out = out_dir("latency");
    let redis_port = free_port();
    let link = SlowLink::start(0, format!("127.0.0.1:{redis_port}")).await;
    let stack = Stack::up_with(
        &out,
        &["crates/server/tests/compose/redis-link.yml"],
        &[
            ("PORTCULLIS_TEST_LINK_PORT", link.port.to_string()),
            ("PORTCULLIS_TEST_REDIS_PORT", redis_port.to_string()),
        ],
    );
    let client = reqwest::Client::new();
    stack.wait_for_nginx(&client).await;
    let mut members = Vec::new();
    for _ in 0..4 {
        members.push(Member::join(&client).await);
    }
    let drill = stack.under_load(&out).await;
    let opened_before = stack.degradations();
    // The members log in from their devices in turn, one every 300 ms (each below its device's
    // one a second): first on the plain link, then with 50 ms added to every round trip to Redis.
    let probe = |secs: u64| {
        let (client, members) = (&client, &members);
        async move {
            let until = Instant::now() + Duration::from_secs(secs);
            let (mut millis, mut statuses) = (Vec::new(), Vec::new());
            for member in members.iter().cycle() {
                if Instant::now() >= until {
                    break;
                }
                let sent = Instant::now();
                let status = member.login(client, PASSWORD).await.map(|a| a.status());
                millis.push(sent.elapsed().as_secs_f64() * 1_000.0);
                statuses.push(status.map_or(0, |s| s.as_u16()));
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            millis.sort_by(f64::total_cmp);
            (millis, statuses)
        }
    };
    let (plain, plain_statuses) = probe(12).await;
    link.set_delay(Duration::from_millis(50));
    let (slowed, slowed_statuses) = probe(20).await;
    link.set_delay(Duration::ZERO);
    let opened = stack.degradations() - opened_before;
    let at = |millis: &[f64], q: f64| millis[((millis.len() - 1) as f64 * q).round() as usize];
    let fault = format!(
        "50 ms added to every round trip on every replica's Redis link for 20 s: the members' \
         logins took p50 {:.0} ms / p99 {:.0} ms on the plain link ({} logins) and p50 {:.0} ms \
         / p99 {:.0} ms on the slow one ({} logins); the replicas' breakers opened {opened} times",
        at(&plain, 0.5),
        at(&plain, 0.99),
        plain.len(),
        at(&slowed, 0.5),
        at(&slowed, 0.99),
        slowed.len()
    );
    let (run, table) = outcome(drill, &out, &fault).await;
    // With the drill overlay's 2 s timeout, a 50 ms slower Redis is only slower: no breaker
    // opened, every login got in, nothing answered 5xx, and the spray met the shared counts.
    assert!(
        plain_statuses
            .iter()
            .chain(&slowed_statuses)
            .all(|s| *s == 200),
        "{plain_statuses:?} {slowed_statuses:?}"
    );
    assert_eq!(opened, 0.0, "{fault}");
    assert_held(&run, &table, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn five_percent_packet_loss_to_redis_fails_no_login_and_the_replicas_converge_after() {
    let _turn = HEAVY.lock().await;
    let out = out_dir("loss");
    let stack = Stack::up(&out);
    let drill = stack.under_load(&out).await;
    let opened_before = stack.degradations();
    // 5% of the packets to and from Redis's port dropped inside Redis's own network namespace,
    // both ways, for 30 s: every replica's link loses them.
    stack.packet_loss("redis", Some(5));
    tokio::time::sleep(Duration::from_secs(30)).await;
    stack.packet_loss("redis", None);
    let healed = Instant::now();
    wait_until(Duration::from_secs(60), "every replica ready", || {
        let ready = REPLICAS
            .iter()
            .all(|r| stack.readyz(r).contains(r#""ready""#));
        async move { ready }
    })
    .await;
    let ready_after = healed.elapsed();
    let opened = stack.degradations() - opened_before;
    let fault = format!(
        "5% of packets to and from Redis dropped for 30 s: the replicas' breakers opened \
         {opened} times; all three ready when it ended (asked within {:.1} s)",
        ready_after.as_secs_f64()
    );
    let (run, table) = outcome(drill, &out, &fault).await;
    // TCP resends what was lost, so with the drill overlay's 2 s timeout a lost packet costs a
    // retransmission's wait: every login got in and nothing answered 5xx. A breaker that opened
    // meanwhile counted locally (store.on_error = local), and the shared count went on after.
    assert_held(&run, &table, 15);
}

/// An account of the test's own on a stack, signed in once: its session's token, and its device
/// cookie, so that its later logins come from a known device, which goes unchallenged when the
/// drill's spray trips the under-attack signal.
struct Member {
    username: String,
    device: String,
    token: String,
}

impl Member {
    async fn join(client: &reqwest::Client) -> Self {
        let username = format!("member-{}", random_hex(4));
        let body = serde_json::json!({"username": username, "password": PASSWORD});
        let created = client
            .post(format!("{NGINX}/v1/users"))
            .header("x-forwarded-for", "198.51.100.77")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "{:?}", created.text().await);
        let first = client
            .post(format!("{NGINX}/v1/login"))
            .header("x-forwarded-for", "198.51.100.77")
            .json(&body)
            .send()
            .await
            .unwrap();
        let device = first.headers()["set-cookie"].to_str().unwrap();
        let device = device.split(';').next().unwrap().to_owned();
        let session: serde_json::Value = first.json().await.unwrap();
        let token = session["token"].as_str().unwrap().to_owned();
        Self {
            username,
            device,
            token,
        }
    }

    /// A login from the member's device.
    fn login(
        &self,
        client: &reqwest::Client,
        password: &str,
    ) -> impl Future<Output = reqwest::Result<reqwest::Response>> + use<> {
        client
            .post(format!("{NGINX}/v1/login"))
            .header("x-forwarded-for", "198.51.100.77")
            .header("cookie", &self.device)
            .json(&serde_json::json!({"username": self.username, "password": password}))
            .send()
    }
}

/// Runs the docker CLI, failing the test with what it said unless it succeeds; its output.
fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().expect("docker");
    assert!(
        output.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// What a fault must leave the drill's run: every legitimate login got in, the attacker met no
/// 5xx and no dropped connection, and at most `guesses` of the spray's guesses reached a password.
fn assert_held(run: &RunReport, table: &str, guesses: usize) {
    assert!(run.legit.logins >= 150, "{table}");
    assert_eq!(run.legit.succeeded, run.legit.logins, "{table}");
    assert_eq!(run.attacker.errors + run.attacker.shed, 0, "{table}");
    assert!(
        run.attacker.failed + run.attacker.succeeded <= guesses,
        "{table}"
    );
}

/// The drill's run under a fault, once the fault is over (the drill must still be running, or
/// the fault was not under load), and its table, written to `out` after what the fault did.
async fn outcome(
    drill: JoinHandle<anyhow::Result<DrillReport>>,
    out: &Path,
    fault: &str,
) -> (RunReport, String) {
    assert!(!drill.is_finished(), "the drill ended before the fault did");
    let report = drill.await.unwrap().unwrap();
    let table = report.table();
    std::fs::write(out.join("drill.txt"), format!("{fault}\n{table}")).unwrap();
    let Ok::<[RunReport; 1], _>([run]) = report.runs.try_into() else {
        panic!("one run expected: {table}");
    };
    (run, table)
}

/// Malformed logins (400 before anything counts) sent through nginx flat out, on `workers`
/// connections: the POSTs a rolling restart must not fail, many more than the drill sends.
struct Hammer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Hammer {
    fn start(workers: usize) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = (0..workers)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut answers = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let answer = client
                            .post(format!("{NGINX}/v1/login"))
                            .header("content-type", "application/json")
                            .body("{}")
                            .send()
                            .await;
                        answers.push(match answer {
                            Ok(answer) => answer.status().as_str().to_owned(),
                            Err(error) => format!("error: {error}"),
                        });
                    }
                    answers
                })
            })
            .collect();
        Self { stop, workers }
    }

    /// Stops sending; the answers by status (or error).
    async fn stop(self) -> std::collections::BTreeMap<String, usize> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut counts = std::collections::BTreeMap::new();
        for worker in self.workers {
            for answer in worker.await.unwrap() {
                *counts.entry(answer).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// The logins replica1 has answered since it started (`portcullis_logins_total`, summed).
async fn logins_served(client: &reqwest::Client) -> f64 {
    let Ok(answer) = client.get("http://127.0.0.1:9090/metrics").send().await else {
        return 0.0;
    };
    let text = answer.text().await.unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with("portcullis_logins_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
