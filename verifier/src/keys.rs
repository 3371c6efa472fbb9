//! The key cache's contents: `kid` → verifying key, built from a JWKS.

use std::collections::{HashMap, hash_map::Entry};

use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse},
};

/// A public key and the algorithms it may verify (one, when the JWK names
/// its `alg`).
pub(crate) struct VerifyingKey {
    pub(crate) key: DecodingKey,
    pub(crate) algorithms: Vec<Algorithm>,
}

/// The usable keys of one JWKS, by `kid`.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: HashMap<String, VerifyingKey>,
}

impl KeySet {
    /// Keeps each key that has a `kid`, is for signatures (`use` is `sig`
    /// or absent; `key_ops`, if present, includes `verify`), is of a type
    /// jsonwebtoken can use, and whose `alg` is one of `expected` (or,
    /// without `alg`, whose type fits one of them). Others are skipped with
    /// a debug line: a JWKS may hold keys for other consumers.
    pub(crate) fn from_jwks(jwks: &[serde_json::Value], expected: &[Algorithm]) -> Self {
        let mut keys = HashMap::new();
        for value in jwks {
            let kid = value.get("kid").and_then(serde_json::Value::as_str);
            match usable_key(value, expected) {
                Ok((kid, key)) => match keys.entry(kid) {
                    Entry::Occupied(entry) => {
                        tracing::warn!(
                            kid = entry.key(),
                            "JWKS: duplicate kid, keeping the first key"
                        );
                    }
                    Entry::Vacant(entry) => {
                        entry.insert(key);
                    }
                },
                Err(why) => tracing::debug!(kid, why, "JWKS: key skipped"),
            }
        }
        Self { keys }
    }

    pub(crate) fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    pub(crate) fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.keys.keys().cloned().collect();
        kids.sort();
        kids
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn usable_key(
    value: &serde_json::Value,
    expected: &[Algorithm],
) -> Result<(String, VerifyingKey), &'static str> {
    let jwk: Jwk = serde_json::from_value(value.clone()).map_err(|_| "not a JWK")?;
    let kid = jwk.common.key_id.clone().ok_or("no kid")?;
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err("use is not sig"),
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("key_ops lacks verify");
    }
    let fits = fitting_algorithms(&jwk.algorithm);
    let algorithms: Vec<Algorithm> = match jwk.common.key_algorithm {
        Some(alg) => {
            let alg = algorithm(alg).ok_or("unsupported alg")?;
            if !fits.contains(&alg) {
                return Err("alg does not fit the key type");
            }
            vec![alg]
        }
        None => fits.to_vec(),
    }
    .into_iter()
    .filter(|alg| expected.contains(alg))
    .collect();
    if algorithms.is_empty() {
        return Err("alg not expected");
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "unusable key material")?;
    Ok((kid, VerifyingKey { key, algorithms }))
}

/// The signature algorithms a key of this type and curve can verify.
fn fitting_algorithms(params: &AlgorithmParameters) -> &'static [Algorithm] {
    match params {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            AlgorithmFamily::Ed.algorithms()
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            &[Algorithm::ES256]
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => {
            &[Algorithm::ES384]
        }
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa.algorithms(),
        // Shared secrets (`oct`) are never used, whatever the JWKS says.
        _ => &[],
    }
}

fn algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// A JWKS `Jwk` message as RFC 7517 JSON: empty fields are absent.
pub(crate) fn jwk_json(jwk: &crate::pb::Jwk) -> serde_json::Value {
    let fields = [
        ("kty", &jwk.kty),
        ("kid", &jwk.kid),
        ("alg", &jwk.alg),
        ("use", &jwk.r#use),
        ("crv", &jwk.crv),
        ("x", &jwk.x),
        ("y", &jwk.y),
        ("n", &jwk.n),
        ("e", &jwk.e),
    ];
    serde_json::Value::Object(
        fields
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| (name.to_owned(), serde_json::Value::String(value.clone())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    // RFC 8037 appendix A.2's public key.
    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn ed(extra: serde_json::Value) -> serde_json::Value {
        let mut jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "ed"});
        for (k, v) in extra.as_object().unwrap() {
            jwk[k] = v.clone();
        }
        jwk
    }

    fn kids(jwks: &[serde_json::Value], expected: &[Algorithm]) -> usize {
        KeySet::from_jwks(jwks, expected).len()
    }

    #[test]
    fn keeps_signing_keys_of_expected_algorithms_only() {
        let eddsa = [Algorithm::EdDSA];
        assert_eq!(kids(&[ed(json!({}))], &eddsa), 1);
        assert_eq!(
            kids(&[ed(json!({"alg": "EdDSA", "use": "sig"}))], &eddsa),
            1
        );
        assert_eq!(kids(&[ed(json!({"use": "enc"}))], &eddsa), 0);
        assert_eq!(kids(&[ed(json!({"key_ops": ["encrypt"]}))], &eddsa), 0);
        assert_eq!(kids(&[ed(json!({}))], &[Algorithm::ES256]), 0);
        // An alg that does not fit the key type.
        assert_eq!(kids(&[ed(json!({"alg": "RS256"}))], &[Algorithm::RS256]), 0);
        // No kid.
        let mut no_kid = ed(json!({}));
        no_kid.as_object_mut().unwrap().remove("kid");
        assert_eq!(kids(&[no_kid], &eddsa), 0);
    }

    #[test]
    fn never_keeps_a_shared_secret() {
        let oct = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hs", "alg": "HS256"});
        assert_eq!(kids(&[oct], &[Algorithm::HS256]), 0);
    }

    #[test]
    fn skips_garbage_and_keeps_the_rest() {
        let jwks = [json!({"kty": "nope"}), json!(42), ed(json!({}))];
        assert_eq!(kids(&jwks, &[Algorithm::EdDSA]), 1);
    }

    #[test]
    fn proto_jwk_becomes_rfc_7517_json() {
        let jwk = crate::pb::Jwk {
            kty: "OKP".into(),
            kid: "ed".into(),
            alg: "EdDSA".into(),
            r#use: "sig".into(),
            crv: "Ed25519".into(),
            x: ED_X.into(),
            ..Default::default()
        };
        assert_eq!(
            jwk_json(&jwk),
            json!({"kty": "OKP", "kid": "ed", "alg": "EdDSA", "use": "sig",
                   "crv": "Ed25519", "x": ED_X})
        );
    }
}
