//! `GET /.well-known/jwks.json`: the public keys that check access tokens (404 while
//! `tokens.access.enabled` is off).

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use super::AppState;
use crate::error::ApiError;

/// The JSON Web Key Set, cacheable for five minutes (a rotation publishes the next key longer
/// ahead than that).
pub async fn jwks(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let tokens = state.access_tokens.as_ref().ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(tokens.jwks()))
}
