//! `/admin/v1/...`: inspect, unlock and list restrictions, manage the allowlist, through any
//! replica.
//!
//! Off (404) unless `admin.token` is set, and only on the admin listener when `admin.listen` is
//! set. Every call needs `Authorization: Bearer <token>`, or the admin console's cookie (see
//! [`AdminApi::console_cookie`]). The server keeps only the token's SHA-256 digest and compares
//! digests in constant time. A wrong token is a `security` event (`admin_auth_failed`) and
//! counts against the source's address limits, so guessing is throttled (429) like any other
//! attempt.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, delete, get, post, put, web};
use futures_util::future::LocalBoxFuture;
use ipnet::IpNet;
use portcullis_accounts::recent_decisions::MinuteOfDecisions;
use portcullis_accounts::{AppState, Error};
use portcullis_core::attack::Assessment;
use portcullis_core::{AttemptKey, UnixMillis};
use portcullis_store::{
    EventKind, Health, Invalidation, KeyStatus, RecordedEvent, Restriction, SecurityEvent,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};

use super::openapi::{AdminRefused, BodyRefused, Throttled, Unavailable};
use super::{HttpState, client_address, parse_username};
use crate::error::{ApiError, Problem};
use crate::settings::parse_network;

/// The admin console's cookie (`SameSite=Strict`, HttpOnly, path `/admin`).
pub const CONSOLE_COOKIE: &str = "portcullis_admin";

/// How long a console cookie is good for.
pub const CONSOLE_COOKIE_SECS: u64 = 8 * 60 * 60;

/// The admin API's credentials.
pub struct AdminApi {
    /// SHA-256 of the configured token.
    token_digest: [u8; 32],
}

impl AdminApi {
    /// An admin API accepting `token`.
    pub fn new(token: &str) -> Self {
        Self {
            token_digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether `token` is the admin token.
    pub fn is_token(&self, token: &str) -> bool {
        let digest = Sha256::digest(token.trim().as_bytes());
        bool::from(digest.as_slice().ct_eq(&self.token_digest))
    }

    /// The console cookie's value, good until `expires` (Unix seconds):
    /// `<expires>.<HMAC-SHA256 keyed with the token's digest, hex>`. Stateless, so every replica
    /// with the same token accepts it, and a new token ends every console session; never the
    /// token itself.
    pub fn console_cookie(&self, expires: u64) -> String {
        format!("{expires}.{}", hex::encode(self.console_tag(expires)))
    }

    fn console_tag(&self, expires: u64) -> [u8; 32] {
        let mut mac = <hmac::Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&self.token_digest)
            .unwrap_or_else(|_| <hmac::Hmac<Sha256> as hmac::KeyInit>::new(&Default::default()));
        hmac::Mac::update(&mut mac, format!("console:{expires}").as_bytes());
        hmac::Mac::finalize(mac).into_bytes().into()
    }

    fn accepts_console_cookie(&self, value: &str, now_secs: u64) -> bool {
        let Some((expires, tag)) = value.split_once('.') else {
            return false;
        };
        let (Ok(expires), Ok(tag)) = (expires.parse::<u64>(), hex::decode(tag)) else {
            return false;
        };
        expires > now_secs && bool::from(tag.as_slice().ct_eq(&self.console_tag(expires)))
    }

    /// Whether the request carries the token (`Authorization: Bearer`) or a live console cookie.
    pub fn accepts(&self, req: &HttpRequest) -> bool {
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match bearer {
            Some(token) => self.is_token(token),
            None => req
                .cookie(CONSOLE_COOKIE)
                .is_some_and(|c| self.accepts_console_cookie(c.value(), unix_now_secs())),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The admin API of a request that reached the admin listener (404 otherwise, and when the
/// admin API is off).
pub fn admin_api<'a>(http: &'a HttpState, req: &HttpRequest) -> Result<&'a AdminApi, ApiError> {
    let api = http.admin.as_ref().ok_or(ApiError::NotFound)?;
    if !http.is_ops_request(req) {
        return Err(ApiError::NotFound);
    }
    Ok(api)
}

/// Answers a wrong admin token: a `security` event, counted against the source's address
/// limits (401, or 429 once they refuse).
pub async fn refuse_admin(state: &AppState, req: &HttpRequest) -> ApiError {
    let ip = match client_address(req) {
        Ok(ip) => ip,
        Err(error) => return error,
    };
    state
        .events
        .report(SecurityEvent {
            kind: EventKind::AdminAuthFailed,
            dimension: Some("ip".to_owned()),
            key: Some(ip.to_string()),
            subject: None,
            until: None,
        })
        .await;
    match state.guard.admit_source(ip, None).await {
        // Counted; a wrong token is answered as one, never with a challenge.
        Ok(()) | Err(Error::ChallengeRequired { .. }) => Error::Unauthenticated.into(),
        Err(refused) => refused.into(),
    }
}

/// Proof that the request came to the admin listener and carries the admin token.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let (Some(state), Some(http)) = (
                req.app_data::<web::Data<AppState>>(),
                req.app_data::<web::Data<HttpState>>(),
            ) else {
                return Err(ApiError::NotFound);
            };
            if admin_api(http, &req)?.accepts(&req) {
                return Ok(Admin);
            }
            Err(refuse_admin(state, &req).await)
        })
    }
}

/// Exactly one of `username`, `ip`, `subnet`, `key`: whose counters to inspect or clear.
#[derive(Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Subject {
    /// A username (normalised as at login).
    #[schema(min_length = 1, max_length = 256)]
    #[param(min_length = 1, max_length = 256)]
    username: Option<String>,
    /// An address.
    ip: Option<String>,
    /// A CIDR network.
    subnet: Option<String>,
    /// A store key as `GET /admin/v1/lockouts` lists it (`ip:...`, `u:...`, ...). Clearing an
    /// account's key clears its counters; a permanent lock in the database needs `username`.
    key: Option<String>,
}

/// A subject's counters.
#[derive(Serialize, ToSchema)]
pub struct SubjectCounters {
    /// Each key's state: dimension, key, attempts, failures, lockout, ban.
    #[schema(value_type = Vec<Object>)]
    keys: Vec<KeyStatus>,
}

/// What an unlock cleared.
#[derive(Serialize, ToSchema)]
pub struct Cleared {
    /// Keys and account locks cleared.
    cleared: u64,
}

/// Current lockouts and bans.
#[derive(Serialize, ToSchema)]
pub struct Restrictions {
    /// Newest first: dimension, key, reason and `until` (null: permanent).
    #[schema(value_type = Vec<Object>)]
    restrictions: Vec<Restriction>,
}

/// The allowlisted networks.
#[derive(Serialize, ToSchema)]
pub struct Networks {
    /// CIDR networks.
    networks: Vec<String>,
}

impl Subject {
    fn keys(&self, state: &AppState) -> Result<Vec<AttemptKey>, ApiError> {
        let deriver = state.guard.deriver();
        let bad = |what: &str| ApiError::bad_request(what);
        match (&self.username, &self.ip, &self.subnet, &self.key) {
            (Some(username), None, None, None) => {
                let username = parse_username(username)?;
                Ok(vec![deriver.username_key(&username)])
            }
            (None, Some(ip), None, None) => {
                let ip: IpAddr = ip.parse().map_err(|_| bad("ip is not an IP address"))?;
                Ok(vec![deriver.ip_key(ip)])
            }
            (None, None, Some(subnet), None) => {
                let net: IpNet = subnet
                    .parse()
                    .map_err(|_| bad("subnet is not a CIDR network"))?;
                Ok(vec![deriver.subnet_key(net)])
            }
            (None, None, None, Some(key)) => AttemptKey::from_store_key(key)
                .map(|key| vec![key])
                .ok_or_else(|| bad("key is not a store key as /admin/v1/lockouts lists them")),
            _ => Err(bad("give exactly one of username, ip, subnet, key")),
        }
    }
}

/// `GET /admin/v1/subjects?username=|ip=|subnet=|key=`: the counters of one subject.
#[utoipa::path(
    tag = "admin",
    security(("admin" = [])),
    params(Subject),
    responses(
        (status = 200, description = "The subject's counters", body = SubjectCounters),
        (status = 400, description = "`bad_request`, `invalid_username`: not exactly one valid subject", body = Problem, content_type = "application/problem+json"),
        AdminRefused,
        Throttled,
        Unavailable,
    )
)]
#[get("/admin/v1/subjects")]
pub async fn subjects(
    _: Admin,
    state: web::Data<AppState>,
    query: web::Query<Subject>,
) -> Result<HttpResponse, ApiError> {
    let keys = query.keys(&state)?;
    let status = state.stores.admin.status(&keys).await?;
    Ok(HttpResponse::Ok().json(SubjectCounters { keys: status }))
}

/// `POST /admin/v1/unlock {"username"|"ip"|"subnet"|"key": ...}`: clears lockouts and bans.
#[utoipa::path(
    tag = "admin",
    security(("admin" = [])),
    request_body = Subject,
    responses(
        (status = 200, description = "Cleared, on every replica within a second", body = Cleared),
        (status = 400, description = "`bad_request`, `invalid_username`: not exactly one valid subject", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        AdminRefused,
        Throttled,
        Unavailable,
    )
)]
#[post("/admin/v1/unlock")]
pub async fn unlock(
    _: Admin,
    state: web::Data<AppState>,
    body: web::Json<Subject>,
) -> Result<HttpResponse, ApiError> {
    let keys = body.keys(&state)?;
    let mut cleared = state.stores.admin.clear(&keys).await?;
    if let Some(username) = &body.username {
        let username = parse_username(username)?;
        cleared += u64::from(state.accounts.unlock(&username).await?);
    }
    state.announce(Invalidation::Unlock).await;
    for key in &keys {
        state
            .events
            .report(SecurityEvent {
                kind: EventKind::Unlock,
                dimension: Some(key.dimension.as_str().to_owned()),
                key: Some(key.key.clone()),
                subject: None,
                until: None,
            })
            .await;
    }
    Ok(HttpResponse::Ok().json(Cleared { cleared }))
}

/// `?limit=` for listings.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Limit {
    /// At most this many (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

impl Limit {
    /// The limit asked (100 when none); 400 outside 1..=1000.
    pub fn value(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(100),
            Some(limit @ 1..=1_000) => Ok(limit),
            Some(_) => Err(ApiError::bad_request("limit: must be in 1..=1000")),
        }
    }
}

/// `GET /admin/v1/lockouts?limit=`: current lockouts and bans (until: null = permanent).
#[utoipa::path(
    tag = "admin",
    security(("admin" = [])),
    params(Limit),
    responses(
        (status = 200, description = "Current lockouts and bans", body = Restrictions),
        (status = 400, description = "`bad_request`: an unreadable query, or a limit outside 1..=1000", body = Problem, content_type = "application/problem+json"),
        AdminRefused,
        Throttled,
        Unavailable,
    )
)]
#[get("/admin/v1/lockouts")]
pub async fn lockouts(
    _: Admin,
    state: web::Data<AppState>,
    query: web::Query<Limit>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.value()?;
    let restrictions = state.stores.admin.restrictions(limit).await?;
    Ok(HttpResponse::Ok().json(Restrictions { restrictions }))
}

/// `{"network": "203.0.113.0/24"}` (a bare address means its /32 or /128).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// A CIDR network at most /8 (IPv4) or /16 (IPv6) wide, or an address.
    network: String,
}

impl Network {
    fn parse(&self) -> Result<IpNet, ApiError> {
        parse_network(&self.network).map_err(|detail| {
            Error::BadRequest {
                code: "invalid_network",
                detail,
            }
            .into()
        })
    }
}

fn listing(networks: Vec<IpNet>) -> Networks {
    Networks {
        networks: networks.iter().map(ToString::to_string).collect(),
    }
}

/// `GET /admin/v1/allowlist`: the allowlisted networks.
#[utoipa::path(
    tag = "admin",
    security(("admin" = [])),
    responses(
        (status = 200, description = "The allowlist", body = Networks),
        AdminRefused,
        Throttled,
        Unavailable,
    )
)]
#[get("/admin/v1/allowlist")]
pub async fn allowlist(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(listing(state.allowlist.networks().await?)))
}

/// `PUT /admin/v1/allowlist {"network": ...}`: 201 when added, 200 when it was there.
#[utoipa::path(
    tag = "admin",
    security(("admin" = [])),
    request_body = Network,
    responses(
        (status = 200, description = "It was there already", body = Networks),
        (status = 201, description = "Added, on every replica within a second", body = Networks),
        (status = 400, description = "`bad_request`, `invalid_network`", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        AdminRefused,
        Throttled,
        Unavailable,
    )
)]
#[put("/admin/v1/allowlist")]
pub async fn allow(
    _: Admin,
    state: web::Data<AppState>,
    body: web::Json<Network>,
) -> Result<HttpResponse, ApiError> {
    let added = state.allowlist.add(body.parse()?).await?;
    if added {
        state.announce(Invalidation::Allowlist).await;
    }
    let networks = listing(state.allowlist.networks().await?);
    Ok(if added {
        HttpResponse::Created().json(networks)
    } else {
        HttpResponse::Ok().json(networks)
    })
}

/// `DELETE /admin/v1/allowlist {"network": ...}`: 204, or 404 when it was not there.
#[utoipa::path(
    tag = "admin",
    security(("admin" = [])),
    request_body = Network,
    responses(
        (status = 204, description = "Removed, on every replica within a second"),
        (status = 400, description = "`bad_request`, `invalid_network`", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        AdminRefused,
        Throttled,
        Unavailable,
    )
)]
#[delete("/admin/v1/allowlist")]
pub async fn disallow(
    _: Admin,
    state: web::Data<AppState>,
    body: web::Json<Network>,
) -> Result<HttpResponse, ApiError> {
    if state.allowlist.remove(body.parse()?).await? {
        state.announce(Invalidation::Allowlist).await;
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound)
    }
}

/// The under-attack signal as this replica sees it: the service-wide counts last shared,
/// with this replica's own.
#[derive(Serialize, ToSchema)]
pub struct AttackSignalView {
    /// Whether the service is under attack (attempts without a trusted device are challenged).
    under_attack: bool,
    /// When (Unix milliseconds).
    as_of: UnixMillis,
    /// The trip in force: which detector, what it counted against what, until when.
    tripped_by: Option<TripView>,
    /// Whether the baseline has enough history for its detectors to trip.
    warm: bool,
    /// Each detector's reading now (the password fan-out trips on an event and has none).
    detectors: Vec<DetectorView>,
}

/// A trip of the signal.
#[derive(Serialize, ToSchema)]
pub struct TripView {
    /// `failures`, `unknown_usernames`, `failed_accounts`, `password_fan_out` or `floor`.
    detector: &'static str,
    /// What the detector counted.
    observed: u32,
    /// What the baseline expected (the floor and the fan-out: what they trip at).
    expected: f64,
    /// The signal holds until then (Unix milliseconds), unless the detector shows it again.
    until: UnixMillis,
}

/// One detector's reading.
#[derive(Serialize, ToSchema)]
pub struct DetectorView {
    /// The detector.
    detector: &'static str,
    /// What it counts over the recent estimate (the floor: failures over its window).
    observed: f64,
    /// What the baseline expects of as many attempts (the floor: the failures it trips at).
    expected: f64,
    /// Standard deviations above the baseline (0 for the floor).
    z: f64,
    /// Whether this reading trips the signal.
    trips: bool,
}

impl AttackSignalView {
    fn of(assessment: Assessment) -> Self {
        let round = |x: f64| (x * 100.0).round() / 100.0;
        Self {
            under_attack: assessment.trip.is_some(),
            as_of: assessment.at,
            tripped_by: assessment.trip.map(|trip| TripView {
                detector: trip.detector.as_str(),
                observed: trip.observed,
                expected: trip.expected_milli as f64 / 1_000.0,
                until: trip.until,
            }),
            warm: assessment.warm,
            detectors: assessment
                .readings
                .iter()
                .map(|r| DetectorView {
                    detector: r.detector.as_str(),
                    observed: round(r.observed),
                    expected: round(r.expected),
                    z: round(r.z),
                    trips: r.trips,
                })
                .collect(),
        }
    }
}

/// How the service is, as this replica sees it.
#[derive(Serialize, ToSchema)]
pub struct ServiceStatus {
    /// The under-attack signal (null when the policy has none).
    attack_signal: Option<AttackSignalView>,
    /// The attempt store: `ready`, `degraded` (a fallback serves while Redis fails) or
    /// `unavailable`.
    store: &'static str,
    /// This replica's decisions over the last ten minutes, oldest first (the fleet's are
    /// `portcullis_decisions_total`).
    decisions: Vec<DecisionsView>,
    /// Accounts with at least one passkey (what a leaked password cannot open alone).
    accounts_with_passkeys: u64,
}

/// One minute's decisions on this replica.
#[derive(Serialize, ToSchema)]
pub struct DecisionsView {
    /// The minute's start (Unix milliseconds).
    start: u64,
    /// Attempts admitted.
    allowed: u64,
    /// Attempts asked for a solved challenge.
    challenged: u64,
    /// Attempts refused, by reason (`rate_limited`, `throttled`, `too_many_failures`,
    /// `locked_out`, `banned`).
    denied: BTreeMap<&'static str, u64>,
}

impl From<MinuteOfDecisions> for DecisionsView {
    fn from(minute: MinuteOfDecisions) -> Self {
        let MinuteOfDecisions {
            start,
            allowed,
            challenged,
            denied,
        } = minute;
        Self {
            start,
            allowed,
            challenged,
            denied,
        }
    }
}

/// `GET /admin/v1/status`: the under-attack signal, the store's health and the recent decisions
/// by reason (what the admin console shows).
#[utoipa::path(
    tag = "admin",
    security(("admin" = [])),
    responses(
        (status = 200, description = "The status", body = ServiceStatus),
        AdminRefused,
        Throttled,
        Unavailable,
    )
)]
#[get("/admin/v1/status")]
pub async fn service_status(
    _: Admin,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let recent = state.guard.recent_decisions();
    let store = match state.stores.health().await {
        Health::Ready => "ready",
        Health::Degraded => "degraded",
        Health::Unavailable => "unavailable",
    };
    let attack_signal = state
        .stores
        .attempts
        .attack_signal()
        .map(AttackSignalView::of);
    Ok(HttpResponse::Ok().json(ServiceStatus {
        attack_signal,
        store,
        decisions: recent.minutes().into_iter().map(Into::into).collect(),
        accounts_with_passkeys: state.passkeys.accounts_with_passkeys().await?,
    }))
}

/// The newest security events.
#[derive(Serialize, ToSchema)]
pub struct Events {
    /// Newest first: `at` (Unix milliseconds), `kind`, and `dimension`, `key`, `subject`,
    /// `until` where they apply.
    #[schema(value_type = Vec<Object>)]
    events: Vec<RecordedEvent>,
}

/// `GET /admin/v1/events?limit=`: the newest security events of the event stream.
#[utoipa::path(
    tag = "admin",
    security(("admin" = [])),
    params(Limit),
    responses(
        (status = 200, description = "The newest events", body = Events),
        (status = 400, description = "`bad_request`: an unreadable query, or a limit outside 1..=1000", body = Problem, content_type = "application/problem+json"),
        AdminRefused,
        Throttled,
        Unavailable,
    )
)]
#[get("/admin/v1/events")]
pub async fn recent_events(
    _: Admin,
    state: web::Data<AppState>,
    query: web::Query<Limit>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.value()?;
    let events = state.stores.events.recent(limit).await?;
    Ok(HttpResponse::Ok().json(Events { events }))
}
