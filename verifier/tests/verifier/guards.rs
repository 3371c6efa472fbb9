//! The layer and the interceptor in front of a real tonic service: the
//! statuses a client sees.

use auth_verifier::{Algorithm, Verifier};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use crate::support::{
    GUARDS, JwksServer, TestKey, access_claims, assert_refused, call_orders, call_with_token,
    none_token, now, serve_orders,
};

const INVALID: &str = "Token is invalid";
const TOKEN_NOT_VALID: &str = "token_not_valid";

#[tokio::test]
async fn guards_accept_valid_tokens_and_refuse_others_like_the_auth_service() {
    let a = TestKey::ed25519_a();
    let b = TestKey::ed25519_b();
    let rsa = TestKey::rsa2048();
    let source = JwksServer::http(crate::support::jwks(&[&a, &rsa]), Some(300)).await;
    let verifier = Verifier::builder()
        .jwks_url(source.url())
        .build()
        .await
        .unwrap();

    let mut expired = access_claims(5);
    expired["exp"] = json!(now() - 1);
    let mut refresh = access_claims(5);
    refresh["token_type"] = json!("refresh");
    let valid = a.access(5);
    let tampered = {
        let mut parts: Vec<&str> = valid.split('.').collect();
        let other = a.access(6);
        let other_payload = other.split('.').nth(1).unwrap().to_owned();
        parts[1] = &other_payload;
        parts.join(".")
    };
    let mut wrong_key = Header::new(Algorithm::EdDSA);
    wrong_key.kid = Some(a.kid.clone());
    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.kid = Some(a.kid.clone());
    let hs256_with_public_key = jsonwebtoken::encode(
        &hs256,
        &access_claims(5),
        &EncodingKey::from_secret(&a.public_bytes()).unwrap(),
    )
    .unwrap();

    for guard in GUARDS {
        let channel = serve_orders(&verifier, guard).await;
        let refused = |message: &'static str, reason: &'static str| (message, reason);
        assert_eq!(
            call_with_token(&channel, &valid).await.unwrap(),
            5,
            "{guard:?}"
        );
        assert_eq!(
            call_with_token(&channel, &rsa.access(9)).await.unwrap(),
            9,
            "{guard:?}"
        );
        let cases = [
            (
                None,
                refused(
                    "Authentication credentials were not provided.",
                    "not_authenticated",
                ),
            ),
            (
                Some("Basic dXNlcjpwYXNz".to_owned()),
                refused(
                    "Authentication credentials were not provided.",
                    "not_authenticated",
                ),
            ),
            (
                Some("Bearer".to_owned()),
                refused(
                    "Authorization header must contain two space-delimited values",
                    "bad_authorization_header",
                ),
            ),
            (
                Some(format!("Bearer {valid} extra")),
                refused(
                    "Authorization header must contain two space-delimited values",
                    "bad_authorization_header",
                ),
            ),
            (
                Some(format!("Bearer {}", a.sign(&expired))),
                refused("Token is expired", TOKEN_NOT_VALID),
            ),
            (
                Some(format!("Bearer {}", a.sign(&refresh))),
                refused("Token has wrong type", TOKEN_NOT_VALID),
            ),
            (
                Some(format!("Bearer {tampered}")),
                refused(INVALID, TOKEN_NOT_VALID),
            ),
            (
                Some(format!(
                    "Bearer {}",
                    b.sign_with(wrong_key.clone(), &access_claims(5))
                )),
                refused(INVALID, TOKEN_NOT_VALID),
            ),
            (
                Some(format!("Bearer {}", b.access(5))),
                refused(INVALID, TOKEN_NOT_VALID),
            ),
            (
                Some(format!("Bearer {}", none_token(&a.kid, &access_claims(5)))),
                refused(INVALID, TOKEN_NOT_VALID),
            ),
            (
                Some(format!("Bearer {hs256_with_public_key}")),
                refused("Invalid algorithm specified", TOKEN_NOT_VALID),
            ),
        ];
        for (authorization, (message, reason)) in cases {
            let result = call_orders(&channel, authorization.as_deref()).await;
            let context = format!("{guard:?} {authorization:?}");
            match result {
                Ok(user) => panic!("{context}: accepted as user {user}"),
                Err(status) => {
                    assert_refused(Err(status), message, reason);
                }
            }
        }
    }
}
