//! Password hashes written by Django (users brought in by `import-django`),
//! checked as Django's hashers check them (`django/contrib/auth/hashers.py`):
//!
//! - `pbkdf2_sha256$<iterations>$<salt>$<base64 of 32 bytes>`: Django's
//!   default, at whatever iteration count the hash was made with;
//! - `argon2$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>`: argon2-cffi's PHC
//!   string behind Django's prefix, any variant, 16- or 32-byte outputs,
//!   and Django 1.10's strings without `v=` (argon2 version 1.0);
//! - `bcrypt_sha256$$2b$<cost>$…`: bcrypt of the hex SHA-256 of the password;
//! - `!…`: an unusable password, which never matches.
//!
//! Nothing else is guessed at: another hasher's string is refused like any
//! unreadable hash. Every check runs on the hashing pool (see the parent
//! module), and a successful login rehashes to argon2id, so these strings
//! disappear as users come back.

use std::num::NonZeroU32;

use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use base64::{Engine, engine::general_purpose::STANDARD};
use sha2::{Digest, Sha256};

/// A PBKDF2 count above this is refused as unreadable rather than run: ten
/// times what Django 6.2 will use, past which one login would hold a hashing
/// permit for many seconds.
const MAX_PBKDF2_ITERATIONS: u32 = 18_000_000;
/// bcrypt costs are powers of two: Django uses 12; 16 already takes seconds.
const MAX_BCRYPT_COST: u32 = 16;
/// 256 MiB, 2.5 times Django's argon2 memory cost: a check of a bigger
/// hash (an attacker trying passwords against it) would cost the hashing
/// pool more than the configured hashes do by too much.
const MAX_ARGON2_MEMORY_KIB: u32 = 256 * 1024;
/// Django uses 2 passes and 8 lanes.
const MAX_ARGON2_PASSES: u32 = 10;
const MAX_ARGON2_LANES: u32 = 16;

/// What kind of stored password an imported Django hash is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pbkdf2Sha256,
    Argon2,
    BcryptSha256,
    /// Django's unusable password (`set_unusable_password`): never matches.
    Unusable,
    /// Another hasher's format, or a garbled string: this service cannot
    /// check it.
    Unknown,
}

impl Kind {
    /// Django's name of the hasher (the part before the first `$`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Pbkdf2Sha256 => "pbkdf2_sha256",
            Self::Argon2 => "argon2",
            Self::BcryptSha256 => "bcrypt_sha256",
            Self::Unusable => "unusable",
            Self::Unknown => "unknown",
        }
    }
}

/// The kind of the Django hash `encoded`, checked as far as can be without
/// the password: a string that would fail to verify is `Unknown`.
pub fn classify(encoded: &str) -> Kind {
    if encoded.starts_with('!') {
        return Kind::Unusable;
    }
    match parse(encoded) {
        Some(Parsed::Pbkdf2 { .. }) => Kind::Pbkdf2Sha256,
        Some(Parsed::Argon2 { .. }) => Kind::Argon2,
        Some(Parsed::BcryptSha256 { .. }) => Kind::BcryptSha256,
        None => Kind::Unknown,
    }
}

/// An unusable password as Django makes one (`!` and 40 random characters):
/// stored for a hash this service cannot check.
pub fn unusable() -> String {
    use rand::{Rng, distr::Alphanumeric};
    let random: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("!{random}")
}

enum Parsed<'a> {
    Pbkdf2 {
        iterations: u32,
        salt: &'a str,
        expected: Vec<u8>,
    },
    Argon2 {
        phc: Box<PasswordHash>,
        algorithm: Algorithm,
        version: Version,
        params: Params,
    },
    BcryptSha256 {
        bcrypt: &'a str,
    },
}

fn parse(encoded: &str) -> Option<Parsed<'_>> {
    let (algorithm, rest) = encoded.split_once('$')?;
    match algorithm {
        "pbkdf2_sha256" => {
            let mut parts = rest.split('$');
            let (iterations, salt, hash) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() {
                return None;
            }
            let iterations: u32 = iterations.parse().ok()?;
            if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS || salt.is_empty() {
                return None;
            }
            let expected = STANDARD.decode(hash).ok()?;
            (expected.len() == 32).then_some(Parsed::Pbkdf2 {
                iterations,
                salt,
                expected,
            })
        }
        "argon2" => {
            // Django stores argon2-cffi's PHC string without its leading `$`.
            let phc = PasswordHash::new(&encoded["argon2".len()..]).ok()?;
            let algorithm = Algorithm::new(phc.algorithm.as_str()).ok()?;
            // Strings without `v=` date from Django 1.10, made with argon2 1.0.
            let version = match phc.version {
                Some(v) => Version::try_from(v).ok()?,
                None => Version::V0x10,
            };
            let params = Params::try_from(&phc).ok()?;
            if params.m_cost() > MAX_ARGON2_MEMORY_KIB
                || params.t_cost() > MAX_ARGON2_PASSES
                || params.p_cost() > MAX_ARGON2_LANES
                || phc.salt.is_none()
                || phc.hash.is_none()
            {
                return None;
            }
            Some(Parsed::Argon2 {
                phc: Box::new(phc),
                algorithm,
                version,
                params,
            })
        }
        "bcrypt_sha256" => {
            // `bcrypt_sha256$` + bcrypt's own `$2b$12$…`.
            let parts: bcrypt::HashParts = rest.parse().ok()?;
            (parts.get_cost() <= MAX_BCRYPT_COST).then_some(Parsed::BcryptSha256 { bcrypt: rest })
        }
        _ => None,
    }
}

/// Whether `password` matches the Django hash `encoded`; `None` if it is not
/// one this module can check (including unusable passwords), so the caller
/// spends the dummy work and refuses.
pub(super) fn verify(password: &[u8], encoded: &str, memory: &mut Vec<Block>) -> Option<bool> {
    if encoded.starts_with('!') {
        return None;
    }
    match parse(encoded)? {
        Parsed::Pbkdf2 {
            iterations,
            salt,
            expected,
        } => {
            let iterations = NonZeroU32::new(iterations)?;
            // Compares in constant time.
            let verified = ring::pbkdf2::verify(
                ring::pbkdf2::PBKDF2_HMAC_SHA256,
                iterations,
                salt.as_bytes(),
                password,
                &expected,
            );
            Some(verified.is_ok())
        }
        Parsed::Argon2 {
            phc,
            algorithm,
            version,
            params,
        } => {
            let PasswordHash { salt, hash, .. } = *phc;
            super::check_argon2(
                password,
                Argon2::new(algorithm, version, params),
                &salt?,
                hash?.as_bytes(),
                memory,
            )
        }
        Parsed::BcryptSha256 { bcrypt } => {
            // Django hashes the lower-case hex digest, 64 bytes: under
            // bcrypt's 72-byte limit whatever the password's length.
            let digest = hex(&Sha256::digest(password));
            bcrypt::verify(digest.as_bytes(), bcrypt).ok()
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The password of every vector below, made by Django 5.2.8's hashers
    /// (argon2-cffi 25.1.0, bcrypt 5.0.0).
    const PASSWORD: &str = "correct horse battery staple";
    const PBKDF2_DEFAULT: &str =
        "pbkdf2_sha256$1000000$I8hpfwOxFPQpboHZmNLTdu$haCqcLYxvLYU/jDbwhoMK0TYdgIY1QApASPZn0giJ9o=";
    const PBKDF2_1000: &str =
        "pbkdf2_sha256$1000$vvPBSaMWWzRp4FxYKXrBPW$FtHD1bVt/FWs2t5D+JYRtL+CtyKloZvmdbHgCQ7ug40=";
    /// Of "pässwörd ✓": Django hashes the UTF-8 bytes.
    const PBKDF2_UNICODE: &str =
        "pbkdf2_sha256$1000$liyaeca8KGHokT7DHnRqp1$djStJ5C9j7qwlh+g5Qgv7tDw4qZA5rh1bpPKXOt/wX4=";
    /// Django's Argon2PasswordHasher as it is: m=100 MiB, t=2, p=8, 32 bytes.
    const ARGON2_DEFAULT: &str = "argon2$argon2id$v=19$m=102400,t=2,p=8$UlZjQlU2Zmt2VE5BVUx4Y0VZVkZNSA$QrRAodIxWocNNJUYhHFrWaJdjkj9mkIC6QcvQYnClME";
    /// A 16-byte output, as argon2-cffi before 21.2 made.
    const ARGON2_16_BYTES: &str =
        "argon2$argon2id$v=19$m=512,t=2,p=2$bFF0cVNtM3NjcDAxalZHcVJDcmFZNA$nJiGzdLbb2x6jgt9udoh9Q";
    /// argon2i, Django's variant before 3.2.
    const ARGON2I: &str = "argon2$argon2i$v=19$m=256,t=2,p=1$STF3V1JOQnBQaUlKcDFzU2x1cUxkSg$BzkDu1ZiZNU2ThqXqmNzeVdL9SI2OPOaC2CBlEabkOk";
    /// Django 1.10's format: no `v=`, argon2 version 1.0 (checked with
    /// Django 5.2's `check_password`).
    const ARGON2I_NO_VERSION: &str =
        "argon2$argon2i$m=256,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$ZsJ0EW6ksF98HUt/rM+OZg";
    const BCRYPT_SHA256: &str =
        "bcrypt_sha256$$2b$12$BxNh/b4l2CadMss7PUUynONQ0sWXEPdPsQYqxlhj7gKF8LqurZyIu";

    fn check(password: &str, encoded: &str) -> Option<bool> {
        verify(password.as_bytes(), encoded, &mut Vec::new())
    }

    #[test]
    fn pbkdf2_sha256_at_any_iteration_count() {
        for encoded in [PBKDF2_DEFAULT, PBKDF2_1000] {
            assert_eq!(classify(encoded), Kind::Pbkdf2Sha256);
            assert_eq!(check(PASSWORD, encoded), Some(true), "{encoded}");
            assert_eq!(check("correct horse battery stapl", encoded), Some(false));
        }
        assert_eq!(check("pässwörd ✓", PBKDF2_UNICODE), Some(true));
        assert_eq!(check("passwörd ✓", PBKDF2_UNICODE), Some(false));
    }

    #[test]
    fn argon2_in_djangos_format() {
        for encoded in [ARGON2_DEFAULT, ARGON2_16_BYTES, ARGON2I, ARGON2I_NO_VERSION] {
            assert_eq!(classify(encoded), Kind::Argon2, "{encoded}");
            assert_eq!(check(PASSWORD, encoded), Some(true), "{encoded}");
            assert_eq!(check("wrong", encoded), Some(false), "{encoded}");
        }
        // The same string without Django's prefix is the parent's business.
        assert_eq!(check(PASSWORD, &ARGON2I["argon2".len()..]), None);
    }

    #[test]
    fn bcrypt_sha256() {
        assert_eq!(classify(BCRYPT_SHA256), Kind::BcryptSha256);
        assert_eq!(check(PASSWORD, BCRYPT_SHA256), Some(true));
        assert_eq!(check("wrong", BCRYPT_SHA256), Some(false));
    }

    #[test]
    fn unusable_and_unknown_never_match() {
        let unusable = unusable();
        assert_eq!(unusable.len(), 41);
        for encoded in [unusable.as_str(), "!", "!pbkdf2_sha256$1000$salt$hash"] {
            assert_eq!(classify(encoded), Kind::Unusable);
            assert_eq!(check(PASSWORD, encoded), None);
        }
        for encoded in [
            "",
            "scrypt$16384$K2k6RIozgnbk9zhbg9ben9$8$5$AAAA",
            "md5$salt$0123456789abcdef0123456789abcdef",
            "bcrypt$$2b$12$BxNh/b4l2CadMss7PUUynONQ0sWXEPdPsQYqxlhj7gKF8LqurZyIu",
            // Zero, absurd and unparsable counts; a short or non-base64 digest.
            "pbkdf2_sha256$0$I8hpfwOxFPQpboHZmNLTdu$haCqcLYxvLYU/jDbwhoMK0TYdgIY1QApASPZn0giJ9o=",
            "pbkdf2_sha256$4000000000$I8hpfwOxFPQpboHZmNLTdu$haCqcLYxvLYU/jDbwhoMK0TYdgIY1QApASPZn0giJ9o=",
            "pbkdf2_sha256$-1$I8hpfwOxFPQpboHZmNLTdu$haCqcLYxvLYU/jDbwhoMK0TYdgIY1QApASPZn0giJ9o=",
            "pbkdf2_sha256$1000$salt$AAAA",
            "pbkdf2_sha256$1000$salt$not base64!",
            "pbkdf2_sha256$1000$$haCqcLYxvLYU/jDbwhoMK0TYdgIY1QApASPZn0giJ9o=",
            "argon2$argon2id$v=19$m=102400,t=2,p=8$UlZjQlU2Zmt2VE5BVUx4Y0VZVkZNSA",
            "argon2$argon2id$v=19$m=4194304,t=2,p=8$UlZjQlU2Zmt2VE5BVUx4Y0VZVkZNSA$QrRAodIxWocNNJUYhHFrWaJdjkj9mkIC6QcvQYnClME",
            "argon2$scrypt$v=19$m=512,t=2,p=2$bFF0cVNtM3NjcDAxalZHcVJDcmFZNA$nJiGzdLbb2x6jgt9udoh9Q",
            "bcrypt_sha256$$2b$31$BxNh/b4l2CadMss7PUUynONQ0sWXEPdPsQYqxlhj7gKF8LqurZyIu",
            "bcrypt_sha256$$2b$12$short",
        ] {
            assert_eq!(classify(encoded), Kind::Unknown, "{encoded}");
            assert_eq!(check(PASSWORD, encoded), None, "{encoded}");
        }
    }
}
