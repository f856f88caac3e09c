//! `GET /.well-known/jwks.json`: the public keys that check access tokens (404 while
//! `tokens.access.enabled` is off).

use actix_web::http::header;
use actix_web::{HttpResponse, get, web};
use portcullis_accounts::AppState;

use crate::error::{ApiError, Problem};

/// The JSON Web Key Set, cacheable for five minutes (a rotation publishes the next key longer
/// ahead than that).
#[utoipa::path(
    tag = "tokens",
    responses(
        (status = 200, description = "`{\"keys\": [...]}`: Ed25519 public keys as JWKs (RFC 8037), the signing key first", body = Object,
            headers(("Cache-Control" = String, description = "`public, max-age=300`"))),
        (status = 404, description = "`not_found`: `tokens.access.enabled` is off", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/.well-known/jwks.json")]
pub async fn jwks(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let tokens = state.access_tokens.as_ref().ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(tokens.jwks()))
}
