//! Portcullis's use cases and what they persist, with no web framework: the server's routes,
//! pages and console are adapters over this crate.
//!
//! An attempt flows one way: the [`login`] use case has the [`guard`] admit it (the attempt
//! store decides, see [`stores`]); only an admitted attempt reaches the database
//! ([`accounts`]) and Argon2 ([`passwords`]); the admission is finished with the outcome (or
//! abandoned); a success opens a session ([`sessions`], [`token`]), or hands the login to its
//! second factor ([`mfa`], [`login_tokens`]). [`registration`], [`password_change`],
//! [`addresses`] and [`password_reset`] are the other use cases; [`passkeys`] sign in with no
//! password at all; [`mail`] reaches the account's owner, and [`notices`] tell the owner what
//! happened to the account. Everything they reach is in the [`AppState`]; what goes wrong is an
//! [`Error`], which the server answers as problem+json.

pub mod access_tokens;
pub mod accounts;
pub mod addresses;
pub mod allowlist;
pub mod challenge;
pub mod deny_cache;
pub mod error;
pub mod guard;
pub mod instruments;
pub mod login;
pub mod login_tokens;
pub mod mail;
pub mod mfa;
pub mod notices;
pub mod passkeys;
pub mod password_change;
pub mod password_reset;
pub mod passwords;
pub mod recent_decisions;
pub mod refusal_log;
pub mod registration;
pub mod security_events;
pub mod session_cache;
pub mod sessions;
pub mod settings;
pub mod state;
pub mod stores;
pub mod token;

pub use error::Error;
pub use state::AppState;
