//! The keys tokens are signed and verified with: one HS256 secret, or an
//! asymmetric signing key plus any keys that only verify (the previous or
//! the next key of a rotation). Asymmetric keys are named by their RFC 7638
//! thumbprint (`kid`), which every token they sign carries in its header,
//! and their public parts are published as a JWKS.

use std::{collections::HashMap, fs, path::Path};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::STANDARD};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header,
    jwk::{AlgorithmParameters, Jwk, JwkSet, PublicKeyUse, ThumbprintHash},
};

use super::{
    TokenError,
    signing_key::{load_or_create, signing_key, sqlite_path},
};
use crate::config::{JwtAlgorithm, TokenSettings};

/// The smallest RSA modulus accepted (RFC 7518 §3.3).
const MIN_RSA_BITS: usize = 2048;

pub struct KeyRing {
    algorithm: Algorithm,
    signing: EncodingKey,
    /// The signing key's `kid`; `None` with HS256, whose tokens keep
    /// simplejwt's header.
    signing_kid: Option<String>,
    verifying: Verifying,
    public: JwkSet,
    /// Key material for other HMACs of this process (page tokens).
    secret_material: Vec<u8>,
}

enum Verifying {
    Secret(DecodingKey),
    ByKid(HashMap<String, DecodingKey>),
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("algorithm", &self.algorithm)
            .field("signing_kid", &self.signing_kid)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// HS256 with a shared secret, as simplejwt.
    ///
    /// # Errors
    /// An empty secret.
    pub fn shared_secret(secret: &[u8]) -> anyhow::Result<Self> {
        let signing = EncodingKey::from_secret(secret)
            .map_err(|_| anyhow::anyhow!("the JWT signing key must not be empty"))?;
        let verifying = DecodingKey::from_secret(secret)
            .map_err(|_| anyhow::anyhow!("the JWT signing key must not be empty"))?;
        Ok(Self {
            algorithm: Algorithm::HS256,
            signing,
            signing_kid: None,
            verifying: Verifying::Secret(verifying),
            public: JwkSet::default(),
            secret_material: secret.to_vec(),
        })
    }

    /// An asymmetric ring: `signing_pem` (a PKCS#8 private key) signs and
    /// verifies, each of `verify_pems` (public or private keys, named by
    /// where they came from for errors) only verifies.
    ///
    /// # Errors
    /// A key that does not parse or is not of `algorithm`'s family, or an
    /// RSA key under 2048 bits.
    pub fn asymmetric(
        algorithm: Algorithm,
        signing_pem: (&str, &str),
        verify_pems: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let (origin, pem) = signing_pem;
        anyhow::ensure!(
            is_private(pem),
            "{origin}: not a PEM private key (a PKCS#8 \"BEGIN PRIVATE KEY\" block)"
        );
        let signing = encoding_key(algorithm, pem)
            .with_context(|| format!("{origin}: not a PKCS#8 PEM private key for {algorithm:?}"))?;
        let signing_jwk = Jwk::from_encoding_key(&signing, algorithm)
            .with_context(|| format!("{origin}: not a private key for {algorithm:?}"))?;
        let mut public = Vec::new();
        let mut by_kid = HashMap::new();
        let signing_kid = add_public_key(algorithm, origin, signing_jwk, &mut public, &mut by_kid)?;
        for (origin, pem) in verify_pems {
            let jwk = if is_private(pem) {
                let key = encoding_key(algorithm, pem)
                    .with_context(|| format!("{origin}: not a private key for {algorithm:?}"))?;
                Jwk::from_encoding_key(&key, algorithm)
            } else {
                let key = decoding_key(algorithm, pem)
                    .with_context(|| format!("{origin}: not a PEM key for {algorithm:?}"))?;
                Jwk::from_decoding_key(&key, Some(algorithm))
            }
            .with_context(|| format!("{origin}: not a key for {algorithm:?}"))?;
            add_public_key(algorithm, origin, jwk, &mut public, &mut by_kid)?;
        }
        Ok(Self {
            algorithm,
            signing,
            signing_kid: Some(signing_kid),
            verifying: Verifying::ByKid(by_kid),
            public: JwkSet { keys: public },
            secret_material: pem.as_bytes().to_vec(),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The public keys, as a JWKS (empty with HS256).
    pub fn public_keys(&self) -> &JwkSet {
        &self.public
    }

    /// Key material for HMACs that must not outlive this process's key.
    pub fn secret_material(&self) -> &[u8] {
        &self.secret_material
    }

    pub(super) fn signing_key(&self) -> &EncodingKey {
        &self.signing
    }

    /// The header of a token signed now.
    pub(super) fn header(&self) -> Header {
        let mut header = Header::new(self.algorithm);
        header.kid.clone_from(&self.signing_kid);
        header
    }

    /// The key that verifies `token`: the secret, or the key its `kid` names.
    ///
    /// # Errors
    /// Another algorithm than ours ([`TokenError::WrongAlgorithm`]); no
    /// `kid`, or one we do not know ([`TokenError::Invalid`]).
    pub(super) fn verifying_key(&self, token: &str) -> Result<&DecodingKey, TokenError> {
        match &self.verifying {
            // The library checks the algorithm against the validation.
            Verifying::Secret(key) => Ok(key),
            Verifying::ByKid(by_kid) => {
                let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
                if header.alg != self.algorithm {
                    return Err(TokenError::WrongAlgorithm);
                }
                header
                    .kid
                    .and_then(|kid| by_kid.get(&kid))
                    .ok_or(TokenError::Invalid)
            }
        }
    }

    /// The `kid`s of every key that verifies, the signing key's first.
    pub fn kids(&self) -> Vec<String> {
        self.public
            .keys
            .iter()
            .filter_map(|key| key.common.key_id.clone())
            .collect()
    }
}

/// Names `jwk` by its thumbprint, marks it for signatures, and adds it
/// (once) to the published set and the verifying keys; its `kid`.
fn add_public_key(
    algorithm: Algorithm,
    origin: &str,
    mut jwk: Jwk,
    public: &mut Vec<Jwk>,
    by_kid: &mut HashMap<String, DecodingKey>,
) -> anyhow::Result<String> {
    if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
        let modulus = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&rsa.n)
            .map(|n| n.iter().skip_while(|b| **b == 0).count() * 8)
            .unwrap_or(0);
        anyhow::ensure!(
            modulus >= MIN_RSA_BITS,
            "{origin}: an RSA key of {modulus} bits; RS256 needs {MIN_RSA_BITS} or more"
        );
    }
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .with_context(|| format!("{origin}: cannot compute the key's thumbprint"))?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(algorithm.into());
    if !by_kid.contains_key(&kid) {
        let key = DecodingKey::from_jwk(&jwk)
            .with_context(|| format!("{origin}: not a key that verifies {algorithm:?}"))?;
        by_kid.insert(kid.clone(), key);
        public.push(jwk);
    }
    Ok(kid)
}

fn is_private(pem: &str) -> bool {
    pem.contains("PRIVATE KEY-----")
}

fn encoding_key(algorithm: Algorithm, pem: &str) -> jsonwebtoken::errors::Result<EncodingKey> {
    match algorithm {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
}

pub(super) fn decoding_key(
    algorithm: Algorithm,
    pem: &str,
) -> jsonwebtoken::errors::Result<DecodingKey> {
    match algorithm {
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()),
        Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
        _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
    }
}

/// The configured key ring, read from the key files (or generated, on
/// SQLite); called at start-up and again on SIGHUP.
///
/// # Errors
/// A missing, unreadable or wrong key; a key required and not given.
pub fn load(settings: &TokenSettings, database_url: &str) -> anyhow::Result<KeyRing> {
    let algorithm = match settings.algorithm {
        JwtAlgorithm::Hs256 => {
            return KeyRing::shared_secret(&signing_key(settings, database_url)?);
        }
        JwtAlgorithm::EdDsa => Algorithm::EdDSA,
        JwtAlgorithm::Es256 => Algorithm::ES256,
        JwtAlgorithm::Rs256 => Algorithm::RS256,
    };
    let signing = match &settings.private_key_file {
        Some(path) => (path.display().to_string(), read(path)?),
        None => generated_private_key(algorithm, database_url)?,
    };
    let verify: Vec<(String, String)> = settings
        .verify_key_files
        .iter()
        .filter(|path| !path.as_os_str().is_empty())
        .map(|path| Ok((path.display().to_string(), read(path)?)))
        .collect::<anyhow::Result<_>>()?;
    KeyRing::asymmetric(algorithm, (&signing.0, &signing.1), &verify)
}

fn read(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read the key file {}", path.display()))
}

/// Without a key file: on SQLite a key generated once beside the database
/// (in memory for an in-memory database); elsewhere an error, since every
/// replica must sign with the same key.
fn generated_private_key(
    algorithm: Algorithm,
    database_url: &str,
) -> anyhow::Result<(String, String)> {
    let Some(path) = sqlite_path(database_url) else {
        anyhow::bail!(
            "AUTH_JWT_PRIVATE_KEY_FILE is required with {algorithm:?} on PostgreSQL or MySQL: every replica must sign with the same key"
        );
    };
    match path {
        None => {
            tracing::warn!(
                "AUTH_JWT_PRIVATE_KEY_FILE unset: in-memory database, using a random key for this process"
            );
            Ok((
                "a generated key".to_owned(),
                generate_private_key(algorithm)?,
            ))
        }
        Some(db_path) => {
            let name = format!("{algorithm:?}").to_lowercase();
            let key_path = format!("{}.jwt-{name}.pem", db_path.display());
            let pem = load_or_create(Path::new(&key_path), || generate_private_key(algorithm))?;
            tracing::warn!(
                key_file = %key_path,
                "AUTH_JWT_PRIVATE_KEY_FILE unset: signing with the generated key kept in the key file"
            );
            Ok((key_path, pem))
        }
    }
}

/// A new private key for `algorithm`, as PKCS#8 PEM.
fn generate_private_key(algorithm: Algorithm) -> anyhow::Result<String> {
    let der = match algorithm {
        // RFC 8410: PrivateKeyInfo { version 0, id-Ed25519, OCTET STRING { seed } }.
        Algorithm::EdDSA => {
            let mut der = vec![
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20,
            ];
            der.extend(rand::random::<[u8; 32]>());
            der
        }
        // RFC 5915 inside RFC 5208: PrivateKeyInfo { version 0,
        // { id-ecPublicKey, prime256v1 }, OCTET STRING { ECPrivateKey { 1, d } } }.
        // A random d is below the group order but for a 2^-32 chance; the
        // check below refuses such a key.
        Algorithm::ES256 => {
            let mut der = vec![
                0x30, 0x41, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d,
                0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x27,
                0x30, 0x25, 0x02, 0x01, 0x01, 0x04, 0x20,
            ];
            der.extend(rand::random::<[u8; 32]>());
            der
        }
        _ => {
            use rsa::{Generate, pkcs8::EncodePrivateKey};
            rsa::PrivateKey::try_generate()
                .map_err(|e| anyhow::anyhow!("cannot generate an RSA key: {e}"))?
                .to_pkcs8_der()
                .map_err(|e| anyhow::anyhow!("cannot encode the RSA key: {e}"))?
                .as_bytes()
                .to_vec()
        }
    };
    let pem = pem("PRIVATE KEY", &der);
    // Refuse what would not sign (an out-of-range P-256 scalar).
    let key = encoding_key(algorithm, &pem).context("a generated key does not parse")?;
    Jwk::from_encoding_key(&key, algorithm).context("a generated key is not usable")?;
    Ok(pem)
}

/// `der` as a PEM block with `label`.
fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|line| std::str::from_utf8(line).ok())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_are_named_by_their_thumbprint() {
        for algorithm in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let pem = generate_private_key(algorithm).unwrap();
            let ring = KeyRing::asymmetric(algorithm, ("generated", &pem), &[]).unwrap();
            let kids = ring.kids();
            assert_eq!(kids.len(), 1, "{algorithm:?}");
            // base64url of a SHA-256 digest.
            assert_eq!(kids[0].len(), 43, "{algorithm:?}");
            assert_eq!(ring.header().kid.as_deref(), Some(kids[0].as_str()));
            let jwk = &ring.public_keys().keys[0];
            assert_eq!(jwk.common.public_key_use, Some(PublicKeyUse::Signature));
        }
    }

    #[test]
    fn a_key_of_another_family_is_refused() {
        let ed = generate_private_key(Algorithm::EdDSA).unwrap();
        let err = KeyRing::asymmetric(Algorithm::ES256, ("ed.pem", &ed), &[]).unwrap_err();
        assert!(format!("{err:#}").contains("ed.pem"), "{err:#}");
    }

    #[test]
    fn a_verify_key_given_twice_is_published_once() {
        let signing = generate_private_key(Algorithm::EdDSA).unwrap();
        let old = generate_private_key(Algorithm::EdDSA).unwrap();
        let verify = [
            ("old.pem".to_owned(), old.clone()),
            ("old-again.pem".to_owned(), old),
            ("signing-too.pem".to_owned(), signing.clone()),
        ];
        let ring = KeyRing::asymmetric(Algorithm::EdDSA, ("new.pem", &signing), &verify).unwrap();
        assert_eq!(ring.kids().len(), 2);
    }
}
