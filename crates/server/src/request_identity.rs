//! Which request a span is (its id, method, path and client address), held back until a line
//! needs it.
//!
//! The log formatter writes out each field as it is recorded into a span, whether a line ever
//! prints the span or not; a refused flood prints none ([`portcullis_accounts::refusal_log`]),
//! and writing out these four was about a tenth of a refusal's CPU. So [`hold`] keeps the values in
//! the span's registry entry, and [`WriteHeld`], a layer nearer the registry than the formatter,
//! writes them into the span just before the first line inside it, or the first other field
//! recorded into it: every line reads as if they had been recorded at once, in the same order.
//! Where the subscriber has no registry or no [`WriteHeld`] (`telemetry` leaves it out for a
//! filter that picks spans by a field's value), they are written at once.

use std::net::IpAddr;

use actix_web::http::Method;
use tracing::field::{Value, display};
use tracing::span::{Id, Record};
use tracing::{Dispatch, Event, Metadata, Span, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// A request's identity, as its span's fields `request_id`, `method`, `path` and `client_ip`.
pub struct Identity {
    /// The request id (also in `x-request-id`).
    pub request_id: String,
    /// The request's method.
    pub method: Method,
    /// The request's path.
    pub path: String,
    /// The client address, once resolved ([`record_client_ip`]).
    pub client_ip: Option<IpAddr>,
}

impl Identity {
    /// Records the identity into the span `id` (of `metadata`) through `dispatch`.
    fn write(&self, id: &Id, metadata: &'static Metadata<'static>, dispatch: &Dispatch) {
        let fields = metadata.fields();
        let (Some(request_id), Some(method), Some(path), Some(client_ip)) = (
            fields.field("request_id"),
            fields.field("method"),
            fields.field("path"),
            fields.field("client_ip"),
        ) else {
            return;
        };
        let ip = self.client_ip.map(display);
        let values = [
            (&request_id, Some(&display(&self.request_id) as &dyn Value)),
            (&method, Some(&display(&self.method) as &dyn Value)),
            (&path, Some(&display(&self.path) as &dyn Value)),
            (&client_ip, ip.as_ref().map(|ip| ip as &dyn Value)),
        ];
        dispatch.record(id, &Record::new(&fields.value_set(&values)));
    }
}

/// An identity held in its span's registry entry, with the dispatcher to write it through.
struct Held {
    identity: Identity,
    dispatch: Dispatch,
}

/// Holds `identity` back in `span` until a line needs it (written at once where nothing would
/// write it out later).
pub fn hold(span: &Span, identity: Identity) {
    let mut identity = Some(identity);
    span.with_subscriber(|(id, dispatch)| {
        let entry = holding_span(id, dispatch)?;
        let identity = identity.take()?;
        entry.extensions_mut().insert(Held {
            identity,
            dispatch: dispatch.clone(),
        });
        Some(())
    });
    if let Some(identity) = identity {
        span.with_subscriber(|(id, dispatch)| {
            if let Some(metadata) = span.metadata() {
                identity.write(id, metadata, dispatch);
            }
        });
    }
}

/// Records the client address into the current (request) span: held with the rest of its
/// identity while that is held.
pub fn record_client_ip(ip: IpAddr) {
    let span = Span::current();
    let held = span
        .with_subscriber(|(id, dispatch)| {
            let entry = holding_span(id, dispatch)?;
            let mut extensions = entry.extensions_mut();
            let held = extensions.get_mut::<Held>()?;
            held.identity.client_ip = Some(ip);
            Some(())
        })
        .flatten();
    if held.is_none() {
        span.record("client_ip", display(ip));
    }
}

/// The span's registry entry, where the subscriber has [`WriteHeld`] to write out what is held
/// there.
fn holding_span<'a>(id: &Id, dispatch: &'a Dispatch) -> Option<SpanRef<'a, Registry>> {
    dispatch.downcast_ref::<WriteHeld>()?;
    dispatch.downcast_ref::<Registry>()?.span(id)
}

/// The layer that writes a held identity into its span before the span's first line or other
/// field (install it between the registry and the formatter: layers nearer the registry see
/// each event and record first).
pub struct WriteHeld;

impl<S> Layer<S> for WriteHeld
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_record(&self, id: &Id, _: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            write_held(&span);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        for span in ctx.event_scope(event).into_iter().flatten() {
            write_held(&span);
        }
    }
}

/// Writes `span`'s held identity into it, if it holds one (once: it is taken out first, and
/// the write's own record finds nothing held).
fn write_held<S: for<'a> LookupSpan<'a>>(span: &SpanRef<'_, S>) {
    let held = span.extensions_mut().remove::<Held>();
    if let Some(Held { identity, dispatch }) = held {
        identity.write(&span.id(), span.metadata(), &dispatch);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::IpAddr;
    use std::sync::{Arc, Mutex};

    use actix_web::http::Method;
    use tracing_subscriber::Layer;
    use tracing_subscriber::fmt::FormattedFields;
    use tracing_subscriber::fmt::format::DefaultFields;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::registry::LookupSpan;

    use super::{Identity, WriteHeld, hold, record_client_ip};

    /// Lines written by a formatter, kept for the test.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Runs `requests` under the installed subscriber (registry, `WriteHeld`, formatter at
    /// INFO), or with `WriteHeld` left out, and returns what was written.
    fn written(with_layer: bool, requests: impl FnOnce()) -> String {
        let lines = Lines::default();
        let registry =
            tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::INFO);
        if with_layer {
            let subscriber = registry.with(WriteHeld).with(format(&lines));
            tracing::subscriber::with_default(subscriber, requests);
        } else {
            tracing::subscriber::with_default(registry.with(format(&lines)), requests);
        }
        lines.text()
    }

    /// The formatter as installed (without colours or times), writing into `lines`.
    fn format<S>(lines: &Lines) -> impl Layer<S> + Send + Sync
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let writer = lines.clone();
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
    }

    /// A request's span, its identity held.
    fn request_span(id: &str) -> tracing::Span {
        let span = tracing::info_span!(
            "request",
            request_id = tracing::field::Empty,
            method = tracing::field::Empty,
            path = tracing::field::Empty,
            client_ip = tracing::field::Empty,
            username = tracing::field::Empty,
        );
        hold(
            &span,
            Identity {
                request_id: id.to_owned(),
                method: Method::POST,
                path: "/v1/login".to_owned(),
                client_ip: None,
            },
        );
        span
    }

    fn request(id: &str, ip: Option<&str>, line: bool, username: Option<&str>) {
        request_span(id).in_scope(|| {
            if let Some(ip) = ip {
                record_client_ip(ip.parse::<IpAddr>().unwrap());
            }
            if let Some(username) = username {
                tracing::Span::current().record("username", username);
            }
            if line {
                tracing::info!("request finished");
            }
        });
    }

    #[test]
    fn a_line_inside_the_span_carries_its_identity_in_the_order_declared() {
        let text = written(true, || {
            request("r1", Some("203.0.113.7"), true, Some("u1"))
        });
        assert!(
            text.contains(
                "request{request_id=r1 method=POST path=/v1/login client_ip=203.0.113.7 \
                 username=\"u1\"}"
            ),
            "{text}"
        );
        assert_eq!(text.matches("request_id=").count(), 1, "{text}");
    }

    #[test]
    fn an_identity_is_written_before_a_field_recorded_with_no_line_yet() {
        let text = written(true, || {
            let span = request_span("r2");
            span.in_scope(|| record_client_ip([198, 51, 100, 1].into()));
            span.record("username", "u2");
            span.in_scope(|| tracing::info!("request finished"));
        });
        assert!(
            text.contains(
                "request{request_id=r2 method=POST path=/v1/login client_ip=198.51.100.1 \
                 username=\"u2\"}"
            ),
            "{text}"
        );
    }

    /// What the formatter has written out of the current span's fields so far.
    fn formatted_so_far() -> String {
        tracing::Span::current()
            .with_subscriber(|(id, dispatch)| {
                let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
                let span = registry.span(id)?;
                let extensions = span.extensions();
                let fields = extensions.get::<FormattedFields<DefaultFields>>()?;
                Some(fields.fields.clone())
            })
            .flatten()
            .unwrap()
    }

    #[test]
    fn a_request_with_no_line_has_nothing_formatted() {
        // What a refused flood costs: its address recorded, nothing formatted, nothing written.
        let mut formatted = None;
        let text = written(true, || {
            let span = request_span("r3");
            span.in_scope(|| {
                record_client_ip([203, 0, 113, 7].into());
                formatted = Some(formatted_so_far());
            });
        });
        assert_eq!((formatted.as_deref(), text.as_str()), (Some(""), ""));
    }

    #[test]
    fn a_filter_selecting_requests_by_path_sees_the_path_as_the_span_is_made() {
        let directives = "info,[request{path=/v1/login}]=debug";
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new(directives))
            .with(crate::telemetry::write_held(directives))
            .with(format(&lines));
        tracing::subscriber::with_default(subscriber, || {
            request_span("r5").in_scope(|| tracing::debug!("a line the directive asks for"));
        });
        let text = lines.text();
        assert!(text.contains("a line the directive asks for"), "{text}");
        assert!(text.contains("request{request_id=r5"), "{text}");
    }

    #[test]
    fn without_the_layer_the_identity_is_written_at_once() {
        let text = written(false, || request("r4", Some("203.0.113.7"), true, None));
        assert!(
            text.contains(
                "request{request_id=r4 method=POST path=/v1/login client_ip=203.0.113.7}"
            ),
            "{text}"
        );
    }
}
