//! The Portcullis login service.
//!
//! A request flows one way: [`routes`] parse it and resolve the client address
//! ([`client_ip`]); the [`login`] use case has the [`guard`] admit the attempt (the attempt
//! store decides, see [`stores`]); only an admitted attempt reaches the database
//! ([`accounts`]) and Argon2 ([`passwords`]); the admission is finished with the outcome (or
//! abandoned); a success opens a session ([`sessions`], [`token`]). The hosted pages and the
//! admin console ([`web`]) are a second way in to the same use cases. [`startup`] wires it from
//! [`settings`].

pub mod access_tokens;
pub mod accounts;
pub mod allowlist;
pub mod challenge;
pub mod client_ip;
pub mod deny_cache;
pub mod error;
pub mod guard;
pub mod import;
pub mod instruments;
pub mod login;
pub mod login_tokens;
pub mod mfa;
pub mod password_change;
pub mod passwords;
pub mod recent_decisions;
pub mod refusal_log;
pub mod registration;
pub mod request_span;
pub mod routes;
pub mod security_events;
pub mod sessions;
pub mod settings;
pub mod startup;
pub mod stores;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod web;

pub use settings::Settings;
pub use startup::Application;
