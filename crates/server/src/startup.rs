//! Builds the application from settings and runs it: the one way both `main` and the tests
//! start a server (tests bind port 0 and read the port back).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use portcullis_core::{DeviceCookies, KeyDeriver};
use portcullis_store::{
    AdminStore, AttemptStore, Clock, EventLog, MemoryStore, RedisConfig, RedisStore,
    ResilientStore, SessionStore, SystemClock, Transition,
};
use secrecy::ExposeSecret;

use crate::accounts::{Accounts, Dialect, redact};
use crate::allowlist::Allowlist;
use crate::guard::LoginGuard;
use crate::password::PasswordHasher;
use crate::request_span::root_span;
use crate::routes::admin::AdminApi;
use crate::routes::{self, AppState};
use crate::security_events::SecurityEvents;
use crate::settings::Settings;

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Builds the application on real time (Redis `TIME` with the Redis store).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_inner(settings, None).await
    }

    /// Builds the application with an injected clock for every store (tests move time with it).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        Self::build_inner(settings, Some(clock)).await
    }

    async fn build_inner(
        settings: Settings,
        clock: Option<Arc<dyn Clock>>,
    ) -> anyhow::Result<Self> {
        settings.validate()?;
        let accounts = Accounts::connect(&settings.database).await?;
        if settings.database.migrate_on_start {
            accounts.migrate().await?;
        }
        let allowlist = Allowlist::load(accounts.pool()).await?;
        allowlist.spawn_refresh(Duration::from_secs(settings.server.allowlist_refresh_secs));
        let hasher = PasswordHasher::new(&settings.argon2)?;
        crate::instruments::handle();
        if !settings.policy.enabled {
            tracing::warn!(
                "policy.enabled = false: NO rate limits, lockouts or bans apply (for measuring \
                 the defences only)"
            );
        }
        let hmac_key = hmac_key(&settings)?;
        // A key of its own for device cookies, derived so that no second secret is needed.
        let device_cookies =
            DeviceCookies::new(&[hmac_key.as_slice(), b"/device-cookies"].concat());
        let deriver = KeyDeriver::new(
            &hmac_key,
            settings.policy.ipv4_subnet_prefix,
            settings.policy.ipv6_subnet_prefix,
        )?;
        let (attempts, sessions, event_log, admin_store) = stores(&settings, clock)?;
        let admin = settings
            .admin
            .token
            .as_ref()
            .map(|token| AdminApi::new(token.expose_secret(), admin_store));
        let events = SecurityEvents::new(event_log);
        let description = describe(&settings, &accounts);
        let state = web::Data::new(AppState {
            accounts,
            hasher,
            guard: LoginGuard::new(
                settings.policy,
                deriver,
                attempts,
                events.clone(),
                allowlist.clone(),
            ),
            allowlist,
            events,
            sessions,
            trusted_proxies: settings.server.trusted_proxies.clone(),
            session_ttl_ms: settings.session.ttl_secs.saturating_mul(1_000),
            device_cookies,
            device: settings.device.clone(),
            admin,
            disclose_lockouts: settings.responses.disclose_lockouts,
            store_on_error: settings
                .store
                .redis
                .as_ref()
                .map(|_| settings.store.on_error),
            locked_retry_after_secs: settings
                .policy
                .username
                .lockout
                .map_or(900, |b| b.max_wait_ms.div_ceil(1_000).max(1)),
        });

        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .with_context(|| {
                format!(
                    "server.host/server.port: cannot bind {}:{}",
                    settings.server.host, settings.server.port
                )
            })?;
        let address = listener.local_addr().context("reading the bound address")?;
        let max_body = settings.server.max_body_bytes;
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(root_span))
                .app_data(state.clone())
                .configure(routes::configure(max_body))
        })
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        .client_request_timeout(Duration::from_millis(settings.server.request_timeout_ms))
        .keep_alive(Duration::from_secs(settings.server.keep_alive_secs))
        .max_connections(settings.server.max_connections);
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server
            .listen(listener)
            .context("starting the HTTP server")?
            .run();
        tracing::info!("listening on http://{address} {description}");
        Ok(Self {
            port: address.port(),
            server,
        })
    }

    /// The bound port (useful with `server.port = 0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT (in-flight requests finish) or `handle().stop()`.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

type Stores = (
    Arc<dyn AttemptStore>,
    Arc<dyn SessionStore>,
    Arc<dyn EventLog>,
    Arc<dyn AdminStore>,
);

/// The attempt and session store the settings name: Redis if configured, else memory.
fn stores(settings: &Settings, clock: Option<Arc<dyn Clock>>) -> anyhow::Result<Stores> {
    let Some(redis) = &settings.store.redis else {
        let clock = clock.unwrap_or_else(|| Arc::new(SystemClock));
        let store = Arc::new(MemoryStore::new(settings.policy, clock));
        return Ok((store.clone(), store.clone(), store.clone(), store));
    };
    let config = RedisConfig {
        urls: redis.urls(),
        cluster: redis.cluster,
        prefix: redis.prefix.clone(),
        timeout: Duration::from_millis(redis.timeout_ms),
    };
    let mut store = RedisStore::new(&config, &settings.policy).context("store.redis")?;
    let local_clock: Arc<dyn Clock> = match clock {
        Some(clock) => {
            store = store.with_clock(clock.clone());
            clock
        }
        None => Arc::new(SystemClock),
    };
    let store = Arc::new(store);
    let attempts = ResilientStore::new(
        store.clone(),
        MemoryStore::new(settings.policy, local_clock),
        settings.store.on_error,
        settings.store.breaker_failures,
        Duration::from_millis(settings.store.breaker_cool_down_ms),
        Box::new(report_transition),
    );
    Ok((Arc::new(attempts), store.clone(), store.clone(), store))
}

/// Reports the breaker's changes: a `security` event and the `portcullis_store_degraded` gauge.
fn report_transition(transition: Transition) {
    let (event, degraded) = match transition {
        Transition::Degraded => ("store_degraded", 1.0),
        Transition::Recovered => ("store_recovered", 0.0),
    };
    metrics::gauge!("portcullis_store_degraded").set(degraded);
    tracing::warn!(target: "security", event, "attempt store {event}");
}

/// What the start-up log says the deployment runs on.
fn describe(settings: &Settings, accounts: &Accounts) -> String {
    let database = redact(&settings.database.url);
    match (&settings.store.redis, accounts.dialect()) {
        (None, Dialect::Sqlite) => {
            format!("with embedded defaults: in-memory attempt store, accounts at {database}")
        }
        (None, Dialect::Postgres) => {
            format!("with an in-memory attempt store (one replica only), accounts at {database}")
        }
        (Some(redis), _) => format!(
            "with the Redis {} store at {} (prefix {}), accounts at {database}",
            if redis.cluster { "Cluster" } else { "" },
            redis
                .urls()
                .iter()
                .map(|u| redact(u))
                .collect::<Vec<_>>()
                .join(","),
            redis.prefix
        ),
    }
}

/// The username-hashing key: configured, or random for this process (fine for the memory
/// store, which nothing else shares).
fn hmac_key(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    if let Some(key) = &settings.secrets.hmac_key {
        return Ok(key.expose_secret().as_bytes().to_vec());
    }
    tracing::info!(
        "secrets.hmac_key is not set: using a random key for this process (set it for replicas \
         that share a store)"
    );
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no entropy source: {e}"))?;
    Ok(key)
}
