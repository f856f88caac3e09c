//! `POST /v1/account/not-me` and `POST /v1/account/unlock`: the links in notices to the
//! account's owner (see [`portcullis_accounts::notices`]), for clients that render their own
//! pages; the hosted pages post to the same use cases.

use actix_web::{HttpResponse, post, web};
use portcullis_accounts::{AppState, notices};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::{BodyRefused, Unavailable};
use crate::error::{ApiError, Problem};

/// `{"token"}`: the token of a notice's link.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoticeLink {
    /// The link's `token` parameter.
    #[schema(min_length = 43, max_length = 43)]
    token: String,
}

/// What disowning a login did.
#[derive(Serialize, ToSchema)]
pub struct LoginDisowned {
    /// Sessions of the account that ended: every one.
    revoked_sessions: u64,
}

/// Follows the "this wasn't me" link of a new-device notice: every session of the account
/// ends, the account is locked until a reset, and a reset link goes to its verified address.
/// 400 `invalid_link` for a link that is unknown, expired (7 days) or used.
#[utoipa::path(
    tag = "accounts",
    request_body = NoticeLink,
    responses(
        (status = 200, description = "Every session ended, the account is locked until a reset; a reset link was mailed", body = LoginDisowned),
        (status = 400, description = "`bad_request`, `invalid_link`", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        Unavailable,
    )
)]
#[post("/v1/account/not-me")]
pub async fn disown_login(
    state: web::Data<AppState>,
    body: web::Json<NoticeLink>,
) -> Result<HttpResponse, ApiError> {
    let revoked_sessions = notices::disown_login(&state, &body.token).await?;
    Ok(HttpResponse::Ok().json(LoginDisowned { revoked_sessions }))
}

/// Follows the unlock link of a lockout notice: the account's lockout (temporary or permanent)
/// is lifted on every replica within a second; bans on sources stay. 400 `invalid_link` for a
/// link that is unknown, expired (24 hours) or used.
#[utoipa::path(
    tag = "accounts",
    request_body = NoticeLink,
    responses(
        (status = 204, description = "The account's lockout was lifted"),
        (status = 400, description = "`bad_request`, `invalid_link`", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        Unavailable,
    )
)]
#[post("/v1/account/unlock")]
pub async fn unlock_by_link(
    state: web::Data<AppState>,
    body: web::Json<NoticeLink>,
) -> Result<HttpResponse, ApiError> {
    notices::unlock(&state, &body.token).await?;
    Ok(HttpResponse::NoContent().finish())
}
