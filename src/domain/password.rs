use std::fmt;

const MIN_CHARS: usize = 8;

/// Longer passwords are refused before any hashing, so no request can buy
/// unbounded argon2 work.
pub const MAX_PASSWORD_BYTES: usize = 4096;

/// A password that satisfies the password rules. `Debug` never prints it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn parse(input: String) -> Result<Self, String> {
        if input.is_empty() {
            return Err("This field may not be blank.".into());
        }
        if input.len() > MAX_PASSWORD_BYTES {
            return Err(format!(
                "Ensure this field has no more than {MAX_PASSWORD_BYTES} bytes."
            ));
        }
        if input.chars().count() < MIN_CHARS {
            return Err(format!(
                "This password is too short. It must contain at least {MIN_CHARS} characters."
            ));
        }
        Ok(Self(input))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforces_length_bounds() {
        assert!(Password::parse("short".into()).is_err());
        assert!(Password::parse(String::new()).is_err());
        assert!(Password::parse("long enough".into()).is_ok());
        assert!(Password::parse("x".repeat(MAX_PASSWORD_BYTES)).is_ok());
        assert!(Password::parse("x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }

    #[test]
    fn counts_characters_not_bytes_for_the_minimum() {
        // 7 characters, 21 bytes.
        assert!(Password::parse("ééééééé".replace('é', "€")).is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let p = Password::parse("correct horse".into()).map(|p| format!("{p:?}"));
        assert_eq!(p.as_deref(), Ok("Password([redacted])"));
    }
}
