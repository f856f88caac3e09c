//! `/admin/v1/outbox` and `/admin/v1/mail/...`: the mail outbox as operators see it, and mail
//! an operator sends for an owner who asks: a reset link to the verified address, and a
//! verification link again (the owner's expired or went astray).

use actix_web::{HttpResponse, get, post, web};
use portcullis_accounts::mail::outbox::Unsent;
use portcullis_accounts::{AppState, addresses, password_reset};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::admin::{Admin, Limit};
use super::openapi::{AdminRefused, BodyRefused, Throttled, Unavailable};
use super::parse_username;
use crate::error::{ApiError, Problem};

/// The mail outbox.
#[derive(Serialize, ToSchema)]
pub struct OutboxView {
    /// Messages waiting for their first or next attempt.
    queued: u64,
    /// Messages sent (kept seven days, without their bodies).
    sent: u64,
    /// Messages given up after about a day of attempts.
    failed: u64,
    /// The newest messages not sent, newest first: `id`, `kind`, `recipient`, `state`,
    /// `attempts`, `next_attempt_at` (Unix milliseconds), `last_error`.
    #[schema(value_type = Vec<Object>)]
    unsent: Vec<Unsent>,
}

/// `GET /admin/v1/outbox?limit=`: the mail outbox by state, and its newest unsent messages
/// with why their last attempt failed.
#[utoipa::path(
    tag = "admin",
    security(("admin" = [])),
    params(Limit),
    responses(
        (status = 200, description = "The outbox", body = OutboxView),
        (status = 400, description = "`bad_request`: an unreadable query, or a limit outside 1..=1000", body = Problem, content_type = "application/problem+json"),
        AdminRefused,
        Throttled,
        Unavailable,
    )
)]
#[get("/admin/v1/outbox")]
pub async fn outbox(
    _: Admin,
    state: web::Data<AppState>,
    query: web::Query<Limit>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.value()?;
    let depth = state.outbox.depth().await?;
    let unsent = state
        .outbox
        .unsent(u32::try_from(limit).unwrap_or(1_000))
        .await?;
    Ok(HttpResponse::Ok().json(OutboxView {
        queued: depth.queued,
        sent: depth.sent,
        failed: depth.failed,
        unsent,
    }))
}

/// `{"username"}`: the account mail goes out for.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForAccount {
    /// The account's username.
    #[schema(min_length = 1, max_length = 256)]
    username: String,
}

/// A reset link an operator asked for.
#[derive(Serialize, ToSchema)]
pub struct ResetQueued {
    /// Whether a link was queued: false when the account had its three reset links this hour
    /// already (the owner's mailbox is protected from operators too).
    queued: bool,
}

/// A verification link an operator sent again.
#[derive(Serialize, ToSchema)]
pub struct VerificationQueued {
    /// The pending address it went to.
    email: String,
}

/// `POST /admin/v1/mail/reset {"username"}`: mails a reset link to the account's verified
/// address.
#[utoipa::path(
    tag = "admin",
    security(("admin" = [])),
    request_body = ForAccount,
    responses(
        (status = 202, description = "Queued, or held back by the hourly cap (`queued`)", body = ResetQueued),
        (status = 400, description = "`bad_request`, `invalid_username`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_account`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`no_address`: the account has no verified address", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        AdminRefused,
        Throttled,
        Unavailable,
    )
)]
#[post("/admin/v1/mail/reset")]
pub async fn send_reset(
    _: Admin,
    state: web::Data<AppState>,
    body: web::Json<ForAccount>,
) -> Result<HttpResponse, ApiError> {
    let username = parse_username(&body.username)?;
    let queued = password_reset::send_for_operator(&state, &username).await?;
    Ok(HttpResponse::Accepted().json(ResetQueued { queued }))
}

/// `POST /admin/v1/mail/verification {"username"}`: mails a new verification link to the
/// account's pending address (the older link stops working).
#[utoipa::path(
    tag = "admin",
    security(("admin" = [])),
    request_body = ForAccount,
    responses(
        (status = 202, description = "Queued", body = VerificationQueued),
        (status = 400, description = "`bad_request`, `invalid_username`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_account`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`no_address`: no address waits for verification", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        AdminRefused,
        Throttled,
        Unavailable,
    )
)]
#[post("/admin/v1/mail/verification")]
pub async fn resend_verification(
    _: Admin,
    state: web::Data<AppState>,
    body: web::Json<ForAccount>,
) -> Result<HttpResponse, ApiError> {
    let username = parse_username(&body.username)?;
    let email = addresses::resend_link(&state, &username).await?;
    Ok(HttpResponse::Accepted().json(VerificationQueued { email }))
}
