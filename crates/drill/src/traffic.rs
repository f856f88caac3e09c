//! Sends a plan's traffic: the attacker's list from its workers, at a set rate or flat out,
//! and legitimate users' logins at their own rate until the attacker is done. Every request's
//! outcome and latency is kept as a [`Sample`] for the report.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::ProgressBar;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, SET_COOKIE};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::plan::{Plan, SplitMix64};
use crate::scenario::Scenario;

/// What the server did with one login request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// 200: logged in.
    Succeeded,
    /// 401: the password was checked and was wrong (or the account does not exist).
    Failed,
    /// 429 or 423: refused before any password hashing.
    Refused,
    /// 503: the server shed the request (hashing queue full, store or database down).
    Shed,
    /// Any other answer, or none.
    Error,
}

impl Outcome {
    fn from_status(status: StatusCode) -> Self {
        match status.as_u16() {
            200 => Self::Succeeded,
            401 => Self::Failed,
            423 | 429 => Self::Refused,
            503 => Self::Shed,
            _ => Self::Error,
        }
    }
}

/// Who sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// Pair `n` of the attacker's list.
    Attacker(usize),
    /// Legitimate user `n`.
    Legit(usize),
}

/// One request.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Who sent it.
    pub sender: Sender,
    /// What came back.
    pub outcome: Outcome,
    /// When it was sent, from the start of the run.
    pub sent_at: Duration,
    /// How long the answer took.
    pub latency: Duration,
}

/// One legitimate login: a user wanting in, perhaps after a typo.
#[derive(Clone, Copy, Debug, Default)]
pub struct Intent {
    /// From a new device (no device cookie).
    pub new_device: bool,
    /// The first try had a typo.
    pub typo: bool,
    /// The user got in.
    pub succeeded: bool,
    /// A try was refused (429/423): the user was locked out or throttled.
    pub refused: bool,
}

/// Everything a run sent and got back.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Every request of the run proper (warm-up excluded).
    pub samples: Vec<Sample>,
    /// Legitimate users' logins.
    pub intents: Vec<Intent>,
    /// Legitimate users who got no device cookie in the warm-up.
    pub warm_up_failures: usize,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// From the first request to the attacker's last answer.
    pub attack_elapsed: Duration,
}

/// The HTTP side of a run: one connection pool, the target and how to name a client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    login_url: String,
}

/// One login's answer.
struct Answer {
    outcome: Outcome,
    latency: Duration,
    /// `name=value` of the cookie a successful login set (the device cookie).
    cookie: Option<String>,
}

impl Client {
    /// A client for the deployment at `base_url`, sending from `source` when given (the address
    /// the deployment trusts to report clients in `X-Forwarded-For`).
    pub fn new(base_url: &str, source: Option<IpAddr>, pool: usize) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .local_address(source)
            .pool_max_idle_per_host(pool)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            login_url: format!("{}/v1/login", base_url.trim_end_matches('/')),
        })
    }

    async fn login(
        &self,
        username: &str,
        password: &str,
        client: IpAddr,
        cookie: Option<&str>,
    ) -> Answer {
        let started = Instant::now();
        let mut request = self
            .http
            .post(&self.login_url)
            .header("x-forwarded-for", client.to_string())
            .json(&serde_json::json!({ "username": username, "password": password }));
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        let (outcome, cookie) = match request.send().await {
            Ok(response) => {
                let outcome = Outcome::from_status(response.status());
                let cookie = response
                    .headers()
                    .get(SET_COOKIE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(';').next())
                    .map(str::to_owned);
                // Read the body so the connection goes back to the pool.
                let body = response.bytes().await;
                (
                    if body.is_ok() {
                        outcome
                    } else {
                        Outcome::Error
                    },
                    cookie,
                )
            }
            Err(_) => (Outcome::Error, None),
        };
        Answer {
            outcome,
            latency: started.elapsed(),
            cookie,
        }
    }
}

/// Runs `plan`: legitimate users get their device cookies first, then the attacker and the
/// legitimate users go at once, the users until the attacker is done and `legit.min_secs` have
/// passed; `progress` counts the attacker's requests.
pub async fn run(
    client: &Client,
    scenario: &Scenario,
    plan: Arc<Plan>,
    progress: &ProgressBar,
) -> Traffic {
    let cookies = warm_up(client, &plan).await;
    let warm_up_failures = cookies.iter().filter(|c| c.is_none()).count();
    let start = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let legit = tokio::spawn(legit_users(
        client.clone(),
        scenario.clone(),
        plan.clone(),
        Arc::new(cookies),
        start,
        done.clone(),
    ));
    let mut samples = attacker(client, scenario, plan, start, progress).await;
    let attack_elapsed = start.elapsed();
    tokio::time::sleep_until(start + Duration::from_secs_f64(scenario.legit.min_secs)).await;
    done.store(true, Ordering::Relaxed);
    let (legit_samples, intents) = legit.await.unwrap_or_default();
    let elapsed = start.elapsed();
    samples.extend(legit_samples);
    samples.sort_by_key(|s| s.sent_at);
    Traffic {
        samples,
        intents,
        warm_up_failures,
        elapsed,
        attack_elapsed,
    }
}

/// Each legitimate user logs in once from their known device, which sets its device cookie.
async fn warm_up(client: &Client, plan: &Plan) -> Vec<Option<String>> {
    let mut logins = JoinSet::new();
    for (index, user) in plan.legit.iter().enumerate() {
        let (client, account) = (client.clone(), plan.accounts[user.account].clone());
        let home = user.home;
        logins.spawn(async move {
            let answer = client
                .login(&account.username, &account.password, home, None)
                .await;
            (
                index,
                answer
                    .cookie
                    .filter(|_| answer.outcome == Outcome::Succeeded),
            )
        });
    }
    let mut cookies = vec![None; plan.legit.len()];
    while let Some(Ok((index, cookie))) = logins.join_next().await {
        cookies[index] = cookie;
    }
    cookies
}

/// The attacker's workers: each takes the next pair of the list until it is exhausted.
async fn attacker(
    client: &Client,
    scenario: &Scenario,
    plan: Arc<Plan>,
    start: Instant,
    progress: &ProgressBar,
) -> Vec<Sample> {
    let next = Arc::new(AtomicUsize::new(0));
    let rate = scenario.attacker.rate;
    let mut workers = JoinSet::new();
    for _ in 0..scenario.attacker.concurrency {
        let (client, plan, next, progress) =
            (client.clone(), plan.clone(), next.clone(), progress.clone());
        workers.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(attempt) = plan.attacks.get(n) else {
                    break;
                };
                if rate > 0.0 {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rate))
                        .await;
                }
                let sent_at = start.elapsed();
                let answer = client
                    .login(&attempt.username, &attempt.password, attempt.source, None)
                    .await;
                samples.push(Sample {
                    sender: Sender::Attacker(n),
                    outcome: answer.outcome,
                    sent_at,
                    latency: answer.latency,
                });
                progress.inc(1);
            }
            samples
        });
    }
    let mut samples = Vec::new();
    while let Some(Ok(worker)) = workers.join_next().await {
        samples.extend(worker);
    }
    samples
}

/// Legitimate logins at `legit.rate` per second, user after user, until `done`.
async fn legit_users(
    client: Client,
    scenario: Scenario,
    plan: Arc<Plan>,
    cookies: Arc<Vec<Option<String>>>,
    start: Instant,
    done: Arc<AtomicBool>,
) -> (Vec<Sample>, Vec<Intent>) {
    let mut intents = JoinSet::new();
    if !plan.legit.is_empty() {
        for n in 0usize.. {
            tokio::time::sleep_until(
                start + Duration::from_secs_f64(n as f64 / scenario.legit.rate),
            )
            .await;
            if done.load(Ordering::Relaxed) {
                break;
            }
            let mut rng =
                SplitMix64(scenario.seed ^ (n as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
            let intent = Intent {
                new_device: rng.chance(scenario.legit.new_device),
                typo: rng.chance(scenario.legit.typo),
                ..Intent::default()
            };
            intents.spawn(log_in(
                client.clone(),
                plan.clone(),
                cookies.clone(),
                n % plan.legit.len(),
                intent,
                start,
            ));
        }
    }
    let (mut samples, mut done_intents) = (Vec::new(), Vec::new());
    while let Some(Ok((intent_samples, intent))) = intents.join_next().await {
        samples.extend(intent_samples);
        done_intents.push(intent);
    }
    (samples, done_intents)
}

/// One legitimate login: a typo first if the intent has one, then the right password.
async fn log_in(
    client: Client,
    plan: Arc<Plan>,
    cookies: Arc<Vec<Option<String>>>,
    user: usize,
    mut intent: Intent,
    start: Instant,
) -> (Vec<Sample>, Intent) {
    let legit = &plan.legit[user];
    let account = &plan.accounts[legit.account];
    let (address, cookie) = if intent.new_device {
        (legit.roaming, None)
    } else {
        (legit.home, cookies[user].clone())
    };
    let typo = &account.password[..account.password.len() - 1];
    let tries: &[&str] = if intent.typo {
        &[typo, &account.password]
    } else {
        &[&account.password]
    };
    let mut samples = Vec::new();
    for password in tries {
        let sent_at = start.elapsed();
        let answer = client
            .login(&account.username, password, address, cookie.as_deref())
            .await;
        samples.push(Sample {
            sender: Sender::Legit(user),
            outcome: answer.outcome,
            sent_at,
            latency: answer.latency,
        });
        intent.refused |= answer.outcome == Outcome::Refused;
        intent.succeeded = answer.outcome == Outcome::Succeeded;
    }
    (samples, intent)
}
