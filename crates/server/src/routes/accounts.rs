//! `POST /v1/users`: HTTP in and out of the registration use case (see
//! [`portcullis_accounts::registration`]).

use actix_web::{HttpResponse, post, web};
use portcullis_accounts::AppState;
use portcullis_accounts::registration;
use serde::Serialize;
use utoipa::ToSchema;

use super::openapi::{BodyRefused, Throttled, Unavailable};
use super::{ClientIp, Credentials};
use crate::error::{ApiError, Problem};

/// A new account.
#[derive(Serialize, ToSchema)]
pub struct Registered {
    /// The account's public id (the `sub` of its sessions and access tokens).
    id: String,
    /// The normalised username.
    username: String,
}

/// Registers an account: 201, 409 for a taken normalised username or a look-alike of one (same
/// confusable skeleton), 400 for bad input or a password the rules refuse (`weak_password`,
/// `breached_password`). Every registration counts against the client's address, subnet and
/// network limits before anything is checked, whatever its outcome (the password rules cost
/// CPU, an accepted password a hash), and a risky source must solve a challenge first, as for
/// a login.
#[utoipa::path(
    tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 201, description = "Registered", body = Registered),
        (status = 400, description = "`bad_request`, `invalid_username`, `weak_password` / `breached_password` (with `reason`), `invalid_forwarded_header`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`challenge_required` / `challenge_failed` (with `challenge`): a risky source must solve one first", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`username_taken`: the normalised username, or a look-alike of one, is registered", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        Throttled,
        Unavailable,
    )
)]
#[post("/v1/users")]
pub async fn register(
    state: web::Data<AppState>,
    ClientIp(ip): ClientIp,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let account = registration::register(&state, ip, body.parsed(), body.altcha()).await?;
    Ok(HttpResponse::Created().json(Registered {
        id: account.id,
        username: account.username,
    }))
}
