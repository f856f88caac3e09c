//! Configuration: built-in defaults, then an optional TOML file, then `PORTCULLIS__...` env.
//!
//! Every section rejects unknown keys, so a typo fails start-up with the key's name instead of
//! being ignored. Secrets are wrapped in `secrecy` types and never printed.

use std::net::IpAddr;
use std::path::Path;

use anyhow::Context;
use ipnet::IpNet;
use portcullis_accounts::passkeys::RelyingParty;
use portcullis_accounts::settings::{
    AccessTokenSettings, Argon2Settings, DatabaseSettings, MailSettings, MailTransport,
    PasswordSettings, SecretSettings, StoreSettings, UsernameLogging, WebauthnSettings, secret,
};
use portcullis_core::Policy;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use url::{Host, Url};

use crate::client_ip::ForwardedHeader;

/// Everything the service can be told.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `pretty` (human-readable, the default) or `json` (one object per line).
    pub log_format: LogFormat,
    /// A tracing filter (`info`, `portcullis_server=debug,info`, ...); `RUST_LOG` overrides it.
    pub log_level: String,
    /// What request logs may show.
    pub log: LogSettings,
    /// The HTTP listener.
    pub server: ServerSettings,
    /// The accounts database.
    pub database: DatabaseSettings,
    /// Password hashing.
    pub argon2: Argon2Settings,
    /// What a new password must be, and breached-password screening.
    pub passwords: PasswordSettings,
    /// Second factors (TOTP).
    pub mfa: MfaSettings,
    /// Login sessions.
    pub session: SessionSettings,
    /// Device cookies.
    pub device: DeviceSettings,
    /// The admin API.
    pub admin: AdminSettings,
    /// What refusals reveal.
    pub responses: ResponseSettings,
    /// Where attempt counters and sessions live.
    pub store: StoreSettings,
    /// Rate limits and lockouts (see the README for every knob).
    pub policy: Policy,
    /// Tokens other services can check on their own.
    pub tokens: TokenSettings,
    /// Keys that must stay secret.
    pub secrets: SecretSettings,
    /// Mail to accounts' owners.
    pub mail: MailSettings,
    /// Passkeys.
    pub webauthn: WebauthnSettings,
}

/// Tokens other services can check on their own.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSettings {
    /// JWT access tokens beside the opaque session token.
    pub access: AccessTokenSettings,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// JSON lines, for log shippers.
    Json,
}

/// What request logs may show.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `digest` (the default: the username's keyed hash, as in counter keys) or `plain`.
    /// People type passwords into username fields, so plain names are opt-in.
    pub usernames: UsernameLogging,
}

/// The HTTP listener.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one (the bound address is logged).
    pub port: u16,
    /// Peers whose forwarding header is believed: CIDRs or single addresses, at most /8 (IPv4)
    /// or /16 (IPv6) wide.
    #[serde(default, deserialize_with = "networks")]
    pub trusted_proxies: Vec<IpNet>,
    /// The header trusted proxies name the client in: `x-forwarded-for` (the default) or
    /// `forwarded` (RFC 7239).
    pub forwarded_header: ForwardedHeader,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Seconds a replica goes on serving after SIGTERM while `/readyz` answers 503, so load
    /// balancers stop sending to it before it stops accepting (a second signal skips the rest).
    pub drain_secs: u64,
    /// Seconds in-flight requests get to finish once the replica stops accepting.
    pub shutdown_timeout_secs: u64,
    /// Seconds between reloads of the allowlist from the database.
    pub allowlist_refresh_secs: u64,
    /// Milliseconds a client gets to send a request's head; slower ones get 408.
    pub request_timeout_ms: u64,
    /// Seconds an idle keep-alive connection stays open.
    pub keep_alive_secs: u64,
    /// Open connections per worker; more wait in the listen backlog.
    pub max_connections: usize,
    /// HTTPS on this listener; unset, plain HTTP (behind a proxy that terminates TLS).
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// The URL people reach the service at (`https://login.example.com`): mail builds its
    /// links from it, never from a request's `Host`. Required with `mail.transport = "smtp"`;
    /// unset, links point at this listener.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Hosts (`app.example.com`, or `localhost:8000` for one port) the login page may send a
    /// browser back to after signing in, when forward authentication sent it there; any other
    /// return address goes to `/account`. Comma-separated in env.
    #[serde(default, deserialize_with = "hosts")]
    pub return_hosts: Vec<String>,
}

impl ServerSettings {
    /// What the listener speaks: `https` with `tls`, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// A certificate and its key, PEM files.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, SEC1 or PKCS#1).
    pub key: std::path::PathBuf,
}

/// Second factors.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MfaSettings {
    /// The issuer authenticator apps show next to the account (`otpauth://` URIs).
    pub issuer: String,
    /// Seconds an `mfa_token` (between the password and the code) lives.
    pub token_ttl_secs: u64,
}

impl Default for MfaSettings {
    fn default() -> Self {
        Self {
            issuer: "Portcullis".to_owned(),
            token_ttl_secs: 300,
        }
    }
}

/// Login sessions.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// Seconds a session lives.
    pub ttl_secs: u64,
    /// Sessions an account keeps; a new one evicts the oldest (bounds "log out everywhere").
    pub max_per_account: u32,
    /// Seconds a replica keeps a session lookup for forward authentication and introspection
    /// (0: none). An ending is announced to every replica at once; this bounds how long one
    /// whose change subscription is down goes on answering for a session that ended.
    pub cache_secs: u64,
}

/// What refusals reveal.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseSettings {
    /// Answer a permanently locked account with 423 Locked instead of the 429 a throttled or
    /// unknown username gets. Off by default: it reveals that the account exists.
    pub disclose_lockouts: bool,
}

/// The admin API (`/admin/v1/...`): off unless a token is set.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token for the admin API (32+ characters); the server keeps only its digest.
    #[serde(skip_serializing, default, deserialize_with = "secret")]
    pub token: Option<SecretString>,
    /// A second listener (`127.0.0.1:9090`) for the admin API and `/metrics`: when set, they
    /// answer only there, and 404 on the public listener.
    pub listen: Option<std::net::SocketAddr>,
}

/// Device cookies: a successful login marks the browser as a trusted device of the account.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSettings {
    /// The cookie's name.
    pub cookie_name: String,
    /// Send the cookie over HTTPS only (turn off only for plain-HTTP development).
    pub secure_cookie: bool,
    /// Days a device stays trusted.
    pub max_age_days: u32,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        Self {
            cookie_name: "portcullis_device".to_owned(),
            secure_cookie: true,
            max_age_days: 180,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Pretty,
            log_level: "info".to_owned(),
            log: LogSettings::default(),
            server: ServerSettings {
                host: "127.0.0.1".to_owned(),
                port: 8080,
                trusted_proxies: Vec::new(),
                forwarded_header: ForwardedHeader::default(),
                workers: 0,
                max_body_bytes: 16 * 1024,
                drain_secs: 5,
                shutdown_timeout_secs: 30,
                allowlist_refresh_secs: 5,
                request_timeout_ms: 5_000,
                keep_alive_secs: 5,
                max_connections: 10_000,
                tls: None,
                public_url: None,
                return_hosts: Vec::new(),
            },
            database: DatabaseSettings {
                url: "sqlite://data/portcullis.db".to_owned(),
                migrate_on_start: true,
                max_connections: 8,
                acquire_timeout_ms: 2_000,
            },
            argon2: Argon2Settings {
                memory_kib: 19_456,
                iterations: 2,
                parallelism: 1,
                workers: 0,
                queue_depth: 64,
                pepper: None,
            },
            passwords: PasswordSettings::default(),
            mfa: MfaSettings::default(),
            session: SessionSettings {
                ttl_secs: 12 * 3600,
                max_per_account: 100,
                cache_secs: 5,
            },
            device: DeviceSettings::default(),
            admin: AdminSettings::default(),
            responses: ResponseSettings::default(),
            store: StoreSettings::default(),
            policy: Policy::default(),
            tokens: TokenSettings::default(),
            secrets: SecretSettings::default(),
            mail: MailSettings::default(),
            webauthn: WebauthnSettings::default(),
        }
    }
}

impl Settings {
    /// Defaults, overlaid with `file` (if given) and then with `PORTCULLIS__SECTION__KEY` env.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let defaults = config::Config::try_from(&Settings::default())
            .context("serialising the built-in defaults")?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        // No `try_parsing`: it would turn an all-digit secret into a number. Values stay
        // strings; numeric settings are converted when deserialised.
        let env = config::Environment::with_prefix("PORTCULLIS")
            .prefix_separator("__")
            .separator("__");
        let settings: Settings = builder
            .add_source(env)
            .build()
            .context("reading configuration")?
            .try_deserialize()
            .context("invalid configuration")?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what serde cannot: ranges and combinations.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.policy.validate()?;
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            anyhow::bail!(
                "log_level: not a tracing filter ({error}); for example \"info\" or \
                 \"portcullis_server=debug,info\""
            );
        }
        anyhow::ensure!(
            self.server.max_body_bytes >= 1024,
            "server.max_body_bytes: must be at least 1024"
        );
        anyhow::ensure!(
            self.server.allowlist_refresh_secs >= 1,
            "server.allowlist_refresh_secs: must be at least 1"
        );
        anyhow::ensure!(
            self.database.max_connections >= 1,
            "database.max_connections: must be at least 1"
        );
        anyhow::ensure!(
            self.session.ttl_secs >= 1,
            "session.ttl_secs: must be at least 1"
        );
        anyhow::ensure!(
            self.session.max_per_account >= 1,
            "session.max_per_account: must be at least 1"
        );
        anyhow::ensure!(
            self.session.cache_secs <= 60,
            "session.cache_secs: must be at most 60 (how long an ended session may still pass \
             on a replica that did not hear of it)"
        );
        anyhow::ensure!(
            !self.mfa.issuer.trim().is_empty() && !self.mfa.issuer.contains(':'),
            "mfa.issuer: must be non-empty and without a colon (it labels otpauth:// URIs)"
        );
        anyhow::ensure!(
            (30..=3_600).contains(&self.mfa.token_ttl_secs),
            "mfa.token_ttl_secs: must be in 30..=3600"
        );
        if let Some(url) = &self.server.public_url {
            anyhow::ensure!(
                (url.starts_with("https://") || url.starts_with("http://"))
                    && !url.contains(['?', '#', ' ']),
                "server.public_url: must be an http(s) URL without query or fragment, like \
                 https://login.example.com"
            );
        }
        if self.mail.transport == MailTransport::Smtp {
            anyhow::ensure!(
                self.server.public_url.is_some(),
                "server.public_url: must be set with mail.transport = \"smtp\": links in mail \
                 are built from it"
            );
            anyhow::ensure!(
                self.mail.smtp_url.is_some(),
                "mail.smtp_url: must be set with mail.transport = \"smtp\" \
                 (smtp://host:port, smtp://host:port?tls=required or smtps://host:port)"
            );
        }
        anyhow::ensure!(
            (50..=60_000).contains(&self.mail.poll_ms),
            "mail.poll_ms: must be in 50..=60000"
        );
        anyhow::ensure!(
            (1..=100).contains(&self.mail.notices.per_hour),
            "mail.notices.per_hour: must be in 1..=100"
        );
        anyhow::ensure!(
            (1..=100).contains(&self.webauthn.max_per_account),
            "webauthn.max_per_account: must be in 1..=100"
        );
        if let Some(token) = &self.admin.token {
            anyhow::ensure!(
                token.expose_secret().len() >= 32,
                "admin.token (PORTCULLIS__ADMIN__TOKEN): must have at least 32 characters; \
                 generate one with `openssl rand -hex 32`"
            );
        }
        if let Some(redis) = &self.store.redis {
            match &redis.sentinel {
                Some(sentinel) => {
                    anyhow::ensure!(
                        redis.url.trim().is_empty() && !redis.cluster,
                        "store.redis.sentinel: the Sentinels name the server; leave \
                         store.redis.url and store.redis.cluster unset"
                    );
                    anyhow::ensure!(
                        !sentinel.master_name.trim().is_empty(),
                        "store.redis.sentinel.master_name: must name the primary the Sentinels \
                         monitor"
                    );
                    anyhow::ensure!(
                        !sentinel.addresses.is_empty()
                            && sentinel.addresses.iter().all(|a| is_host_port(a)),
                        "store.redis.sentinel.addresses: must list the Sentinels as host:port \
                         (comma-separated in the environment), got {:?}",
                        sentinel.addresses
                    );
                }
                None => anyhow::ensure!(
                    !redis.urls().is_empty(),
                    "store.redis.url: must name a Redis (redis://host:port), or leave \
                     store.redis unset for the in-memory store"
                ),
            }
            anyhow::ensure!(
                !redis.prefix.is_empty() && !redis.prefix.contains(['{', '}']),
                "store.redis.prefix: must be non-empty and without braces"
            );
            anyhow::ensure!(
                redis.timeout_ms >= 1,
                "store.redis.timeout_ms: must be at least 1"
            );
            anyhow::ensure!(
                self.store.breaker_failures >= 1,
                "store.breaker_failures: must be at least 1"
            );
            let key_len = self
                .secrets
                .hmac_key
                .as_ref()
                .map_or(0, |k| k.expose_secret().len());
            anyhow::ensure!(
                key_len >= 32,
                "secrets.hmac_key (PORTCULLIS__SECRETS__HMAC_KEY) is required with the Redis \
                 store (store.redis): every replica must hash usernames with the same secret \
                 key of at least 32 characters; generate one with `openssl rand -hex 32`"
            );
        }
        Ok(())
    }
}

impl Settings {
    /// Who passkeys are for: `webauthn.rp_origins`, or else `server.public_url`, or else
    /// `localhost` on the listener's `port`; `webauthn.rp_id`, or else the first origin's host.
    /// None (passkeys off, with a warning) when that host is an address and no `rp_id` is set:
    /// WebAuthn scopes credentials to a domain.
    pub fn relying_party(&self, port: u16) -> anyhow::Result<Option<RelyingParty>> {
        let scheme = self.server.scheme();
        let origins = if self.webauthn.rp_origins.is_empty() {
            let origin = match &self.server.public_url {
                Some(url) => Url::parse(url).context("server.public_url")?,
                None => Url::parse(&format!("{scheme}://localhost:{port}"))?,
            };
            vec![origin]
        } else {
            self.webauthn
                .rp_origins
                .iter()
                .map(|origin| {
                    Url::parse(origin).with_context(|| {
                        format!("webauthn.rp_origins: `{origin}` is not a URL like https://login.example.com")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        };
        let id = match (&self.webauthn.rp_id, origins.first().and_then(Url::host)) {
            (Some(id), _) => id.trim().to_owned(),
            (None, Some(Host::Domain(domain))) => domain.to_owned(),
            (None, _) => {
                tracing::warn!(
                    "passkeys are off: the service is reached at an address, and passkeys need \
                     a domain (set webauthn.rp_id and webauthn.rp_origins, or server.public_url)"
                );
                return Ok(None);
            }
        };
        anyhow::ensure!(
            !id.is_empty() && id.parse::<IpAddr>().is_err(),
            "webauthn.rp_id: must be a domain (login.example.com), not `{id}`"
        );
        Ok(Some(RelyingParty {
            id,
            origins,
            name: self.mfa.issuer.clone(),
        }))
    }
}

/// The shortest prefixes a trusted or allowlisted network may have: anything wider trusts or
/// exempts a good part of the internet, which is never what an operator means.
pub const MIN_PREFIX_V4: u8 = 8;
/// See [`MIN_PREFIX_V4`].
pub const MIN_PREFIX_V6: u8 = 16;

/// Whether `address` is `host:port` (a Sentinel's address: no scheme, a port number).
fn is_host_port(address: &str) -> bool {
    address.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok()
    })
}

/// Parses a network, accepting a bare address as its own /32 or /128, refusing networks
/// wider than /8 (IPv4) or /16 (IPv6).
pub fn parse_network(entry: &str) -> Result<IpNet, String> {
    let entry = entry.trim();
    let net = entry
        .parse::<IpNet>()
        .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{entry}` is neither a CIDR network nor an IP address"))?;
    let min = match net {
        IpNet::V4(_) => MIN_PREFIX_V4,
        IpNet::V6(_) => MIN_PREFIX_V6,
    };
    if net.prefix_len() < min {
        return Err(format!(
            "`{entry}` is wider than /{min}: list the networks you mean, not a share of the internet"
        ));
    }
    Ok(net.trunc())
}

/// Reads a list of networks (see [`parse_network`]): a list, or one comma-separated string
/// (as the environment gives it).
fn networks<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    list(deserializer)?
        .iter()
        .map(|entry| parse_network(entry).map_err(serde::de::Error::custom))
        .collect()
}

/// `server.return_hosts`: lower-cased hosts, each with an optional port.
fn hosts<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    list(deserializer)?
        .iter()
        .map(|entry| {
            let host = entry.trim().to_ascii_lowercase();
            let (name, port) = host.rsplit_once(':').unwrap_or((host.as_str(), ""));
            let name_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            let port_ok = port.is_empty() || port.parse::<u16>().is_ok_and(|p| p > 0);
            if name_ok && port_ok && !host.ends_with(':') {
                Ok(host)
            } else {
                Err(serde::de::Error::custom(format!(
                    "{entry:?} is not a host or host:port (server.return_hosts)"
                )))
            }
        })
        .collect()
}

/// A list in a file, or comma-separated text in env.
fn list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Raw::deserialize(deserializer)? {
        Raw::List(list) => list,
        Raw::Text(text) => text
            .split(',')
            .filter(|e| !e.trim().is_empty())
            .map(str::to_owned)
            .collect(),
    })
}
