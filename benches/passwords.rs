//! argon2id at the configured defaults (`Argon2Settings::default()`, OWASP:
//! 19 MiB, t=2, p=1): the raw CPU cost of one hash and one verify, and the
//! same through `Hasher`, which adds the hop to tokio's blocking pool and
//! the semaphore. Every Register and login pays one of these, so they bound
//! those calls' throughput at about `cores / cost`.
//!
//! Each iteration takes tens of milliseconds: few samples, short windows.

// A benchmark's setup that fails can only panic: unwrap says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use auth_service::{
    config::Argon2Settings,
    domain::{Password, UserAttributes},
    passwords::{self, Hasher},
};
use criterion::{Criterion, criterion_group, criterion_main};

const PASSWORD: &str = "correct horse battery staple";

fn raw_argon2() -> Argon2<'static> {
    passwords::argon2id(&Argon2Settings::default()).unwrap()
}

fn argon2id(c: &mut Criterion) {
    let argon2 = raw_argon2();
    let stored = argon2
        .hash_password(PASSWORD.as_bytes())
        .unwrap()
        .to_string();
    let parsed = PasswordHash::new(&stored).unwrap();

    let mut group = c.benchmark_group("argon2id_default_params");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("hash", |b| {
        b.iter(|| argon2.hash_password(PASSWORD.as_bytes()));
    });
    group.bench_function("verify", |b| {
        b.iter(|| argon2.verify_password(PASSWORD.as_bytes(), &parsed));
    });

    // The service's path: same work, plus spawn_blocking and the permit.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let hasher = runtime
        .block_on(Hasher::new(Argon2Settings::default()))
        .unwrap();
    let password = Password::parse(
        PASSWORD.to_owned(),
        UserAttributes {
            username: "bench",
            email: "bench@example.com",
        },
    )
    .unwrap();
    group.bench_function("hasher_hash", |b| {
        b.to_async(&runtime).iter(|| hasher.hash(&password));
    });
    group.bench_function("hasher_verify", |b| {
        b.to_async(&runtime)
            .iter(|| hasher.verify(PASSWORD, Some(stored.clone())));
    });
    group.finish();
}

criterion_group!(benches, argon2id);
criterion_main!(benches);
