//! Passkeys: HTTP in and out of [`portcullis_accounts::passkeys`] and the passkey sign-in of
//! [`portcullis_accounts::login`].
//!
//! - Enrolment from a session with a step-up: `POST /v1/passkeys/registration` (the current
//!   password, checked like a login) gives a ceremony and its options; `POST /v1/passkeys` takes
//!   the authenticator's answer.
//! - `GET /v1/passkeys`, `PATCH /v1/passkeys/{id}` (rename), `DELETE /v1/passkeys/{id}` (with
//!   the step-up).
//! - Sign-in: `POST /v1/login/passkey/options` (a username, or none for a discoverable
//!   passkey), then `POST /v1/login/passkey`, answered like a password login.
//!
//! Options and answers are WebAuthn's JSON (binary members in unpadded base64url), as
//! `PublicKeyCredential.parseCreationOptionsFromJSON` and `toJSON()` in browsers have them.

use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, web};
use portcullis_accounts::AppState;
use portcullis_accounts::login::{self as use_case, PasskeySignIn};
use portcullis_accounts::passkeys::{
    CreationChallengeResponse, Mediation, PublicKeyCredential, PublicKeyCredentialCreationOptions,
    PublicKeyCredentialRequestOptions, RegisterPublicKeyCredential, Started, StoredPasskey,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::login::{LoginAnswer, logged_in_response, rfc3339};
use super::openapi::{BodyRefused, NoSession, PasskeysOff, Throttled, Unavailable};
use super::{
    ClientIp, HttpState, JsonObject, SessionDigest, StepUpBody, parse_username, read_object,
    session_account,
};
use crate::error::{ApiError, Problem};

/// The name a passkey gets when its owner gives none.
const DEFAULT_NAME: &str = "Passkey";

/// A registration ceremony's options.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationOptions {
    /// Echo it with the answer (single use, 5 minutes).
    ceremony: String,
    /// What `navigator.credentials.create({publicKey})` takes.
    #[schema(value_type = Object)]
    public_key: PublicKeyCredentialCreationOptions,
}

impl From<Started<CreationChallengeResponse>> for RegistrationOptions {
    fn from(started: Started<CreationChallengeResponse>) -> Self {
        Self {
            ceremony: started.ceremony,
            public_key: started.options.public_key,
        }
    }
}

/// `{"ceremony", "name"?, "credential"}`: the authenticator's answer to a registration.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPasskey {
    /// The ceremony the options named.
    pub(super) ceremony: String,
    /// What to call it (1 to 64 characters; `Passkey` if none).
    name: Option<String>,
    /// `PublicKeyCredential.toJSON()` of the new credential.
    #[schema(value_type = Object)]
    pub(super) credential: RegisterPublicKeyCredential,
}

impl NewPasskey {
    /// Its name, or the default.
    pub(super) fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(DEFAULT_NAME)
    }
}

/// A passkey of the account.
#[derive(Serialize, ToSchema)]
pub struct Passkey {
    /// Its id (for rename and removal).
    id: String,
    /// What its owner called it.
    name: String,
    /// When it was added (RFC 3339).
    created_at: String,
    /// When it last signed in (RFC 3339), or null.
    last_used_at: Option<String>,
}

impl From<StoredPasskey> for Passkey {
    fn from(stored: StoredPasskey) -> Self {
        Self {
            id: stored.id,
            name: stored.name,
            created_at: rfc3339(stored.created_at),
            last_used_at: stored.last_used_at.map(rfc3339),
        }
    }
}

/// The account's passkeys, oldest first.
#[derive(Serialize, ToSchema)]
pub struct Passkeys {
    /// Each passkey.
    passkeys: Vec<Passkey>,
}

/// `{"name"}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    /// The new name (1 to 64 characters).
    name: String,
}

/// `{"username"?, "altcha"?}`: sign-in options for a username, or discoverable ones.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    /// The account's username; none for a discoverable passkey (autofill).
    #[schema(min_length = 1, max_length = 256)]
    username: Option<String>,
    /// The payload of a solved challenge, when one was asked.
    altcha: Option<String>,
}

/// A sign-in ceremony's options.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignInOptions {
    /// Echo it with the answer (single use, 5 minutes).
    ceremony: String,
    /// What `navigator.credentials.get({publicKey})` takes.
    #[schema(value_type = Object)]
    public_key: PublicKeyCredentialRequestOptions,
    /// `conditional` for discoverable options (the username field's autofill).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    mediation: Option<Mediation>,
}

/// `{"ceremony", "credential", "altcha"?}`: the authenticator's answer to a sign-in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The ceremony the options named.
    ceremony: String,
    /// `PublicKeyCredential.toJSON()` of the assertion.
    #[schema(value_type = Object)]
    credential: PublicKeyCredential,
    /// The payload of a solved challenge, when one was asked.
    altcha: Option<String>,
}

/// Starts adding a passkey: the current password (or a passkey) steps up; 200 with the
/// ceremony and the options (excluding the account's passkeys); 409 `passkey_limit`.
#[utoipa::path(
    tag = "passkeys",
    security(("session" = [])),
    request_body = StepUpBody,
    responses(
        (status = 200, description = "The ceremony and `navigator.credentials.create` options", body = RegistrationOptions),
        (status = 400, description = "`bad_request`, `invalid_forwarded_header`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthenticated`, `invalid_credentials` (wrong current password, counted like a login), `invalid_passkey`, `challenge_required` / `challenge_failed`", body = Problem, content_type = "application/problem+json"),
        PasskeysOff,
        (status = 409, description = "`passkey_limit`", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        Throttled,
        Unavailable,
    )
)]
#[post("/v1/passkeys/registration")]
pub async fn start_passkey_registration(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    session: SessionDigest,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    let step_up = StepUpBody::read(body.into_inner(), &request, &http, session, ip)?;
    let account = use_case::reauthenticate(&state, step_up.reauthentication(), |_| Ok(())).await?;
    let started = state.passkeys.start_registration(&account).await?;
    Ok(HttpResponse::Ok().json(RegistrationOptions::from(started)))
}

/// Finishes adding a passkey with the authenticator's answer: 201 with the passkey.
#[utoipa::path(
    tag = "passkeys",
    security(("session" = [])),
    request_body = NewPasskey,
    responses(
        (status = 201, description = "Added", body = Passkey),
        (status = 400, description = "`bad_request`, `invalid_name`, `invalid_ceremony` (unknown, used, expired or another session's), `passkey_refused` (the answer does not verify: another origin, a bad attestation)", body = Problem, content_type = "application/problem+json"),
        NoSession,
        PasskeysOff,
        (status = 409, description = "`passkey_limit`, `passkey_registered` (to this account or another)", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        Unavailable,
    )
)]
#[post("/v1/passkeys")]
pub async fn add_passkey(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    // The session first: a request without one learns nothing from how its body is refused.
    let account = session_account(&state, &request).await?;
    let body: NewPasskey = read_object(body.into_inner())?;
    let stored = state
        .passkeys
        .finish_registration(&account, &body.ceremony, body.name(), &body.credential)
        .await?;
    Ok(HttpResponse::Created().json(Passkey::from(stored)))
}

/// The account's passkeys, with when each last signed in.
#[utoipa::path(
    tag = "passkeys",
    security(("session" = [])),
    responses(
        (status = 200, description = "The passkeys, oldest first", body = Passkeys),
        NoSession,
        Unavailable,
    )
)]
#[get("/v1/passkeys")]
pub async fn list_passkeys(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let account = session_account(&state, &request).await?;
    let passkeys = state.passkeys.list(&account.id).await?;
    Ok(HttpResponse::Ok().json(Passkeys {
        passkeys: passkeys.into_iter().map(Passkey::from).collect(),
    }))
}

/// Renames a passkey: 200 with the account's passkeys.
#[utoipa::path(
    tag = "passkeys",
    security(("session" = [])),
    params(("id" = String, Path, description = "The passkey's id")),
    request_body = Rename,
    responses(
        (status = 200, description = "Renamed", body = Passkeys),
        (status = 400, description = "`bad_request`, `invalid_name`", body = Problem, content_type = "application/problem+json"),
        NoSession,
        (status = 404, description = "`unknown_passkey`", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        Unavailable,
    )
)]
#[patch("/v1/passkeys/{id}")]
pub async fn rename_passkey(
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
    body: web::Json<Rename>,
) -> Result<HttpResponse, ApiError> {
    let account = session_account(&state, &request).await?;
    state.passkeys.rename(&account.id, &id, &body.name).await?;
    let passkeys = state.passkeys.list(&account.id).await?;
    Ok(HttpResponse::Ok().json(Passkeys {
        passkeys: passkeys.into_iter().map(Passkey::from).collect(),
    }))
}

/// Removes a passkey; the current password (or a passkey) steps up: 204.
#[utoipa::path(
    tag = "passkeys",
    security(("session" = [])),
    params(("id" = String, Path, description = "The passkey's id")),
    request_body = StepUpBody,
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "`bad_request`, `invalid_forwarded_header`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthenticated`, `invalid_credentials` (counted like a login), `invalid_passkey`, `challenge_required` / `challenge_failed`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_passkey`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`last_passkey`: the last passkey of an account without a password", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        Throttled,
        Unavailable,
    )
)]
#[delete("/v1/passkeys/{id}")]
pub async fn remove_passkey(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    id: web::Path<String>,
    session: SessionDigest,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    let step_up = StepUpBody::read(body.into_inner(), &request, &http, session, ip)?;
    let account = use_case::reauthenticate(&state, step_up.reauthentication(), |_| Ok(())).await?;
    state.passkeys.remove(&account, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Sign-in options: for a username, its passkeys (a name without any, or no account, gets fake
/// ones in the same shape); without one, discoverable options for autofill. Counted against
/// the source like a registration.
#[utoipa::path(
    tag = "login",
    request_body = SignInRequest,
    responses(
        (status = 200, description = "The ceremony and `navigator.credentials.get` options, alike for every username", body = SignInOptions),
        (status = 400, description = "`bad_request`, `invalid_username`, `invalid_forwarded_header`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`challenge_required` / `challenge_failed` (with `challenge`)", body = Problem, content_type = "application/problem+json"),
        PasskeysOff,
        BodyRefused,
        Throttled,
        Unavailable,
    )
)]
#[post("/v1/login/passkey/options")]
pub async fn passkey_options(
    state: web::Data<AppState>,
    ClientIp(ip): ClientIp,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    let body: SignInRequest = read_object(body.into_inner())?;
    let username = body.username.as_deref().map(parse_username).transpose()?;
    let started =
        use_case::passkey_options(&state, ip, username.as_ref(), body.altcha.as_deref()).await?;
    Ok(HttpResponse::Ok().json(SignInOptions {
        ceremony: started.ceremony,
        public_key: started.options.public_key,
        mediation: started.options.mediation,
    }))
}

/// Signs in with a passkey's answer: 200 as `POST /v1/login` (no second factor follows: the
/// passkey verified its user). A refused answer counts against the source, never the account.
#[utoipa::path(
    tag = "login",
    request_body = SignIn,
    responses(
        (status = 200, description = "Signed in; a browser without a device cookie gets one", body = LoginAnswer,
            headers(("Set-Cookie" = String, description = "The device cookie for a new browser"))),
        (status = 400, description = "`bad_request`, `invalid_forwarded_header`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`invalid_passkey` (unknown, used or expired ceremony, a credential it does not allow, another origin, a counter that went backwards: alike), `challenge_required` / `challenge_failed`", body = Problem, content_type = "application/problem+json"),
        PasskeysOff,
        (status = 423, description = "`locked` (only with `responses.disclose_lockouts`)", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        Throttled,
        Unavailable,
    )
)]
#[post("/v1/login/passkey")]
pub async fn passkey_login(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    let body: SignIn = read_object(body.into_inner())?;
    let cookie = request.cookie(&http.device.cookie_name);
    let logged_in = use_case::login_passkey(
        &state,
        PasskeySignIn {
            ip,
            ceremony: &body.ceremony,
            credential: &body.credential,
            device_cookie: cookie.as_ref().map(|c| c.value()),
            altcha: body.altcha.as_deref(),
        },
    )
    .await?;
    logged_in_response(&state, &http, &logged_in)
}
