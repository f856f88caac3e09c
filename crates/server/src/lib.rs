//! The Portcullis login service: the HTTP adapters over the use cases of
//! [`portcullis_accounts`].
//!
//! A request flows one way: [`routes`] parse it and resolve the client address
//! ([`client_ip`]), call a use case (a login, a registration, a password change) with the
//! application state, and answer its result, or its error as problem+json ([`error`]). The
//! hosted pages and the admin console ([`web`]) are a second way in to the same use cases.
//! [`startup`] wires it from [`settings`], [`shutdown`] drains it; [`import`] loads accounts
//! from a file.

pub mod client_ip;
pub mod error;
pub mod import;
pub mod mail;
pub mod request_identity;
pub mod request_span;
pub mod return_to;
pub mod routes;
pub mod settings;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod web;

pub use settings::Settings;
pub use startup::Application;
