use unicode_normalization::UnicodeNormalization;

use super::{BLANK, too_long};

/// Django's `AbstractUser.username` max_length.
pub const MAX_USERNAME_CHARS: usize = 150;

/// A username as Django's `AbstractUser` accepts it: NFKC-normalised, 1–150
/// letters, digits and `@ . + - _`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(input: &str) -> Result<Self, String> {
        let normalized: String = input.trim().nfkc().collect();
        if normalized.is_empty() {
            return Err(BLANK.into());
        }
        if normalized.chars().count() > MAX_USERNAME_CHARS {
            return Err(too_long(MAX_USERNAME_CHARS, "characters"));
        }
        // Python's `\w` in Django's `^[\w.@+-]+\Z`: letters, digits, marks and `_`.
        let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '@' | '.' | '+' | '-');
        if !normalized.chars().all(allowed) {
            return Err(
                "Enter a valid username. This value may contain only letters, \
                        numbers, and @/./+/-/_ characters."
                    .into(),
            );
        }
        Ok(Self(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness and login are decided on: `Alice` and `alice` are
    /// one user.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_to_nfkc() {
        // U+FB01 (ﬁ ligature) and full-width letters fold to plain ones.
        let name = Username::parse("ﬁｎｅ").map(|u| u.as_str().to_owned());
        assert_eq!(name, Ok("fine".to_owned()));
    }

    #[test]
    fn accepts_django_characters_and_unicode_letters() {
        for good in ["alice", "a.b+c-d_e@f", "José", "用户", "x"] {
            assert!(Username::parse(good).is_ok(), "{good:?} was refused");
        }
    }

    #[test]
    fn rejects_other_characters_and_lengths() {
        let too_long = "a".repeat(151);
        for bad in ["", "   ", "a b", "a/b", "a:b", "emoji😀", too_long.as_str()] {
            assert!(Username::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Username::parse(&"a".repeat(150)).is_ok());
    }

    #[test]
    fn key_ignores_case() {
        let a = Username::parse("Alice").map(|u| u.key());
        let b = Username::parse("aLiCe").map(|u| u.key());
        assert_eq!(a, b);
    }
}
