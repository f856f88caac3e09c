//! The Redis store against a real Redis and a local Redis Cluster (one test binary).

// Test helpers fail the test that calls them; the no-panic lints guard request paths only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cluster;
mod differential;
mod fallback;
mod helpers;
mod redis_store;
mod sentinel;
