//! A root span per request, with a request id echoed in `x-request-id`, `Cache-Control:
//! no-store` on every answer that does not set its own (they carry tokens, challenges and
//! per-client limits), `Strict-Transport-Security` when the listener speaks HTTPS, and
//! `Connection: close` while the replica drains ([`crate::shutdown`]).
//!
//! The span's identity (`request_id`, `method`, `path`, and `client_ip` once the client address
//! is resolved) is held back until a line needs it ([`crate::request_identity`]). Handlers
//! record `username`, `outcome` and `reason` into the span once known (through
//! `tracing::Span::current()`), so one line per request tells what happened; a request
//! refused before verification tells it at DEBUG, since the guard's refusal log summarises
//! those, and so does forward authentication, which a proxy asks for every request it passes
//! (its span is DEBUG too). Unless DEBUG lines can print, a refusal records neither whom nor
//! why nor its status into the span: the formatter writes out each recorded field at once,
//! printed or not, and refusals come in floods. Nothing here records bodies or headers: they may
//! carry passwords and tokens. One middleware does both jobs: it runs on every request, refused
//! floods included, so it is kept to one layer.

use std::future::{Ready, ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::ConnectionType;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use futures_util::future::LocalBoxFuture;
use portcullis_accounts::refusal_log;
use tracing::Instrument;

use crate::error::Summarised;
use crate::request_identity::{self, Identity};
use crate::routes::FORWARD_AUTH_PATH;
use crate::shutdown::Drain;

/// The response header carrying the request id.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The middleware (`App::wrap(RequestSpan { hsts, drain })`).
pub struct RequestSpan {
    /// Whether answers carry `Strict-Transport-Security` (the listener is HTTPS).
    pub hsts: bool,
    /// The replica's shutdown: while it drains, every answer closes its connection.
    pub drain: Arc<Drain>,
}

impl<S, B> Transform<S, ServiceRequest> for RequestSpan
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = RequestSpanService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestSpanService {
            service,
            hsts: self.hsts,
            drain: self.drain.clone(),
        }))
    }
}

/// [`RequestSpan`] around one service.
pub struct RequestSpanService<S> {
    service: S,
    hsts: bool,
    drain: Arc<Drain>,
}

impl<S, B> Service<ServiceRequest> for RequestSpanService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<ServiceResponse<B>, actix_web::Error>>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let request_id = new_request_id();
        let request_id_header = HeaderValue::from_str(&request_id).ok();
        macro_rules! request_span {
            ($level:expr) => {
                tracing::span!(
                    $level,
                    "request",
                    request_id = tracing::field::Empty,
                    method = tracing::field::Empty,
                    path = tracing::field::Empty,
                    status = tracing::field::Empty,
                    client_ip = tracing::field::Empty,
                    username = tracing::field::Empty,
                    outcome = tracing::field::Empty,
                    reason = tracing::field::Empty,
                )
            };
        }
        // Forward authentication's span is DEBUG, as its line is: a proxy asks once per request
        // it passes, and at the default level the span is then not even built.
        let span = if request.path() == FORWARD_AUTH_PATH {
            request_span!(tracing::Level::DEBUG)
        } else {
            request_span!(tracing::Level::INFO)
        };
        if !span.is_disabled() {
            request_identity::hold(
                &span,
                Identity {
                    request_id,
                    method: request.method().clone(),
                    path: request.path().to_owned(),
                    client_ip: None,
                },
            );
        }
        let started = Instant::now();
        let hsts = self.hsts;
        // Read once, as the request arrives: no reference counting on every request (refused
        // floods included). A request already under way keeps its connection; the next one
        // on it closes it.
        let draining = self.drain.is_draining();
        let call = span.in_scope(|| self.service.call(request));
        Box::pin(async move {
            let mut response = call.instrument(span.clone()).await?;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            // An answer summarised elsewhere (see `Summarised`) has its own line at DEBUG, and
            // nothing is recorded for a line that cannot print.
            let summarised = response.response().extensions().contains::<Summarised>();
            if !summarised || refusal_log::request_lines() {
                span.record("status", response.status().as_u16());
            }
            span.in_scope(|| {
                if summarised {
                    tracing::debug!(elapsed_ms, "request finished");
                } else {
                    tracing::info!(elapsed_ms, "request finished");
                }
            });
            let headers = response.headers_mut();
            if let Some(value) = request_id_header {
                headers.insert(REQUEST_ID_HEADER, value);
            }
            if !headers.contains_key(header::CACHE_CONTROL) {
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            if hsts {
                headers.insert(
                    header::STRICT_TRANSPORT_SECURITY,
                    HeaderValue::from_static(crate::tls::HSTS),
                );
            }
            if draining {
                response
                    .response_mut()
                    .head_mut()
                    .set_connection_type(ConnectionType::Close);
            }
            Ok(response)
        })
    }
}

/// 96 bits, hex: a random per-process half and a counter, unique enough to correlate across
/// replicas and short enough to read, without an entropy syscall per request.
fn new_request_id() -> String {
    static PROCESS: OnceLock<[u8; 6]> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| {
        let mut bytes = [0u8; 6];
        // With no entropy source the process half is all zeros: still unique within the process.
        let _ = getrandom::fill(&mut bytes);
        bytes
    });
    let count = NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    let mut id = [0u8; 12];
    id[..6].copy_from_slice(process);
    id[6..].copy_from_slice(&count[2..]);
    portcullis_core::hex_string(&id)
}

#[cfg(test)]
mod tests {
    use super::new_request_id;

    #[test]
    fn request_ids_are_unique_and_share_the_process_half() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_eq!((a.len(), b.len()), (24, 24));
        assert_ne!(a, b);
        assert_eq!(a[..12], b[..12]);
    }
}
