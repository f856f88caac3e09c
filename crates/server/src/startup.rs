//! Builds the application from settings and runs it: the one way both `main` and the tests
//! start a server (tests bind port 0 and read the port back).

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use portcullis_core::KeyDeriver;
use portcullis_store::{Clock, MemoryStore, SystemClock};
use secrecy::ExposeSecret;

use crate::accounts::{Accounts, redact};
use crate::guard::LoginGuard;
use crate::password::PasswordHasher;
use crate::request_span::root_span;
use crate::routes::{self, AppState};
use crate::settings::Settings;

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Builds the application on the system clock.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Builds the application with an injected clock (tests move time with it).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        settings.validate()?;
        let accounts = Accounts::connect(&settings.database).await?;
        if settings.database.migrate_on_start {
            accounts.migrate().await?;
        }
        let hasher = PasswordHasher::new(&settings.argon2)?;
        let deriver = KeyDeriver::new(
            &hmac_key(&settings)?,
            settings.policy.ipv4_subnet_prefix,
            settings.policy.ipv6_subnet_prefix,
        )?;
        let store = Arc::new(MemoryStore::new(settings.policy, clock));
        let state = web::Data::new(AppState {
            accounts,
            hasher,
            guard: LoginGuard::new(settings.policy, deriver, store.clone()),
            sessions: store,
            trusted_proxies: settings.server.trusted_proxies.clone(),
            session_ttl_ms: settings.session.ttl_secs.saturating_mul(1_000),
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
        .shutdown_timeout(settings.server.shutdown_timeout_secs);
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server
            .listen(listener)
            .context("starting the HTTP server")?
            .run();
        tracing::info!(
            "listening on http://{address} with embedded defaults: in-memory attempt store, \
             accounts at {}",
            redact(&settings.database.url)
        );
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
