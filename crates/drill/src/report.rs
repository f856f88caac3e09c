//! What a run showed: attacker attempts by outcome, compromised accounts, what they cost the
//! attacker in CPU time, legitimate users' success and challenges (and every login that did not
//! get in, with its answers), latency per class (the
//! legitimate users' before and during the attack), throughput and a per-second timeline; the
//! policy-on/off comparison; the text table. The JSON report is these types serialised.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::plan::Plan;
use crate::traffic::{Hindered, Outcome, Sample, Sender, Traffic};

/// The whole report of one drill.
#[derive(Debug, Serialize)]
pub struct DrillReport {
    /// The scenario's name.
    pub scenario: String,
    /// What it plays.
    pub description: String,
    /// How the accounts were seeded (and what that means for the numbers).
    pub seeding: String,
    /// One run per policy setting: on, then off when compared.
    pub runs: Vec<RunReport>,
    /// Policy off against policy on, when both ran.
    pub comparison: Option<Comparison>,
}

/// One run of the scenario against one deployment.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// Whether the deployment applied its policy.
    pub policy: bool,
    /// Where the traffic went.
    pub target: String,
    /// From the first request to the last answer.
    pub duration_secs: f64,
    /// From the first request to the attacker's last answer.
    pub attack_secs: f64,
    /// Attacker requests per second over the attack.
    pub attacker_requests_per_sec: f64,
    /// The attacker's side.
    pub attacker: AttackerSummary,
    /// The legitimate users' side.
    pub legit: LegitSummary,
    /// The under-attack signal, as the clients saw it.
    pub signal: SignalSeen,
    /// Latency by class of answer.
    pub latency_ms: Vec<ClassLatency>,
    /// Requests per second of the run, by outcome.
    pub timeline: Vec<TimelineSecond>,
    /// Where the stack's logs were kept: a run the drill brought the stack up for that
    /// [went wrong](RunReport::went_wrong), so its replicas can say why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_logs: Option<String>,
}

/// The under-attack signal as the clients saw it: a challenge answered to a person's request
/// without a device cookie, from a clean source (no earlier request from its subnet failed, was
/// challenged or refused) on their home network, can only come from the signal: a source's own
/// risk needs failures, and the account knows the network from the warm-up. (An attacker's
/// request is challenged for its network alone, new to the account it names.)
#[derive(Debug, Default, Serialize)]
pub struct SignalSeen {
    /// Seconds from the attacker's first pair to the first such challenge's answer (none:
    /// never).
    pub trip_after_secs: Option<f64>,
    /// Legitimate logins challenged from clean sources with no attack under way (before the
    /// attacker started, or in a scenario without one): false trips, as people feel them, each
    /// with its user and the replica that asked it.
    pub false_trips: Vec<FalseTrip>,
    /// Attacker guesses verified with their answer after the trip (none: never tripped): those
    /// checked by a replica that had not heard of it yet (one that has withholds the answer),
    /// which no detector judging verified failures can stop.
    pub verified_after_trip: Option<usize>,
}

/// A false trip's challenge.
#[derive(Debug, Serialize)]
pub struct FalseTrip {
    /// The user challenged.
    pub user: usize,
    /// The request.
    pub request: RequestSeen,
}

/// The subnet a source is judged with: its /24, or its /64.
fn subnet_of(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            std::net::Ipv4Addr::new(a, b, c, 0).into()
        }
        std::net::IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            std::net::Ipv6Addr::from(segments).into()
        }
    }
}

impl SignalSeen {
    /// Reads the signal off `samples` (in the order sent); `attack_started`: `None` without an
    /// attacker.
    fn new(samples: &[Sample], attack_started: Option<Duration>) -> Self {
        let mut seen = SignalSeen::default();
        let mut dirty = std::collections::HashSet::new();
        // When the first such challenge was answered: one sent earlier may have been answered
        // later (challenged at its hash turn, or once checked).
        let mut tripped: Option<Duration> = None;
        for sample in samples {
            let subnet = subnet_of(sample.source);
            let clean = !dirty.contains(&subnet);
            if let (true, Sender::Legit(user), Outcome::Challenged) =
                (clean, sample.sender, sample.outcome)
            {
                match attack_started {
                    Some(start) if sample.sent_at >= start => {
                        let answered = sample.sent_at + sample.latency;
                        tripped = Some(tripped.map_or(answered, |t| t.min(answered)));
                    }
                    _ => seen.false_trips.push(FalseTrip {
                        user,
                        request: RequestSeen::new(sample),
                    }),
                }
            }
            if !matches!(
                sample.outcome,
                Outcome::Succeeded | Outcome::SecondFactor | Outcome::ResetRequired
            ) {
                dirty.insert(subnet);
            }
        }
        if let (Some(start), Some(tripped)) = (attack_started, tripped) {
            seen.trip_after_secs = Some(tripped.saturating_sub(start).as_secs_f64());
            let verified_after = samples.iter().filter(|sample| {
                matches!(sample.sender, Sender::Attacker(_))
                    && sample.outcome.verified()
                    && sample.sent_at + sample.latency > tripped
            });
            seen.verified_after_trip = Some(verified_after.count());
        }
        seen
    }
}

/// The attacker's requests by outcome.
#[derive(Debug, Default, Serialize)]
pub struct AttackerSummary {
    /// Pairs of the list tried.
    pub pairs: usize,
    /// Requests sent (a pair is sent again with each challenge solved).
    pub attempts: usize,
    /// Answered with a challenge (401 `challenge_*`), before any hashing.
    pub challenged: usize,
    /// Refused before any hashing (429/423).
    pub denied: usize,
    /// Verified and failed (401).
    pub failed: usize,
    /// Logged in (200).
    pub succeeded: usize,
    /// Right password, stopped by the account's second factor (401 `mfa_required`).
    pub second_factor: usize,
    /// Right password, found in the known leak and answered 403 `password_reset_required`.
    pub reset_required: usize,
    /// Shed by an overloaded server (503).
    pub shed: usize,
    /// Other answers or none.
    pub errors: usize,
    /// Pairs in the list with the right password.
    pub hits_in_list: usize,
    /// Distinct accounts the attacker logged in to.
    pub compromised_accounts: usize,
    /// Pairs in the list with an old password of an account that has a passkey and no password.
    pub passkey_only_hits_in_list: usize,
    /// Of the compromised accounts, those with a passkey and no password.
    pub passkey_only_compromised: usize,
    /// Distinct accounts whose password the attacker had, held by their second factor (never
    /// compromised).
    pub second_factor_held_accounts: usize,
    /// Distinct accounts whose password the attacker had, held because it was in the known
    /// leak (never compromised: the reset link goes to the owner).
    pub reset_held_accounts: usize,
    /// CPU seconds of the attacker's threads, sending and solving.
    pub cpu_secs: f64,
    /// Of those, solving challenges.
    pub solving_cpu_secs: f64,
    /// `cpu_secs` per guess that reached the password check (None: none did).
    pub cpu_secs_per_verified: Option<f64>,
    /// `cpu_secs` per compromised account (None: none was).
    pub cpu_secs_per_compromised: Option<f64>,
}

/// The legitimate users' logins.
#[derive(Debug, Default, Serialize)]
pub struct LegitSummary {
    /// Logins wanted.
    pub logins: usize,
    /// Logins that got in (after a typo, if there was one).
    pub succeeded: usize,
    /// `succeeded / logins`.
    pub success_rate: f64,
    /// Logins with a refused try: the user was locked out or throttled.
    pub locked_out: usize,
    /// Of those, from a known device.
    pub locked_out_known_device: usize,
    /// Logins from a new device.
    pub new_device: usize,
    /// Logins with a typo first.
    pub typos: usize,
    /// Logins asked to solve a challenge.
    pub challenged: usize,
    /// Of those, from a known device (with its device cookie).
    pub challenged_known_device: usize,
    /// Median time a challenged login spent solving (one core), ms.
    pub solve_ms_p50: f64,
    /// 99th percentile of the same, ms.
    pub solve_ms_p99: f64,
    /// 99th percentile latency of legitimate requests sent before the attack, ms.
    pub p99_before_attack_ms: f64,
    /// ...and while it ran, ms.
    pub p99_during_attack_ms: f64,
    /// The same two for requests from known devices (with their device cookie), ms.
    pub p99_known_device_before_attack_ms: f64,
    /// ...
    pub p99_known_device_during_attack_ms: f64,
    /// Logins with a passkey (passkey-only accounts).
    pub passkey_logins: usize,
    /// Of those, logins that got in.
    pub passkey_succeeded: usize,
    /// Of those, logins asked to solve a challenge.
    pub passkey_challenged: usize,
    /// Median latency of a successful passkey sign-in (options and answer), ms.
    pub passkey_p50_ms: f64,
    /// Median latency of a successful password login in the same run, ms.
    pub password_p50_ms: f64,
    /// Every login that did not get in, or had a try refused, with its requests: what a
    /// success rate under 100% or a lockout comes from.
    pub hindered: Vec<HinderedLogin>,
}

/// A legitimate login that did not get in, or had a try refused.
#[derive(Debug, Serialize)]
pub struct HinderedLogin {
    /// The user (index into the plan's legitimate users).
    pub user: usize,
    /// From a new device.
    pub new_device: bool,
    /// With a typo first.
    pub typo: bool,
    /// Whether it got in in the end.
    pub succeeded: bool,
    /// Its requests, in the order sent.
    pub requests: Vec<RequestSeen>,
}

/// One request, as the report keeps it (a hindered login's, a false trip's).
#[derive(Debug, Serialize)]
pub struct RequestSeen {
    /// When it was sent, seconds from the start of the run.
    pub at_secs: f64,
    /// The HTTP status (0: no answer).
    pub status: u16,
    /// What the drill made of it.
    pub outcome: String,
    /// The `Retry-After` it carried, seconds.
    pub retry_after_secs: Option<u64>,
    /// Its `x-request-id`: the first 12 digits name the replica that answered.
    pub request_id: Option<String>,
    /// How long the answer took, ms.
    pub latency_ms: f64,
}

impl RequestSeen {
    /// When, what came back, the wait it asked for and the replica that answered (a request
    /// id's process half).
    fn line(&self) -> String {
        let wait = self
            .retry_after_secs
            .map_or_else(String::new, |s| format!(", Retry-After {s}"));
        let replica = self
            .request_id
            .as_deref()
            .and_then(|id| id.get(..12))
            .map_or_else(String::new, |replica| format!(" from replica {replica}"));
        format!(
            "{:.1} s {} {}{wait}{replica}",
            self.at_secs, self.status, self.outcome
        )
    }

    fn new(sample: &Sample) -> Self {
        Self {
            at_secs: sample.sent_at.as_secs_f64(),
            status: sample.status,
            outcome: format!("{:?}", sample.outcome),
            retry_after_secs: sample.retry_after.map(|d| d.as_secs()),
            request_id: sample.request_id.map(|id| format!("{id:024x}")),
            latency_ms: sample.latency.as_secs_f64() * 1e3,
        }
    }
}

impl HinderedLogin {
    fn new(hindered: &Hindered) -> Self {
        let requests = hindered.requests.iter().map(RequestSeen::new).collect();
        Self {
            user: hindered.user,
            new_device: hindered.intent.new_device,
            typo: hindered.intent.typo,
            succeeded: hindered.intent.succeeded,
            requests,
        }
    }

    /// One line: who, and each request's answer.
    fn line(&self) -> String {
        let device = match self.new_device {
            true => "new device",
            false => "known device",
        };
        let typo = match self.typo {
            true => ", typo first",
            false => "",
        };
        let ending = match self.succeeded {
            true => "got in",
            false => "did not get in",
        };
        let requests: Vec<String> = self.requests.iter().map(RequestSeen::line).collect();
        format!(
            "user {} ({device}{typo}) {ending}: {}",
            self.user,
            requests.join(" -> ")
        )
    }
}

/// Latency percentiles of one class of answers.
#[derive(Debug, Serialize)]
pub struct ClassLatency {
    /// `attacker denied`, `attacker verified` or `legit`.
    pub class: String,
    /// Requests in the class.
    pub count: usize,
    /// Median, ms.
    pub p50: f64,
    /// 90th percentile, ms.
    pub p90: f64,
    /// 99th percentile, ms.
    pub p99: f64,
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TimelineSecond {
    /// Seconds since the start.
    pub second: usize,
    /// Attacker requests that reached the password check (200 or 401).
    pub attacker_allowed: usize,
    /// Attacker requests refused before it.
    pub attacker_denied: usize,
    /// Attacker requests answered with a challenge.
    pub attacker_challenged: usize,
    /// Attacker requests shed or failed.
    pub attacker_other: usize,
    /// Legitimate requests that logged in.
    pub legit_succeeded: usize,
    /// Legitimate requests answered with a challenge.
    pub legit_challenged: usize,
}

/// Policy off against policy on.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// Compromised accounts without the defences.
    pub compromised_off: usize,
    /// Compromised accounts with them.
    pub compromised_on: usize,
    /// Attacker requests that reached the password hash without the defences.
    pub verified_off: usize,
    /// ...and with them.
    pub verified_on: usize,
    /// `verified_off / verified_on`: how many times fewer guesses got checked (None when none
    /// got through with the defences on).
    pub verified_reduction: Option<f64>,
    /// `compromised_off / compromised_on` (None when nothing was compromised with them on).
    pub compromise_reduction: Option<f64>,
    /// The attacker's CPU seconds per compromised account with the defences over without them
    /// (None when nothing was compromised with them on, or without them).
    pub cost_per_compromise_factor: Option<f64>,
}

impl RunReport {
    /// Summarises `traffic` of `plan`.
    pub fn new(policy: bool, target: &str, plan: &Plan, traffic: &Traffic) -> Self {
        let mut attacker = AttackerSummary {
            hits_in_list: plan.attacks.iter().filter(|a| a.hit).count(),
            ..AttackerSummary::default()
        };
        let mut compromised = BTreeSet::new();
        let mut held = BTreeSet::new();
        let mut reset_held = BTreeSet::new();
        let mut pairs = BTreeSet::new();
        for sample in &traffic.samples {
            let Sender::Attacker(n) = sample.sender else {
                continue;
            };
            attacker.attempts += 1;
            pairs.insert(n);
            match sample.outcome {
                Outcome::Refused => attacker.denied += 1,
                Outcome::Challenged => attacker.challenged += 1,
                Outcome::Failed => attacker.failed += 1,
                Outcome::Succeeded => {
                    attacker.succeeded += 1;
                    compromised.insert(plan.attacks[n].username.as_str());
                }
                Outcome::SecondFactor => {
                    attacker.second_factor += 1;
                    held.insert(plan.attacks[n].username.as_str());
                }
                Outcome::ResetRequired => {
                    attacker.reset_required += 1;
                    reset_held.insert(plan.attacks[n].username.as_str());
                }
                Outcome::Shed => attacker.shed += 1,
                Outcome::Error => attacker.errors += 1,
            }
        }
        attacker.compromised_accounts = compromised.len();
        let passkey_only: BTreeSet<&str> = plan
            .accounts
            .iter()
            .filter(|a| a.passkey_only)
            .map(|a| a.username.as_str())
            .collect();
        attacker.passkey_only_hits_in_list = plan
            .attacks
            .iter()
            .filter(|a| a.hit && passkey_only.contains(a.username.as_str()))
            .count();
        attacker.passkey_only_compromised = compromised.intersection(&passkey_only).count();
        attacker.second_factor_held_accounts = held.len();
        attacker.reset_held_accounts = reset_held.len();
        attacker.pairs = pairs.len();
        attacker.cpu_secs = traffic.attacker_cpu.as_secs_f64();
        attacker.solving_cpu_secs = traffic.solving_cpu.as_secs_f64();
        let per = |count: usize| (count > 0).then(|| attacker.cpu_secs / count as f64);
        attacker.cpu_secs_per_verified = per(attacker.failed
            + attacker.succeeded
            + attacker.second_factor
            + attacker.reset_required);
        attacker.cpu_secs_per_compromised = per(attacker.compromised_accounts);
        let intents = &traffic.intents;
        let count = |f: &dyn Fn(&&crate::traffic::Intent) -> bool| intents.iter().filter(f).count();
        let succeeded = count(&|i| i.succeeded);
        let mut legit = LegitSummary {
            logins: intents.len(),
            succeeded,
            success_rate: ratio(succeeded, intents.len()),
            locked_out: count(&|i| i.refused),
            locked_out_known_device: count(&|i| i.refused && !i.new_device),
            new_device: count(&|i| i.new_device),
            typos: count(&|i| i.typo),
            challenged: count(&|i| i.challenges > 0),
            challenged_known_device: count(&|i| i.challenges > 0 && !i.new_device),
            passkey_logins: count(&|i| i.passkey),
            passkey_succeeded: count(&|i| i.passkey && i.succeeded),
            passkey_challenged: count(&|i| i.passkey && i.challenges > 0),
            hindered: traffic.hindered.iter().map(HinderedLogin::new).collect(),
            ..LegitSummary::default()
        };
        let mut solving: Vec<Duration> = intents
            .iter()
            .filter(|i| i.challenges > 0)
            .map(|i| i.solving)
            .collect();
        solving.sort();
        legit.solve_ms_p50 = percentile(&solving, 50);
        legit.solve_ms_p99 = percentile(&solving, 99);
        let legit_latency = |during: bool, known_device_only: bool| {
            let mut times: Vec<Duration> = traffic
                .samples
                .iter()
                .filter(|s| matches!(s.sender, Sender::Legit(_)))
                .filter(|s| s.known_device || !known_device_only)
                .filter(|s| (s.sent_at >= traffic.attack_started) == during)
                .map(|s| s.latency)
                .collect();
            times.sort();
            percentile(&times, 99)
        };
        let succeeded_p50 = |passkey: bool| {
            let mut times: Vec<Duration> = traffic
                .samples
                .iter()
                .filter(|s| matches!(s.sender, Sender::Legit(_)))
                .filter(|s| s.outcome == Outcome::Succeeded && s.passkey == passkey)
                .map(|s| s.latency)
                .collect();
            times.sort();
            percentile(&times, 50)
        };
        legit.passkey_p50_ms = succeeded_p50(true);
        legit.password_p50_ms = succeeded_p50(false);
        legit.p99_before_attack_ms = legit_latency(false, false);
        legit.p99_during_attack_ms = legit_latency(true, false);
        legit.p99_known_device_before_attack_ms = legit_latency(false, true);
        legit.p99_known_device_during_attack_ms = legit_latency(true, true);
        let attack_secs = traffic.attack_elapsed.as_secs_f64().max(1e-3);
        Self {
            policy,
            target: target.to_owned(),
            duration_secs: traffic.elapsed.as_secs_f64(),
            attack_secs,
            attacker_requests_per_sec: attacker.attempts as f64 / attack_secs,
            attacker,
            legit,
            signal: SignalSeen::new(
                &traffic.samples,
                (!plan.attacks.is_empty()).then_some(traffic.attack_started),
            ),
            latency_ms: latencies(&traffic.samples),
            timeline: timeline(&traffic.samples),
            stack_logs: None,
        }
    }

    /// Whether a person was hindered or falsely challenged: what the stack's logs should
    /// explain.
    pub fn went_wrong(&self) -> bool {
        !self.legit.hindered.is_empty() || !self.signal.false_trips.is_empty()
    }

    /// Attacker requests that reached the password check.
    pub fn verified(&self) -> usize {
        self.attacker.failed
            + self.attacker.succeeded
            + self.attacker.second_factor
            + self.attacker.reset_required
    }
}

impl Comparison {
    /// Compares a run without the defences against one with them.
    pub fn new(on: &RunReport, off: &RunReport) -> Self {
        let reduction = |off: usize, on: usize| (on > 0).then(|| off as f64 / on as f64);
        Self {
            compromised_off: off.attacker.compromised_accounts,
            compromised_on: on.attacker.compromised_accounts,
            verified_off: off.verified(),
            verified_on: on.verified(),
            verified_reduction: reduction(off.verified(), on.verified()),
            compromise_reduction: reduction(
                off.attacker.compromised_accounts,
                on.attacker.compromised_accounts,
            ),
            cost_per_compromise_factor: on
                .attacker
                .cpu_secs_per_compromised
                .zip(off.attacker.cpu_secs_per_compromised)
                .map(|(on, off)| on / off.max(1e-9)),
        }
    }
}

/// `on` or `off`, as reports and file names say it.
pub fn policy_label(enabled: bool) -> &'static str {
    if enabled { "on" } else { "off" }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Whether a request belongs to a latency class.
type Member = fn(&Sample) -> bool;

/// The latency classes, in report order.
pub const LATENCY_CLASSES: [&str; 3] = ["attacker denied", "attacker verified", "legit"];

fn latencies(samples: &[Sample]) -> Vec<ClassLatency> {
    let members: [Member; 3] = [
        |s| matches!(s.sender, Sender::Attacker(_)) && s.outcome == Outcome::Refused,
        |s| matches!(s.sender, Sender::Attacker(_)) && s.outcome.verified(),
        |s| matches!(s.sender, Sender::Legit(_)),
    ];
    LATENCY_CLASSES
        .iter()
        .zip(members)
        .map(|(class, member)| {
            let mut times: Vec<Duration> = samples
                .iter()
                .filter(|s| member(s))
                .map(|s| s.latency)
                .collect();
            times.sort();
            ClassLatency {
                class: (*class).to_owned(),
                count: times.len(),
                p50: percentile(&times, 50),
                p90: percentile(&times, 90),
                p99: percentile(&times, 99),
            }
        })
        .collect()
}

/// The nearest-rank percentile of sorted `times`, in milliseconds (0 when empty).
fn percentile(times: &[Duration], p: usize) -> f64 {
    if times.is_empty() {
        return 0.0;
    }
    let rank = (p * times.len()).div_ceil(100).clamp(1, times.len());
    times[rank - 1].as_secs_f64() * 1e3
}

fn timeline(samples: &[Sample]) -> Vec<TimelineSecond> {
    let seconds = samples.iter().map(|s| s.sent_at.as_secs() as usize).max();
    let mut timeline: Vec<TimelineSecond> = (0..=seconds.unwrap_or(0))
        .map(|second| TimelineSecond {
            second,
            ..TimelineSecond::default()
        })
        .collect();
    if seconds.is_none() {
        return timeline;
    }
    for sample in samples {
        let bucket = &mut timeline[sample.sent_at.as_secs() as usize];
        match (sample.sender, sample.outcome) {
            (Sender::Attacker(_), outcome) if outcome.verified() => bucket.attacker_allowed += 1,
            (Sender::Attacker(_), Outcome::Refused) => bucket.attacker_denied += 1,
            (Sender::Attacker(_), Outcome::Challenged) => bucket.attacker_challenged += 1,
            (Sender::Attacker(_), _) => bucket.attacker_other += 1,
            (Sender::Legit(_), Outcome::Succeeded | Outcome::SecondFactor) => {
                bucket.legit_succeeded += 1
            }
            (Sender::Legit(_), Outcome::Challenged) => bucket.legit_challenged += 1,
            (Sender::Legit(_), _) => {}
        }
    }
    timeline
}

impl DrillReport {
    /// The report as a text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "scenario {}: {}", self.scenario, self.description);
        let _ = writeln!(out, "seeding: {}", self.seeding);
        let header: Vec<String> = self
            .runs
            .iter()
            .map(|r| format!("policy {}", policy_label(r.policy)))
            .collect();
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        let mut row = |name: &str, value: &dyn Fn(&RunReport) -> String| {
            rows.push((name.to_owned(), self.runs.iter().map(value).collect()));
        };
        row("attacker pairs tried", &|r| r.attacker.pairs.to_string());
        row("attacker requests", &|r| r.attacker.attempts.to_string());
        row("  challenged", &|r| r.attacker.challenged.to_string());
        row("  denied before hashing", &|r| {
            r.attacker.denied.to_string()
        });
        row("  verified and failed", &|r| r.attacker.failed.to_string());
        row("  succeeded", &|r| r.attacker.succeeded.to_string());
        row("  right password, second factor held", &|r| {
            r.attacker.second_factor.to_string()
        });
        row(
            "  right password, in the known leak (reset required)",
            &|r| r.attacker.reset_required.to_string(),
        );
        row("  shed (503)", &|r| r.attacker.shed.to_string());
        row("  errors", &|r| r.attacker.errors.to_string());
        row("hits in the list", &|r| r.attacker.hits_in_list.to_string());
        row("compromised accounts", &|r| {
            r.attacker.compromised_accounts.to_string()
        });
        let passkeys = self
            .runs
            .iter()
            .any(|r| r.legit.passkey_logins > 0 || r.attacker.passkey_only_hits_in_list > 0);
        if passkeys {
            row("  passkey-only: hits in the list / compromised", &|r| {
                format!(
                    "{} / {}",
                    r.attacker.passkey_only_hits_in_list, r.attacker.passkey_only_compromised
                )
            });
        }
        row("accounts held by their second factor", &|r| {
            r.attacker.second_factor_held_accounts.to_string()
        });
        row("accounts held by a reset (known leak)", &|r| {
            r.attacker.reset_held_accounts.to_string()
        });
        let secs = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
        row("attacker CPU s (solving)", &|r| {
            format!(
                "{:.1} ({:.1})",
                r.attacker.cpu_secs, r.attacker.solving_cpu_secs
            )
        });
        row("  CPU s per verified guess", &|r| {
            secs(r.attacker.cpu_secs_per_verified)
        });
        row("  CPU s per compromised account", &|r| {
            secs(r.attacker.cpu_secs_per_compromised)
        });
        row(
            "signal tripped after s (clients' view)",
            &|r| match r.signal.trip_after_secs {
                Some(after) => format!("{after:.3}"),
                None if r.attacker.pairs > 0 => "never".to_owned(),
                None => "-".to_owned(),
            },
        );
        row("  guesses verified after it", &|r| {
            r.signal
                .verified_after_trip
                .map_or_else(|| "-".to_owned(), |n| n.to_string())
        });
        row("legit challenged with no attack (false trips)", &|r| {
            r.signal.false_trips.len().to_string()
        });
        row("legit logins", &|r| r.legit.logins.to_string());
        row("  success rate", &|r| {
            format!("{:.1}%", r.legit.success_rate * 100.0)
        });
        row("  locked out (known device)", &|r| {
            format!(
                "{} ({})",
                r.legit.locked_out, r.legit.locked_out_known_device
            )
        });
        row("  new device / typo", &|r| {
            format!("{} / {}", r.legit.new_device, r.legit.typos)
        });
        row("  challenged (known device)", &|r| {
            format!(
                "{} ({})",
                r.legit.challenged, r.legit.challenged_known_device
            )
        });
        row("  solve time p50/p99 ms", &|r| {
            format!("{:.0}/{:.0}", r.legit.solve_ms_p50, r.legit.solve_ms_p99)
        });
        if passkeys {
            row("  with a passkey: logins / succeeded / challenged", &|r| {
                format!(
                    "{} / {} / {}",
                    r.legit.passkey_logins, r.legit.passkey_succeeded, r.legit.passkey_challenged
                )
            });
            row("  sign-in p50 ms: passkey / password (ratio)", &|r| {
                format!(
                    "{:.1} / {:.1} ({:.2})",
                    r.legit.passkey_p50_ms,
                    r.legit.password_p50_ms,
                    r.legit.passkey_p50_ms / r.legit.password_p50_ms.max(1e-9)
                )
            });
        }
        row("  p99 ms before / during attack", &|r| {
            format!(
                "{:.1} / {:.1}",
                r.legit.p99_before_attack_ms, r.legit.p99_during_attack_ms
            )
        });
        row("  of those, known devices", &|r| {
            format!(
                "{:.1} / {:.1}",
                r.legit.p99_known_device_before_attack_ms,
                r.legit.p99_known_device_during_attack_ms
            )
        });
        for (i, class) in LATENCY_CLASSES.iter().enumerate() {
            row(&format!("{class} p50/p90/p99 ms"), &|r| {
                let l = &r.latency_ms[i];
                if l.count == 0 {
                    "-".to_owned()
                } else {
                    format!("{:.1}/{:.1}/{:.1}", l.p50, l.p90, l.p99)
                }
            });
        }
        row("attack duration s", &|r| format!("{:.1}", r.attack_secs));
        row("attacker requests/s", &|r| {
            format!("{:.0}", r.attacker_requests_per_sec)
        });
        row("run duration s", &|r| format!("{:.1}", r.duration_secs));
        let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let _ = write!(out, "{:width$}", "");
        for h in &header {
            let _ = write!(out, "  {h:>18}");
        }
        out.push('\n');
        for (name, values) in rows {
            let _ = write!(out, "{name:width$}");
            for v in values {
                let _ = write!(out, "  {v:>18}");
            }
            out.push('\n');
        }
        for run in &self.runs {
            let policy = policy_label(run.policy);
            for login in &run.legit.hindered {
                let _ = writeln!(out, "policy {policy}: hindered login: {}", login.line());
            }
            for trip in &run.signal.false_trips {
                let (user, request) = (trip.user, trip.request.line());
                let _ = writeln!(out, "policy {policy}: false trip: user {user}: {request}");
            }
            if let Some(logs) = &run.stack_logs {
                let _ = writeln!(out, "policy {policy}: the stack's logs: {logs}");
            }
        }
        if let Some(c) = &self.comparison {
            let factor = |f: Option<f64>, off: usize| match f {
                Some(f) => format!("{f:.1}x"),
                None if off == 0 => "n/a (none either way)".to_owned(),
                None => format!("all {off} stopped"),
            };
            let _ = writeln!(
                out,
                "reduction with the defences: guesses verified {} -> {} ({}), accounts compromised {} -> {} ({})",
                c.verified_off,
                c.verified_on,
                factor(c.verified_reduction, c.verified_off),
                c.compromised_off,
                c.compromised_on,
                factor(c.compromise_reduction, c.compromised_off),
            );
            if let Some(f) = c.cost_per_compromise_factor {
                let _ = writeln!(
                    out,
                    "attacker CPU time per compromised account: {f:.0}x the policy-off run's"
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Attempt, LegitUser};
    use crate::traffic::Intent;

    fn sample(sender: Sender, outcome: Outcome, sent_ms: u64, latency_ms: u64) -> Sample {
        Sample {
            sender,
            outcome,
            status: 0,
            retry_after: None,
            request_id: None,
            sent_at: Duration::from_millis(sent_ms),
            latency: Duration::from_millis(latency_ms),
            known_device: false,
            passkey: false,
            source: "10.0.0.1".parse().unwrap(),
        }
    }

    fn plan() -> Plan {
        let attempt = |username: &str, hit| Attempt {
            username: username.into(),
            password: "p".into(),
            source: "10.0.0.1".parse().unwrap(),
            hit,
        };
        Plan {
            accounts: vec![],
            attacks: vec![
                attempt("a", true),
                attempt("a", true),
                attempt("b", false),
                attempt("c", false),
            ],
            legit: vec![LegitUser {
                account: 0,
                home: "172.16.0.10".parse().unwrap(),
                roaming: "172.16.0.20".parse().unwrap(),
            }],
        }
    }

    #[test]
    fn the_signal_is_read_off_challenges_to_clean_sources() {
        let from = |ip: &str, sender, outcome, sent_ms| Sample {
            source: ip.parse().unwrap(),
            ..sample(sender, outcome, sent_ms, 1)
        };
        let samples = [
            // Before the attack: a typo makes its /24 dirty; a challenge there says nothing.
            from("172.16.0.5", Sender::Legit(0), Outcome::Failed, 100),
            from("172.16.0.9", Sender::Legit(0), Outcome::Challenged, 200),
            // A clean source challenged with no attack under way: a false trip.
            Sample {
                request_id: Some(0x0123_4567_89ab_0000_0000_0007),
                ..from("172.16.1.5", Sender::Legit(1), Outcome::Challenged, 300)
            },
            // The attack starts at 1 s. Its own challenges say nothing (each asked for a network
            // new to its account); the first clean challenge a person got, answered at 1.5 s,
            // is the trip (one sent before it was answered after it: challenged at its hash
            // turn).
            Sample {
                latency: Duration::from_millis(600),
                ..from("10.0.0.1", Sender::Attacker(0), Outcome::Failed, 1_000)
            },
            from("10.0.0.3", Sender::Attacker(4), Outcome::Failed, 1_100),
            Sample {
                latency: Duration::from_millis(400),
                ..from("172.16.3.1", Sender::Legit(3), Outcome::Challenged, 1_100)
            },
            from("10.0.0.2", Sender::Attacker(1), Outcome::Challenged, 1_200),
            from("172.16.2.1", Sender::Legit(2), Outcome::Challenged, 1_499),
            from("172.16.4.1", Sender::Legit(4), Outcome::Challenged, 1_700),
        ];
        let seen = SignalSeen::new(&samples, Some(Duration::from_secs(1)));
        assert_eq!(seen.trip_after_secs, Some(0.5));
        let [trip] = &seen.false_trips[..] else {
            panic!("one false trip: {:?}", seen.false_trips);
        };
        assert_eq!(trip.user, 1);
        assert_eq!(
            trip.request.request_id.as_deref(),
            Some("0123456789ab000000000007")
        );
        assert_eq!(
            trip.request.line(),
            "0.3 s 0 Challenged from replica 0123456789ab"
        );
        // Sent at 1 s and answered at 1.6 s: hashed after the trip (the one at 1.1 s was not).
        assert_eq!(seen.verified_after_trip, Some(1));
        let without_attack = SignalSeen::new(&samples[..3], None);
        assert_eq!(without_attack.trip_after_secs, None);
        assert_eq!(without_attack.verified_after_trip, None);
        assert_eq!(without_attack.false_trips.len(), 1);
    }

    #[test]
    fn known_devices_latency_is_reported_on_its_own() {
        let mut known = sample(Sender::Legit(0), Outcome::Succeeded, 2_000, 7);
        known.known_device = true;
        let traffic = Traffic {
            samples: vec![
                sample(Sender::Legit(1), Outcome::Succeeded, 100, 50),
                sample(Sender::Legit(1), Outcome::Succeeded, 2_100, 90),
                known,
            ],
            attack_started: Duration::from_millis(1_000),
            ..Traffic::default()
        };
        let run = RunReport::new(true, "http://x", &plan(), &traffic);
        assert_eq!(run.legit.p99_during_attack_ms, 90.0);
        assert_eq!(run.legit.p99_known_device_during_attack_ms, 7.0);
    }

    #[test]
    fn a_right_password_stopped_by_a_second_factor_is_held_never_compromised() {
        let traffic = Traffic {
            samples: vec![
                sample(Sender::Attacker(0), Outcome::SecondFactor, 0, 5),
                sample(Sender::Attacker(1), Outcome::SecondFactor, 100, 5),
                sample(Sender::Attacker(2), Outcome::Failed, 200, 5),
            ],
            attacker_cpu: Duration::from_secs(3),
            ..Traffic::default()
        };
        let run = RunReport::new(true, "http://x", &plan(), &traffic);
        assert_eq!(run.attacker.second_factor, 2);
        assert_eq!(run.attacker.second_factor_held_accounts, 1);
        assert_eq!(run.attacker.compromised_accounts, 0);
        assert_eq!(run.attacker.cpu_secs_per_compromised, None);
        assert_eq!(run.attacker.cpu_secs_per_verified, Some(1.0));
    }

    #[test]
    fn a_right_password_in_the_known_leak_is_held_never_compromised() {
        let traffic = Traffic {
            samples: vec![
                sample(Sender::Attacker(0), Outcome::ResetRequired, 0, 5),
                sample(Sender::Attacker(1), Outcome::ResetRequired, 100, 5),
                sample(Sender::Attacker(2), Outcome::Failed, 200, 5),
            ],
            attacker_cpu: Duration::from_secs(3),
            ..Traffic::default()
        };
        let run = RunReport::new(true, "http://x", &plan(), &traffic);
        assert_eq!(run.attacker.reset_required, 2);
        assert_eq!(run.attacker.reset_held_accounts, 1);
        assert_eq!(run.attacker.compromised_accounts, 0);
        assert_eq!(run.verified(), 3);
    }

    #[test]
    fn outcomes_compromises_and_legit_logins_are_counted() {
        let traffic = Traffic {
            samples: vec![
                sample(Sender::Attacker(0), Outcome::Succeeded, 0, 5),
                sample(Sender::Attacker(1), Outcome::Succeeded, 100, 5),
                sample(Sender::Attacker(2), Outcome::Failed, 1500, 40),
                sample(Sender::Attacker(3), Outcome::Challenged, 2050, 1),
                sample(Sender::Attacker(3), Outcome::Refused, 2100, 1),
                sample(Sender::Legit(0), Outcome::Challenged, 500, 3),
                sample(Sender::Legit(0), Outcome::Succeeded, 2200, 30),
            ],
            intents: vec![
                Intent {
                    succeeded: true,
                    challenges: 1,
                    solving: Duration::from_millis(400),
                    ..Intent::default()
                },
                Intent {
                    new_device: true,
                    refused: true,
                    ..Intent::default()
                },
            ],
            elapsed: Duration::from_millis(2500),
            attack_elapsed: Duration::from_millis(2000),
            attack_started: Duration::from_millis(1000),
            attacker_cpu: Duration::from_secs(2),
            solving_cpu: Duration::from_millis(1500),
            ..Traffic::default()
        };
        let run = RunReport::new(true, "http://x", &plan(), &traffic);
        assert_eq!(
            (
                run.attacker.pairs,
                run.attacker.attempts,
                run.attacker.succeeded,
                run.attacker.failed,
                run.attacker.challenged,
                run.attacker.denied
            ),
            (4, 5, 2, 1, 1, 1)
        );
        assert_eq!(
            (run.attacker.cpu_secs, run.attacker.solving_cpu_secs),
            (2.0, 1.5)
        );
        assert_eq!(run.attacker.cpu_secs_per_verified, Some(2.0 / 3.0));
        assert_eq!(run.attacker.cpu_secs_per_compromised, Some(2.0));
        assert_eq!(
            (run.legit.challenged, run.legit.challenged_known_device),
            (1, 1)
        );
        assert_eq!(run.legit.solve_ms_p50, 400.0);
        assert_eq!(
            (
                run.legit.p99_before_attack_ms,
                run.legit.p99_during_attack_ms
            ),
            (3.0, 30.0)
        );
        assert_eq!(
            run.legit.p99_known_device_during_attack_ms, 0.0,
            "no known-device requests in this traffic"
        );
        assert_eq!(
            run.attacker.compromised_accounts, 1,
            "two hits on one account"
        );
        assert_eq!(run.attacker.hits_in_list, 2);
        assert_eq!(
            (run.legit.logins, run.legit.succeeded, run.legit.locked_out),
            (2, 1, 1)
        );
        assert_eq!(run.legit.locked_out_known_device, 0);
        assert_eq!(run.attacker_requests_per_sec, 2.5);
        let seconds: Vec<[usize; 5]> = run
            .timeline
            .iter()
            .map(|s| {
                [
                    s.attacker_allowed,
                    s.attacker_challenged,
                    s.attacker_denied,
                    s.legit_succeeded,
                    s.legit_challenged,
                ]
            })
            .collect();
        assert_eq!(seconds, [[2, 0, 0, 0, 1], [1, 0, 0, 0, 0], [0, 1, 1, 1, 0]]);
        assert_eq!(run.latency_ms[1].count, 3);
        assert_eq!(run.latency_ms[1].p99, 40.0);
    }

    #[test]
    fn a_hindered_login_is_reported_with_every_answer_it_got() {
        let requests = vec![
            sample(Sender::Legit(7), Outcome::Challenged, 1_000, 2),
            Sample {
                status: 429,
                retry_after: Some(Duration::from_secs(3)),
                ..sample(Sender::Legit(7), Outcome::Refused, 1_400, 1)
            },
        ];
        let intent = Intent {
            new_device: true,
            typo: true,
            refused: true,
            ..Intent::default()
        };
        let traffic = Traffic {
            samples: requests.clone(),
            intents: vec![intent],
            hindered: vec![Hindered {
                user: 7,
                intent,
                requests,
            }],
            ..Traffic::default()
        };
        let mut run = RunReport::new(true, "x", &plan(), &traffic);
        assert!(run.went_wrong());
        run.stack_logs = Some("out/s-policy-on-logs".into());
        let [login] = &run.legit.hindered[..] else {
            panic!("one hindered login: {:?}", run.legit.hindered);
        };
        assert_eq!((login.user, login.succeeded), (7, false));
        assert_eq!(login.requests[1].retry_after_secs, Some(3));
        let report = DrillReport {
            scenario: "s".into(),
            description: "d".into(),
            seeding: "cheap".into(),
            runs: vec![run],
            comparison: None,
        };
        let table = report.table();
        assert!(
            table.contains(
                "policy on: hindered login: user 7 (new device, typo first) did not get in: \
                 1.0 s 0 Challenged -> 1.4 s 429 Refused, Retry-After 3"
            ),
            "{table}"
        );
        assert!(
            table.contains("policy on: the stack's logs: out/s-policy-on-logs"),
            "{table}"
        );
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let times: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&times, 50), 50.0);
        assert_eq!(percentile(&times, 99), 99.0);
        assert_eq!(percentile(&times[..1], 99), 1.0);
        assert_eq!(percentile(&[], 50), 0.0);
    }

    #[test]
    fn the_comparison_divides_off_by_on_and_says_when_everything_was_stopped() {
        let traffic = |outcome| Traffic {
            samples: (0..4)
                .map(|n| sample(Sender::Attacker(n), outcome, 0, 1))
                .collect(),
            ..Traffic::default()
        };
        let off = RunReport::new(false, "x", &plan(), &traffic(Outcome::Succeeded));
        let on = RunReport::new(true, "x", &plan(), &traffic(Outcome::Refused));
        let comparison = Comparison::new(&on, &off);
        assert_eq!((comparison.verified_off, comparison.verified_on), (4, 0));
        assert_eq!(comparison.verified_reduction, None);
        assert_eq!(comparison.compromised_off, 3);
        let report = DrillReport {
            scenario: "s".into(),
            description: "d".into(),
            seeding: "cheap".into(),
            runs: vec![on, off],
            comparison: Some(comparison),
        };
        let table = report.table();
        assert!(
            table.contains("guesses verified 4 -> 0 (all 4 stopped)"),
            "{table}"
        );
        assert!(table.contains("policy off"), "{table}");
    }

    #[test]
    fn the_attackers_cost_per_compromised_account_is_compared() {
        let traffic = |hits: usize, cpu_secs: u64| Traffic {
            samples: (0..4)
                .map(|n| {
                    let outcome = if n < hits {
                        Outcome::Succeeded
                    } else {
                        Outcome::Challenged
                    };
                    sample(Sender::Attacker(n), outcome, 0, 1)
                })
                .collect(),
            attacker_cpu: Duration::from_secs(cpu_secs),
            ..Traffic::default()
        };
        // Off: all four pairs get in, on three accounts (two pairs name "a"); on: one.
        let off = RunReport::new(false, "x", &plan(), &traffic(4, 3));
        let on = RunReport::new(true, "x", &plan(), &traffic(1, 300));
        // An attacker's challenges and refusals hinder no person.
        assert!(!off.went_wrong() && !on.went_wrong());
        assert_eq!(off.attacker.cpu_secs_per_compromised, Some(1.0));
        assert_eq!(on.attacker.cpu_secs_per_compromised, Some(300.0));
        let comparison = Comparison::new(&on, &off);
        assert_eq!(comparison.cost_per_compromise_factor, Some(300.0));
        let nothing = RunReport::new(true, "x", &plan(), &traffic(0, 300));
        assert_eq!(
            Comparison::new(&nothing, &off).cost_per_compromise_factor,
            None
        );
    }
}
