//! `POST /v1/login` and `POST /v1/login/mfa`: HTTP in and out of the login use case (see
//! [`portcullis_accounts::login`]).

use std::time::{Duration, UNIX_EPOCH};

use actix_web::{HttpRequest, HttpResponse, post, web};
use portcullis_accounts::login::{self as use_case, LoggedIn, LoginRequest};
use portcullis_accounts::mfa::Proof;
use portcullis_accounts::passkeys::PublicKeyCredential;
use portcullis_accounts::{AppState, Error};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::alternatives;
use super::openapi::{BodyRefused, MfaThrottled, Throttled, Unavailable};
use super::{ClientIp, Credentials, HttpState};
use crate::error::{ApiError, Problem};

/// A finished login.
#[derive(Serialize, ToSchema)]
pub struct LoginAnswer {
    /// The opaque session token, shown once: `Authorization: Bearer <token>`.
    token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// When the session ends (RFC 3339).
    expires_at: String,
    /// Whether the password was found in a breach and should be changed.
    password_change_required: bool,
    /// With `tokens.access.enabled`: an EdDSA JWT (`sub`, `iat`, `exp`, `iss`, `jti`) checked
    /// with the keys at `/.well-known/jwks.json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
    /// Seconds the access token is valid for.
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token_expires_in: Option<u64>,
}

/// Logs in: 200 with a session token; 401 alike for an unknown user and a wrong password (both
/// are counted and hashed the same); 401 `challenge_required` / `challenge_failed` with a
/// challenge when the policy asks for proof of work; 429 with Retry-After when it refuses;
/// 401 `mfa_required` with an `mfa_token` and the `methods` it may take after a right password
/// when the account has a second factor; under `passwords.breached_login = "block"`, 403 for a breached password:
/// `password_change_required` (with a change token) from the account's trusted browser,
/// `password_reset_required` (nothing else) from any other.
#[utoipa::path(
    tag = "login",
    request_body = Credentials,
    responses(
        (status = 200, description = "Logged in; a browser without a device cookie gets one", body = LoginAnswer,
            headers(("Set-Cookie" = String, description = "The device cookie (`device.cookie_name`, HttpOnly, Secure, SameSite=Strict) for a new browser"))),
        (status = 400, description = "`bad_request`, `invalid_username`, `invalid_forwarded_header`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`invalid_credentials` (unknown user and wrong password alike), `challenge_required` / `challenge_failed` (with `challenge`), `mfa_required` (with `mfa_token` and `methods`: `passkey`, `totp`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A breached password under `passwords.breached_login = \"block\"`: `password_change_required` (with `password_change_token`) from a browser with the account's device cookie; `password_reset_required` (no token) from any other", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        (status = 423, description = "`locked`: permanently locked (only with `responses.disclose_lockouts`)", body = Problem, content_type = "application/problem+json"),
        Throttled,
        Unavailable,
    )
)]
#[post("/v1/login")]
pub async fn login(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let username = body.username()?;
    let password = body.password()?;
    let device = http.trusted_device(&state, &request, &username);
    let logged_in = use_case::login(
        &state,
        LoginRequest {
            ip,
            username: &username,
            password,
            device,
            altcha: body.altcha(),
        },
    )
    .await?;
    logged_in_response(&state, &http, &logged_in)
}

/// `{"mfa_token", "code"}`, `{"mfa_token", "recovery_code"}` or `{"mfa_token", "ceremony",
/// "credential"}`; its schema is [`alternatives::second_factor`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondFactor {
    /// The token of the `mfa_required` answer.
    mfa_token: String,
    /// Six digits from the authenticator app.
    code: Option<String>,
    /// One of the account's recovery codes.
    recovery_code: Option<String>,
    /// With `credential`: the ceremony of `POST /v1/login/passkey/options` with the account's
    /// username.
    ceremony: Option<String>,
    /// With `ceremony`: `PublicKeyCredential.toJSON()` of the assertion.
    credential: Option<PublicKeyCredential>,
}

alternatives::written_schema!(SecondFactor, alternatives::second_factor);

impl SecondFactor {
    /// The proof the body carries: exactly one of a code, a recovery code and a passkey's
    /// answer (400 `malformed_code` otherwise).
    fn proof(&self) -> Result<use_case::SecondFactor<'_>, Error> {
        let codes = self.code.is_some() || self.recovery_code.is_some();
        match (&self.ceremony, &self.credential) {
            (None, None) => Ok(use_case::SecondFactor::Code(Proof::parse(
                self.code.as_deref(),
                self.recovery_code.as_deref(),
            )?)),
            (Some(ceremony), Some(credential)) if !codes => Ok(use_case::SecondFactor::Passkey {
                ceremony,
                credential,
            }),
            _ => Err(Error::BadRequest {
                code: "malformed_code",
                detail: "send one of `code`, `recovery_code`, or `ceremony` with `credential`"
                    .to_owned(),
            }),
        }
    }
}

/// The second step of a login: 200 like a login; 400 `malformed_code`; 401 `invalid_token`,
/// `invalid_code`, `code_replayed` or `invalid_passkey`; 403 `password_change_required` for a
/// breached password under `breached_login = "block"` (the second factor proves more than the
/// leak); 429 `mfa_throttled` with Retry-After.
#[utoipa::path(
    tag = "login",
    request_body = SecondFactor,
    responses(
        (status = 200, description = "Logged in, as `POST /v1/login`", body = LoginAnswer,
            headers(("Set-Cookie" = String, description = "The device cookie for a new browser"))),
        (status = 400, description = "`bad_request`, `malformed_code` (not six digits, or not exactly one of `code`, `recovery_code` and a passkey's `ceremony` with `credential`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`invalid_token`, `invalid_code`, `code_replayed`, `invalid_passkey` (not an answer of the account's passkey to its ceremony)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`password_change_required` (with `password_change_token`): a breached password under `passwords.breached_login = \"block\"`, after its second factor", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`passkeys_off`: a passkey's answer where passkeys are off", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        MfaThrottled,
        Unavailable,
    )
)]
#[post("/v1/login/mfa")]
pub async fn login_mfa(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    body: web::Json<SecondFactor>,
) -> Result<HttpResponse, ApiError> {
    let proof = body.proof()?;
    let cookie = request.cookie(&http.device.cookie_name);
    let logged_in = use_case::login_second_factor(
        &state,
        &body.mfa_token,
        proof,
        cookie.as_ref().map(|c| c.value()),
    )
    .await?;
    logged_in_response(&state, &http, &logged_in)
}

/// The 200 answer of a finished login, with a device cookie for a new browser and, when
/// `tokens.access.enabled`, a JWT access token.
pub(super) fn logged_in_response(
    state: &AppState,
    http: &HttpState,
    logged_in: &LoggedIn,
) -> Result<HttpResponse, ApiError> {
    let mut response = HttpResponse::Ok();
    if logged_in.new_device {
        response.cookie(http.new_device_cookie(state, &logged_in.username)?);
    }
    let access = state
        .access_tokens
        .as_ref()
        .map(|tokens| tokens.issue(&logged_in.session.subject, logged_in.username.as_str()))
        .transpose()?;
    Ok(response.json(LoginAnswer {
        token: logged_in.token.token.clone(),
        token_type: "Bearer",
        expires_at: rfc3339(logged_in.session.expires_at),
        password_change_required: logged_in.session.password_change_required,
        access_token_expires_in: access.as_ref().map(|a| a.expires_in),
        access_token: access.map(|a| a.jwt),
    }))
}

/// Formats Unix milliseconds as an RFC 3339 UTC timestamp (second precision).
pub(crate) fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}
