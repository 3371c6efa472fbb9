//! RFC 7523 client assertions: a JWT a service signs with its own
//! registered key to obtain a service token, so that no shared secret is
//! stored anywhere (ZITADEL's "JWT profile").
//!
//! Rules (issue 15's design): `alg` EdDSA, ES256 or RS256, and the one of
//! the key that verifies it (`none` and HS* are refused before any key is
//! tried, so a public key can never be used as an HMAC secret); `iss` =
//! `sub` = the client id, which must be the name of the account the key is
//! registered to; `aud` this service's issuer (a string, or an array
//! containing it); `exp` required and at most 5 minutes ahead, so a used
//! `jti` need only be remembered that long; `iat` and `nbf`, if present, not
//! in the future; `jti` required. Every time check is against the `now`
//! given, with the codec's leeway.
//!
//! Pure code: the caller looks the keys up ([`key_lookup`] says by what),
//! passes them in as data, and records the `jti` (the replay check) and
//! checks the account once the assertion verified.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use super::{TokenCodec, is_valid_id, keys::decoding_key, service::is_valid_client_id};

/// The audience of assertions when `AUTH_JWT_ISSUER` is unset.
pub const DEFAULT_AUDIENCE: &str = "auth-service";

/// How far ahead an assertion's `exp` may be, in seconds (plus the leeway).
pub const MAX_LIFETIME: i64 = 5 * 60;

/// The longest `jti` accepted (the replay table's key column).
pub const MAX_JTI_CHARS: usize = 255;

/// A public key registered to a service account, as stored with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredKey {
    /// The name of the account the key belongs to: the only client id an
    /// assertion it verifies may claim.
    pub client_id: String,
    pub kid: String,
    /// `"EdDSA"`, `"ES256"` or `"RS256"`, derived from the key when it was
    /// registered; a key with anything else never verifies.
    pub algorithm: String,
    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
}

/// Which registered keys may verify an assertion, read from it before
/// anything is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookup {
    /// The header names the key.
    Kid(String),
    /// No `kid`: each key of the account named by `iss`.
    ClientId(String),
}

/// A verified assertion. Its `jti` is not yet known to be unused: the
/// caller records it until `exp` and refuses the assertion if it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    pub client_id: String,
    /// The key that verified it: the credential that obtains the token.
    pub kid: String,
    pub jti: String,
    pub exp: i64,
}

/// Why an assertion was refused. For logs and tests: the caller answers
/// the client with one message for every case, so that nothing tells an
/// unknown account from a wrong key. No variant carries token content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("the assertion is not a well-formed JWT")]
    Malformed,
    #[error("the assertion's algorithm is not EdDSA, ES256 or RS256")]
    UnsupportedAlgorithm,
    #[error("no registered key matches the assertion")]
    UnknownKey,
    #[error("the assertion's algorithm is not its key's")]
    AlgorithmMismatch,
    #[error("the assertion's signature does not verify")]
    BadSignature,
    #[error("the assertion's iss and sub are not both the key's client id")]
    WrongClient,
    #[error("the assertion's aud is not this service")]
    WrongAudience,
    #[error("the assertion has no exp")]
    NoExpiry,
    #[error("the assertion has expired")]
    Expired,
    #[error("the assertion's exp is more than 5 minutes ahead")]
    TooLong,
    #[error("the assertion is not valid yet (iat or nbf in the future)")]
    NotYetValid,
    #[error("the assertion has no jti, or one over 255 characters or with a control character")]
    BadJti,
}

/// What [`key_lookup`] reads of the claims, unverified.
#[derive(Deserialize)]
struct UnverifiedIssuer {
    iss: Option<serde_json::Value>,
}

/// Which keys to look up for `assertion`: the one its header's `kid` names
/// (a 32-digit lower-case hex id, as we generate), or, without `kid`,
/// those of the account its `iss` names. Nothing is verified yet.
///
/// # Errors
/// Not a JWT, an unsupported `alg`, a `kid` we cannot have issued, or no
/// `kid` and no client id in `iss`.
pub fn key_lookup(assertion: &str) -> Result<KeyLookup, AssertionError> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| AssertionError::Malformed)?;
    supported(header.alg)?;
    if let Some(kid) = header.kid {
        if kid.len() != 32
            || !kid
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(AssertionError::UnknownKey);
        }
        return Ok(KeyLookup::Kid(kid));
    }
    let claims = jsonwebtoken::dangerous::insecure_decode::<UnverifiedIssuer>(assertion)
        .map_err(|_| AssertionError::Malformed)?
        .claims;
    match claims.iss {
        Some(serde_json::Value::String(iss)) if is_valid_client_id(&iss) => {
            Ok(KeyLookup::ClientId(iss))
        }
        _ => Err(AssertionError::WrongClient),
    }
}

/// The client an assertion claims to be from (its `iss`, if a valid client
/// id), unverified: whose failures to count before anything is checked.
pub fn claimed_client(assertion: &str) -> Option<String> {
    let claims = jsonwebtoken::dangerous::insecure_decode::<UnverifiedIssuer>(assertion)
        .ok()?
        .claims;
    match claims.iss {
        Some(serde_json::Value::String(iss)) if is_valid_client_id(&iss) => Some(iss),
        _ => None,
    }
}

/// The algorithms a service may sign an assertion with.
fn supported(alg: Algorithm) -> Result<Algorithm, AssertionError> {
    match alg {
        Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256 => Ok(alg),
        _ => Err(AssertionError::UnsupportedAlgorithm),
    }
}

/// A stored algorithm name, if it is one assertions may use.
fn stored_algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "EdDSA" => Some(Algorithm::EdDSA),
        "ES256" => Some(Algorithm::ES256),
        "RS256" => Some(Algorithm::RS256),
        _ => None,
    }
}

/// The claims checked here rather than by jsonwebtoken, which takes an
/// `iss` array containing the issuer and checks time against the real
/// clock, not against `now`.
#[derive(Deserialize)]
struct IncomingAssertion {
    iss: Option<serde_json::Value>,
    sub: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    iat: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
    jti: Option<serde_json::Value>,
}

impl TokenCodec {
    /// The `aud` a client assertion must carry: `AUTH_JWT_ISSUER`, else
    /// [`DEFAULT_AUDIENCE`].
    pub fn assertion_audience(&self) -> &str {
        self.issuer.as_deref().unwrap_or(DEFAULT_AUDIENCE)
    }

    /// Until when (Unix seconds) a used `jti` must be remembered: an
    /// assertion expiring at `exp` is accepted until then, the leeway
    /// included.
    pub fn assertion_usable_until(&self, exp: i64) -> i64 {
        exp.saturating_add(self.leeway)
    }

    /// Verifies an RFC 7523 client assertion against `keys`, the keys
    /// [`key_lookup`] named (a key whose `kid` is not the header's is
    /// ignored; without `kid` each is tried). See the module's rules.
    ///
    /// # Errors
    /// Why it was refused; tell the client only that it was.
    pub fn verify_assertion(
        &self,
        assertion: &str,
        keys: &[RegisteredKey],
        now: i64,
    ) -> Result<VerifiedAssertion, AssertionError> {
        let header =
            jsonwebtoken::decode_header(assertion).map_err(|_| AssertionError::Malformed)?;
        let alg = supported(header.alg)?;
        let mut candidates = keys
            .iter()
            .filter(|key| header.kid.as_ref().is_none_or(|kid| *kid == key.kid))
            .peekable();
        if candidates.peek().is_none() {
            return Err(AssertionError::UnknownKey);
        }
        let mut refusal = AssertionError::AlgorithmMismatch;
        for key in candidates {
            if stored_algorithm(&key.algorithm) != Some(alg) {
                continue;
            }
            let Ok(decoding) = decoding_key(alg, &key.public_key_pem) else {
                tracing::warn!(kid = %key.kid, "a registered public key does not parse; skipped");
                continue;
            };
            match self.check_assertion(assertion, key, &decoding, alg, now) {
                // Without `kid`, another key of the account may be the one.
                Err(AssertionError::BadSignature) => refusal = AssertionError::BadSignature,
                verified => return verified,
            }
        }
        Err(refusal)
    }

    /// The signature with `key`, then the claims.
    fn check_assertion(
        &self,
        assertion: &str,
        key: &RegisteredKey,
        decoding: &DecodingKey,
        alg: Algorithm,
        now: i64,
    ) -> Result<VerifiedAssertion, AssertionError> {
        let mut validation = Validation::new(alg);
        // Time is checked below, against `now`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["aud"]);
        validation.set_audience(&[self.assertion_audience()]);
        let raw = jsonwebtoken::decode::<IncomingAssertion>(assertion, decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AssertionError::BadSignature,
                ErrorKind::InvalidAudience | ErrorKind::MissingRequiredClaim(_) => {
                    AssertionError::WrongAudience
                }
                ErrorKind::InvalidAlgorithm => AssertionError::AlgorithmMismatch,
                _ => AssertionError::Malformed,
            })?
            .claims;

        let names_the_client = |claim: &Option<serde_json::Value>| {
            claim.as_ref().and_then(serde_json::Value::as_str) == Some(key.client_id.as_str())
        };
        if !names_the_client(&raw.iss) || !names_the_client(&raw.sub) {
            return Err(AssertionError::WrongClient);
        }
        let exp = match raw.exp {
            None => return Err(AssertionError::NoExpiry),
            Some(exp) => exp.as_i64().ok_or(AssertionError::Malformed)?,
        };
        if exp <= now.saturating_sub(self.leeway) {
            return Err(AssertionError::Expired);
        }
        if exp > now.saturating_add(MAX_LIFETIME).saturating_add(self.leeway) {
            return Err(AssertionError::TooLong);
        }
        for claim in [raw.iat, raw.nbf].into_iter().flatten() {
            let at = claim.as_i64().ok_or(AssertionError::Malformed)?;
            if at > now.saturating_add(self.leeway) {
                return Err(AssertionError::NotYetValid);
            }
        }
        let jti = match raw.jti {
            Some(serde_json::Value::String(jti)) if is_valid_id(&jti, MAX_JTI_CHARS) => jti,
            _ => return Err(AssertionError::BadJti),
        };
        Ok(VerifiedAssertion {
            client_id: key.client_id.clone(),
            kid: key.kid.clone(),
            jti,
            exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    use super::*;
    use crate::tokens::unix_now;

    const SECRET: &[u8] = b"test secret that is long enough for HS256";
    const ED_KID: &str = "0000000000000000000000000000000e";
    const EC_KID: &str = "0000000000000000000000000000000c";
    const RSA_KID: &str = "0000000000000000000000000000000a";

    fn codec() -> TokenCodec {
        TokenCodec::new(SECRET, Duration::from_secs(60), Duration::from_secs(600)).unwrap()
    }

    /// The three test keys, registered to `billing`.
    fn registered() -> Vec<RegisteredKey> {
        let key = |kid: &str, algorithm: &str, pem: &str| RegisteredKey {
            client_id: "billing".to_owned(),
            kid: kid.to_owned(),
            algorithm: algorithm.to_owned(),
            public_key_pem: pem.to_owned(),
        };
        vec![
            key(
                ED_KID,
                "EdDSA",
                include_str!("../../tests/keys/ed25519-1.pub.pem"),
            ),
            key(
                EC_KID,
                "ES256",
                include_str!("../../tests/keys/p256-1.pub.pem"),
            ),
            key(
                RSA_KID,
                "RS256",
                include_str!("../../tests/keys/rsa-1.pub.pem"),
            ),
        ]
    }

    /// A private test key and its algorithm, by file name.
    fn private(file: &str) -> (Algorithm, EncodingKey) {
        let pem = match file {
            "ed25519-1" => include_str!("../../tests/keys/ed25519-1.pem"),
            "ed25519-2" => include_str!("../../tests/keys/ed25519-2.pem"),
            "p256-1" => include_str!("../../tests/keys/p256-1.pem"),
            "p256-2" => include_str!("../../tests/keys/p256-2.pem"),
            "rsa-1" => include_str!("../../tests/keys/rsa-1.pem"),
            _ => include_str!("../../tests/keys/rsa-2.pem"),
        };
        let (alg, key) = match file.split('-').next() {
            Some("ed25519") => (Algorithm::EdDSA, EncodingKey::from_ed_pem(pem.as_bytes())),
            Some("p256") => (Algorithm::ES256, EncodingKey::from_ec_pem(pem.as_bytes())),
            _ => (Algorithm::RS256, EncodingKey::from_rsa_pem(pem.as_bytes())),
        };
        (alg, key.unwrap())
    }

    fn claims(now: i64) -> Value {
        json!({"iss": "billing", "sub": "billing", "aud": "auth-service",
               "exp": now + 60, "iat": now, "jti": "assertion-1"})
    }

    /// `claims` signed with the private key `file`, its algorithm, and `kid`.
    fn sign(file: &str, kid: Option<&str>, claims: &Value) -> String {
        let (alg, key) = private(file);
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    fn with(now: i64, key: &str, value: Value) -> Value {
        let mut claims = claims(now);
        claims[key] = value;
        claims
    }

    fn without(now: i64, key: &str) -> Value {
        let mut claims = claims(now);
        claims.as_object_mut().map(|o| o.remove(key));
        claims
    }

    #[test]
    fn accepts_each_algorithm_with_and_without_kid() {
        let codec = codec();
        let now = unix_now();
        let keys = registered();
        for (file, kid) in [
            ("ed25519-1", ED_KID),
            ("p256-1", EC_KID),
            ("rsa-1", RSA_KID),
        ] {
            let assertion = sign(file, Some(kid), &claims(now));
            assert_eq!(key_lookup(&assertion), Ok(KeyLookup::Kid(kid.to_owned())));
            let expected = VerifiedAssertion {
                client_id: "billing".to_owned(),
                kid: kid.to_owned(),
                jti: "assertion-1".to_owned(),
                exp: now + 60,
            };
            assert_eq!(
                codec.verify_assertion(&assertion, &keys, now).as_ref(),
                Ok(&expected),
                "{file}"
            );
            // Only the named key given, as a lookup by kid returns.
            let named: Vec<_> = keys.iter().filter(|k| k.kid == kid).cloned().collect();
            assert_eq!(
                codec.verify_assertion(&assertion, &named, now),
                Ok(expected.clone())
            );

            // Without kid: every key of the account named by iss is tried.
            let assertion = sign(file, None, &claims(now));
            assert_eq!(
                key_lookup(&assertion),
                Ok(KeyLookup::ClientId("billing".to_owned()))
            );
            assert_eq!(
                codec.verify_assertion(&assertion, &keys, now),
                Ok(expected),
                "{file}"
            );
        }
    }

    #[test]
    fn the_audience_is_the_issuer_when_configured() {
        let now = unix_now();
        let keys = registered();
        let codec = codec().with_issuer_and_audience(Some("https://auth.example".into()), None);
        assert_eq!(codec.assertion_audience(), "https://auth.example");
        let to_issuer = sign(
            "ed25519-1",
            Some(ED_KID),
            &with(now, "aud", json!("https://auth.example")),
        );
        assert!(codec.verify_assertion(&to_issuer, &keys, now).is_ok());
        let default = sign("ed25519-1", Some(ED_KID), &claims(now));
        assert_eq!(
            codec.verify_assertion(&default, &keys, now),
            Err(AssertionError::WrongAudience)
        );
        assert_eq!(self::codec().assertion_audience(), "auth-service");
        let among_others = with(now, "aud", json!(["https://other", "auth-service"]));
        assert!(
            self::codec()
                .verify_assertion(&sign("ed25519-1", Some(ED_KID), &among_others), &keys, now)
                .is_ok()
        );
    }

    #[test]
    fn refuses_wrong_keys_and_algorithms() {
        let codec = codec();
        let now = unix_now();
        let keys = registered();
        let ed_public = include_str!("../../tests/keys/ed25519-1.pub.pem");
        let mut hs256 = Header::new(Algorithm::HS256);
        hs256.kid = Some(ED_KID.to_owned());
        let hs256_with_public_key = jsonwebtoken::encode(
            &hs256,
            &claims(now),
            &EncodingKey::from_secret(ed_public.as_bytes()).unwrap(),
        )
        .unwrap();
        let none = {
            use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
            let header = json!({"alg": "none", "typ": "JWT", "kid": ED_KID});
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims(now).to_string())
            )
        };
        let mut other_account = registered();
        for key in &mut other_account {
            key.client_id = "orders".to_owned();
        }
        let mut unknown_algorithm = registered();
        unknown_algorithm[0].algorithm = "HS256".to_owned();

        let cases = [
            (
                "another Ed25519 key",
                sign("ed25519-2", Some(ED_KID), &claims(now)),
                &keys,
                AssertionError::BadSignature,
            ),
            (
                "another key, no kid",
                sign("p256-2", None, &claims(now)),
                &keys,
                AssertionError::BadSignature,
            ),
            (
                "another RSA key",
                sign("rsa-2", Some(RSA_KID), &claims(now)),
                &keys,
                AssertionError::BadSignature,
            ),
            (
                "ES256 under an EdDSA key's kid",
                sign("p256-1", Some(ED_KID), &claims(now)),
                &keys,
                AssertionError::AlgorithmMismatch,
            ),
            (
                "unknown kid",
                sign(
                    "ed25519-1",
                    Some("ffffffffffffffffffffffffffffffff"),
                    &claims(now),
                ),
                &keys,
                AssertionError::UnknownKey,
            ),
            (
                "no keys",
                sign("ed25519-1", None, &claims(now)),
                &Vec::new(),
                AssertionError::UnknownKey,
            ),
            (
                "HS256 with the public key as secret",
                hs256_with_public_key,
                &keys,
                AssertionError::UnsupportedAlgorithm,
            ),
            ("alg none", none, &keys, AssertionError::Malformed),
            (
                "a key of another account",
                sign("ed25519-1", Some(ED_KID), &claims(now)),
                &other_account,
                AssertionError::WrongClient,
            ),
            (
                "a stored algorithm we do not take",
                sign("ed25519-1", Some(ED_KID), &claims(now)),
                &unknown_algorithm,
                AssertionError::AlgorithmMismatch,
            ),
            (
                "garbage",
                "not.a.jwt".to_owned(),
                &keys,
                AssertionError::Malformed,
            ),
        ];
        for (case, assertion, keys, expected) in cases {
            assert_eq!(
                codec.verify_assertion(&assertion, keys, now),
                Err(expected),
                "{case}"
            );
        }
    }

    #[test]
    fn refuses_wrong_claims() {
        let codec = codec();
        let now = unix_now();
        let keys = registered();
        let cases = [
            (
                "iss is not sub",
                with(now, "iss", json!("orders")),
                AssertionError::WrongClient,
            ),
            (
                "sub is not iss",
                with(now, "sub", json!("orders")),
                AssertionError::WrongClient,
            ),
            (
                "iss as an array",
                with(now, "iss", json!(["billing"])),
                AssertionError::WrongClient,
            ),
            ("no iss", without(now, "iss"), AssertionError::WrongClient),
            ("no sub", without(now, "sub"), AssertionError::WrongClient),
            (
                "wrong aud",
                with(now, "aud", json!("other-service")),
                AssertionError::WrongAudience,
            ),
            (
                "aud array without us",
                with(now, "aud", json!(["a", "b"])),
                AssertionError::WrongAudience,
            ),
            ("no aud", without(now, "aud"), AssertionError::WrongAudience),
            ("no exp", without(now, "exp"), AssertionError::NoExpiry),
            (
                "expired",
                with(now, "exp", json!(now - 1)),
                AssertionError::Expired,
            ),
            (
                "expiring now",
                with(now, "exp", json!(now)),
                AssertionError::Expired,
            ),
            (
                "exp 5 min 1 s ahead",
                with(now, "exp", json!(now + 301)),
                AssertionError::TooLong,
            ),
            (
                "exp far ahead",
                with(now, "exp", json!(now + 86_400)),
                AssertionError::TooLong,
            ),
            (
                "exp as text",
                with(now, "exp", json!((now + 60).to_string())),
                AssertionError::Malformed,
            ),
            (
                "iat ahead",
                with(now, "iat", json!(now + 10)),
                AssertionError::NotYetValid,
            ),
            (
                "nbf ahead",
                with(now, "nbf", json!(now + 10)),
                AssertionError::NotYetValid,
            ),
            ("no jti", without(now, "jti"), AssertionError::BadJti),
            (
                "empty jti",
                with(now, "jti", json!("")),
                AssertionError::BadJti,
            ),
            (
                "numeric jti",
                with(now, "jti", json!(7)),
                AssertionError::BadJti,
            ),
            (
                "long jti",
                with(now, "jti", json!("j".repeat(256))),
                AssertionError::BadJti,
            ),
            (
                "control jti",
                with(now, "jti", json!("a\nb")),
                AssertionError::BadJti,
            ),
        ];
        for (case, claims, expected) in cases {
            let assertion = sign("ed25519-1", Some(ED_KID), &claims);
            assert_eq!(
                codec.verify_assertion(&assertion, &keys, now),
                Err(expected),
                "{case}"
            );
        }
        // The limits themselves pass; iat is optional.
        for claims in [
            with(now, "exp", json!(now + MAX_LIFETIME)),
            with(now, "jti", json!("j".repeat(255))),
            without(now, "iat"),
        ] {
            let assertion = sign("ed25519-1", Some(ED_KID), &claims);
            assert!(
                codec.verify_assertion(&assertion, &keys, now).is_ok(),
                "{claims}"
            );
        }
    }

    #[test]
    fn the_leeway_stretches_every_time_check() {
        let codec = codec().with_leeway(Duration::from_secs(30));
        let now = unix_now();
        let keys = registered();
        for claims in [
            with(now, "exp", json!(now - 10)),
            with(now, "exp", json!(now + MAX_LIFETIME + 20)),
            with(now, "iat", json!(now + 20)),
        ] {
            let assertion = sign("ed25519-1", Some(ED_KID), &claims);
            assert!(
                codec.verify_assertion(&assertion, &keys, now).is_ok(),
                "{claims}"
            );
        }
        for (claims, expected) in [
            (with(now, "exp", json!(now - 30)), AssertionError::Expired),
            (
                with(now, "exp", json!(now + MAX_LIFETIME + 31)),
                AssertionError::TooLong,
            ),
            (
                with(now, "iat", json!(now + 31)),
                AssertionError::NotYetValid,
            ),
        ] {
            let assertion = sign("ed25519-1", Some(ED_KID), &claims);
            assert_eq!(
                codec.verify_assertion(&assertion, &keys, now),
                Err(expected),
                "{claims}"
            );
        }
    }

    #[test]
    fn key_lookup_reads_kid_or_iss_and_refuses_what_cannot_match() {
        let now = unix_now();
        assert_eq!(
            key_lookup(&sign(
                "ed25519-1",
                Some("ABCDEF0123456789abcdef0123456789"),
                &claims(now)
            )),
            Err(AssertionError::UnknownKey)
        );
        assert_eq!(
            key_lookup(&sign("ed25519-1", Some("short"), &claims(now))),
            Err(AssertionError::UnknownKey)
        );
        assert_eq!(
            key_lookup(&sign(
                "ed25519-1",
                None,
                &with(now, "iss", json!("Not A Name"))
            )),
            Err(AssertionError::WrongClient)
        );
        assert_eq!(
            key_lookup(&sign("ed25519-1", None, &without(now, "iss"))),
            Err(AssertionError::WrongClient)
        );
        assert_eq!(key_lookup("garbage"), Err(AssertionError::Malformed));
        let signed = sign("ed25519-1", Some(ED_KID), &claims(now));
        assert_eq!(claimed_client(&signed).as_deref(), Some("billing"));
        let odd = sign("ed25519-1", None, &with(now, "iss", json!("Not A Name")));
        assert_eq!(claimed_client(&odd), None);
        assert_eq!(claimed_client("garbage"), None);
        let hs256 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(now),
            &EncodingKey::from_secret(b"k").unwrap(),
        )
        .unwrap();
        assert_eq!(
            key_lookup(&hs256),
            Err(AssertionError::UnsupportedAlgorithm)
        );
    }
}
