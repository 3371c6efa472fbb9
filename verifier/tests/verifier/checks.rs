//! `Verifier::verify`: what is accepted and what is refused, and why.

use std::time::Duration;

use auth_verifier::{Algorithm, BuildError, Verifier, VerifyError};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use crate::support::{TestKey, access_claims, jwks, none_token, now};

async fn verifier_for(keys: &[&TestKey]) -> Verifier {
    Verifier::builder()
        .jwks_json(jwks(keys).to_string())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn accepts_valid_tokens_of_each_algorithm() {
    let keys = [TestKey::ed25519_a(), TestKey::p256(), TestKey::rsa2048()];
    let verifier = verifier_for(&keys.iter().collect::<Vec<_>>()).await;
    for (user_id, key) in (1..).zip(&keys) {
        let user = verifier.verify(&key.access(user_id)).await.unwrap();
        assert_eq!(user.user_id, user_id, "{:?}", key.alg);
        assert_eq!(user.claims.kid, key.kid);
        assert_eq!(verifier.verify_cached(&key.access(user_id)), Ok(user));
    }
    // Older simplejwt wrote an integer user_id.
    let mut claims = access_claims(0);
    claims["user_id"] = json!(42);
    let user = verifier.verify(&keys[0].sign(&claims)).await.unwrap();
    assert_eq!(user.user_id, 42);
}

#[tokio::test]
async fn refuses_bad_tokens_with_the_services_errors() {
    let a = TestKey::ed25519_a();
    let b = TestKey::ed25519_b();
    let p256 = TestKey::p256();
    let verifier = verifier_for(&[&a, &p256]).await;
    let with = |key: &str, value: serde_json::Value| {
        let mut claims = access_claims(7);
        claims[key] = value;
        claims
    };
    let without = |key: &str| {
        let mut claims = access_claims(7);
        claims.as_object_mut().unwrap().remove(key);
        claims
    };

    let valid = a.access(7);
    let (head, rest) = valid.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let tampered = format!(
        "{head}.{}.{signature}",
        crate::support::b64(with("user_id", json!("8")).to_string().as_bytes())
    );
    let mut wrong_key = Header::new(Algorithm::EdDSA);
    wrong_key.kid = Some(a.kid.clone());
    let mut no_kid = Header::new(Algorithm::EdDSA);
    no_kid.kid = None;
    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.kid = Some(a.kid.clone());
    let hs256_with_public_key = jsonwebtoken::encode(
        &hs256,
        &access_claims(7),
        &EncodingKey::from_secret(&a.public_bytes()).unwrap(),
    )
    .unwrap();
    // The P-256 key's kid on an EdDSA token: the key is for ES256 only.
    let mut other_alg = Header::new(Algorithm::EdDSA);
    other_alg.kid = Some(p256.kid.clone());

    let cases = [
        (
            "expired",
            a.sign(&with("exp", json!(now() - 1))),
            VerifyError::Expired,
        ),
        (
            "refresh",
            a.sign(&with("token_type", json!("refresh"))),
            VerifyError::WrongType,
        ),
        (
            "no type",
            a.sign(&without("token_type")),
            VerifyError::NoType,
        ),
        ("no jti", a.sign(&without("jti")), VerifyError::NoId),
        (
            "no user_id",
            a.sign(&without("user_id")),
            VerifyError::NoUserId,
        ),
        ("no exp", a.sign(&without("exp")), VerifyError::Invalid),
        (
            "nbf ahead",
            a.sign(&with("nbf", json!(now() + 60))),
            VerifyError::Invalid,
        ),
        (
            "iat ahead",
            a.sign(&with("iat", json!(now() + 60))),
            VerifyError::Invalid,
        ),
        ("tampered", tampered, VerifyError::Invalid),
        (
            "wrong key",
            b.sign_with(wrong_key, &access_claims(7)),
            VerifyError::Invalid,
        ),
        ("unknown kid", b.access(7), VerifyError::Invalid),
        (
            "no kid",
            a.sign_with(no_kid, &access_claims(7)),
            VerifyError::Invalid,
        ),
        (
            "alg none",
            none_token(&a.kid, &access_claims(7)),
            VerifyError::Invalid,
        ),
        (
            "HS256 with the public key",
            hs256_with_public_key,
            VerifyError::WrongAlgorithm,
        ),
        (
            "key of another alg",
            a.sign_with(other_alg, &access_claims(7)),
            VerifyError::Invalid,
        ),
        ("garbage", "not.a.token".to_owned(), VerifyError::Invalid),
        ("empty", String::new(), VerifyError::Invalid),
    ];
    for (case, token, expected) in cases {
        assert_eq!(verifier.verify(&token).await, Err(expected), "{case}");
        assert_eq!(
            verifier.verify_cached(&token),
            Err(expected),
            "{case} (cached)"
        );
    }
}

#[tokio::test]
async fn refuses_algorithms_not_configured() {
    let a = TestKey::ed25519_a();
    let rsa = TestKey::rsa2048();
    let verifier = Verifier::builder()
        .jwks_json(jwks(&[&a, &rsa]).to_string())
        .algorithms([Algorithm::EdDSA])
        .build()
        .await
        .unwrap();
    assert_eq!(verifier.key_ids(), vec![a.kid.clone()]);
    assert_eq!(
        verifier.verify(&rsa.access(1)).await,
        Err(VerifyError::WrongAlgorithm)
    );
    assert!(verifier.verify(&a.access(1)).await.is_ok());
}

#[tokio::test]
async fn checks_issuer_and_audience_when_configured() {
    let a = TestKey::ed25519_a();
    let verifier = Verifier::builder()
        .jwks_json(jwks(&[&a]).to_string())
        .issuer("auth-service")
        .audience("orders")
        .build()
        .await
        .unwrap();
    let claims = |iss: Option<&str>, aud: Option<serde_json::Value>| {
        let mut claims = access_claims(3);
        if let Some(iss) = iss {
            claims["iss"] = json!(iss);
        }
        if let Some(aud) = aud {
            claims["aud"] = aud;
        }
        a.sign(&claims)
    };
    let ok = verifier
        .verify(&claims(Some("auth-service"), Some(json!("orders"))))
        .await
        .unwrap();
    assert_eq!(ok.claims.iss.as_deref(), Some("auth-service"));
    assert!(
        verifier
            .verify(&claims(
                Some("auth-service"),
                Some(json!(["billing", "orders"]))
            ))
            .await
            .is_ok()
    );
    for (case, token) in [
        ("no iss", claims(None, Some(json!("orders")))),
        ("wrong iss", claims(Some("evil"), Some(json!("orders")))),
        ("no aud", claims(Some("auth-service"), None)),
        (
            "wrong aud",
            claims(Some("auth-service"), Some(json!("billing"))),
        ),
    ] {
        assert_eq!(
            verifier.verify(&token).await,
            Err(VerifyError::Invalid),
            "{case}"
        );
    }

    // Not configured: not checked.
    let lax = verifier_for(&[&a]).await;
    assert!(
        lax.verify(&claims(Some("evil"), Some(json!("billing"))))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn leeway_tolerates_that_much_clock_skew() {
    let a = TestKey::ed25519_a();
    let lenient = Verifier::builder()
        .jwks_json(jwks(&[&a]).to_string())
        .leeway(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let strict = verifier_for(&[&a]).await;
    let mut claims = access_claims(1);
    claims["exp"] = json!(now() - 10);
    let expired_10s_ago = a.sign(&claims);
    assert_eq!(
        strict.verify(&expired_10s_ago).await,
        Err(VerifyError::Expired)
    );
    assert!(lenient.verify(&expired_10s_ago).await.is_ok());
    claims["exp"] = json!(now() - 40);
    assert_eq!(
        lenient.verify(&a.sign(&claims)).await,
        Err(VerifyError::Expired)
    );
}

#[tokio::test]
async fn build_refuses_unsafe_or_useless_configurations() {
    let a = TestKey::ed25519_a();
    let json = jwks(&[&a]).to_string();
    let err = |result: Result<Verifier, BuildError>| result.unwrap_err();
    assert!(matches!(
        err(Verifier::builder()
            .jwks_json(json.clone())
            .algorithms([Algorithm::EdDSA, Algorithm::HS256])
            .build()
            .await),
        BuildError::SharedSecretAlgorithm(Algorithm::HS256)
    ));
    assert!(matches!(
        err(Verifier::builder()
            .jwks_json(json.clone())
            .algorithms([])
            .build()
            .await),
        BuildError::NoAlgorithms
    ));
    assert!(matches!(
        err(Verifier::builder().build().await),
        BuildError::NoSource
    ));
    assert!(matches!(
        err(Verifier::builder()
            .jwks_url("https://auth/.well-known/jwks.json")
            .build()
            .await),
        BuildError::BadUrl { .. }
    ));
    assert!(matches!(
        err(Verifier::builder()
            .jwks_json(json)
            .algorithms([Algorithm::ES256])
            .build()
            .await),
        BuildError::NoUsableKey(_)
    ));
    assert!(matches!(
        err(Verifier::builder().jwks_json("{}").build().await),
        BuildError::BadJwks(_)
    ));
    // Nothing listening there.
    assert!(matches!(
        err(Verifier::builder()
            .jwks_url("http://127.0.0.1:1/jwks")
            .build()
            .await),
        BuildError::Fetch(_)
    ));
}
