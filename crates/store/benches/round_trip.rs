//! One attempt through each store, side by side: the memory store and Redis (one EVALSHA).
//! After the first iterations the account is locked, so this is the refused path.
//! `cargo bench -p portcullis-store` (Redis from PORTCULLIS_TEST_REDIS_URL, else 127.0.0.1:6379)

// Benchmark set-up fails loudly; the no-panic lints guard request paths only.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_core::{KeyDeriver, Policy, Username};
use portcullis_store::{AttemptStore, Breaker, MemoryStore, RedisConfig, RedisStore, SystemClock};

fn round_trip(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let deriver = KeyDeriver::new(b"bench-secret", 24, 64, 48).expect("valid prefixes");
    let username = Username::parse("bench").expect("valid username");
    // A fresh address per iteration would grow Redis; one address with its limits lifted
    // measures the same script on the same keys.
    let unlimited = Policy {
        ip: Default::default(),
        subnet: Default::default(),
        ..Policy::default()
    };
    let keys =
        unlimited.active_keys(deriver.keys("192.0.2.1".parse().expect("ip"), &username, None));

    let memory = MemoryStore::new(unlimited, Arc::new(SystemClock));
    let url = std::env::var("PORTCULLIS_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let config = RedisConfig {
        topology: portcullis_store::Topology::Single(url),
        prefix: "bench".to_owned(),
        sharding: portcullis_store::Sharding::SingleSlot,
        timeout: Duration::from_secs(1),
    };
    let redis = RedisStore::new(
        &config,
        &unlimited,
        Breaker::silent(3, Duration::from_secs(1)),
    )
    .expect("redis store");

    let mut group = c.benchmark_group("attempt round trip");
    group.bench_function("memory", |b| {
        b.to_async(&runtime)
            .iter(|| async { memory.attempt(&keys, 0).await })
    });
    group.bench_function("redis", |b| {
        b.to_async(&runtime)
            .iter(|| async { redis.attempt(&keys, 0).await })
    });
    group.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
