//! Builds the application from settings and runs it: the one way both `main` and the tests
//! start a server (tests bind port 0 and read the port back).

use std::net::{TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::web::Redirect;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use portcullis_accounts::AppState;
use portcullis_accounts::access_tokens::AccessTokens;
use portcullis_accounts::accounts::{Accounts, Dialect, redact};
use portcullis_accounts::allowlist::Allowlist;
use portcullis_accounts::challenge::Challenges;
use portcullis_accounts::guard::LoginGuard;
use portcullis_accounts::login_tokens::LoginTokens;
use portcullis_accounts::mail::outbox::Outbox;
use portcullis_accounts::mail::sender::Sender;
use portcullis_accounts::mail::transport::Transport;
use portcullis_accounts::mfa::SecondFactors;
use portcullis_accounts::mfa::sealing::SecretSealer;
use portcullis_accounts::notices::Notices;
use portcullis_accounts::passkeys::Passkeys;
use portcullis_accounts::passwords::{PasswordHasher, PasswordPolicy};
use portcullis_accounts::recent_decisions::RecentDecisions;
use portcullis_accounts::security_events::SecurityEvents;
use portcullis_accounts::session_cache::SessionCache;
use portcullis_accounts::sessions::{SessionLimits, Sessions};
use portcullis_accounts::settings::MailTransport;
use portcullis_accounts::stores::Stores;
use portcullis_core::{DeviceCookies, KeyDeriver};
use portcullis_store::{Clock, Invalidation, SystemClock, Topology};
use secrecy::ExposeSecret;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::mail::MailTemplates;
use crate::request_span::RequestSpan;
use crate::return_to::ReturnTo;
use crate::routes::admin::AdminApi;
use crate::routes::openapi::{self, ApiDoc, Documents, KnownPaths};
use crate::routes::{self, Forwarding, HttpState};
use crate::settings::Settings;
use crate::shutdown::{self, Drain};

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    ops_port: Option<u16>,
    server: Server,
    state: web::Data<AppState>,
    drain: Arc<Drain>,
    drain_for: Duration,
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
        accounts.fill_skeletons().await?;
        let allowlist = Allowlist::load(accounts.pool()).await?;
        allowlist.spawn_refresh(Duration::from_secs(settings.server.allowlist_refresh_secs));
        let hasher = PasswordHasher::new(&settings.argon2)?;
        let passwords = PasswordPolicy::from_settings(&settings.passwords)?;
        portcullis_accounts::instruments::install();
        if !settings.policy.enabled {
            tracing::warn!(
                "policy.enabled = false: NO rate limits, lockouts or bans apply (for measuring \
                 the defences only)"
            );
        }
        let hmac_key = instance_key(&settings, &accounts).await?;
        // A key of its own for device cookies, derived so that no second secret is needed.
        let device_cookies =
            DeviceCookies::new(&[hmac_key.as_slice(), b"/device-cookies"].concat());
        let deriver = KeyDeriver::new(
            &hmac_key,
            settings.policy.ipv4_subnet_prefix,
            settings.policy.ipv6_subnet_prefix,
            settings.policy.ipv6_network_prefix,
        )?;
        let stores = Stores::build(&settings.store, &settings.policy, clock.clone())?;
        let clock = clock.unwrap_or_else(|| Arc::new(SystemClock));
        // And one for challenges, so a challenge signature is worth nothing anywhere else.
        let challenges = Challenges::new(
            &[hmac_key.as_slice(), b"/altcha-challenges"].concat(),
            settings.policy.challenge.min_work,
            clock.clone(),
        );
        let admin = settings
            .admin
            .token
            .as_ref()
            .map(|token| AdminApi::new(token.expose_secret()));
        let events = SecurityEvents::new(stores.events.clone());
        let description = describe(&settings, &accounts);
        let sealer = SecretSealer::new(&hmac_key)?;
        let notices = Notices::new(
            accounts.pool(),
            settings.mail.notices.clone(),
            clock.clone(),
        );
        let mfa = SecondFactors::new(
            accounts.pool(),
            sealer,
            settings.policy.mfa,
            settings.mfa.issuer.clone(),
            clock.clone(),
            events.clone(),
            notices.clone(),
        );
        mfa.check_sealing_key().await?;
        let login_tokens = LoginTokens::new(accounts.pool(), clock.clone());
        let session_cache = SessionCache::new(
            settings.session.cache_secs.saturating_mul(1_000),
            clock.clone(),
        );
        listen_for_changes(&stores, allowlist.clone(), session_cache.clone());
        let access_tokens =
            AccessTokens::from_settings(&settings.tokens.access, &settings.secrets, clock.clone())?;
        let sessions = Sessions::new(
            accounts.pool(),
            clock.clone(),
            SessionLimits {
                ttl_ms: settings.session.ttl_secs.saturating_mul(1_000),
                max_per_account: settings.session.max_per_account,
            },
            session_cache,
            stores.admin.clone(),
        );

        let listener = bind(
            (settings.server.host.as_str(), settings.server.port),
            "server.host/server.port",
        )?;
        let address = listener.local_addr().context("reading the bound address")?;
        let ops = settings
            .admin
            .listen
            .map(|listen| bind(listen, "admin.listen"))
            .transpose()?;
        let ops_listener = ops
            .as_ref()
            .map(|l| l.local_addr().context("reading the admin address"))
            .transpose()?;
        let outbox = Outbox::new(accounts.pool(), accounts.dialect(), clock.clone());
        let public_url = settings
            .server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{}://{address}", settings.server.scheme()));
        let passkeys = Passkeys::new(
            settings.relying_party(address.port())?.as_ref(),
            accounts.pool(),
            clock.clone(),
            &hmac_key,
            settings.webauthn.max_per_account,
            events.clone(),
            notices.clone(),
        )?;
        let state = web::Data::new(AppState {
            accounts,
            sessions,
            access_tokens,
            hasher,
            passwords,
            breached_login: settings.passwords.breached_login(),
            login_tokens,
            mfa,
            passkeys,
            mfa_token_ttl_ms: settings.mfa.token_ttl_secs.saturating_mul(1_000),
            guard: LoginGuard::new(
                settings.policy,
                deriver,
                stores.attempts.clone(),
                events.clone(),
                allowlist.clone(),
                challenges,
                stores.deny_cache.clone(),
                settings.log.usernames,
                RecentDecisions::new(clock.clone()),
            ),
            stores,
            allowlist,
            events,
            outbox,
            notices,
            device_cookies,
            disclose_lockouts: settings.responses.disclose_lockouts,
            locked_retry_after_secs: settings
                .policy
                .username
                .lockout
                .map_or(900, |b| b.max_wait_ms.div_ceil(1_000).max(1)),
        });
        Sender::new(
            state.outbox.clone(),
            Transport::from_settings(&settings.mail)?,
            Arc::new(MailTemplates::new(&public_url)),
        )
        .spawn(
            Duration::from_millis(settings.mail.poll_ms),
            Arc::downgrade(&state.clone().into_inner()),
        );
        let drain = Arc::new(Drain::default());
        let http = web::Data::new(HttpState {
            forwarding: Forwarding {
                header: settings.server.forwarded_header,
                trusted_proxies: settings.server.trusted_proxies.clone(),
            },
            device: settings.device.clone(),
            admin,
            ops_listener,
            drain: drain.clone(),
            return_to: ReturnTo::new(&public_url, settings.server.return_hosts.clone()),
        });

        let max_body = settings.server.max_body_bytes;
        let tls = settings
            .server
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()?;
        let scheme = settings.server.scheme();
        let hsts = tls.is_some();
        let served = state.clone();
        let span_drain = drain.clone();
        let separate_operations = ops_listener.is_some();
        let mut server = HttpServer::new(move || {
            let (app, api) = App::new()
                .wrap(RequestSpan {
                    hsts,
                    drain: span_drain.clone(),
                })
                .app_data(state.clone())
                .app_data(http.clone())
                .into_utoipa_app()
                .openapi(ApiDoc::openapi())
                .configure(routes::configure(max_body))
                .split_for_parts();
            app.app_data(web::Data::new(KnownPaths::of(&api)))
                .app_data(web::Data::new(Documents::new(&api, separate_operations)))
                .configure(crate::web::configure(max_body))
                .service(openapi::serve_document)
                .service(SwaggerUi::new("/docs/{_:.*}").config(Config::from("/openapi.json")))
                .route(
                    "/docs",
                    web::get().to(|| async { Redirect::to("/docs/").permanent() }),
                )
        })
        .disable_signals() // `shutdown` handles them: it drains first
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        .client_request_timeout(Duration::from_millis(settings.server.request_timeout_ms))
        .keep_alive(Duration::from_secs(settings.server.keep_alive_secs))
        .max_connections(settings.server.max_connections);
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, config),
            None => server.listen(listener),
        }
        .context("starting the HTTP server")?;
        if let Some(ops) = ops {
            server = server.listen(ops).context("starting the admin listener")?;
        }
        let server = server.run();
        tracing::info!("listening on {scheme}://{address} {description}");
        if let Some(ops) = ops_listener {
            tracing::info!("admin API and metrics on http://{ops} only");
        }
        Ok(Self {
            port: address.port(),
            ops_port: ops_listener.map(|a| a.port()),
            server,
            state: served,
            drain,
            drain_for: Duration::from_secs(settings.server.drain_secs),
        })
    }

    /// The bound port of the admin listener, when `admin.listen` is set.
    pub fn ops_port(&self) -> Option<u16> {
        self.ops_port
    }

    /// The bound port (useful with `server.port = 0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT (drains, then in-flight requests finish: [`shutdown`]) or
    /// `handle().stop()`; then hands over what the replica holds back: the signal's counts not
    /// yet shared, security events the log could not take yet.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        shutdown::serve(self.server, &self.drain, self.drain_for).await?;
        if let Err(error) = self.state.stores.attempts.hand_over().await {
            tracing::warn!(%error, "the signal's last counts were not shared");
        }
        let undelivered = self.state.events.deliver_buffered().await;
        if undelivered > 0 {
            tracing::warn!(
                undelivered,
                "security events not delivered to the event log (each was logged)"
            );
        }
        Ok(())
    }
}

/// Binds a listener, naming the setting when it fails.
fn bind(
    address: impl ToSocketAddrs + std::fmt::Debug,
    setting: &str,
) -> anyhow::Result<TcpListener> {
    TcpListener::bind(&address).with_context(|| format!("{setting}: cannot bind {address:?}"))
}

/// What the start-up log says the deployment runs on.
fn describe(settings: &Settings, accounts: &Accounts) -> String {
    let database = redact(&settings.database.url);
    let mail = match (&settings.mail.transport, &settings.mail.smtp_url) {
        (MailTransport::Smtp, Some(url)) => format!("mail by SMTP to {}", redact(url)),
        _ => "mail to the log (mail.transport = \"log\")".to_owned(),
    };
    let stores = match (&settings.store.redis, accounts.dialect()) {
        (None, Dialect::Sqlite) => {
            format!("with embedded defaults: in-memory attempt store, accounts at {database}")
        }
        (None, Dialect::Postgres) => {
            format!("with an in-memory attempt store (one replica only), accounts at {database}")
        }
        (Some(redis), _) => format!(
            "with the Redis store at {} (prefix {}, {:?} sharding), accounts at {database}",
            describe_redis(&redis.topology()),
            redis.prefix,
            redis.sharding(),
        ),
    };
    format!("{stores}; {mail}")
}

/// Which Redis, with any password in its URLs hidden.
fn describe_redis(topology: &Topology) -> String {
    let urls = |urls: &[String]| urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(",");
    match topology {
        Topology::Single(url) => redact(url),
        Topology::Cluster(seeds) => format!("Cluster {}", urls(seeds)),
        Topology::Sentinel(sentinel) => format!(
            "primary {:?} named by the Sentinels {}",
            sentinel.master_name,
            urls(&sentinel.sentinels)
        ),
    }
}

/// Hears every replica's announced changes: an unlock or an allowlist change clears this
/// replica's deny cache, and an allowlist change reloads the allowlist now rather than at the
/// next periodic refresh; ended sessions leave its session cache.
fn listen_for_changes(stores: &Stores, allowlist: Allowlist, sessions: SessionCache) {
    let deny_cache = stores.deny_cache.clone();
    stores.admin.listen(Arc::new(move |change| match change {
        Invalidation::SessionsEnded(subject) => sessions.forget(subject.as_deref()),
        Invalidation::Unlock | Invalidation::Allowlist => {
            if let Some(cache) = &deny_cache {
                cache.clear();
            }
            if change == Invalidation::Allowlist {
                let allowlist = allowlist.clone();
                tokio::spawn(async move {
                    if let Err(error) = allowlist.refresh().await {
                        tracing::warn!(%error, "allowlist reload after a change failed");
                    }
                });
            }
        }
    }));
}

/// The instance's secret key: `secrets.hmac_key`, or one the database keeps for this instance
/// (fine while nothing else shares the attempt store; Redis requires the setting).
pub async fn instance_key(settings: &Settings, accounts: &Accounts) -> anyhow::Result<Vec<u8>> {
    if let Some(key) = &settings.secrets.hmac_key {
        return Ok(key.expose_secret().as_bytes().to_vec());
    }
    tracing::info!(
        "secrets.hmac_key is not set: using the instance key kept in the database (set it to \
         keep the key apart from the data it protects, and for replicas that share a store)"
    );
    accounts.instance_secret().await
}
