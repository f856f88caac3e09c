//! The service's metrics, exported at `GET /metrics` in Prometheus text format.
//!
//! - `portcullis_decisions_total{outcome, reason, dimension}`: attempts allowed, challenged or
//!   refused.
//! - `portcullis_challenge_solutions_total{result}`: solved-challenge payloads, accepted or why
//!   not.
//! - `portcullis_deny_cache_hits_total`, `portcullis_deny_cache_store_calls_avoided_total`,
//!   `portcullis_deny_cache_entries`: refusals answered from the replica's deny cache.
//! - `portcullis_logins_total{outcome}`: verified logins by outcome.
//! - `portcullis_mfa_codes_total{result}`: second-factor codes accepted, wrong, replayed or
//!   refused by `policy.mfa`.
//! - `portcullis_hash_in_flight`, `portcullis_hash_wait_seconds`, `portcullis_hash_rejected_total`:
//!   the Argon2 pool's queue; `portcullis_challenged_at_turn_total`: attempts challenged when
//!   their turn in it came, or once their password was checked (the answer withheld).
//! - `portcullis_store_call_seconds{op}`, `portcullis_store_errors_total{op}`: attempt-store
//!   calls.
//! - `portcullis_under_attack`, `portcullis_store_degraded`: the service-wide signal and the
//!   Redis breaker.
//! - `portcullis_attack_detector_z{detector}`, `portcullis_attack_detector_observed{detector}`,
//!   `portcullis_attack_tripped{detector}`: each detector of the signal as of the scrape, and
//!   which one's trip is in force.
//! - `portcullis_log_lines_dropped_total`: log lines the non-blocking writer dropped.
//! - `portcullis_forward_auth_total{result}`, `portcullis_session_cache_total{result}`: forward
//!   authentication's answers, and how often the session cache answered for the database.
//! - `portcullis_mail_outbox{state}`, `portcullis_mail_send_failures_total`: the mail outbox.
//!
//! [`METRICS`] lists them with their help text, which [`install`] registers, so every metric
//! carries `# HELP` text.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Instant;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use portcullis_core::attack::{Assessment, Detector};
use portcullis_core::{Denial, Dimension, Reason};

/// Latency buckets in seconds, from a Redis round trip to an Argon2 hash under load.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The process-wide recorder (installed once: tests start many applications in one process).
pub fn handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &BUCKETS)
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|error| tracing::warn!(%error, "metrics recorder not installed"))
                .ok()
        })
        .clone()
}

/// What kind of series a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Seconds, in the [`BUCKETS`].
    Histogram,
}

/// One metric the service exports.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    /// The metric's name.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Its `# HELP` text.
    pub help: &'static str,
}

/// Every metric the service exports (dashboards and alert rules may use these and no others;
/// a test holds them to it).
pub const METRICS: [Metric; 24] = [
    Metric {
        name: "portcullis_decisions_total",
        kind: Kind::Counter,
        help: "Login attempts allowed, challenged or refused by the policy, by outcome, reason and dimension.",
    },
    Metric {
        name: "portcullis_challenge_solutions_total",
        kind: Kind::Counter,
        help: "Proof-of-work payloads received: accepted, or why not (malformed, expired, bad_signature, replayed, wrong_solution).",
    },
    Metric {
        name: "portcullis_logins_total",
        kind: Kind::Counter,
        help: "Admitted login attempts by how they ended: success, failure or abandoned (never verified).",
    },
    Metric {
        name: "portcullis_deny_cache_hits_total",
        kind: Kind::Counter,
        help: "Attempts refused from this replica's deny cache, without a store call.",
    },
    Metric {
        name: "portcullis_deny_cache_store_calls_avoided_total",
        kind: Kind::Counter,
        help: "Store calls the deny cache saved (the attempt call, and the proof's consumption when one was sent).",
    },
    Metric {
        name: "portcullis_deny_cache_entries",
        kind: Kind::Gauge,
        help: "Keys whose refusal this replica remembers.",
    },
    Metric {
        name: "portcullis_mfa_codes_total",
        kind: Kind::Counter,
        help: "Second-factor codes and recovery codes: accepted, wrong, replayed (not counted) or refused by policy.mfa.",
    },
    Metric {
        name: "portcullis_hash_in_flight",
        kind: Kind::Gauge,
        help: "Argon2 jobs running or waiting in the bounded hashing pool.",
    },
    Metric {
        name: "portcullis_hash_wait_seconds",
        kind: Kind::Histogram,
        help: "Time a hashing job waited for a thread.",
    },
    Metric {
        name: "portcullis_hash_rejected_total",
        kind: Kind::Counter,
        help: "Hashing jobs refused with 503 because the queue was full.",
    },
    Metric {
        name: "portcullis_challenged_at_turn_total",
        kind: Kind::Counter,
        help: "Attempts admitted before the service came under attack, challenged at their turn in the hash queue instead of verified, or once verified instead of answered.",
    },
    Metric {
        name: "portcullis_store_call_seconds",
        kind: Kind::Histogram,
        help: "Latency of attempt-store calls, by operation.",
    },
    Metric {
        name: "portcullis_store_errors_total",
        kind: Kind::Counter,
        help: "Attempt-store calls that failed, by operation.",
    },
    Metric {
        name: "portcullis_under_attack",
        kind: Kind::Gauge,
        help: "1 while the under-attack signal is tripped (as of this replica's last admitted attempt).",
    },
    Metric {
        name: "portcullis_attack_detector_z",
        kind: Kind::Gauge,
        help: "Standard deviations above the baseline each detector of the under-attack signal reads, as of the scrape.",
    },
    Metric {
        name: "portcullis_attack_detector_observed",
        kind: Kind::Gauge,
        help: "What each detector of the under-attack signal counts over its recent estimate, as of the scrape.",
    },
    Metric {
        name: "portcullis_attack_tripped",
        kind: Kind::Gauge,
        help: "1 for the detector whose trip of the under-attack signal is in force, 0 for the others.",
    },
    Metric {
        name: "portcullis_log_lines_dropped_total",
        kind: Kind::Counter,
        help: "Log lines dropped because the log writer's buffer was full (workers never wait on the log).",
    },
    Metric {
        name: "portcullis_store_degraded",
        kind: Kind::Gauge,
        help: "1 while the Redis circuit breaker is open and store.on_error applies.",
    },
    Metric {
        name: "portcullis_store_degradations_total",
        kind: Kind::Counter,
        help: "Times the Redis circuit breaker opened: a count that climbs under a steady load means it flaps.",
    },
    Metric {
        name: "portcullis_forward_auth_total",
        kind: Kind::Counter,
        help: "Forward-authentication checks (GET /v1/auth) by result: live (204) or refused (401).",
    },
    Metric {
        name: "portcullis_session_cache_total",
        kind: Kind::Counter,
        help: "Session lookups of forward authentication and introspection by result: answered by the replica's cache (hit) or the database (miss).",
    },
    Metric {
        name: "portcullis_mail_outbox",
        kind: Kind::Gauge,
        help: "Messages in the mail outbox by state (queued, sent, failed), as of the sender's last pass.",
    },
    Metric {
        name: "portcullis_mail_send_failures_total",
        kind: Kind::Counter,
        help: "Attempts to send a message that failed (each retried with back-off, or failed for good).",
    },
];

/// Sets the signal's per-detector gauges from `assessment`.
pub fn attack_signal(assessment: &Assessment) {
    for reading in &assessment.readings {
        let detector = reading.detector.as_str();
        metrics::gauge!("portcullis_attack_detector_z", "detector" => detector).set(reading.z);
        metrics::gauge!("portcullis_attack_detector_observed", "detector" => detector)
            .set(reading.observed);
    }
    for detector in Detector::ALL {
        let tripped = assessment.trip.is_some_and(|t| t.detector == detector);
        metrics::gauge!("portcullis_attack_tripped", "detector" => detector.as_str())
            .set(f64::from(u8::from(tripped)));
    }
}

/// Sets the outbox's depth by state.
pub fn mail_outbox(depth: &crate::mail::outbox::Depth) {
    for (state, n) in [
        ("queued", depth.queued),
        ("sent", depth.sent),
        ("failed", depth.failed),
    ] {
        metrics::gauge!("portcullis_mail_outbox", "state" => state).set(n as f64);
    }
}

/// Counts a failed attempt to send a message.
pub fn mail_send_failed() {
    metrics::counter!("portcullis_mail_send_failures_total").increment(1);
}

/// Sets the count of log lines the writer dropped.
pub fn log_lines_dropped(lines: u64) {
    metrics::counter!("portcullis_log_lines_dropped_total").absolute(lines);
}

/// Installs the recorder (once) and describes every metric the service exports.
pub fn install() {
    if handle().is_none() {
        return;
    }
    for metric in METRICS {
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            Kind::Histogram => {
                metrics::describe_histogram!(metric.name, metrics::Unit::Seconds, metric.help)
            }
        }
    }
}

/// An attempt-store operation, as `portcullis_store_call_seconds` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// Deciding and counting an attempt.
    Attempt,
    /// Recording a verified outcome.
    Record,
    /// Taking back an attempt that was never verified.
    Abandon,
    /// Consuming a solved challenge.
    ConsumeProof,
}

impl StoreOp {
    const ALL: [StoreOp; 4] = [
        StoreOp::Attempt,
        StoreOp::Record,
        StoreOp::Abandon,
        StoreOp::ConsumeProof,
    ];

    fn as_str(self) -> &'static str {
        match self {
            StoreOp::Attempt => "attempt",
            StoreOp::Record => "record",
            StoreOp::Abandon => "abandon",
            StoreOp::ConsumeProof => "consume_proof",
        }
    }
}

/// The metrics counted on every attempt, refused floods included: each label set is registered
/// on first use and its handle kept, since a registry lookup by name and labels costs more than
/// the increment. (Registered on first use, so /metrics lists only series that happened.)
struct PerAttempt {
    /// `portcullis_decisions_total{outcome="denied"}` by reason, then dimension.
    refusals: Vec<OnceLock<Counter>>,
    deny_cache_hits: OnceLock<Counter>,
    store_calls_avoided: OnceLock<Counter>,
    /// By [`StoreOp`].
    store_seconds: Vec<OnceLock<Histogram>>,
    store_errors: Vec<OnceLock<Counter>>,
}

/// `n` handles, each registered on first use.
fn slots<T>(n: usize) -> Vec<OnceLock<T>> {
    (0..n).map(|_| OnceLock::new()).collect()
}

fn per_attempt() -> &'static PerAttempt {
    static HANDLES: OnceLock<PerAttempt> = OnceLock::new();
    HANDLES.get_or_init(|| {
        // Handles registered before the recorder would count into nothing.
        let _ = handle();
        PerAttempt {
            refusals: slots(Reason::ALL.len() * Dimension::ALL.len()),
            deny_cache_hits: OnceLock::new(),
            store_calls_avoided: OnceLock::new(),
            store_seconds: slots(StoreOp::ALL.len()),
            store_errors: slots(StoreOp::ALL.len()),
        }
    })
}

/// Position of `item` in `all` (the enums above list every variant).
fn index<T: PartialEq>(all: &[T], item: &T) -> usize {
    all.iter().position(|x| x == item).unwrap_or_default()
}

/// Counts a refusal by its reason and dimension.
pub fn refused(denial: &Denial) {
    let at = index(&Reason::ALL, &denial.reason) * Dimension::ALL.len()
        + index(&Dimension::ALL, &denial.dimension);
    per_attempt().refusals[at]
        .get_or_init(|| {
            metrics::counter!(
                "portcullis_decisions_total",
                "outcome" => "denied",
                "reason" => denial.reason.as_str(),
                "dimension" => denial.dimension.as_str()
            )
        })
        .increment(1);
}

/// Counts a refusal answered from the deny cache, which saved `calls_avoided` store calls.
pub fn deny_cache_hit(calls_avoided: u64) {
    let handles = per_attempt();
    handles
        .deny_cache_hits
        .get_or_init(|| metrics::counter!("portcullis_deny_cache_hits_total"))
        .increment(1);
    handles
        .store_calls_avoided
        .get_or_init(|| metrics::counter!("portcullis_deny_cache_store_calls_avoided_total"))
        .increment(calls_avoided);
}

/// Times one attempt-store call; counts its errors.
pub async fn store_call<T, E>(
    op: StoreOp,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = Instant::now();
    let result = call.await;
    let at = index(&StoreOp::ALL, &op);
    let handles = per_attempt();
    handles.store_seconds[at]
        .get_or_init(|| metrics::histogram!("portcullis_store_call_seconds", "op" => op.as_str()))
        .record(started.elapsed().as_secs_f64());
    if result.is_err() {
        handles.store_errors[at]
            .get_or_init(|| metrics::counter!("portcullis_store_errors_total", "op" => op.as_str()))
            .increment(1);
    }
    result
}
