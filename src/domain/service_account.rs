//! Service accounts: the machine identities that call other services with
//! tokens of this one (issue 15). An account has a name (its OAuth
//! `client_id`), the scopes it may be granted, and credentials: client
//! secrets, stored as digests only, and public keys for signed assertions.

use std::fmt;

use chrono::NaiveDateTime;
use subtle::ConstantTimeEq;

use super::{BLANK, KeyAlgorithm, Scopes, too_long};

/// The longest name.
pub const MAX_SERVICE_ACCOUNT_NAME_CHARS: usize = 64;
/// Secrets an account holds at once: two, so one is rotated without
/// downtime (add the new one, deploy it, remove the old one).
pub const MAX_SECRETS: usize = 2;
/// Public keys an account holds at once.
pub const MAX_KEYS: usize = 4;

/// A service account's name, which is also its OAuth `client_id`:
/// 1–64 of `a-z 0-9 -`. Unique; compared exactly (there is no case to fold).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceAccountName(String);

impl ServiceAccountName {
    /// # Errors
    /// The broken rule.
    pub fn parse(input: &str) -> Result<Self, String> {
        if input.is_empty() {
            return Err(BLANK.into());
        }
        if input.chars().count() > MAX_SERVICE_ACCOUNT_NAME_CHARS {
            return Err(too_long(MAX_SERVICE_ACCOUNT_NAME_CHARS, "characters"));
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if !input.chars().all(allowed) {
            return Err(
                "Enter a valid name: lower-case letters a-z, digits and hyphens only.".into(),
            );
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceAccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a credential: a secret's `secret_id` or a key's `kid`, a
/// UUIDv4 in simple form (32 lower-case hex digits), globally unique. It is
/// what a service token's `cid` claim names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CredentialId(String);

impl CredentialId {
    /// A new random id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// # Errors
    /// Not 32 lower-case hex digits.
    pub fn parse(input: &str) -> Result<Self, String> {
        let is_id = input.len() == 32
            && input
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if is_id {
            Ok(Self(input.to_owned()))
        } else {
            Err("Expected a credential id: 32 lower-case hex digits.".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The public part of a client secret: its id and when it was added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub secret_id: CredentialId,
    pub created_at: NaiveDateTime,
}

/// The public part of a registered key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub kid: CredentialId,
    pub algorithm: KeyAlgorithm,
    pub created_at: NaiveDateTime,
}

/// A service account as administration shows it: never a secret or its
/// digest, and keys by id and algorithm only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub id: i64,
    pub name: ServiceAccountName,
    /// What its tokens may carry.
    pub scopes: Scopes,
    pub is_active: bool,
    pub created_at: NaiveDateTime,
    /// When it last obtained a token (recorded at most once a minute).
    pub last_used_at: Option<NaiveDateTime>,
    /// By creation time, then id.
    pub secrets: Vec<SecretInfo>,
    /// By creation time, then id.
    pub keys: Vec<KeyInfo>,
}

/// A stored client secret: its id and the hex SHA-256 of the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSecret {
    pub secret_id: CredentialId,
    pub digest: String,
}

/// By hand: the digest never reaches a log line.
impl fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSecret")
            .field("secret_id", &self.secret_id)
            .finish_non_exhaustive()
    }
}

/// A stored public key, as the assertion grant verifies with it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: CredentialId,
    pub algorithm: KeyAlgorithm,
    /// SPKI PEM, as [`super::PublicKey::pem`] wrote it.
    pub public_key_pem: String,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// What a grant, and the check of a service token, need to know about an
/// account: found by name (a grant's `client_id`) or by the id of one of
/// its credentials (a token's `cid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountCredentials {
    pub id: i64,
    pub name: ServiceAccountName,
    pub scopes: Scopes,
    pub is_active: bool,
    /// Set on deactivation: tokens issued up to this second inclusive
    /// (seconds since the epoch, as `iat`) are refused for good.
    pub tokens_valid_after: Option<i64>,
    pub secrets: Vec<StoredSecret>,
    pub keys: Vec<StoredKey>,
}

impl ServiceAccountCredentials {
    /// The id of the stored secret `secret` is, if any: its digest is
    /// compared with each stored one in constant time, and every one is
    /// compared, so the time says nothing about which matched.
    pub fn secret_matching(&self, secret: &str) -> Option<&CredentialId> {
        let digest = client_secret_digest(secret);
        let mut matching = None;
        for stored in &self.secrets {
            if bool::from(stored.digest.as_bytes().ct_eq(digest.as_bytes())) {
                matching = Some(&stored.secret_id);
            }
        }
        matching
    }

    /// The registered key with this `kid`, if any.
    pub fn key(&self, kid: &str) -> Option<&StoredKey> {
        self.keys.iter().find(|k| k.kid.as_str() == kid)
    }

    /// Whether `cid` (a token's claim) still names one of the account's
    /// credentials.
    pub fn holds_credential(&self, cid: &str) -> bool {
        self.secrets.iter().any(|s| s.secret_id.as_str() == cid)
            || self.keys.iter().any(|k| k.kid.as_str() == cid)
    }
}

/// How a client secret is stored and compared: lower-case hex SHA-256 of
/// the secret's text. A fast hash is right for 256 random bits (there is
/// nothing to guess), and keeps grants off the argon2 permits.
pub fn client_secret_digest(secret: &str) -> String {
    super::sha256_hex(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_case_letters_digits_and_hyphens() {
        let longest = "a".repeat(64);
        for good in [
            "billing",
            "a",
            "order-service-2",
            "0",
            "-",
            longest.as_str(),
        ] {
            assert!(
                ServiceAccountName::parse(good).is_ok(),
                "{good:?} was refused"
            );
        }
        let too_long = "a".repeat(65);
        for bad in ["Billing", "a_b", "a b", "a.b", "é", " a", too_long.as_str()] {
            assert!(
                ServiceAccountName::parse(bad).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert_eq!(ServiceAccountName::parse(""), Err(BLANK.to_owned()));
        let refusal = ServiceAccountName::parse(&"a".repeat(65))
            .err()
            .unwrap_or_default();
        assert!(refusal.contains("64"), "{refusal}");
    }

    #[test]
    fn credential_ids_are_uuid_simple() {
        let id = CredentialId::generate();
        assert_eq!(CredentialId::parse(id.as_str()), Ok(id.clone()));
        assert_ne!(CredentialId::generate(), id);
        for bad in ["", "abc", &"A".repeat(32), &"g".repeat(32), &"a".repeat(33)] {
            assert!(CredentialId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    fn credentials() -> ServiceAccountCredentials {
        ServiceAccountCredentials {
            id: 1,
            name: ServiceAccountName::parse("billing").unwrap_or_else(|e| panic!("{e}")),
            scopes: Scopes::default(),
            is_active: true,
            tokens_valid_after: None,
            secrets: ["old-secret", "new-secret"]
                .into_iter()
                .map(|secret| StoredSecret {
                    secret_id: CredentialId::generate(),
                    digest: client_secret_digest(secret),
                })
                .collect(),
            keys: Vec::new(),
        }
    }

    #[test]
    fn a_secret_matches_its_own_digest_only() {
        let account = credentials();
        let old = account.secrets[0].secret_id.clone();
        let new = account.secrets[1].secret_id.clone();
        assert_eq!(account.secret_matching("old-secret"), Some(&old));
        assert_eq!(account.secret_matching("new-secret"), Some(&new));
        assert_eq!(account.secret_matching("other"), None);
        assert_eq!(account.secret_matching(""), None);
        assert!(account.holds_credential(old.as_str()));
        assert!(!account.holds_credential(CredentialId::generate().as_str()));
    }

    #[test]
    fn the_digest_is_hex_sha256() {
        assert_eq!(
            client_secret_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn debug_never_shows_a_digest() {
        let account = credentials();
        let shown = format!("{account:?}");
        assert!(!shown.contains(&account.secrets[0].digest), "{shown}");
    }
}
