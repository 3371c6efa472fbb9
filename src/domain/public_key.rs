//! A service account's public key for signing its assertions (RFC 7523):
//! an SPKI PEM (`-----BEGIN PUBLIC KEY-----`) whose algorithm is read
//! from the key itself, never taken from the caller.

use std::fmt;

use spki::{
    ObjectIdentifier, SubjectPublicKeyInfoRef,
    der::pem::{self, LineEnding},
};

/// The longest PEM accepted: a 4096-bit RSA key is about 800 characters.
pub const MAX_PUBLIC_KEY_PEM_CHARS: usize = 8 * 1024;
/// RSA moduli below this are refused (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;
/// RSA moduli above this are refused: what the signature check accepts.
pub const MAX_RSA_BITS: usize = 4096;

const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

const SUPPORTED: &str = "Supported keys: Ed25519, ECDSA P-256, RSA of 2048 to 4096 bits.";

/// The JWS algorithm a key signs with (RFC 7518, RFC 8037), as stored in
/// `service_account_keys.algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    EdDsa,
    Es256,
    Rs256,
}

impl KeyAlgorithm {
    /// Its JWS `alg` name: `EdDSA`, `ES256`, `RS256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }

    /// The algorithm named `alg` (as [`Self::as_str`] writes it).
    pub fn parse(alg: &str) -> Option<Self> {
        match alg {
            "EdDSA" => Some(Self::EdDsa),
            "ES256" => Some(Self::Es256),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A public key that parsed, of a supported type and size, with the
/// algorithm it signs with. Its PEM is re-encoded from the DER (LF line
/// endings, nothing around it), so what is stored is exactly the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    algorithm: KeyAlgorithm,
    pem: String,
}

impl PublicKey {
    /// # Errors
    /// What is wrong with the input, in words a caller can act on; the
    /// input itself is never quoted (it might be a private key).
    pub fn parse(input: &str) -> Result<Self, String> {
        let input = input.trim();
        if input.is_empty() {
            return Err(super::BLANK.into());
        }
        if input.chars().count() > MAX_PUBLIC_KEY_PEM_CHARS {
            return Err(format!(
                "A public key PEM has at most {MAX_PUBLIC_KEY_PEM_CHARS} characters."
            ));
        }
        if input.contains("PRIVATE KEY-----") {
            return Err("This is a private key: register the public key only \
                 (openssl pkey -in key.pem -pubout)."
                .into());
        }
        let not_pem = || {
            "Expected a PEM public key (-----BEGIN PUBLIC KEY-----, \
             as openssl pkey -pubout writes it)."
                .to_owned()
        };
        let (label, der) = pem::decode_vec(input.as_bytes()).map_err(|_| not_pem())?;
        if label != "PUBLIC KEY" {
            return Err(not_pem());
        }
        let malformed = |kind: &str| format!("Malformed {kind} public key.");
        let info = SubjectPublicKeyInfoRef::try_from(der.as_slice()).map_err(|_| not_pem())?;
        let oid = info.algorithm.oid;
        let algorithm = if oid == ED25519 {
            let key =
                ed25519_dalek::VerifyingKey::try_from(info).map_err(|_| malformed("Ed25519"))?;
            // A small-order point verifies forged signatures under the
            // non-strict check jsonwebtoken uses: anyone could sign for it.
            if key.is_weak() {
                return Err(malformed("Ed25519"));
            }
            KeyAlgorithm::EdDsa
        } else if oid == EC_PUBLIC_KEY {
            if info.algorithm.parameters_oid().ok() != Some(P256) {
                return Err(format!("Unsupported elliptic curve. {SUPPORTED}"));
            }
            p256::PublicKey::try_from(info).map_err(|_| malformed("P-256"))?;
            KeyAlgorithm::Es256
        } else if oid == RSA_ENCRYPTION {
            use rsa::traits::PublicKeyParts;
            let key = rsa::PublicKey::try_from(info).map_err(|_| malformed("RSA"))?;
            let bits = key.n().bit_width() as usize;
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(format!(
                    "RSA keys must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits; this one has {bits}."
                ));
            }
            KeyAlgorithm::Rs256
        } else {
            return Err(format!("Unsupported key type. {SUPPORTED}"));
        };
        let pem =
            pem::encode_string("PUBLIC KEY", LineEnding::LF, &der).map_err(|_| malformed("the"))?;
        Ok(Self { algorithm, pem })
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The SPKI PEM, as stored.
    pub fn pem(&self) -> &str {
        &self.pem
    }
}

/// The algorithm only: a key is public, but long and of no use in a log.
impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> String {
        let path = format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn algorithm(pem: &str) -> Result<KeyAlgorithm, String> {
        PublicKey::parse(pem).map(|k| k.algorithm())
    }

    #[test]
    fn each_supported_key_type_gives_its_algorithm() {
        assert_eq!(
            algorithm(&key("service-ed25519.pub.pem")),
            Ok(KeyAlgorithm::EdDsa)
        );
        assert_eq!(
            algorithm(&key("service-p256.pub.pem")),
            Ok(KeyAlgorithm::Es256)
        );
        assert_eq!(
            algorithm(&key("service-rsa.pub.pem")),
            Ok(KeyAlgorithm::Rs256)
        );
        assert_eq!(
            algorithm(&key("service-rsa-4096.pub.pem")),
            Ok(KeyAlgorithm::Rs256)
        );
    }

    #[test]
    fn the_stored_pem_is_the_key_alone_with_lf_endings() {
        let original = key("service-p256.pub.pem");
        let messy = format!("\n  {}\n\n", original.replace('\n', "\r\n"));
        let parsed = PublicKey::parse(&messy).map(|k| k.pem().to_owned());
        assert_eq!(parsed.as_deref(), Ok(original.as_str()));
    }

    #[test]
    fn refuses_what_cannot_sign_an_assertion_here() {
        for (name, says) in [
            (
                "service-rsa-1024.pub.pem",
                "2048 to 4096 bits; this one has 1024",
            ),
            ("service-p384.pub.pem", "Unsupported elliptic curve"),
            ("service-x25519.pub.pem", "Unsupported key type"),
            ("service-ed25519.pem", "private key"),
        ] {
            let refusal = algorithm(&key(name)).err().unwrap_or_default();
            assert!(refusal.contains(says), "{name}: {refusal}");
        }
        for garbage in [
            "hello",
            "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        ] {
            let refusal = algorithm(garbage).err().unwrap_or_default();
            assert!(
                refusal.contains("Expected a PEM public key"),
                "{garbage}: {refusal}"
            );
        }
        assert_eq!(algorithm("  "), Err(crate::domain::BLANK.to_owned()));
    }

    #[test]
    fn a_small_order_ed25519_key_is_refused() {
        // SPKI of Ed25519 around the identity point (0x01, then zeros).
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00, 0x01,
        ];
        der.extend([0; 31]);
        let weak = pem::encode_string("PUBLIC KEY", LineEnding::LF, &der).unwrap_or_default();
        let refusal = algorithm(&weak).err().unwrap_or_default();
        assert!(refusal.contains("Malformed Ed25519"), "{refusal}");
    }

    #[test]
    fn a_bad_point_is_malformed() {
        // A P-256 SPKI whose point is not on the curve.
        let good = PublicKey::parse(&key("service-p256.pub.pem")).map(|k| k.pem().to_owned());
        let (_, mut der) = pem::decode_vec(good.unwrap_or_default().as_bytes()).unwrap_or_default();
        if let Some(last) = der.last_mut() {
            *last ^= 1;
        }
        let bad = pem::encode_string("PUBLIC KEY", LineEnding::LF, &der).unwrap_or_default();
        let refusal = algorithm(&bad).err().unwrap_or_default();
        assert!(refusal.contains("Malformed P-256"), "{refusal}");
    }

    #[test]
    fn algorithms_round_trip_through_their_names() {
        for alg in [
            KeyAlgorithm::EdDsa,
            KeyAlgorithm::Es256,
            KeyAlgorithm::Rs256,
        ] {
            assert_eq!(KeyAlgorithm::parse(alg.as_str()), Some(alg));
        }
        assert_eq!(KeyAlgorithm::parse("HS256"), None);
    }
}
