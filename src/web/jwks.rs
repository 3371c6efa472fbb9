//! `GET /.well-known/jwks.json`: the public keys that verify our tokens, as
//! an RFC 7517 JWK Set, for consumers that verify tokens themselves.

use std::time::Duration;

use axum::{extract::State, response::IntoResponse};
use http::{HeaderValue, StatusCode, header};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};

use crate::accounts::Accounts;

/// Where the key set is published (RFC 8414's well-known name).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The route's state: where the keys come from and how long they may be cached.
#[derive(Clone)]
pub(super) struct Jwks {
    accounts: Accounts,
    cache_control: HeaderValue,
}

impl Jwks {
    /// Consumers may cache the set for `max_age` (whole seconds): shorter
    /// than a key rotation's overlap, so they see a new key before tokens
    /// signed with it arrive.
    pub(super) fn new(accounts: Accounts, max_age: Duration) -> Self {
        let cache_control = HeaderValue::from_str(&cache_control(max_age))
            .expect("digits and ASCII are a valid header value");
        Self {
            accounts,
            cache_control,
        }
    }
}

fn cache_control(max_age: Duration) -> String {
    format!("public, max-age={}", max_age.as_secs())
}

pub(super) async fn get(State(jwks): State<Jwks>) -> impl IntoResponse {
    let body = match serde_json::to_vec(&published(jwks.accounts.public_keys())) {
        Ok(body) => body,
        Err(e) => {
            // Cannot happen for these types; never a half-written key set.
            tracing::error!(error = %e, "cannot serialise the key set");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, jwks.cache_control),
        ],
        body,
    )
        .into_response()
}

/// The keys of `set` that are public keys (EC, RSA, OKP), whose serde form
/// is RFC 7517's: only the members that apply to the key type, no nulls.
/// A symmetric key (`oct`, whose `k` is the secret itself) or one of a type
/// we do not know is never published, whatever the set holds.
fn published(mut set: JwkSet) -> JwkSet {
    set.keys.retain(|key| {
        matches!(
            key.algorithm,
            AlgorithmParameters::EllipticCurve(_)
                | AlgorithmParameters::RSA(_)
                | AlgorithmParameters::OctetKeyPair(_)
        )
    });
    set
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::jwk::{
        CommonParameters, EllipticCurve, EllipticCurveKeyParameters, Jwk, KeyAlgorithm,
        OctetKeyPairParameters, OctetKeyParameters, PublicKeyUse, RSAKeyParameters,
    };
    use serde_json::json;

    use super::*;

    fn common(kid: &str, alg: KeyAlgorithm) -> CommonParameters {
        CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(alg),
            key_id: Some(kid.to_owned()),
            ..CommonParameters::default()
        }
    }

    fn json_of(keys: Vec<Jwk>) -> serde_json::Value {
        let body = serde_json::to_vec(&published(JwkSet { keys })).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[test]
    fn an_empty_set_is_an_empty_key_list() {
        assert_eq!(json_of(Vec::new()), json!({"keys": []}));
    }

    /// Exactly RFC 7517/7518/8037's members per key type: no `y` on an OKP
    /// key, no `n`/`e` on an EC key, no null anywhere.
    #[test]
    fn each_key_type_has_only_its_own_members() {
        let okp = Jwk {
            common: common("ed", KeyAlgorithm::EdDSA),
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                curve: EllipticCurve::Ed25519,
                x: "ed-x".to_owned(),
                ..OctetKeyPairParameters::default()
            }),
        };
        let ec = Jwk {
            common: common("es", KeyAlgorithm::ES256),
            algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                curve: EllipticCurve::P256,
                x: "es-x".to_owned(),
                y: "es-y".to_owned(),
                ..EllipticCurveKeyParameters::default()
            }),
        };
        let rsa = Jwk {
            common: common("rs", KeyAlgorithm::RS256),
            algorithm: AlgorithmParameters::RSA(RSAKeyParameters {
                n: "rs-n".to_owned(),
                e: "AQAB".to_owned(),
                ..RSAKeyParameters::default()
            }),
        };
        assert_eq!(
            json_of(vec![okp, ec, rsa]),
            json!({"keys": [
                {"kty": "OKP", "crv": "Ed25519", "x": "ed-x",
                 "kid": "ed", "alg": "EdDSA", "use": "sig"},
                {"kty": "EC", "crv": "P-256", "x": "es-x", "y": "es-y",
                 "kid": "es", "alg": "ES256", "use": "sig"},
                {"kty": "RSA", "n": "rs-n", "e": "AQAB",
                 "kid": "rs", "alg": "RS256", "use": "sig"},
            ]})
        );
    }

    #[test]
    fn a_shared_secret_is_never_published() {
        let secret = Jwk {
            common: common("hs", KeyAlgorithm::HS256),
            algorithm: AlgorithmParameters::OctetKey(OctetKeyParameters {
                value: "the-shared-secret".to_owned(),
                ..OctetKeyParameters::default()
            }),
        };
        assert_eq!(json_of(vec![secret]), json!({"keys": []}));
    }

    #[test]
    fn max_age_is_whole_seconds() {
        assert_eq!(
            cache_control(Duration::from_secs(300)),
            "public, max-age=300"
        );
        assert_eq!(
            cache_control(Duration::from_millis(1500)),
            "public, max-age=1"
        );
    }
}
