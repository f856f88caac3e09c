//! `POST /v1/users` (and `POST /v1/users/passkey`, which finishes a registration without a
//! password): HTTP in and out of the registration use case (see
//! [`portcullis_accounts::registration`]).

use actix_web::{HttpResponse, post, web};
use portcullis_accounts::AppState;
use portcullis_accounts::registration;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::{BodyRefused, PasskeysOff, Throttled, Unavailable};
use super::passkeys::{NewPasskey, RegistrationOptions};
use super::{ClientIp, JsonObject, checked_password, parse_username, read_object};
use crate::error::{ApiError, Problem};

/// `{"username", "password"?, "email"?, "altcha"?}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// Normalised (NFKC, case-folded); at most 64 characters once normalised.
    #[schema(min_length = 1, max_length = 256)]
    username: String,
    /// At most 1024 bytes. Without one, the account signs in with a passkey: the answer is the
    /// options of its registration, finished with `POST /v1/users/passkey`.
    #[schema(value_type = Option<String>, min_length = 1, max_length = 1024)]
    password: Option<SecretString>,
    /// An address to verify (a link is mailed to it); optional.
    #[schema(min_length = 3, max_length = 254)]
    email: Option<String>,
    /// The payload of a solved challenge (base64, as the ALTCHA widget posts it).
    altcha: Option<String>,
}

/// A new account.
#[derive(Serialize, ToSchema)]
pub struct Registered {
    /// The account's public id (the `sub` of its sessions and access tokens).
    id: String,
    /// The normalised username.
    username: String,
    /// The address a verification link went to, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
}

/// Registers an account: 201, 409 for a taken normalised username or a look-alike of one (same
/// confusable skeleton), 400 for bad input or a password the rules refuse (`weak_password`,
/// `breached_password`). Every registration counts against the client's address, subnet and
/// network limits before anything is checked, whatever its outcome (the password rules cost
/// CPU, an accepted password a hash), and a risky source must solve a challenge first, as for
/// a login. Without a password: 200 with the options of a passkey registration, for an account
/// that exists once `POST /v1/users/passkey` brings the authenticator's answer.
#[utoipa::path(
    tag = "accounts",
    request_body = NewAccount,
    responses(
        (status = 200, description = "No password: the ceremony and `navigator.credentials.create` options of the account's passkey (it exists once `POST /v1/users/passkey` finishes)", body = RegistrationOptions),
        (status = 201, description = "Registered", body = Registered),
        (status = 400, description = "`bad_request`, `invalid_username`, `invalid_email`, `weak_password` / `breached_password` (with `reason`), `invalid_forwarded_header`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`challenge_required` / `challenge_failed` (with `challenge`): a risky source must solve one first", body = Problem, content_type = "application/problem+json"),
        PasskeysOff,
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
    body: web::Json<NewAccount>,
) -> Result<HttpResponse, ApiError> {
    let Some(password) = &body.password else {
        let started = registration::start_with_passkey(
            &state,
            ip,
            parse_username(&body.username),
            body.email.as_deref(),
            body.altcha.as_deref(),
        )
        .await?;
        return Ok(HttpResponse::Ok().json(RegistrationOptions::from(started)));
    };
    let credentials = parse_username(&body.username)
        .and_then(|username| Ok((username, checked_password(password.clone(), "password")?)));
    let registered = registration::register(
        &state,
        ip,
        credentials,
        body.email.as_deref(),
        body.altcha.as_deref(),
    )
    .await?;
    Ok(HttpResponse::Created().json(Registered {
        id: registered.account.id,
        username: registered.account.username,
        email: registered.email,
    }))
}

/// Finishes a registration without a password with the authenticator's answer to its options:
/// 201, the account with this passkey and no password (its verified address to be, if one was
/// given, gets its link). 409 `username_taken` when another registration took the name since
/// the options.
#[utoipa::path(
    tag = "accounts",
    request_body = NewPasskey,
    responses(
        (status = 201, description = "Registered, with the passkey and no password", body = Registered),
        (status = 400, description = "`bad_request`, `invalid_ceremony` (unknown, used, expired, or not a registration's), `passkey_refused`, `invalid_name`", body = Problem, content_type = "application/problem+json"),
        PasskeysOff,
        (status = 409, description = "`username_taken`, `passkey_registered` (the credential belongs to another account)", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        Unavailable,
    )
)]
#[post("/v1/users/passkey")]
pub async fn register_passkey(
    state: web::Data<AppState>,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    let body: NewPasskey = read_object(body.into_inner())?;
    let registered =
        registration::finish_with_passkey(&state, &body.ceremony, body.name(), &body.credential)
            .await?;
    Ok(HttpResponse::Created().json(Registered {
        id: registered.account.id,
        username: registered.account.username,
        email: registered.email,
    }))
}
