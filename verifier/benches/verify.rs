//! Verifications per second on one core, per algorithm: the work the layer
//! or the interceptor does on every call once the key is cached (header,
//! key lookup, signature, claims). Criterion's `thrpt` line is
//! verifications/s; the auth service can sign with EdDSA, ES256 or RS256,
//! and this is what choosing among them costs each consuming service.
//!
//! `cargo bench -p auth-verifier` (uses the test keys in `tests/keys/`).

// A benchmark's setup that fails can only panic: unwrap says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use auth_verifier::{Algorithm, Verifier};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::{
    EncodingKey, Header,
    jwk::{Jwk, ThumbprintHash},
};
use serde_json::json;

/// A verifier holding one key, and a valid access token signed with it.
fn setup(runtime: &tokio::runtime::Runtime, alg: Algorithm, der: &[u8]) -> (Verifier, String) {
    let encoding = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_der(der),
        Algorithm::ES256 => EncodingKey::from_ec_der(der),
        _ => EncodingKey::from_rsa_der(der),
    };
    let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
    let kid = jwk.thumbprint(ThumbprintHash::SHA256).unwrap();
    jwk.common.key_id = Some(kid.clone());
    let verifier = runtime
        .block_on(
            Verifier::builder()
                .jwks_json(json!({"keys": [jwk]}).to_string())
                .algorithms([alg])
                .build(),
        )
        .unwrap();

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"token_type": "access", "exp": now + 3600, "iat": now,
                        "jti": "0123456789abcdef0123456789abcdef", "user_id": "42"});
    let mut header = Header::new(alg);
    header.kid = Some(kid);
    let token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
    (verifier, token)
}

fn verify(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys: [(&str, Algorithm, &[u8]); 3] = [
        (
            "EdDSA",
            Algorithm::EdDSA,
            include_bytes!("../tests/keys/ed25519-a.der"),
        ),
        (
            "ES256",
            Algorithm::ES256,
            include_bytes!("../tests/keys/p256.der"),
        ),
        (
            "RS256",
            Algorithm::RS256,
            include_bytes!("../tests/keys/rsa2048.der"),
        ),
    ];
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(1));
    for (name, alg, der) in keys {
        let (verifier, token) = setup(&runtime, alg, der);
        assert_eq!(verifier.verify_cached(&token).unwrap().user_id, 42);
        group.bench_function(name, |b| b.iter(|| verifier.verify_cached(&token)));
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
