//! `POST /v1/email` and `POST /v1/email/verify`: HTTP in and out of the verified-address use
//! case (see [`portcullis_accounts::addresses`]).

use actix_web::{HttpRequest, HttpResponse, post, web};
use portcullis_accounts::addresses;
use portcullis_accounts::login::{Reauthentication, StepUp};
use portcullis_accounts::{AppState, Error};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::{BodyRefused, Throttled, Unavailable};
use super::{ClientIp, HttpState, bearer_digest, checked_password};
use crate::error::{ApiError, Problem};

/// `{"email", "current_password", "altcha"?}` with a session.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAddress {
    /// The address to verify (at most 254 characters).
    #[schema(min_length = 3, max_length = 254)]
    email: String,
    /// The password now (checked like a login; at most 1024 bytes).
    #[schema(value_type = String, min_length = 1, max_length = 1024)]
    current_password: SecretString,
    /// The payload of a solved challenge, when one was asked.
    altcha: Option<String>,
}

/// An address waiting for its owner to follow the link sent to it.
#[derive(Serialize, ToSchema)]
pub struct AddressPending {
    /// The address, as stored (trimmed, lower-cased).
    email: String,
}

/// `{"token"}`: the token of a verification link.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyAddress {
    /// The link's `token` parameter.
    #[schema(min_length = 43, max_length = 43)]
    token: String,
}

/// A verified address.
#[derive(Serialize, ToSchema)]
pub struct AddressVerified {
    /// The account's verified address now.
    email: String,
}

/// Sets or changes the account's address: 202, and a verification link goes to it (24 hours,
/// single use); the address receives nothing else until the link is followed. The current
/// password is checked like a login (counted, lockable, challengeable).
#[utoipa::path(
    tag = "accounts",
    request_body = SetAddress,
    security(("session" = [])),
    responses(
        (status = 202, description = "A verification link was queued for the address", body = AddressPending),
        (status = 400, description = "`bad_request`, `invalid_email`, `invalid_forwarded_header`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`invalid_credentials` (wrong current password, counted like a login), `unauthenticated`, `challenge_required` / `challenge_failed`", body = Problem, content_type = "application/problem+json"),
        (status = 423, description = "`locked` (only with `responses.disclose_lockouts`)", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        Throttled,
        Unavailable,
    )
)]
#[post("/v1/email")]
pub async fn set_address(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    body: web::Json<SetAddress>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let cookie = request.cookie(&http.device.cookie_name);
    let address_request = Reauthentication {
        session_digest: bearer_digest(&request).ok_or(Error::Unauthenticated)?,
        ip,
        step_up: StepUp::Password(checked_password(body.current_password, "current_password")?),
        device_cookie: cookie.as_ref().map(|c| c.value()),
        altcha: body.altcha.as_deref(),
    };
    let email = addresses::request(&state, address_request, &body.email).await?;
    Ok(HttpResponse::Accepted().json(AddressPending { email }))
}

/// Follows a verification link: 200 with the account's verified address now; 400
/// `invalid_link` for a link that is unknown, expired or used; 409 `email_taken` when the
/// address is another account's verified one.
#[utoipa::path(
    tag = "accounts",
    request_body = VerifyAddress,
    responses(
        (status = 200, description = "Verified", body = AddressVerified),
        (status = 400, description = "`bad_request`, `invalid_link`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`email_taken`: another account's verified address", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        Unavailable,
    )
)]
#[post("/v1/email/verify")]
pub async fn verify_address(
    state: web::Data<AppState>,
    body: web::Json<VerifyAddress>,
) -> Result<HttpResponse, ApiError> {
    let email = addresses::verify(&state, &body.token).await?;
    Ok(HttpResponse::Ok().json(AddressVerified { email }))
}
