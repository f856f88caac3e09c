//! A root span per request, with a request id echoed in `x-request-id`.
//!
//! Handlers record `client_ip`, `username`, `outcome` and `reason` into the span once known (through
//! `tracing::Span::current()`), so one line per request tells what happened. Nothing here
//! records bodies or headers: they may carry passwords and tokens.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

/// The response header carrying the request id.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Middleware (for `actix_web::middleware::from_fn`): wraps the request in its root span.
pub async fn root_span(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = new_request_id();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.path(),
        status = tracing::field::Empty,
        client_ip = tracing::field::Empty,
        username = tracing::field::Empty,
        outcome = tracing::field::Empty,
        reason = tracing::field::Empty,
    );
    let started = Instant::now();
    let result = next.call(request).instrument(span.clone()).await;
    let mut response = result?;
    let status = response.status().as_u16();
    span.record("status", status);
    span.in_scope(|| {
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request finished"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    Ok(response)
}

/// 96 random bits, hex: unique enough to correlate, short enough to read.
fn new_request_id() -> String {
    let mut bytes = [0u8; 12];
    // With no entropy source the id is all zeros: still a valid header, never a failure.
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}
