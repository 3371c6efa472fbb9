//! Service tokens (issue 15): what a service account's grant yields.
//!
//! Signed with the same keys as user tokens and verifiable through the same
//! JWKS, but never a user's: `token_type` is `"service"` and there is no
//! `user_id`, so simplejwt's `JWTAuthentication` and our own bearer check
//! refuse them with "Token has wrong type". Claims, in this order:
//! `token_type`, `exp`, `iat`, `jti`, `client_id`, `scope` (space-separated,
//! RFC 9068), `cid` (the secret or key that obtained the token, so removing
//! it revokes the token), then `aud` / `iss` when configured.

use serde::Serialize;

use super::{MAX_JTI_CHARS, TokenCodec, is_valid_id};
use crate::domain::{Scope, ServiceAccountName};

/// The `token_type` of a service token.
pub const SERVICE_TOKEN_TYPE: &str = "service";

/// Whether `client_id` is a service account's name: the domain's rule.
pub fn is_valid_client_id(client_id: &str) -> bool {
    ServiceAccountName::parse(client_id).is_ok()
}

/// Whether `scope` is one scope: the domain's rule (no space, the
/// separator of the `scope` claim).
pub fn is_valid_scope(scope: &str) -> bool {
    Scope::parse(scope).is_ok()
}

/// The scopes of a `scope` claim: single spaces between valid scopes, or
/// nothing at all (an account allowed no scope). `None` if malformed.
pub(super) fn parse_scope_claim(claim: &str) -> Option<Vec<String>> {
    if claim.is_empty() {
        return Some(Vec::new());
    }
    claim
        .split(' ')
        .map(|scope| is_valid_scope(scope).then(|| scope.to_owned()))
        .collect()
}

/// The verified claims of a service token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceClaims {
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// The service account's name.
    pub client_id: String,
    /// Sorted, without duplicates when we issued it.
    pub scopes: Vec<String>,
    /// The `secret_id` or `kid` of the credential that obtained the token.
    pub cid: String,
}

impl ServiceClaims {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|granted| granted == scope)
    }
}

/// A freshly signed service token and the claims inside it. `Debug` shows
/// the claims, never the token.
#[derive(Clone)]
pub struct IssuedServiceToken {
    pub token: String,
    pub claims: ServiceClaims,
}

impl std::fmt::Debug for IssuedServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedServiceToken")
            .field("token", &"[redacted]")
            .field("claims", &self.claims)
            .finish()
    }
}

/// Claims as they are written, in the order of the design (issue 15).
#[derive(Serialize)]
struct OutgoingServiceClaims<'a> {
    token_type: &'static str,
    exp: i64,
    iat: i64,
    jti: &'a str,
    client_id: &'a str,
    scope: &'a str,
    cid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

impl TokenCodec {
    /// A service token for `client_id` with `scopes` (written sorted and
    /// de-duplicated), obtained with the credential `cid`, valid for
    /// `AUTH_SERVICE_TOKEN_LIFETIME` from `now`. Checking that the account
    /// may have these scopes is the caller's.
    ///
    /// # Errors
    /// A `client_id`, scope or `cid` that no token may carry (a caller's
    /// bug: they come from the database), or a failed signature.
    pub fn issue_service(
        &self,
        client_id: &str,
        scopes: &[impl AsRef<str>],
        cid: &str,
        now: i64,
    ) -> anyhow::Result<IssuedServiceToken> {
        anyhow::ensure!(
            is_valid_client_id(client_id),
            "a service token's client_id must match [a-z0-9-]{{1,64}}"
        );
        anyhow::ensure!(
            is_valid_id(cid, MAX_JTI_CHARS),
            "a service token's cid must be 1 to {MAX_JTI_CHARS} characters, none a control character"
        );
        let mut scopes: Vec<String> = scopes.iter().map(|s| s.as_ref().to_owned()).collect();
        anyhow::ensure!(
            scopes.iter().all(|scope| is_valid_scope(scope)),
            "a service token's scopes must match [A-Za-z0-9._:/-]{{1,64}}"
        );
        scopes.sort_unstable();
        scopes.dedup();
        let scope = scopes.join(" ");

        let jti = uuid::Uuid::new_v4().simple().to_string();
        let exp = now.saturating_add(self.service_lifetime);
        let token = self.sign(&OutgoingServiceClaims {
            token_type: SERVICE_TOKEN_TYPE,
            exp,
            iat: now,
            jti: &jti,
            client_id,
            scope: &scope,
            cid,
            aud: self.audience.as_deref(),
            iss: self.issuer.as_deref(),
        })?;
        Ok(IssuedServiceToken {
            token,
            claims: ServiceClaims {
                exp,
                iat: now,
                jti,
                client_id: client_id.to_owned(),
                scopes,
                cid: cid.to_owned(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::tokens::{DecodedToken, KeyRing, TokenError, TokenType, unix_now};

    const SECRET: &[u8] = b"test secret that is long enough for HS256";
    const CID: &str = "0123456789abcdef0123456789abcdef";

    fn codec() -> TokenCodec {
        TokenCodec::new(
            SECRET,
            Duration::from_secs(86_400),
            Duration::from_secs(2_592_000),
        )
        .unwrap()
    }

    fn eddsa_codec() -> TokenCodec {
        let ring = KeyRing::asymmetric(
            Algorithm::EdDSA,
            (
                "ed25519-1.pem",
                include_str!("../../tests/keys/ed25519-1.pem"),
            ),
            &[],
        )
        .unwrap();
        TokenCodec::with_keys(ring, Duration::from_secs(60), Duration::from_secs(600)).unwrap()
    }

    fn sign(claims: &serde_json::Value) -> String {
        let key = EncodingKey::from_secret(SECRET).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
    }

    /// The payload's JSON text, to check the claims' order.
    fn payload_text(token: &str) -> String {
        let part = token.split('.').nth(1).unwrap_or_default();
        String::from_utf8(URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn service_claims(now: i64) -> serde_json::Value {
        json!({"token_type": "service", "exp": now + 60, "iat": now,
               "jti": "fedcba9876543210fedcba9876543210", "client_id": "billing",
               "scope": "auth.admin orders.read", "cid": CID})
    }

    #[test]
    fn claims_are_written_in_the_designed_order() {
        let now = 1_800_000_000;
        let issued = codec()
            .issue_service(
                "billing",
                &["orders.read", "auth.admin", "orders.read"],
                CID,
                now,
            )
            .unwrap();
        let jti = &issued.claims.jti;
        assert_eq!(
            payload_text(&issued.token),
            format!(
                r#"{{"token_type":"service","exp":{},"iat":{now},"jti":"{jti}","client_id":"billing","scope":"auth.admin orders.read","cid":"{CID}"}}"#,
                now + 600
            )
        );
        assert_eq!(issued.claims.scopes, ["auth.admin", "orders.read"]);
        assert_eq!(jti.len(), 32);

        let with_iss_aud = codec()
            .with_issuer_and_audience(Some("https://auth".into()), Some("fleet".into()))
            .with_service_lifetime(Duration::from_secs(30))
            .unwrap()
            .issue_service("billing", &[] as &[&str], CID, now)
            .unwrap();
        let text = payload_text(&with_iss_aud.token);
        assert!(
            text.ends_with(&format!(
                r#""exp":{},"iat":{now},"jti":"{}","client_id":"billing","scope":"","cid":"{CID}","aud":"fleet","iss":"https://auth"}}"#,
                now + 30,
                with_iss_aud.claims.jti
            )),
            "{text}"
        );
    }

    #[test]
    fn issuing_refuses_what_no_token_may_carry() {
        let codec = codec();
        let now = unix_now();
        for client_id in ["", "Billing", "bill ing", "a".repeat(65).as_str()] {
            assert!(
                codec.issue_service(client_id, &["a"], CID, now).is_err(),
                "{client_id:?}"
            );
        }
        for scope in ["", "a b", "é", "s".repeat(65).as_str()] {
            assert!(
                codec.issue_service("billing", &[scope], CID, now).is_err(),
                "{scope:?}"
            );
        }
        for cid in ["", "a\u{0}b", "c".repeat(65).as_str()] {
            assert!(
                codec.issue_service("billing", &["a"], cid, now).is_err(),
                "{cid:?}"
            );
        }
        assert!(
            codec
                .issue_service(
                    &"a".repeat(64),
                    &["A-z0.9_:/x".repeat(6).as_str()],
                    CID,
                    now
                )
                .is_ok()
        );
    }

    #[test]
    fn decode_any_returns_either_kind() {
        for codec in [codec(), eddsa_codec()] {
            let now = unix_now();
            let service = codec
                .issue_service("billing", &["orders.read"], CID, now)
                .unwrap();
            // Twice: the second answer comes from the verified-token cache
            // with public-key algorithms.
            for _ in 0..2 {
                assert_eq!(
                    codec.decode_any(&service.token, now),
                    Ok(DecodedToken::Service(service.claims.clone()))
                );
            }
            let refresh = codec.issue_refresh(42, 3, now).unwrap();
            let access = codec.access_from_refresh(&refresh.claims, now).unwrap();
            for issued in [refresh, access] {
                assert_eq!(
                    codec.decode_any(&issued.token, now),
                    Ok(DecodedToken::User(issued.claims.clone()))
                );
            }
        }
    }

    #[test]
    fn user_paths_refuse_a_service_token_with_wrong_type() {
        for codec in [codec(), eddsa_codec()] {
            let now = unix_now();
            let service = codec
                .issue_service("billing", &["auth.admin"], CID, now)
                .unwrap();
            // Before and after the token is remembered as verified.
            for _ in 0..2 {
                for expected in [Some(TokenType::Access), Some(TokenType::Refresh), None] {
                    assert_eq!(
                        codec.decode(&service.token, expected, now),
                        Err(TokenError::WrongType),
                        "{expected:?}"
                    );
                }
                assert!(codec.decode_any(&service.token, now).is_ok());
            }
        }
    }

    #[test]
    fn refuses_malformed_service_claims() {
        let now = unix_now();
        let codec = codec();
        let with = |key: &str, value: serde_json::Value| {
            let mut claims = service_claims(now);
            claims[key] = value;
            sign(&claims)
        };
        let without = |key: &str| {
            let mut claims = service_claims(now);
            claims.as_object_mut().map(|o| o.remove(key));
            sign(&claims)
        };
        let decoded = codec.decode_any(&sign(&service_claims(now)), now);
        let Ok(DecodedToken::Service(claims)) = decoded else {
            panic!("{decoded:?}");
        };
        assert_eq!(claims.scopes, ["auth.admin", "orders.read"]);
        assert!(claims.has_scope("orders.read") && !claims.has_scope("orders"));
        assert_eq!(
            codec
                .decode_any(&with("scope", json!("")), now)
                .map(|t| matches!(t, DecodedToken::Service(c) if c.scopes.is_empty())),
            Ok(true)
        );

        let invalid = [
            ("no client_id", without("client_id")),
            ("upper-case client_id", with("client_id", json!("Billing"))),
            ("numeric client_id", with("client_id", json!(7))),
            ("no scope", without("scope")),
            ("scope list", with("scope", json!(["a", "b"]))),
            ("double space", with("scope", json!("a  b"))),
            ("leading space", with("scope", json!(" a"))),
            ("bad scope char", with("scope", json!("a b\"c"))),
            ("long scope", with("scope", json!("s".repeat(65)))),
            ("no cid", without("cid")),
            ("empty cid", with("cid", json!(""))),
            ("control cid", with("cid", json!("a\u{7}"))),
            ("iat ahead", with("iat", json!(now + 60))),
            ("no exp", without("exp")),
        ];
        for (case, token) in invalid {
            assert_eq!(
                codec.decode_any(&token, now),
                Err(TokenError::Invalid),
                "{case}"
            );
        }
        assert_eq!(
            codec.decode_any(&without("jti"), now),
            Err(TokenError::NoId)
        );
        assert_eq!(
            codec.decode_any(&with("exp", json!(now - 1)), now),
            Err(TokenError::Expired)
        );
        assert_eq!(
            codec.decode_any(&with("token_type", json!("Service")), now),
            Err(TokenError::WrongType)
        );
        assert_eq!(
            codec.decode_any(&without("token_type"), now),
            Err(TokenError::NoType)
        );
    }

    #[tokio::test]
    async fn the_verifier_crate_accepts_our_service_tokens() {
        use auth_verifier::{Authenticated, Verifier};

        let codec = eddsa_codec();
        let jwks = serde_json::to_string(&codec.public_keys()).unwrap();
        let issued = codec
            .issue_service("billing", &["orders.read"], CID, unix_now())
            .unwrap();
        let verifier = Verifier::builder().jwks_json(jwks).build().await.unwrap();
        let verified = verifier.verify_any(&issued.token).await;
        let Ok(Authenticated::Service(service)) = verified else {
            panic!("{verified:?}");
        };
        assert_eq!(service.client_id, "billing");
        assert_eq!(service.scopes, ["orders.read"]);
        assert_eq!(service.claims.cid, CID);
        assert_eq!(service.claims.jti, issued.claims.jti);
    }
}
