//! Integration tests through the real HTTP server on port 0 (one test binary for the crate).

// Test helpers fail the test that calls them; the no-panic lints guard request paths only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod access_tokens;
mod admin;
mod bad_input;
mod binary;
mod browser;
mod challenge;
mod client_ip;
mod compose;
mod deny_cache;
mod devices;
mod distributed;
mod drill;
mod fastapi_example;
mod faults;
mod forward_auth;
mod forward_auth_nginx;
mod hardening;
mod health;
mod helpers;
mod https;
mod kubernetes;
mod local_stack;
mod lockout;
mod login;
mod mail;
mod mfa;
mod monitoring;
mod notices;
mod openapi;
mod pages;
mod passkeys;
mod passwords;
mod proxy_nginx;
mod registration;
mod reset;
mod session;
