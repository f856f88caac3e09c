//! The HTTP API: routes, shared state and the request extractors they use.

mod accounts;
pub mod admin;
mod challenge;
mod health;
mod jwks;
mod login;
mod mfa;
pub mod openapi;
mod password;
mod session;

pub(crate) use login::{new_device_cookie, rfc3339};

use std::net::{IpAddr, SocketAddr};

use actix_web::dev::Payload;
use actix_web::error::JsonPayloadError;
use actix_web::{FromRequest, HttpRequest, web};
use ipnet::IpNet;
use portcullis_core::{DeviceCookies, Username};
use portcullis_store::Invalidation;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::access_tokens::AccessTokens;
use crate::accounts::{Account, Accounts};
use crate::allowlist::Allowlist;
use crate::client_ip::{self, ForwardedHeader};
use crate::error::ApiError;
use crate::guard::LoginGuard;
use crate::login_tokens::LoginTokens;
use crate::mfa::SecondFactors;
use crate::passwords::{MAX_PASSWORD_BYTES, PasswordHasher, PasswordPolicy};
use crate::security_events::SecurityEvents;
use crate::sessions::{Session, Sessions};
use crate::settings::{BreachedLogin, DeviceSettings};
use crate::stores::Stores;
use crate::token;

/// What every handler can reach.
pub struct AppState {
    /// The accounts table.
    pub accounts: Accounts,
    /// Login sessions (in the accounts database).
    pub sessions: Sessions,
    /// JWT access tokens, when `tokens.access.enabled`.
    pub access_tokens: Option<AccessTokens>,
    /// Argon2id and its bounded pool.
    pub hasher: PasswordHasher,
    /// The rules for new passwords and the breached-password filter.
    pub passwords: PasswordPolicy,
    /// What a login with a breached password gets.
    pub breached_login: BreachedLogin,
    /// Tokens between a verified password and its second factor or forced change.
    pub login_tokens: LoginTokens,
    /// Second factors (TOTP, recovery codes).
    pub mfa: SecondFactors,
    /// How long an `mfa_token` lives, in milliseconds.
    pub mfa_token_ttl_ms: u64,
    /// Rate limits and lockouts around password checks.
    pub guard: LoginGuard,
    /// The attempt store, event log and admin view, for health and administration.
    pub stores: Stores,
    /// Security events (logs and the event log).
    pub events: SecurityEvents,
    /// Networks exempt from the address and subnet limits.
    pub allowlist: Allowlist,
    /// How the client address is found behind proxies.
    pub forwarding: Forwarding,
    /// Signs and checks device cookies.
    pub device_cookies: DeviceCookies,
    /// The device cookie's name and attributes.
    pub device: DeviceSettings,
    /// The admin API, when `admin.token` is set.
    pub admin: Option<admin::AdminApi>,
    /// The operations listener (`admin.listen`): when set, the admin API and `/metrics` answer
    /// only there.
    pub ops_listener: Option<SocketAddr>,
    /// Whether a permanently locked account says so (423) or answers like a throttle (429).
    pub disclose_lockouts: bool,
    /// Retry-After for a permanently locked account answered like a throttle.
    pub locked_retry_after_secs: u64,
}

/// Which proxies are believed, and through which header.
pub struct Forwarding {
    /// The header trusted proxies put the client address in.
    pub header: ForwardedHeader,
    /// Proxies whose forwarding header is believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl AppState {
    /// The refusal for a permanently locked account (see `responses.disclose_lockouts`).
    pub fn locked_error(&self) -> ApiError {
        if self.disclose_lockouts {
            ApiError::Locked
        } else {
            ApiError::Throttled {
                retry_after_secs: self.locked_retry_after_secs,
            }
        }
    }

    /// Tells every replica (this one at once) that cached refusals went stale: an unlock or
    /// an allowlist change. A store that cannot pass it on is logged; the change itself stands
    /// and other replicas' caches expire at their deadlines.
    pub async fn announce(&self, change: Invalidation) {
        self.guard.forget_refusals();
        if let Err(error) = self.stores.admin.announce(change).await {
            tracing::warn!(%error, change = change.as_str(), "change not announced to other replicas");
        }
    }

    /// Whether the request may reach operations endpoints (admin API, metrics): on the
    /// operations listener when one is configured, anywhere otherwise.
    pub fn is_ops_request(&self, request: &HttpRequest) -> bool {
        self.ops_listener
            .is_none_or(|ops| request.app_config().local_addr() == ops)
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
        .service(health::healthz)
        .service(health::readyz)
        .service(health::metrics)
        .service(jwks::jwks)
        .service(challenge::challenge)
        .service(accounts::register)
        .service(login::login)
        .service(login::login_mfa)
        .service(password::change)
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

/// `{"username": ..., "password": ..., "altcha"?: ...}`, the body of registration and login.
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
    fn password(&self) -> Result<SecretString, ApiError> {
        checked_password(self.password.clone(), "password")
    }

    /// The normalised username.
    fn username(&self) -> Result<Username, ApiError> {
        parse_username(&self.username)
    }
}

/// A password from a request body's `field`, refused when empty or over
/// [`MAX_PASSWORD_BYTES`] before any hashing.
pub fn checked_password(password: SecretString, field: &str) -> Result<SecretString, ApiError> {
    let len = password.expose_secret().len();
    if len == 0 {
        return Err(ApiError::bad_request(format!("{field} is empty")));
    }
    if len > MAX_PASSWORD_BYTES {
        return Err(ApiError::bad_request(format!(
            "{field} is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(password)
}

/// The request's live session (401 without one).
pub async fn live_session(state: &AppState, request: &HttpRequest) -> Result<Session, ApiError> {
    let digest = token::bearer_digest(request.headers()).ok_or(ApiError::Unauthenticated)?;
    state
        .sessions
        .get(&digest)
        .await?
        .ok_or(ApiError::Unauthenticated)
}

/// The account of the request's session (401 without a live one).
pub async fn session_account(state: &AppState, request: &HttpRequest) -> Result<Account, ApiError> {
    let session = live_session(state, request).await?;
    state
        .accounts
        .find_by_id(&session.subject)
        .await?
        .ok_or(ApiError::Unauthenticated)
}

/// The trusted device the request's device cookie proves for `username`, if any.
pub fn trusted_device(
    state: &AppState,
    request: &HttpRequest,
    username: &Username,
) -> Option<portcullis_core::DeviceId> {
    request
        .cookie(&state.device.cookie_name)
        .and_then(|cookie| state.device_cookies.verify(cookie.value(), username))
}

/// Parses a username from a request, refusing it with `invalid_username`.
pub fn parse_username(raw: &str) -> Result<Username, ApiError> {
    Username::parse(raw).map_err(|e| ApiError::BadRequest {
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
    let (Some(peer), Some(state)) = (req.peer_addr(), req.app_data::<web::Data<AppState>>()) else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "request without a peer address or application state"
        )));
    };
    let forwarding = &state.forwarding;
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
    .map_err(|e| ApiError::BadRequest {
        code: "invalid_forwarded_header",
        detail: e.to_string(),
    })?;
    tracing::Span::current().record("client_ip", tracing::field::display(ip));
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
