//! JWT work on every authenticated call: signing (login, refresh), decoding
//! (VerifyToken, RefreshToken) and the bearer interceptor in front of
//! UserService, which decodes the access token from the metadata.

// A benchmark's setup that fails can only panic: unwrap says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use auth_service::{
    grpc::BearerAuth,
    tokens::{IssuedToken, KeyRing, TokenCodec, TokenType, unix_now},
};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tonic::{Request, service::Interceptor};

const SECRET: &[u8] = b"benchmark-signing-key-0123456789abcdef";

fn codec() -> TokenCodec {
    // The configured default lifetimes: 1 day access, 30 days refresh.
    TokenCodec::new(
        SECRET,
        Duration::from_secs(86_400),
        Duration::from_secs(30 * 86_400),
    )
    .unwrap()
}

/// A refresh token and an access token derived from it, issued `now`.
fn pair(codec: &TokenCodec, now: i64) -> (IssuedToken, IssuedToken) {
    let refresh = codec.issue_refresh(42, 0, now).unwrap();
    let access = codec.access_from_refresh(&refresh.claims, now).unwrap();
    (refresh, access)
}

fn jwt(c: &mut Criterion) {
    let codec = codec();
    let now = unix_now();
    let (refresh, access) = pair(&codec, now);

    let mut group = c.benchmark_group("jwt");
    group.bench_function("issue_refresh", |b| {
        b.iter(|| codec.issue_refresh(42, 0, now));
    });
    group.bench_function("access_from_refresh", |b| {
        b.iter(|| codec.access_from_refresh(&refresh.claims, now));
    });
    group.bench_function("decode_access", |b| {
        b.iter(|| codec.decode(&access.token, Some(TokenType::Access), now));
    });
    group.bench_function("decode_refresh", |b| {
        b.iter(|| codec.decode(&refresh.token, Some(TokenType::Refresh), now));
    });
    group.finish();
}

fn bearer(c: &mut Criterion) {
    let codec = Arc::new(codec());
    let (_, access) = pair(&codec, unix_now());
    let header: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", access.token).parse().unwrap();
    let mut auth = BearerAuth::new(codec);

    // Building the request is the transport's work, not the interceptor's:
    // it is done in the untimed setup.
    let request = || {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", header.clone());
        request
    };
    c.bench_function("bearer_interceptor", |b| {
        b.iter_batched(
            request,
            |request| auth.call(request).expect("refused"),
            BatchSize::SmallInput,
        );
    });
}

/// Signing and verifying cost per algorithm (the test keys of tests/keys).
fn algorithms(c: &mut Criterion) {
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
    let now = unix_now();
    let mut group = c.benchmark_group("jwt_by_algorithm");
    for (name, algorithm, file) in [
        ("EdDSA", jsonwebtoken::Algorithm::EdDSA, "ed25519-1.pem"),
        ("ES256", jsonwebtoken::Algorithm::ES256, "p256-1.pem"),
        ("RS256", jsonwebtoken::Algorithm::RS256, "rsa-1.pem"),
    ] {
        let pem = std::fs::read_to_string(keys.join(file)).unwrap();
        let ring = KeyRing::asymmetric(algorithm, (file, &pem), &[]).unwrap();
        let codec = TokenCodec::with_keys(
            ring,
            Duration::from_secs(86_400),
            Duration::from_secs(30 * 86_400),
        )
        .unwrap();
        let (refresh, access) = pair(&codec, now);
        group.bench_function(format!("{name}/access_from_refresh"), |b| {
            b.iter(|| codec.access_from_refresh(&refresh.claims, now));
        });
        group.bench_function(format!("{name}/decode_access"), |b| {
            b.iter(|| codec.decode(&access.token, Some(TokenType::Access), now));
        });
    }
    group.finish();
}

criterion_group!(benches, jwt, bearer, algorithms);
criterion_main!(benches);
