//! `/v1/mfa/totp`: enrol a TOTP second factor (`POST`), confirm it with a first code
//! (`POST .../confirm`, which hands out the recovery codes), remove it (`DELETE`). Every call
//! needs a session (`Authorization: Bearer`).

use actix_web::{HttpRequest, HttpResponse, delete, post, web};
use portcullis_accounts::mfa::{self, Proof};
use portcullis_accounts::{AppState, Error};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::alternatives;
use super::openapi::{BodyRefused, MfaThrottled, NoSession, Unavailable};
use super::session_account;
use crate::error::{ApiError, Problem};

/// `{"code"}` or `{"recovery_code"}`, to remove the factor; its schema is
/// [`alternatives::code_or_recovery_code`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    /// Six digits from the authenticator app.
    code: Option<String>,
    /// One of the account's recovery codes.
    recovery_code: Option<String>,
}

alternatives::written_schema!(CodeBody, alternatives::code_or_recovery_code);

/// `{"code"}`: the first code, which confirms an enrolment.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstCode {
    /// Six digits from the authenticator app.
    code: String,
}

alternatives::written_schema!(FirstCode, alternatives::code_only);

/// The recovery codes of a confirmed factor, shown once.
#[derive(Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Ten single-use codes.
    recovery_codes: Vec<String>,
}

/// What an authenticator app needs to enrol (the answer of `POST /v1/mfa/totp`).
#[derive(Serialize, ToSchema)]
pub struct Enrolment {
    /// The secret, base32 (RFC 4648, no padding).
    secret: String,
    /// `otpauth://totp/Issuer:account?secret=...&issuer=...`.
    otpauth_uri: String,
    /// The URI as a QR code, SVG.
    qr_svg: String,
}

impl From<mfa::Enrolment> for Enrolment {
    fn from(enrolment: mfa::Enrolment) -> Self {
        let mfa::Enrolment {
            secret,
            otpauth_uri,
            qr_svg,
        } = enrolment;
        Self {
            secret,
            otpauth_uri,
            qr_svg,
        }
    }
}

/// Starts enrolment: 201 with the secret, its `otpauth://` URI and a QR code (SVG); 409
/// `mfa_already_enabled`.
#[utoipa::path(
    tag = "mfa",
    security(("session" = [])),
    responses(
        (status = 201, description = "Enrolment started; confirm it with a first code", body = Enrolment),
        NoSession,
        (status = 409, description = "`mfa_already_enabled`", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[post("/v1/mfa/totp")]
pub async fn enrol(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let account = session_account(&state, &request).await?;
    let enrolment = state.mfa.enrol(&account.id, &account.username).await?;
    Ok(HttpResponse::Created().json(Enrolment::from(enrolment)))
}

/// Confirms enrolment with a code: 200 with ten single-use recovery codes; 409
/// `mfa_not_enrolled` without a pending enrolment.
#[utoipa::path(
    tag = "mfa",
    security(("session" = [])),
    request_body = FirstCode,
    responses(
        (status = 200, description = "The factor is on", body = RecoveryCodes),
        (status = 400, description = "`bad_request`, `malformed_code`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthenticated`, `invalid_code`, `code_replayed`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`mfa_not_enrolled`: no enrolment awaits confirmation", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        MfaThrottled,
        Unavailable,
    )
)]
#[post("/v1/mfa/totp/confirm")]
pub async fn confirm(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Json<FirstCode>,
) -> Result<HttpResponse, ApiError> {
    // The session first: a request without one learns nothing about its body.
    let account = session_account(&state, &request).await?;
    let Proof::Code(code) = Proof::parse(Some(&body.code), None)? else {
        return Err(Error::BadRequest {
            code: "malformed_code",
            detail: "confirm with a `code` from the authenticator app".to_owned(),
        }
        .into());
    };
    let recovery_codes = state.mfa.confirm(&account, code).await?;
    Ok(HttpResponse::Ok().json(RecoveryCodes { recovery_codes }))
}

/// Removes the second factor, proven with a code or a recovery code: 204.
#[utoipa::path(
    tag = "mfa",
    security(("session" = [])),
    request_body = CodeBody,
    responses(
        (status = 204, description = "The factor is off"),
        (status = 400, description = "`bad_request`, `malformed_code`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthenticated`, `invalid_code`, `code_replayed`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`mfa_not_enrolled`", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        MfaThrottled,
        Unavailable,
    )
)]
#[delete("/v1/mfa/totp")]
pub async fn remove(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Json<CodeBody>,
) -> Result<HttpResponse, ApiError> {
    let account = session_account(&state, &request).await?;
    let proof = Proof::parse(body.code.as_deref(), body.recovery_code.as_deref())?;
    state.mfa.remove(&account, proof).await?;
    Ok(HttpResponse::NoContent().finish())
}
