//! The sections of the service's configuration the use cases read: the accounts database,
//! password hashing and rules, the attempt store, keys and access tokens. The server's
//! `Settings` loads them (defaults, file, environment) beside the sections only it reads.

use portcullis_store::{OnError, SentinelConfig, Sharding, Topology};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

/// JWT access tokens (see [`crate::access_tokens`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessTokenSettings {
    /// Whether a login also returns an `access_token` (needs `secrets.signing_key`).
    pub enabled: bool,
    /// Its lifetime: short, since it cannot be revoked.
    pub ttl_secs: u64,
    /// Its `iss` claim.
    pub issuer: String,
    /// Public keys (a PEM bundle) published in the JWKS beside the signing key's: the next key
    /// before a rotation, the previous one after it.
    pub extra_public_keys: String,
}

impl Default for AccessTokenSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl_secs: 300,
            issuer: "portcullis".to_owned(),
            extra_public_keys: String::new(),
        }
    }
}

/// How a username appears in request logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsernameLogging {
    /// The keyed hash (HMAC with `secrets.hmac_key`).
    #[default]
    Digest,
    /// The normalised name.
    Plain,
}

/// The accounts database.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path/file.db` (created if missing), `sqlite::memory:`, or
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Apply pending migrations at start-up.
    pub migrate_on_start: bool,
    /// Pool size.
    pub max_connections: u32,
    /// Longest wait for a connection before a request answers 503 + Retry-After.
    pub acquire_timeout_ms: u64,
}

/// Argon2id parameters and the hashing pool.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Argon2Settings {
    /// Memory cost in KiB (OWASP: 19456 with 2 iterations).
    pub memory_kib: u32,
    /// Time cost (passes over memory).
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// Threads hashing at once; 0 means one per core.
    pub workers: usize,
    /// Hash jobs allowed to wait for a thread; more are refused with 503 + Retry-After.
    pub queue_depth: usize,
    /// Optional secret mixed into every hash (Argon2's secret input); changing it invalidates
    /// every stored password.
    #[serde(skip_serializing, default, deserialize_with = "secret")]
    pub pepper: Option<SecretString>,
}

/// Mail to accounts' owners.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    /// `log` (every message, link included, goes to the log: nothing is sent) or `smtp`.
    pub transport: MailTransport,
    /// With `smtp`: `smtp://host:port` (plain), `smtp://host:port?tls=required` (STARTTLS) or
    /// `smtps://host:port` (implicit TLS); a user and password in the URL log in.
    pub smtp_url: Option<String>,
    /// The `From` of every message.
    pub from: String,
    /// Milliseconds between the sender's passes over the outbox.
    pub poll_ms: u64,
    /// Which notices go to a verified address, and how many.
    pub notices: NoticeSettings,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            transport: MailTransport::Log,
            smtp_url: None,
            from: "Portcullis <portcullis@localhost>".to_owned(),
            poll_ms: 1_000,
            notices: NoticeSettings::default(),
        }
    }
}

/// Notices to the account's owner (see [`crate::notices`]): each on by default.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoticeSettings {
    /// A login from a browser without the account's device cookie, with a "this wasn't me" link.
    pub new_device: bool,
    /// A lockout of the account, with a one-use link that lifts it.
    pub lockout: bool,
    /// The password changed or was reset.
    pub password_changed: bool,
    /// A second factor added or removed.
    pub second_factor: bool,
    /// A passkey added or removed.
    pub passkeys: bool,
    /// The verified address changed (to the old address).
    pub address_changed: bool,
    /// Notices of one kind an account gets per hour at most, so nobody can mail-bomb an owner
    /// (1..=100).
    pub per_hour: u64,
}

impl Default for NoticeSettings {
    fn default() -> Self {
        Self {
            new_device: true,
            lockout: true,
            password_changed: true,
            second_factor: true,
            passkeys: true,
            address_changed: true,
            per_hour: 3,
        }
    }
}

/// Passkeys (WebAuthn). Unset, the relying party is `server.public_url`'s host (`localhost` on
/// the listener's port without one); a service reached at an IP address has no passkeys until
/// `rp_id` names a domain.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebauthnSettings {
    /// The domain passkeys are scoped to: the origins' host or a parent domain of it.
    pub rp_id: Option<String>,
    /// The origins sign-in pages run on (`https://login.example.com`): a list, or one
    /// comma-separated string (as the environment gives it).
    #[serde(deserialize_with = "comma_separated")]
    pub rp_origins: Vec<String>,
    /// Passkeys an account may have (1..=100).
    pub max_per_account: u32,
}

impl Default for WebauthnSettings {
    fn default() -> Self {
        Self {
            rp_id: None,
            rp_origins: Vec::new(),
            max_per_account: 10,
        }
    }
}

/// A list of strings, or one comma-separated string.
fn comma_separated<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        One(String),
    }
    let raw = Raw::deserialize(deserializer)?;
    let items = match raw {
        Raw::List(items) => items,
        Raw::One(joined) => joined.split(',').map(str::to_owned).collect(),
    };
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect())
}

/// How mail leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    /// Into the log (the embedded default).
    Log,
    /// To `mail.smtp_url`.
    Smtp,
}

/// What a new password must be (NIST SP 800-63B rev. 4), and breached-password screening.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordSettings {
    /// Fewest code points: 15, NIST's minimum for a password that is the only factor. Lower it
    /// (NIST allows 8) where every account has a second factor.
    pub min_length: usize,
    /// Most code points, at least 64 (NIST); the hash also takes at most 1024 bytes.
    pub max_length: usize,
    /// The lowest zxcvbn score (0..=4) a new password may have; 0 turns the estimate off.
    pub min_zxcvbn_score: u8,
    /// Words a password must not contain besides the username: the service's name and the
    /// like.
    pub context_words: Vec<String>,
    /// A filter built by `portcullis passwords build-filter` from a Have I Been Pwned download;
    /// unset means no breached-password screening.
    pub breached_filter: Option<std::path::PathBuf>,
    /// What a login with a correct but breached password gets: `flag` (a session marked
    /// `password_change_required`) or `block` (no session; see [`BreachedLogin::Block`]).
    /// Unset: `block` with a filter configured.
    pub breached_login: Option<BreachedLogin>,
}

impl PasswordSettings {
    /// What a login with a correct but breached password gets, the default applied.
    pub fn breached_login(&self) -> BreachedLogin {
        self.breached_login
            .unwrap_or(if self.breached_filter.is_some() {
                BreachedLogin::Block
            } else {
                BreachedLogin::Flag
            })
    }
}

impl Default for PasswordSettings {
    fn default() -> Self {
        Self {
            min_length: 15,
            max_length: 64,
            min_zxcvbn_score: 3,
            context_words: vec!["portcullis".to_owned()],
            breached_filter: None,
            breached_login: None,
        }
    }
}

/// What a login with a correct but breached password gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BreachedLogin {
    /// A session, marked `password_change_required`.
    Flag,
    /// No session. From a browser with the account's device cookie, or after its second factor:
    /// 403 `password_change_required` with a single-use password-change token. Otherwise 403
    /// `password_reset_required` and nothing else: the leak's holder may be the sender.
    Block,
}

/// Where attempt counters and sessions live: in this process unless Redis is configured.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// Redis shared by every replica; unset means the in-memory store (one replica only).
    pub redis: Option<RedisSettings>,
    /// What to do while Redis cannot answer: `local` (count in this process), `fail_closed`
    /// (503 + Retry-After) or `fail_open` (admit unchecked).
    pub on_error: OnError,
    /// Consecutive Redis failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// Milliseconds the open breaker skips Redis before probing it again.
    pub breaker_cool_down_ms: u64,
    /// Keys whose refusal each replica remembers until the store's deadline, so repeated
    /// attempts on them cost no Redis call (with Redis only); 0 turns the cache off.
    pub deny_cache_entries: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            redis: None,
            on_error: OnError::Local,
            breaker_failures: 3,
            breaker_cool_down_ms: 1_000,
            deny_cache_entries: 100_000,
        }
    }
}

/// The Redis attempt and session store.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:port`; with `cluster`, a comma-separated list of seed nodes. Unset with
    /// `sentinel`.
    pub url: String,
    /// Whether `url` names Redis Cluster nodes.
    pub cluster: bool,
    /// A primary and its replicas, found through Sentinel (instead of `url`).
    pub sentinel: Option<SentinelSettings>,
    /// Key prefix, so deployments can share one Redis.
    pub prefix: String,
    /// How keys spread over Cluster slots: `single_slot` (one slot: a Cluster adds failover,
    /// not capacity) or `per_subject` (each address block and each account in a slot of its
    /// own). Unset: `per_subject` with `cluster`, else `single_slot`.
    pub sharding: Option<Sharding>,
    /// Longest wait for one Redis call, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            cluster: false,
            sentinel: None,
            prefix: "portcullis".to_owned(),
            sharding: None,
            timeout_ms: 50,
        }
    }
}

impl RedisSettings {
    /// How keys spread: as set, else per subject on a Cluster and in one slot on one server.
    pub fn sharding(&self) -> Sharding {
        self.sharding.unwrap_or(if self.cluster {
            Sharding::PerSubject
        } else {
            Sharding::SingleSlot
        })
    }

    /// The URLs to connect to (several seed nodes for a cluster).
    pub fn urls(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The deployment these settings name: Sentinel's primary, a Cluster, or one server.
    pub fn topology(&self) -> Topology {
        match &self.sentinel {
            Some(sentinel) => Topology::Sentinel(SentinelConfig {
                master_name: sentinel.master_name.clone(),
                sentinels: sentinel
                    .addresses
                    .iter()
                    .map(|address| format!("redis://{address}"))
                    .collect(),
                password: sentinel
                    .password
                    .as_ref()
                    .map(|p| p.expose_secret().to_owned()),
            }),
            None if self.cluster => Topology::Cluster(self.urls()),
            None => Topology::Single(self.urls().into_iter().next().unwrap_or_default()),
        }
    }
}

/// Redis Sentinel: the Sentinels name the primary, and after a failover the new one.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SentinelSettings {
    /// The name the Sentinels monitor the primary under (`sentinel monitor <name> ...`).
    pub master_name: String,
    /// The Sentinels, `host:port` each: a list, or one comma-separated string.
    #[serde(deserialize_with = "comma_separated")]
    pub addresses: Vec<String>,
    /// The primary's and replicas' password (`requirepass`), when they have one.
    #[serde(skip_serializing, default, deserialize_with = "secret")]
    pub password: Option<SecretString>,
}

/// Keys that must stay secret.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSettings {
    /// The instance's secret: hides usernames in counter keys, signs device cookies and
    /// challenges, seals TOTP secrets (each under a label of its own). Every replica sharing a
    /// store needs the same one; without it the instance makes one and keeps it in the
    /// database.
    #[serde(skip_serializing, default, deserialize_with = "secret")]
    pub hmac_key: Option<SecretString>,
    /// The Ed25519 private key (PKCS#8 PEM) that signs access tokens; the same on every
    /// replica.
    #[serde(skip_serializing, default, deserialize_with = "secret")]
    pub signing_key: Option<SecretString>,
}

/// Reads a secret as a string whatever its characters (an all-digit key from the environment
/// stays the digits it was).
pub fn secret<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Unsigned(u64),
        Signed(i64),
    }
    Ok(Option::<Raw>::deserialize(deserializer)?.map(|raw| {
        SecretString::from(match raw {
            Raw::Text(text) => text,
            Raw::Unsigned(n) => n.to_string(),
            Raw::Signed(n) => n.to_string(),
        })
    }))
}
