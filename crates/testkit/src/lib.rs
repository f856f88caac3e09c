//! Test fixtures for Portcullis.
//!
//! - [`app`]: a real application on port 0, with a clock the test moves.
//! - [`redis`]: a Redis to test against, a private Redis server, a private Redis Cluster.
//! - [`sentinel`]: a private Redis primary, its replica and the Sentinels that fail it over.
//! - [`postgres`]: a fresh PostgreSQL database per test, a private PostgreSQL server.
//! - [`replicas`]: N `portcullis` processes sharing one Redis and one database.
//! - [`link`]: a TCP link whose round trip a test lengthens (netem's delay, without netem).
//! - [`nginx`]: a real nginx with the configuration a test gives it.
//! - [`container`]: containers of the local images (`scripts/images.sh`) through the docker CLI.
//!
//! Services come, in order, from an env-provided URL (`PORTCULLIS_TEST_REDIS_URL`,
//! `PORTCULLIS_TEST_DATABASE_URL`), else a container of the local images where a Docker engine
//! answers, else a server spawned from local binaries in a temp dir. Each test gets its own key
//! prefix, database or server, and removes only what it created.

// Fixtures exist to fail the test that uses them, loudly: the workspace's no-panic lints guard
// request paths, which this crate has none of.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod container;
pub mod link;
pub mod nginx;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod replicas;
pub mod sentinel;

pub use app::{NETWORKS_OFF, PASSWORD, TestApp, test_settings};

/// A random lowercase hex string of `bytes` bytes, for prefixes and database names.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("entropy");
    hex::encode(buf)
}
