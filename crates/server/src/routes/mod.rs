//! The HTTP API: routes, shared state and the request extractors they use.

mod accounts;
pub mod admin;
mod health;
mod login;
mod session;

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::error::JsonPayloadError;
use actix_web::{FromRequest, HttpRequest, web};
use ipnet::IpNet;
use portcullis_core::DeviceCookies;
use portcullis_store::SessionStore;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::accounts::Accounts;
use crate::allowlist::Allowlist;
use crate::client_ip;
use crate::error::ApiError;
use crate::guard::LoginGuard;
use crate::password::{MAX_PASSWORD_BYTES, PasswordHasher};
use crate::security_events::SecurityEvents;
use crate::settings::DeviceSettings;

/// What every handler can reach.
pub struct AppState {
    /// The accounts table.
    pub accounts: Accounts,
    /// Argon2id and its bounded pool.
    pub hasher: PasswordHasher,
    /// Rate limits and lockouts around password checks.
    pub guard: LoginGuard,
    /// Security events (logs and the event log).
    pub events: SecurityEvents,
    /// Networks exempt from the address and subnet limits.
    pub allowlist: Allowlist,
    /// Login sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Session lifetime in milliseconds.
    pub session_ttl_ms: u64,
    /// Signs and checks device cookies.
    pub device_cookies: DeviceCookies,
    /// The device cookie's name and attributes.
    pub device: DeviceSettings,
    /// The admin API, when `admin.token` is set.
    pub admin: Option<admin::AdminApi>,
    /// Whether a permanently locked account says so (423) or answers like a throttle (429).
    pub disclose_lockouts: bool,
    /// Retry-After for a permanently locked account answered like a throttle.
    pub locked_retry_after_secs: u64,
    /// The mode while a shared store fails (`None`: the memory store, which cannot fail).
    pub store_on_error: Option<portcullis_store::OnError>,
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
}

/// Registers every route, the JSON error mapping and the 404 fallback.
pub fn configure(max_body_bytes: usize) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(
            web::JsonConfig::default()
                .limit(max_body_bytes)
                .error_handler(|error, _| json_error(error).into()),
        )
        .app_data(web::PayloadConfig::default().limit(max_body_bytes))
        .app_data(
            web::QueryConfig::default()
                .error_handler(|error, _| ApiError::BadRequest(error.to_string()).into()),
        )
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/v1/users", web::post().to(accounts::register))
        .route("/v1/login", web::post().to(login::login))
        .route("/v1/logout", web::post().to(session::logout))
        .route("/v1/logout/all", web::post().to(session::logout_all))
        .route("/v1/session", web::get().to(session::introspect))
        .route("/admin/v1/subjects", web::get().to(admin::subjects))
        .route("/admin/v1/unlock", web::post().to(admin::unlock))
        .route("/admin/v1/lockouts", web::get().to(admin::lockouts))
        .route("/admin/v1/allowlist", web::get().to(admin::allowlist))
        .route("/admin/v1/allowlist", web::put().to(admin::allow))
        .route("/admin/v1/allowlist", web::delete().to(admin::disallow))
        .default_service(web::to(|| async { Err::<String, _>(ApiError::NotFound) }));
    }
}

/// Maps actix's JSON extractor errors to problem+json answers.
fn json_error(error: JsonPayloadError) -> ApiError {
    match error {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(e) => ApiError::BadRequest(format!("invalid JSON body: {e}")),
        other => ApiError::BadRequest(format!("unreadable body: {other}")),
    }
}

/// `{"username": ..., "password": ...}`, the body of registration and login.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    username: String,
    password: SecretString,
}

impl Credentials {
    /// The password, refused when empty or over [`MAX_PASSWORD_BYTES`] before any hashing.
    fn password(&self) -> Result<SecretString, ApiError> {
        let len = self.password.expose_secret().len();
        if len == 0 {
            return Err(ApiError::BadRequest("password is empty".to_owned()));
        }
        if len > MAX_PASSWORD_BYTES {
            return Err(ApiError::BadRequest(format!(
                "password is longer than {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        Ok(self.password.clone())
    }

    fn username(&self) -> Result<portcullis_core::Username, ApiError> {
        let username = portcullis_core::Username::parse(&self.username)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        tracing::Span::current().record("username", username.as_str());
        Ok(username)
    }
}

/// The client address an attempt is counted against (see [`client_ip`]).
pub struct ClientIp(pub IpAddr);

impl FromRequest for ClientIp {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let resolved = match (req.peer_addr(), req.app_data::<web::Data<AppState>>()) {
            (Some(peer), Some(state)) => {
                let forwarded = req
                    .headers()
                    .get_all("x-forwarded-for")
                    .filter_map(|v| v.to_str().ok())
                    .collect::<Vec<_>>();
                let ip =
                    client_ip::resolve(peer.ip(), forwarded.into_iter(), &state.trusted_proxies);
                tracing::Span::current().record("client_ip", tracing::field::display(ip));
                Ok(ClientIp(ip))
            }
            _ => Err(ApiError::Internal(anyhow::anyhow!(
                "request without a peer address or application state"
            ))),
        };
        std::future::ready(resolved)
    }
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
            let _ = credentials.username();
            let _ = credentials.password();
        }
    }
}
