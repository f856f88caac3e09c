//! `/v1/mfa/totp`: enrol a TOTP second factor (`POST`), confirm it with a first code
//! (`POST .../confirm`, which hands out the recovery codes), remove it (`DELETE`). Every call
//! needs a session (`Authorization: Bearer`).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::{AppState, session_account};
use crate::error::ApiError;
use crate::mfa::Proof;

/// `{"code"}` or, to remove a factor, `{"recovery_code"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    code: Option<String>,
    recovery_code: Option<String>,
}

/// Starts enrolment: 201 with the secret, its `otpauth://` URI and a QR code (SVG); 409
/// `mfa_already_enabled`.
pub async fn enrol(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let account = session_account(&state, &request).await?;
    let enrolment = state.mfa.enrol(&account.id, &account.username).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({
        "secret": enrolment.secret,
        "otpauth_uri": enrolment.otpauth_uri,
        "qr_svg": enrolment.qr_svg,
    })))
}

/// Confirms enrolment with a code: 200 with ten single-use recovery codes; 409
/// `mfa_not_enrolled` without a pending enrolment.
pub async fn confirm(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Json<CodeBody>,
) -> Result<HttpResponse, ApiError> {
    let Proof::Code(code) = Proof::parse(body.code.as_deref(), body.recovery_code.as_deref())?
    else {
        return Err(ApiError::BadRequest {
            code: "malformed_code",
            detail: "confirm with a `code` from the authenticator app".to_owned(),
        });
    };
    let account = session_account(&state, &request).await?;
    let recovery_codes = state.mfa.confirm(&account.id, code).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "recovery_codes": recovery_codes })))
}

/// Removes the second factor, proven with a code or a recovery code: 204.
pub async fn remove(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Json<CodeBody>,
) -> Result<HttpResponse, ApiError> {
    let proof = Proof::parse(body.code.as_deref(), body.recovery_code.as_deref())?;
    let account = session_account(&state, &request).await?;
    state.mfa.remove(&account.id, proof).await?;
    Ok(HttpResponse::NoContent().finish())
}
