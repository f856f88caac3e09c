//! Logging: human-readable by default, JSON lines with `log_format = "json"`.
//!
//! Lockouts and other security-relevant events go to the `security` target, so they can be
//! routed separately (`RUST_LOG=security=info,warn`). Lines are written by a thread of their own
//! (tracing-appender's non-blocking writer), so a slow log collector never blocks a worker: when
//! its buffer is full, lines are dropped and counted ([`dropped_lines`], the metric
//! `portcullis_log_lines_dropped_total`).

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::ParseError;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::request_identity::WriteHeld;

use crate::settings::LogFormat;

/// The installed writer's count of dropped lines.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the global subscriber; a second call (tests start many apps) changes nothing and
/// returns `None`. Keep the guard for the life of the process: dropping it flushes and stops
/// the writer.
#[must_use = "the writer stops when the guard is dropped"]
pub fn init(format: LogFormat, level: &str) -> Option<WorkerGuard> {
    let Filter {
        filter,
        directives,
        passed_over,
    } = choose_filter(std::env::var(EnvFilter::DEFAULT_ENV).ok(), level);
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let dropped = writer.error_counter();
    // Colours only for a person at a terminal: escapes in a file are noise.
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    // A request's identity is written into its span only when a line needs it: `WriteHeld`
    // sits between the registry and the formatter, so that it sees every line first.
    let held = tracing_subscriber::registry()
        .with(filter)
        .with(write_held(&directives));
    let installed = match format {
        LogFormat::Pretty => held.with(lines).try_init(),
        LogFormat::Json => held
            .with(lines.json().flatten_event(true).with_current_span(true))
            .try_init(),
    };
    // An error: a subscriber is already installed, which is fine.
    installed.ok()?;
    let _ = DROPPED.set(dropped);
    if let Some(error) = passed_over {
        tracing::warn!(%error, "RUST_LOG is not a tracing filter; log_level applies");
    }
    Some(guard)
}

/// The filter [`init`] installs, with the directives it was made of.
struct Filter {
    filter: EnvFilter,
    directives: String,
    /// Why `RUST_LOG` was passed over, if it was set and did not parse.
    passed_over: Option<ParseError>,
}

/// `RUST_LOG` (`env`) when it parses, else `log_level` (which [`crate::settings::Settings`]
/// has checked).
fn choose_filter(env: Option<String>, level: &str) -> Filter {
    let of_level = |passed_over| Filter {
        filter: EnvFilter::new(level),
        directives: level.to_owned(),
        passed_over,
    };
    match env.map(|directives| EnvFilter::try_new(&directives).map(|filter| (filter, directives))) {
        Some(Ok((filter, directives))) => Filter {
            filter,
            directives,
            passed_over: None,
        },
        Some(Err(error)) => of_level(Some(error)),
        None => of_level(None),
    }
}

/// [`WriteHeld`], unless the filter `directives` select spans by a field's value
/// (`[request{path=/v1/login}]=debug`): such a filter matches fields as they are recorded, so a
/// request's identity must be recorded as its span is made.
pub(crate) fn write_held(directives: &str) -> Option<WriteHeld> {
    (!directives.contains('[')).then_some(WriteHeld)
}

/// Lines the writer dropped because its buffer was full (0 before [`init`]).
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_is_chosen_when_it_parses_and_named_when_it_does_not() {
        let chosen = choose_filter(Some("portcullis_server=debug,warn".to_owned()), "info");
        assert_eq!(chosen.directives, "portcullis_server=debug,warn");
        assert!(chosen.passed_over.is_none());

        let chosen = choose_filter(Some("portcullis_server=loud".to_owned()), "warn");
        assert_eq!(chosen.directives, "warn");
        assert!(chosen.passed_over.is_some());

        let chosen = choose_filter(None, "warn");
        assert_eq!(chosen.directives, "warn");
        assert!(chosen.passed_over.is_none());
    }
}
