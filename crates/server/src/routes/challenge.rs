//! `GET /v1/challenge`: a proof-of-work challenge of the least work, for a client (the ALTCHA
//! widget's `challengeurl`) to solve before it posts. A login or registration whose source
//! is riskier is answered with a harder one instead (see [`portcullis_accounts::challenge`]).

use actix_web::{HttpResponse, get, web};
use portcullis_accounts::AppState;

use crate::error::ApiError;

/// 200 with `{"parameters": {...}, "signature": "..."}`.
#[utoipa::path(
    tag = "login",
    responses(
        (status = 200, description = "An ALTCHA v2 challenge: `parameters` (algorithm `PBKDF2/SHA-256`, cost, expiresAt, keyLength, keyPrefix, nonce, salt) and their `signature`", body = Object),
    )
)]
#[get("/v1/challenge")]
pub async fn challenge(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let challenge = state.guard.challenges().issue(0)?;
    Ok(HttpResponse::Ok().json(challenge))
}
