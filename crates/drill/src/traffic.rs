//! Sends a plan's traffic: legitimate users' logins at their own rate, from `legit.lead_secs`
//! before the attack until the attacker is done; the attacker's list from its workers, at a set
//! rate or flat out, on a thread of its own so that its CPU time can be measured. Both answer
//! the challenges they are asked where they solve them (legitimate users always do). The owner
//! of a passkey-only account signs in with its passkey (options, then the answer: one sample).
//! Every request's outcome and latency is kept as a [`Sample`] for the report.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cpu_time::ThreadTime;
use indicatif::ProgressBar;
use portcullis_core::altcha::Challenge;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, RETRY_AFTER, SET_COOKIE};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::passkeys::Keyring;
use crate::plan::{Account, Plan, SplitMix64};
use crate::scenario::Scenario;
use crate::solver::{Priority, SolverHandle, SolverPool};
use crate::totp;

/// Challenges one pair or login answers at most, each harder, before the sender gives up.
const MAX_CHALLENGES_PER_TRY: usize = 3;
/// Warm-up logins in flight at once: what a hash queue absorbs without shedding.
const WARM_UP_CONCURRENCY: usize = 8;
/// Times a warm-up login shed with 503 is sent again, after the wait its `Retry-After` asks.
const WARM_UP_RETRIES: usize = 10;

/// What the server did with one login request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// 200: logged in.
    Succeeded,
    /// 401: the password was checked and was wrong (or the account does not exist).
    Failed,
    /// 401 `challenge_required` / `challenge_failed`: a proof of work asked before any hashing,
    /// or instead of the answer of a check the service came under attack during.
    Challenged,
    /// 401 `mfa_required`: the password was right; the account's second factor must follow.
    SecondFactor,
    /// 403 `password_reset_required`: the password was right but in a known leak, and the
    /// sender proved nothing more; only a reset link to the owner's address opens the account.
    ResetRequired,
    /// 429 or 423: refused before any password hashing.
    Refused,
    /// 503: the server shed the request (hashing queue full, store or database down).
    Shed,
    /// Any other answer, or none.
    Error,
}

impl Outcome {
    /// Whether the password was checked: the answer says whether it was right.
    pub fn verified(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::SecondFactor | Self::ResetRequired
        )
    }

    fn from_answer(status: StatusCode, problem: &serde_json::Value) -> Self {
        match status.as_u16() {
            200 => Self::Succeeded,
            401 if problem["challenge"].is_object() => Self::Challenged,
            401 if problem["code"] == "mfa_required" => Self::SecondFactor,
            401 => Self::Failed,
            403 if problem["code"] == "password_reset_required" => Self::ResetRequired,
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
    /// Its HTTP status (0: no answer).
    pub status: u16,
    /// The wait a 503, 429 or 423 asked for (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// The `x-request-id` it was answered with: its first half names the replica, and the
    /// whole finds its lines in the replica's log.
    pub request_id: Option<u128>,
    /// When it was sent, from the start of the run.
    pub sent_at: Duration,
    /// How long the answer took.
    pub latency: Duration,
    /// Whether it carried a device cookie (a user on a known device).
    pub known_device: bool,
    /// Whether it was a passkey sign-in (options and answer, timed together).
    pub passkey: bool,
    /// The client address it was sent for.
    pub source: IpAddr,
}

/// One legitimate login: a user wanting in, perhaps after a typo.
#[derive(Clone, Copy, Debug, Default)]
pub struct Intent {
    /// From a new device (no device cookie).
    pub new_device: bool,
    /// With a passkey (a passkey-only account; no typo).
    pub passkey: bool,
    /// The first try had a typo.
    pub typo: bool,
    /// The user got in.
    pub succeeded: bool,
    /// A try was refused (429/423): the user was locked out or throttled.
    pub refused: bool,
    /// Challenges the user solved for this login.
    pub challenges: usize,
    /// Time spent solving them (one core).
    pub solving: Duration,
}

/// A legitimate login that did not get in, or had a try refused, kept whole so that the report
/// can say why.
#[derive(Clone, Debug)]
pub struct Hindered {
    /// The user.
    pub user: usize,
    /// The login.
    pub intent: Intent,
    /// Its requests, in the order sent.
    pub requests: Vec<Sample>,
}

/// Everything a run sent and got back.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Every request of the run proper (warm-up excluded).
    pub samples: Vec<Sample>,
    /// Legitimate users' logins.
    pub intents: Vec<Intent>,
    /// Of those, the ones that did not get in or had a try refused.
    pub hindered: Vec<Hindered>,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// From the first request to the attacker's last answer.
    pub attack_elapsed: Duration,
    /// When the attacker started, from the first request.
    pub attack_started: Duration,
    /// CPU time of the attacker's threads: sending, and solving (its part of the total).
    pub attacker_cpu: Duration,
    /// Of that, solving challenges.
    pub solving_cpu: Duration,
}

/// The HTTP side of a run: one connection pool, the target and how to name a client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    login_url: String,
    mfa_url: String,
    passkey_options_url: String,
    passkey_url: String,
    source: Option<IpAddr>,
    pool: usize,
}

/// What one login request sends.
#[derive(Clone, Copy)]
struct Login<'a> {
    username: &'a str,
    /// The password, or the passkey that answers instead.
    credential: Credential<'a>,
    /// The client address, sent in `X-Forwarded-For`.
    from: IpAddr,
    /// The device cookie (`name=value`), if the client has one.
    cookie: Option<&'a str>,
}

/// What a login proves itself with.
#[derive(Clone, Copy)]
enum Credential<'a> {
    /// A password.
    Password(&'a str),
    /// The passkey of the account with this index, from the keyring.
    Passkey(&'a Keyring, usize),
}

/// How a sender answers a challenge.
#[derive(Clone, Copy)]
enum Solving<'a> {
    /// It does not: the try ends there.
    Never,
    /// On the attacker's solving threads.
    Attacker(&'a SolverHandle),
    /// As a person's browser: on one core of the legitimate users' idle-priority pool, timed by
    /// its CPU time.
    Person(&'a SolverHandle),
}

/// What sending one try came to.
struct Sent {
    /// The last answer's outcome.
    outcome: Outcome,
    /// Challenges solved on one core...
    challenges: usize,
    /// ...and their CPU time.
    solving: Duration,
}

/// One login's answer.
struct Answer {
    outcome: Outcome,
    /// The HTTP status (0: no answer).
    status: u16,
    latency: Duration,
    /// The wait a 503 or 429 asked for (`Retry-After`).
    retry_after: Option<Duration>,
    /// The `x-request-id` (hex) it carried.
    request_id: Option<u128>,
    /// `name=value` of the cookie a successful login set (the device cookie).
    cookie: Option<String>,
    /// The challenge a challenge answer carries.
    challenge: Option<Challenge>,
    /// The `mfa_token` an `mfa_required` answer carries.
    mfa_token: Option<String>,
    /// The body, when it is JSON.
    body: serde_json::Value,
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
        let base_url = base_url.trim_end_matches('/');
        Ok(Self {
            http,
            login_url: format!("{base_url}/v1/login"),
            mfa_url: format!("{base_url}/v1/login/mfa"),
            passkey_options_url: format!("{base_url}/v1/login/passkey/options"),
            passkey_url: format!("{base_url}/v1/login/passkey"),
            source,
            pool,
        })
    }

    /// The same client with a connection pool of its own (for another runtime).
    fn detached(&self) -> anyhow::Result<Self> {
        let base = self.login_url.trim_end_matches("/v1/login");
        Self::new(base, self.source, self.pool)
    }

    /// Sends `login` until it is answered without a challenge, solving each challenge as
    /// `solving` says, at most [`MAX_CHALLENGES_PER_TRY`] times; every request is a sample.
    async fn send_solving(
        &self,
        login: Login<'_>,
        sender: Sender,
        start: Instant,
        solving: Solving<'_>,
        samples: &mut Vec<Sample>,
    ) -> Sent {
        let mut altcha = None;
        let mut sent = Sent {
            outcome: Outcome::Error,
            challenges: 0,
            solving: Duration::ZERO,
        };
        for _ in 0..=MAX_CHALLENGES_PER_TRY {
            let sent_at = start.elapsed();
            let answer = self.login(login, altcha.as_deref()).await;
            samples.push(Sample {
                sender,
                outcome: answer.outcome,
                status: answer.status,
                retry_after: answer.retry_after,
                request_id: answer.request_id,
                sent_at,
                latency: answer.latency,
                known_device: login.cookie.is_some(),
                passkey: matches!(login.credential, Credential::Passkey(..)),
                source: login.from,
            });
            sent.outcome = answer.outcome;
            let Some(challenge) = answer.challenge else {
                break;
            };
            altcha = match solving {
                Solving::Never => None,
                Solving::Attacker(pool) => pool.solve(challenge).await.0,
                Solving::Person(pool) => {
                    let (payload, took) = pool.solve(challenge).await;
                    sent.challenges += 1;
                    sent.solving += took;
                    payload
                }
            };
            if altcha.is_none() {
                break;
            }
        }
        sent
    }

    async fn login(&self, login: Login<'_>, altcha: Option<&str>) -> Answer {
        let Login {
            username,
            credential,
            from: client,
            cookie,
        } = login;
        let started = Instant::now();
        let (keyring, account) = match credential {
            Credential::Password(password) => {
                let mut body = serde_json::json!({ "username": username, "password": password });
                if let Some(altcha) = altcha {
                    body["altcha"] = altcha.into();
                }
                return self
                    .post(&self.login_url, client, cookie, &body, started)
                    .await;
            }
            Credential::Passkey(keyring, account) => (keyring, account),
        };
        // A passkey sign-in: the options name the account's passkeys; the answer signs in.
        let mut body = serde_json::json!({ "username": username });
        if let Some(altcha) = altcha {
            body["altcha"] = altcha.into();
        }
        let mut options = self
            .post(&self.passkey_options_url, client, cookie, &body, started)
            .await;
        if options.outcome != Outcome::Succeeded {
            return options;
        }
        let Ok(credential) = keyring.answer(account, &options.body) else {
            options.outcome = Outcome::Error;
            return options;
        };
        let body =
            serde_json::json!({ "ceremony": options.body["ceremony"], "credential": credential });
        self.post(&self.passkey_url, client, cookie, &body, started)
            .await
    }

    /// The second step of a login: `mfa_token` and the code of `secret` for the next time step
    /// (a code is good once per step, and the step before may have been used).
    async fn second_factor(&self, from: IpAddr, mfa_token: &str, secret: &str) -> Answer {
        let started = Instant::now();
        let code = totp::code(secret, totp::now_secs() + 30).unwrap_or_default();
        let body = serde_json::json!({ "mfa_token": mfa_token, "code": code });
        self.post(&self.mfa_url, from, None, &body, started).await
    }

    async fn post(
        &self,
        url: &str,
        client: IpAddr,
        cookie: Option<&str>,
        body: &serde_json::Value,
        started: Instant,
    ) -> Answer {
        let mut request = self
            .http
            .post(url)
            .header("x-forwarded-for", client.to_string())
            .json(body);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        let mut answer = Answer {
            outcome: Outcome::Error,
            status: 0,
            latency: Duration::ZERO,
            retry_after: None,
            request_id: None,
            cookie: None,
            challenge: None,
            mfa_token: None,
            body: serde_json::Value::Null,
        };
        if let Ok(response) = request.send().await {
            let status = response.status();
            answer.status = status.as_u16();
            answer.retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs);
            answer.request_id = response
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| u128::from_str_radix(v, 16).ok());
            answer.cookie = response
                .headers()
                .get(SET_COOKIE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .map(str::to_owned);
            // Read the body so the connection goes back to the pool.
            if let Ok(body) = response.bytes().await {
                answer.body = serde_json::from_slice(&body).unwrap_or_default();
                let problem = match status.is_client_error() {
                    true => &answer.body,
                    false => &serde_json::Value::Null,
                };
                answer.challenge = serde_json::from_value(problem["challenge"].clone()).ok();
                answer.mfa_token = problem["mfa_token"].as_str().map(str::to_owned);
                answer.outcome = Outcome::from_answer(status, problem);
            }
        }
        answer.latency = started.elapsed();
        answer
    }
}

/// Runs `plan`: legitimate users get their device cookies first, then log in for
/// `legit.lead_secs` alone, then the attacker joins; the users go on until the attacker is done
/// and `legit.min_secs` have passed; `progress` counts the attacker's pairs. With `devices`,
/// every user must have got its device cookie (a target without devices sets none).
pub async fn run(
    client: &Client,
    scenario: &Scenario,
    plan: Arc<Plan>,
    keyring: Arc<Keyring>,
    progress: &ProgressBar,
    devices: bool,
) -> anyhow::Result<Traffic> {
    // People solve on their own devices: here on every core, but only when the service and
    // the attacker leave one idle.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let people = SolverPool::start(cores, Priority::Idle);
    let logins = warm_up(client, &plan, &keyring, people.handle()).await;
    let mut missing = BTreeMap::new();
    for outcome in logins.iter().filter_map(|login| login.as_ref().err()) {
        *missing.entry(*outcome).or_insert(0) += 1;
    }
    anyhow::ensure!(
        missing.is_empty() || !devices,
        "{} of {} legitimate users got no device cookie in the warm-up (their last answers: \
         {missing:?}; a shed or challenged login is sent {WARM_UP_RETRIES} times more): the run \
         would count them as known devices",
        missing.values().sum::<usize>(),
        logins.len()
    );
    let cookies = logins.into_iter().map(Result::ok).collect();
    let start = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let users = Users {
        client: client.clone(),
        plan: plan.clone(),
        keyring,
        cookies: Arc::new(cookies),
        solver: people.handle(),
        start,
    };
    let legit = tokio::spawn(legit_users(users, scenario.clone(), done.clone()));
    let attack_started = Duration::from_secs_f64(scenario.legit.lead_secs);
    tokio::time::sleep_until(start + attack_started).await;
    let attack = AttackRun {
        client: client.detached()?,
        scenario: scenario.clone(),
        plan,
        start,
        progress: progress.clone(),
    };
    let (mut samples, attacker_cpu, solving_cpu) =
        tokio::task::spawn_blocking(move || attack.run())
            .await
            .map_err(|e| anyhow::anyhow!("the attacker's thread failed: {e}"))??;
    let attack_elapsed = start.elapsed();
    tokio::time::sleep_until(start + Duration::from_secs_f64(scenario.legit.min_secs)).await;
    done.store(true, Ordering::Relaxed);
    let legit = legit
        .await
        .map_err(|e| anyhow::anyhow!("the legitimate users' task failed: {e}"))?;
    people.finish();
    let elapsed = start.elapsed();
    samples.extend(legit.samples);
    samples.sort_by_key(|s| s.sent_at);
    Ok(Traffic {
        samples,
        intents: legit.intents,
        hindered: legit.hindered,
        elapsed,
        attack_elapsed,
        attack_started,
        attacker_cpu,
        solving_cpu,
    })
}

/// Each legitimate user logs in once from their known device, with its second factor if it has
/// one (or with its passkey), which sets its device cookie. At most [`WARM_UP_CONCURRENCY`] at
/// once, as people do not all arrive in the same second; a login shed with 503 is sent again
/// after its `Retry-After`, and a challenged one (a first login from a network new to the
/// account, with `policy.challenge.unfamiliar_networks`) once the person's browser has solved
/// it. Each user's cookie, or the last answer of a login that got none.
async fn warm_up(
    client: &Client,
    plan: &Plan,
    keyring: &Arc<Keyring>,
    solver: Option<SolverHandle>,
) -> Vec<Result<String, Outcome>> {
    let slots = Arc::new(tokio::sync::Semaphore::new(WARM_UP_CONCURRENCY));
    let mut logins = JoinSet::new();
    for (index, user) in plan.legit.iter().enumerate() {
        let (client, account) = (client.clone(), plan.accounts[user.account].clone());
        let (home, slots, keyring) = (user.home, slots.clone(), keyring.clone());
        let (account_index, solver) = (user.account, solver.clone());
        logins.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let login = Login {
                username: &account.username,
                credential: credential(&account, &keyring, account_index),
                from: home,
                cookie: None,
            };
            let mut answer = client.login(login, None).await;
            let mut altcha = None;
            for _ in 0..WARM_UP_RETRIES {
                match (answer.outcome, answer.challenge.take(), &solver) {
                    (Outcome::Shed, ..) => {
                        let wait = answer.retry_after.unwrap_or(Duration::from_secs(1));
                        tokio::time::sleep(wait).await;
                    }
                    (_, Some(challenge), Some(solver)) => {
                        altcha = solver.solve(challenge).await.0;
                    }
                    _ => break,
                }
                answer = client.login(login, altcha.as_deref()).await;
            }
            if let (Some(token), Some(secret)) = (&answer.mfa_token, &account.totp_secret) {
                answer = client.second_factor(home, token, secret).await;
            }
            let cookie = answer
                .cookie
                .filter(|_| answer.outcome == Outcome::Succeeded);
            (index, cookie.ok_or(answer.outcome))
        });
    }
    let mut cookies = vec![Err(Outcome::Error); plan.legit.len()];
    while let Some(Ok((index, cookie))) = logins.join_next().await {
        cookies[index] = cookie;
    }
    cookies
}

/// The attacker, run on a thread of its own (a single-threaded runtime) so that the CPU time
/// it spends sending can be read, with its solving threads.
struct AttackRun {
    client: Client,
    scenario: Scenario,
    plan: Arc<Plan>,
    start: Instant,
    progress: ProgressBar,
}

impl AttackRun {
    /// Sends the list; returns the samples, the CPU time of sending and solving together, and
    /// of solving alone.
    fn run(self) -> anyhow::Result<(Vec<Sample>, Duration, Duration)> {
        let sending = ThreadTime::now();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let pool = SolverPool::start(self.scenario.attacker.solver_threads, Priority::Normal);
        let solver = pool
            .handle()
            .filter(|_| self.scenario.attacker.solves_challenges);
        let samples = runtime.block_on(attacker(self, solver));
        let sending = sending.elapsed();
        let solving = pool.finish();
        Ok((samples, sending + solving, solving))
    }
}

/// The attacker's workers: each takes the next pair of the list until it is exhausted (or
/// `attacker.max_secs` have passed), solving the challenges it is asked if it can.
async fn attacker(run: AttackRun, solver: Option<SolverHandle>) -> Vec<Sample> {
    let AttackRun {
        client,
        scenario,
        plan,
        start,
        progress,
    } = run;
    let next = Arc::new(AtomicUsize::new(0));
    let attack_start = Instant::now();
    let rate = scenario.attacker.rate;
    let deadline = (scenario.attacker.max_secs > 0.0)
        .then(|| attack_start + Duration::from_secs_f64(scenario.attacker.max_secs));
    let mut workers = JoinSet::new();
    for _ in 0..scenario.attacker.concurrency {
        let (client, plan, next, progress, solver) = (
            client.clone(),
            plan.clone(),
            next.clone(),
            progress.clone(),
            solver.clone(),
        );
        workers.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(attempt) = plan.attacks.get(n) else {
                    break;
                };
                if rate > 0.0 {
                    let due = attack_start + Duration::from_secs_f64(n as f64 / rate);
                    tokio::time::sleep_until(due).await;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let login = Login {
                    username: &attempt.username,
                    credential: Credential::Password(&attempt.password),
                    from: attempt.source,
                    cookie: None,
                };
                let solving = solver.as_ref().map_or(Solving::Never, Solving::Attacker);
                client
                    .send_solving(login, Sender::Attacker(n), start, solving, &mut samples)
                    .await;
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

/// How `account` (index `index`) signs in: its passkey, or its password.
fn credential<'a>(account: &'a Account, keyring: &'a Keyring, index: usize) -> Credential<'a> {
    if account.passkey_only {
        Credential::Passkey(keyring, index)
    } else {
        Credential::Password(&account.password)
    }
}

/// What every legitimate login draws on.
#[derive(Clone)]
struct Users {
    client: Client,
    plan: Arc<Plan>,
    /// The passkey-only accounts' authenticators.
    keyring: Arc<Keyring>,
    /// Each user's device cookie, from the warm-up.
    cookies: Arc<Vec<Option<String>>>,
    /// Where people's browsers solve challenges.
    solver: Option<SolverHandle>,
    /// When the run started.
    start: Instant,
}

/// Legitimate logins at `legit.rate` per second (rising in a surge), user after user, until
/// `done`: their part of the traffic (samples, intents and the hindered logins).
async fn legit_users(users: Users, scenario: Scenario, done: Arc<AtomicBool>) -> Traffic {
    let (plan, start) = (users.plan.clone(), users.start);
    let mut intents = JoinSet::new();
    if !plan.legit.is_empty() {
        // Each login is due one interval of the rate at the last one after it (a surge rises).
        let mut due = 0.0;
        for n in 0usize.. {
            tokio::time::sleep_until(start + Duration::from_secs_f64(due)).await;
            due += 1.0 / scenario.legit.rate_at(due);
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
            intents.spawn(log_in(users.clone(), n % plan.legit.len(), intent));
        }
    }
    let mut traffic = Traffic::default();
    while let Some(Ok((user, intent, requests))) = intents.join_next().await {
        if !intent.succeeded || intent.refused {
            traffic.hindered.push(Hindered {
                user,
                intent,
                requests: requests.clone(),
            });
        }
        traffic.samples.extend(requests);
        traffic.intents.push(intent);
    }
    traffic
        .hindered
        .sort_by_key(|h| h.requests.first().map(|s| s.sent_at));
    traffic
}

/// One legitimate login: a typo first if the intent has one, then the right password; or the
/// account's passkey. The user, the intent as it ended, and its requests.
async fn log_in(users: Users, user: usize, mut intent: Intent) -> (usize, Intent, Vec<Sample>) {
    let Users {
        client,
        plan,
        keyring,
        cookies,
        solver,
        start,
    } = users;
    let legit = &plan.legit[user];
    let account = &plan.accounts[legit.account];
    let (address, cookie) = if intent.new_device {
        (legit.roaming, None)
    } else {
        (legit.home, cookies[user].clone())
    };
    let typo = &account.password[..account.password.len() - 1];
    let right = credential(account, &keyring, legit.account);
    intent.passkey = account.passkey_only;
    // Nobody mistypes a passkey.
    intent.typo &= !intent.passkey;
    let tries: &[Credential] = if intent.typo {
        &[Credential::Password(typo), right]
    } else {
        &[right]
    };
    let mut samples = Vec::new();
    for &credential in tries {
        let login = Login {
            username: &account.username,
            credential,
            from: address,
            cookie: cookie.as_deref(),
        };
        // A person's browser solves what it is asked, on one core, and posts again.
        let sent = client
            .send_solving(
                login,
                Sender::Legit(user),
                start,
                solver.as_ref().map_or(Solving::Never, Solving::Person),
                &mut samples,
            )
            .await;
        intent.challenges += sent.challenges;
        intent.solving += sent.solving;
        intent.refused |= sent.outcome == Outcome::Refused;
        // A right password of an account with a second factor gets in once the person types
        // a code; the drill stops there (a person types at most one per 30 s step, and the
        // drill's users log in faster than that).
        intent.succeeded = matches!(sent.outcome, Outcome::Succeeded | Outcome::SecondFactor);
    }
    (user, intent, samples)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_become_outcomes_by_status_and_code() {
        let cases = [
            (200, json!({}), Outcome::Succeeded),
            (
                401,
                json!({ "code": "invalid_credentials" }),
                Outcome::Failed,
            ),
            (
                401,
                json!({ "code": "challenge_required", "challenge": {} }),
                Outcome::Challenged,
            ),
            (
                401,
                json!({ "code": "mfa_required" }),
                Outcome::SecondFactor,
            ),
            (
                403,
                json!({ "code": "password_reset_required" }),
                Outcome::ResetRequired,
            ),
            (
                403,
                json!({ "code": "password_change_required" }),
                Outcome::Error,
            ),
            (429, json!({}), Outcome::Refused),
            (503, json!({}), Outcome::Shed),
        ];
        for (status, problem, outcome) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                Outcome::from_answer(status, &problem),
                outcome,
                "{status} {problem}"
            );
        }
    }
}
