use email_address::{EmailAddress, Options};

use super::{BLANK, too_long};

const MAX_CHARS: usize = 255;

/// An email address: syntactically valid, with a dotted domain, at most 255
/// characters, domain part lower-cased (Django's `normalize_email`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(input: &str) -> Result<Self, String> {
        let input = input.trim();
        if input.is_empty() {
            return Err(BLANK.into());
        }
        if input.chars().count() > MAX_CHARS {
            return Err(too_long(MAX_CHARS, "characters"));
        }
        let options = Options::default()
            .with_required_tld()
            .without_domain_literal()
            .without_display_text();
        let address = EmailAddress::parse_with_options(input, options)
            .map_err(|_| "Enter a valid email address.".to_owned())?;
        let normalized = format!(
            "{}@{}",
            address.local_part(),
            address.domain().to_lowercase()
        );
        // Lower-casing can lengthen a few characters; the key column is 255 too.
        if normalized.to_lowercase().chars().count() > MAX_CHARS {
            return Err(too_long(MAX_CHARS, "characters"));
        }
        Ok(Self(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness is decided on: two addresses that differ only in
    /// case belong to one user.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercases_the_domain_only() {
        let email = Email::parse("  John.Doe@Example.COM ");
        assert_eq!(
            email.as_ref().map(Email::as_str),
            Ok("John.Doe@example.com")
        );
        assert_eq!(
            email.map(|e| e.key()),
            Ok("john.doe@example.com".to_owned())
        );
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "",
            "plainaddress",
            "@example.com",
            "a@b",
            "a@[127.0.0.1]",
            "Name <a@example.com>",
            "a b@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn rejects_over_255_characters() {
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(200));
        assert!(long.len() > 255);
        assert!(Email::parse(&long).is_err());
    }
}
