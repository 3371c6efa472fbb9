//! Passwords for new accounts, checked by Django's four default validators
//! (UserAttributeSimilarity, MinimumLength, CommonPassword, NumericPassword)
//! with Django's messages, plus a size cap.

use std::{collections::HashSet, fmt, io::Read, sync::LazyLock};

use super::{BLANK, too_long};

const MIN_CHARS: usize = 8;
const MAX_SIMILARITY: f64 = 0.7;

/// Longer passwords are refused before any hashing, so no request can buy
/// unbounded argon2 work.
pub const MAX_PASSWORD_BYTES: usize = 4096;

/// Django's `common-passwords.txt.gz` (Django 5.2.19, BSD licence), as
/// shipped in its wheel: ~20,000 lower-cased passwords, one per line.
static COMMON_PASSWORDS_GZ: &[u8] = include_bytes!("common-passwords.txt.gz");

static COMMON_PASSWORDS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let mut text = String::new();
    // The file is part of the binary and tested below: it cannot be corrupt.
    let _ = flate2::read::GzDecoder::new(COMMON_PASSWORDS_GZ).read_to_string(&mut text);
    text.lines().map(|line| line.trim().to_owned()).collect()
});

/// What the similarity check compares the password with: Django's
/// `user_attributes` that this service has.
#[derive(Debug, Clone, Copy)]
pub struct UserAttributes<'a> {
    pub username: &'a str,
    pub email: &'a str,
}

/// A password that satisfies the password rules. `Debug` never prints it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Every rule the password breaks, in Django's order, or the password.
    pub fn parse(input: String, user: UserAttributes<'_>) -> Result<Self, Vec<String>> {
        if input.is_empty() {
            return Err(vec![BLANK.into()]);
        }
        if input.len() > MAX_PASSWORD_BYTES {
            return Err(vec![too_long(MAX_PASSWORD_BYTES, "bytes")]);
        }
        let mut errors = Vec::new();
        let attributes = [("username", user.username), ("email address", user.email)];
        if let Some((name, _)) = attributes
            .iter()
            .find(|(_, value)| too_similar(&input, value))
        {
            errors.push(format!("The password is too similar to the {name}."));
        }
        if input.chars().count() < MIN_CHARS {
            errors.push(format!(
                "This password is too short. It must contain at least {MIN_CHARS} characters."
            ));
        }
        if COMMON_PASSWORDS.contains(input.trim().to_lowercase().as_str()) {
            errors.push("This password is too common.".into());
        }
        if input.chars().all(char::is_numeric) {
            errors.push("This password is entirely numeric.".into());
        }
        if errors.is_empty() {
            Ok(Self(input))
        } else {
            Err(errors)
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// Django's UserAttributeSimilarityValidator: the attribute and each of its
/// `\W+`-separated parts, compared with `SequenceMatcher.quick_ratio`.
fn too_similar(password: &str, value: &str) -> bool {
    let password: Vec<char> = password.to_lowercase().chars().collect();
    let value = value.to_lowercase();
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    value
        .split(|c: char| !is_word(c))
        .chain(std::iter::once(value.as_str()))
        .map(|part| part.chars().collect::<Vec<char>>())
        .filter(|part| !exceeds_maximum_length_ratio(&password, part))
        .any(|part| quick_ratio(&password, &part) >= MAX_SIMILARITY)
}

/// Django skips parts so much shorter than the password that they cannot be
/// similar enough, which also bounds the work on long passwords.
fn exceeds_maximum_length_ratio(password: &[char], value: &[char]) -> bool {
    let password_len = password.len() as f64;
    let value_len = value.len() as f64;
    password_len >= 10.0 * value_len && value_len < MAX_SIMILARITY / 2.0 * password_len
}

/// Python's `difflib.SequenceMatcher(a, b).quick_ratio()`: twice the size of
/// the multiset intersection of the characters, over the total length.
fn quick_ratio(a: &[char], b: &[char]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let mut available = std::collections::HashMap::<char, usize>::new();
    for &c in b {
        *available.entry(c).or_default() += 1;
    }
    let matches = a
        .iter()
        .filter(|c| match available.get_mut(c) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        })
        .count();
    2.0 * matches as f64 / (a.len() + b.len()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: UserAttributes<'static> = UserAttributes {
        username: "alice",
        email: "alice.smith@example.com",
    };

    fn errors(password: &str) -> Vec<String> {
        Password::parse(password.to_owned(), ALICE)
            .err()
            .unwrap_or_default()
    }

    #[test]
    fn the_common_list_is_djangos() {
        assert!(
            COMMON_PASSWORDS.len() > 19_000,
            "{}",
            COMMON_PASSWORDS.len()
        );
        assert!(COMMON_PASSWORDS.contains("password"));
        assert!(COMMON_PASSWORDS.contains("123456"));
    }

    #[test]
    fn accepts_a_good_password() {
        assert!(errors("correct horse battery").is_empty());
    }

    #[test]
    fn reports_every_broken_rule_in_djangos_words() {
        assert_eq!(
            errors("1234567"),
            [
                "This password is too short. It must contain at least 8 characters.",
                "This password is too common.",
                "This password is entirely numeric.",
            ]
        );
        assert_eq!(errors("PassWord"), ["This password is too common."]);
        assert_eq!(errors("  password "), ["This password is too common."]);
        assert_eq!(
            errors("93847561029384"),
            ["This password is entirely numeric."]
        );
    }

    #[test]
    fn refuses_passwords_like_the_username_or_email() {
        assert_eq!(
            errors("alice1234"),
            ["The password is too similar to the username."]
        );
        // Python gives quick_ratio("alice.smith", part) = 0.625 for every part: allowed.
        assert!(errors("ALICE.SMITH").is_empty());
        let bob = UserAttributes {
            username: "bob",
            email: "rumpelstiltskin@example.com",
        };
        let err = Password::parse("rumpelstiltskin!".into(), bob)
            .err()
            .unwrap_or_default();
        assert_eq!(err, ["The password is too similar to the email address."]);
    }

    #[test]
    fn quick_ratio_matches_python() {
        // difflib.SequenceMatcher(a="abcd", b="bcde").quick_ratio() == 0.75
        let chars = |s: &str| s.chars().collect::<Vec<_>>();
        assert!((quick_ratio(&chars("abcd"), &chars("bcde")) - 0.75).abs() < 1e-9);
        assert!((quick_ratio(&chars("aab"), &chars("abb")) - 2.0 * 2.0 / 6.0).abs() < 1e-9);
    }

    #[test]
    fn enforces_the_size_cap() {
        assert!(errors(&"x".repeat(MAX_PASSWORD_BYTES)).is_empty());
        assert_eq!(errors(&"x".repeat(MAX_PASSWORD_BYTES + 1)).len(), 1);
    }

    #[test]
    fn debug_hides_the_password() {
        let p = Password::parse("correct horse battery".into(), ALICE).map(|p| format!("{p:?}"));
        assert_eq!(p.as_deref(), Ok("Password([redacted])"));
    }
}
