//! The Portcullis login service.
//!
//! A request flows one way: [`routes`] parse it and resolve the client address
//! ([`client_ip`]); the [`guard`] asks the attempt store for the policy's decision; only an
//! allowed attempt reaches the database ([`accounts`]) and Argon2 ([`password`]); the outcome is
//! recorded; a success issues a session ([`token`]). [`startup`] wires it from [`settings`].

pub mod accounts;
pub mod allowlist;
pub mod client_ip;
pub mod error;
pub mod guard;
pub mod import;
pub mod instruments;
pub mod password;
pub mod request_span;
pub mod routes;
pub mod security_events;
pub mod settings;
pub mod startup;
pub mod telemetry;
pub mod token;

pub use settings::Settings;
pub use startup::Application;
