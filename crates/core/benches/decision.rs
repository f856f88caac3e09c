//! The core's cost per attempt: deriving the keys and deciding, on a warm table.
//! `cargo bench -p portcullis-core`

// Benchmark set-up fails loudly; the no-panic lints guard request paths only.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_core::model::StateTable;
use portcullis_core::{KeyDeriver, Outcome, Policy, Username};

fn decision(c: &mut Criterion) {
    let policy = Policy::default();
    let deriver = KeyDeriver::new(b"bench-secret", 24, 64, 48).expect("valid prefixes");
    let username = Username::parse("alice").expect("valid username");
    let ip = "198.51.100.7".parse().expect("valid address");
    c.bench_function("derive keys", |b| {
        b.iter(|| policy.active_keys(deriver.keys(black_box(ip), black_box(&username), None)))
    });
    let keys = policy.active_keys(deriver.keys(ip, &username, None));
    let digest = deriver.username_digest(&username);
    let mut table = StateTable::default();
    let mut now = 1_700_000_000_000u64;
    c.bench_function("decide + record a failure", |b| {
        b.iter(|| {
            now += 10_000;
            // With a solved challenge: alice's network is new to her account.
            if table
                .attempt(&policy, black_box(&keys), u64::MAX, now)
                .is_allowed()
            {
                table.record(&policy, &keys, Outcome::Failure.into(), &digest, &[], now);
            }
        })
    });
}

criterion_group!(benches, decision);
criterion_main!(benches);
