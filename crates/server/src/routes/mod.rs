//! The HTTP API: routes, shared state and the request extractors they use.

mod accounts;
pub mod admin;
mod admin_mail;
mod alternatives;
mod challenge;
mod email;
mod forward_auth;
mod health;
mod jwks;
mod login;
mod mfa;
mod notices;
pub mod openapi;
mod passkeys;
pub mod password;
mod session;

pub(crate) use forward_auth::PATH as FORWARD_AUTH_PATH;
pub(crate) use login::rfc3339;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::error::JsonPayloadError;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use ipnet::IpNet;
use portcullis_accounts::accounts::Account;
use portcullis_accounts::login::{Reauthentication, StepUp};
use portcullis_accounts::passkeys::PublicKeyCredential;
use portcullis_accounts::passwords::MAX_PASSWORD_BYTES;
use portcullis_accounts::sessions::Session;
use portcullis_accounts::{AppState, Error, token};
use portcullis_core::Username;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::client_ip::{self, ForwardedHeader};
use crate::error::ApiError;
use crate::return_to::ReturnTo;
use crate::settings::DeviceSettings;
use crate::shutdown::Drain;

/// What only the HTTP layer needs, beside the use cases' [`AppState`] (both are app data).
pub struct HttpState {
    /// How the client address is found behind proxies.
    pub forwarding: Forwarding,
    /// The device cookie's name and attributes.
    pub device: DeviceSettings,
    /// The admin API, when `admin.token` is set.
    pub admin: Option<admin::AdminApi>,
    /// The operations listener (`admin.listen`): when set, the admin API and `/metrics` answer
    /// only there.
    pub ops_listener: Option<SocketAddr>,
    /// The replica's shutdown: `/readyz` fails while it drains.
    pub drain: Arc<Drain>,
    /// Where forward authentication sends a browser to sign in, and where it may come back to.
    pub return_to: ReturnTo,
}

/// Which proxies are believed, and through which header.
pub struct Forwarding {
    /// The header trusted proxies put the client address in.
    pub header: ForwardedHeader,
    /// Proxies whose forwarding header is believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl HttpState {
    /// Whether the request may reach operations endpoints (admin API, metrics): on the
    /// operations listener when one is configured, anywhere otherwise.
    pub fn is_ops_request(&self, request: &HttpRequest) -> bool {
        self.ops_listener
            .is_none_or(|ops| request.app_config().local_addr() == ops)
    }

    /// The trusted device the request's device cookie proves for `username`, if any.
    pub fn trusted_device(
        &self,
        state: &AppState,
        request: &HttpRequest,
        username: &Username,
    ) -> Option<portcullis_core::DeviceId> {
        request
            .cookie(&self.device.cookie_name)
            .and_then(|cookie| state.device_cookies.verify(cookie.value(), username))
    }

    /// A device cookie marking this browser as a trusted device of `username`.
    pub fn new_device_cookie(
        &self,
        state: &AppState,
        username: &Username,
    ) -> Result<Cookie<'static>, ApiError> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no entropy source: {e}"))?;
        Ok(Cookie::build(
            self.device.cookie_name.clone(),
            state.device_cookies.issue(username, random),
        )
        .path("/")
        .http_only(true)
        .secure(self.device.secure_cookie)
        .same_site(SameSite::Strict)
        .max_age(CookieDuration::days(i64::from(self.device.max_age_days)))
        .finish())
    }
}

/// Registers every route (each documented by its handler's annotation), the JSON error mapping
/// and the fallback (404, or 405 on a known path: it reads [`openapi::KnownPaths`]).
pub fn configure(max_body_bytes: usize) -> impl FnOnce(&mut ServiceConfig) {
    move |cfg| {
        cfg.app_data(
            web::JsonConfig::default()
                .limit(max_body_bytes)
                .error_handler(|error, _| json_error(error).into()),
        )
        .app_data(web::PayloadConfig::default().limit(max_body_bytes))
        .app_data(
            web::QueryConfig::default()
                .error_handler(|error, _| ApiError::bad_request(error.to_string()).into()),
        )
        // Routes are tried in order. First the two a flood hits: forward authentication, asked
        // by a proxy once per request it passes, and the login, which a stuffing list replays;
        // so no other route's pattern (`/v1/passkeys/{id}` is a regex) is tried before them.
        .service(forward_auth::forward_auth)
        .service(login::login)
        .service(health::healthz)
        .service(health::readyz)
        .service(health::metrics)
        .service(jwks::jwks)
        .service(challenge::challenge)
        .service(accounts::register)
        .service(accounts::register_passkey)
        .service(login::login_mfa)
        .service(passkeys::passkey_options)
        .service(passkeys::passkey_login)
        .service(passkeys::start_passkey_registration)
        .service(passkeys::add_passkey)
        .service(passkeys::list_passkeys)
        .service(passkeys::rename_passkey)
        .service(passkeys::remove_passkey)
        .service(password::change)
        .service(password::remove_password)
        .service(password::request_reset)
        .service(password::confirm_reset)
        .service(email::set_address)
        .service(email::verify_address)
        .service(notices::disown_login)
        .service(notices::unlock_by_link)
        .service(mfa::enrol)
        .service(mfa::remove)
        .service(mfa::confirm)
        .service(session::logout)
        .service(session::logout_all)
        .service(session::introspect)
        .service(admin::subjects)
        .service(admin::unlock)
        .service(admin::lockouts)
        .service(admin::service_status)
        .service(admin::recent_events)
        .service(admin_mail::outbox)
        .service(admin_mail::send_reset)
        .service(admin_mail::resend_verification)
        .service(admin::allowlist)
        .service(admin::allow)
        .service(admin::disallow)
        .default_service(web::to(openapi::fallback));
    }
}

/// Maps actix's JSON extractor errors to problem+json answers.
fn json_error(error: JsonPayloadError) -> ApiError {
    match error {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(e) => {
            ApiError::bad_request(format!("invalid JSON body: {e}"))
        }
        other => ApiError::bad_request(format!("unreadable body: {other}")),
    }
}

/// `{"username": ..., "password": ..., "altcha"?: ...}`, the body of a login.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Normalised (NFKC, case-folded); at most 64 characters once normalised.
    #[schema(min_length = 1, max_length = 256)]
    username: String,
    /// At most 1024 bytes.
    #[schema(value_type = String, min_length = 1, max_length = 1024)]
    password: SecretString,
    /// The payload of a solved challenge (base64, as the ALTCHA widget posts it).
    altcha: Option<String>,
}

impl Credentials {
    /// The solved challenge's payload, if the client sent one.
    fn altcha(&self) -> Option<&str> {
        self.altcha.as_deref()
    }

    /// The password, refused when empty or over [`MAX_PASSWORD_BYTES`] before any hashing.
    fn password(&self) -> Result<SecretString, Error> {
        checked_password(self.password.clone(), "password")
    }

    /// The normalised username.
    fn username(&self) -> Result<Username, Error> {
        parse_username(&self.username)
    }
}

/// `{"current_password", "altcha"?}` or `{"ceremony", "credential", "altcha"?}`: the step-up
/// before a change to how the account signs in (its current password, checked like a login, or
/// an answer of one of its passkeys to `POST /v1/login/passkey/options`). Its schema is
/// [`alternatives::step_up`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepUpBody {
    /// The account's password.
    pub current_password: Option<SecretString>,
    /// With `credential`: the ceremony of the passkey options.
    pub ceremony: Option<String>,
    /// `PublicKeyCredential.toJSON()` of a passkey's answer.
    pub credential: Option<PublicKeyCredential>,
    /// The payload of a solved challenge, when one was asked.
    pub altcha: Option<String>,
}

alternatives::written_schema!(StepUpBody, alternatives::step_up);

impl StepUpBody {
    /// Reads the step-up of `request`'s body `object`: the re-authentication it asks for, of
    /// the `session` from `ip`, with the request's device cookie.
    pub fn read(
        object: JsonObject,
        request: &HttpRequest,
        http: &HttpState,
        SessionDigest(session_digest): SessionDigest,
        ip: IpAddr,
    ) -> Result<StepUpRequest, ApiError> {
        read_object::<Self>(object)?.request(request, http, session_digest, ip)
    }

    /// The re-authentication this step-up asks for, of the session `session_digest` from
    /// `ip`, with `request`'s device cookie (a page's form builds one too).
    pub fn request(
        self,
        request: &HttpRequest,
        http: &HttpState,
        session_digest: String,
        ip: IpAddr,
    ) -> Result<StepUpRequest, ApiError> {
        let body = self;
        let proof = match (body.current_password, body.ceremony, body.credential) {
            (Some(password), None, None) => {
                Proof::Password(checked_password(password, "current_password")?)
            }
            (None, Some(ceremony), Some(credential)) => {
                Proof::Passkey(ceremony, Box::new(credential))
            }
            _ => {
                return Err(ApiError::bad_request(
                    "send `current_password`, or a passkey's `ceremony` and `credential`",
                ));
            }
        };
        Ok(StepUpRequest {
            session_digest,
            ip,
            proof,
            device_cookie: request
                .cookie(&http.device.cookie_name)
                .map(|cookie| cookie.value().to_owned()),
            altcha: body.altcha,
        })
    }
}

/// What a step-up body proves, owned.
enum Proof {
    Password(SecretString),
    Passkey(String, Box<PublicKeyCredential>),
}

/// A step-up read from a request, ready to become the use cases' [`Reauthentication`].
pub struct StepUpRequest {
    session_digest: String,
    ip: IpAddr,
    proof: Proof,
    device_cookie: Option<String>,
    altcha: Option<String>,
}

impl StepUpRequest {
    /// The re-authentication this request asks for.
    pub fn reauthentication(&self) -> Reauthentication<'_> {
        Reauthentication {
            session_digest: self.session_digest.clone(),
            ip: self.ip,
            step_up: match &self.proof {
                Proof::Password(password) => StepUp::Password(password.clone()),
                Proof::Passkey(ceremony, credential) => StepUp::Passkey {
                    ceremony,
                    credential,
                },
            },
            device_cookie: self.device_cookie.as_deref(),
            altcha: self.altcha.as_deref(),
        }
    }
}

/// A JSON object body, read into its type only when the handler is ready to (after the
/// session), and never from an array (which serde would take for a struct's fields in order).
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// Reads a body `T` from `object` (400 `bad_request`, as the JSON extractor answers).
pub fn read_object<T: DeserializeOwned>(object: JsonObject) -> Result<T, ApiError> {
    serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// A password from a request body's `field`, refused when empty or over
/// [`MAX_PASSWORD_BYTES`] before any hashing.
pub fn checked_password(password: SecretString, field: &str) -> Result<SecretString, Error> {
    let len = password.expose_secret().len();
    if len == 0 {
        return Err(Error::bad_request(format!("{field} is empty")));
    }
    if len > MAX_PASSWORD_BYTES {
        return Err(Error::bad_request(format!(
            "{field} is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(password)
}

/// The digest of the request's well-formed `Authorization: Bearer <token>`, if it has one.
pub fn bearer_digest(request: &HttpRequest) -> Option<String> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    token::bearer_digest(value)
}

/// The digest of the request's bearer token, extracted before the body so that a request
/// without one is answered 401 whatever its body (it learns nothing from how that is refused).
pub struct SessionDigest(pub String);

impl FromRequest for SessionDigest {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            bearer_digest(req)
                .map(SessionDigest)
                .ok_or_else(|| Error::Unauthenticated.into()),
        )
    }
}

/// The request's live session (401 without one).
pub async fn live_session(state: &AppState, request: &HttpRequest) -> Result<Session, ApiError> {
    let digest = bearer_digest(request).ok_or(Error::Unauthenticated)?;
    Ok(state
        .sessions
        .get(&digest)
        .await?
        .ok_or(Error::Unauthenticated)?)
}

/// The account of the request's session (401 without a live one).
pub async fn session_account(state: &AppState, request: &HttpRequest) -> Result<Account, ApiError> {
    let session = live_session(state, request).await?;
    Ok(state
        .accounts
        .find_by_id(&session.subject)
        .await?
        .ok_or(Error::Unauthenticated)?)
}

/// Parses a username from a request, refusing it with `invalid_username`.
pub fn parse_username(raw: &str) -> Result<Username, Error> {
    Username::parse(raw).map_err(|e| Error::BadRequest {
        code: "invalid_username",
        detail: e.to_string(),
    })
}

/// The client address an attempt is counted against (see [`client_ip`]).
pub struct ClientIp(pub IpAddr);

impl FromRequest for ClientIp {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(client_address(req).map(ClientIp))
    }
}

/// Resolves the client address of a request (400 for an unreadable forwarding header from a
/// trusted proxy).
pub fn client_address(req: &HttpRequest) -> Result<IpAddr, ApiError> {
    let (Some(peer), Some(http)) = (req.peer_addr(), req.app_data::<web::Data<HttpState>>()) else {
        return Err(Error::Internal(anyhow::anyhow!(
            "request without a peer address or application state"
        ))
        .into());
    };
    let forwarding = &http.forwarding;
    let values = req
        .headers()
        .get_all(forwarding.header.name())
        .map(|v| v.as_bytes())
        .collect::<Vec<_>>();
    let ip = client_ip::resolve(
        peer.ip(),
        values.into_iter(),
        forwarding.header,
        &forwarding.trusted_proxies,
    )
    .map_err(|e| Error::BadRequest {
        code: "invalid_forwarded_header",
        detail: e.to_string(),
    })?;
    crate::request_identity::record_client_ip(ip);
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::Credentials;
    use proptest::prelude::*;

    proptest! {
        /// Any body parses into credentials or is refused, without panicking, and whatever
        /// parses yields a username and password that are checked, never trusted.
        #[test]
        fn any_login_body_parses_or_is_refused_without_panic(
            username in any::<String>(),
            password in any::<String>(),
            raw in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let _ = serde_json::from_slice::<Credentials>(&raw);
            let body = serde_json::json!({ "username": username, "password": password });
            let credentials: Credentials = serde_json::from_value(body).unwrap();
            let _ = super::parse_username(&credentials.username);
            let _ = credentials.password();
        }
    }
}
