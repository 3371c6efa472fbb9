use std::fmt;

use unicode_normalization::UnicodeNormalization;

use super::{BLANK, MAX_PASSWORD_BYTES, MAX_USERNAME_CHARS, Username, too_long};

/// What a login presents: a name and a password, both bounded before any
/// work (no name this long exists, no password this long is hashed).
pub struct Credentials {
    pub name: LoginName,
    password: GivenPassword,
}

/// A password presented to be checked against a stored hash (a login's,
/// ChangePassword's current one): not blank, and no longer than any
/// password we hash, so it costs no more than one verification.
pub struct GivenPassword(String);

impl GivenPassword {
    /// # Errors
    /// DRF's message for a blank or over-long field.
    pub fn parse(input: String) -> Result<Self, String> {
        if input.trim().is_empty() {
            return Err(BLANK.to_owned());
        }
        if input.len() > MAX_PASSWORD_BYTES {
            return Err(too_long(MAX_PASSWORD_BYTES, "bytes"));
        }
        Ok(Self(input))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for GivenPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GivenPassword([redacted])")
    }
}

/// The name a login gives, reduced to the key users are looked up by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginName {
    /// The name exactly as the caller gave it, for the audit log.
    given: String,
    key: String,
    /// Whether the name could be anyone's: one that is not a valid username
    /// (NUL, too long once normalised, …) belongs to nobody.
    could_exist: bool,
}

impl Credentials {
    /// The credentials, or the broken rules of each field (`username`,
    /// `password`).
    pub fn parse(
        username: &str,
        password: String,
    ) -> Result<Self, [(&'static str, Vec<String>); 2]> {
        let blank = username.trim().is_empty().then(|| BLANK.to_owned());
        let long_name = (username.chars().count() > MAX_USERNAME_CHARS)
            .then(|| too_long(MAX_USERNAME_CHARS, "characters"));
        match (blank.or(long_name), GivenPassword::parse(password)) {
            (None, Ok(password)) => Ok(Self {
                name: LoginName::new(username),
                password,
            }),
            (username_error, password) => Err([
                ("username", username_error.into_iter().collect()),
                ("password", password.err().into_iter().collect()),
            ]),
        }
    }

    pub fn password(&self) -> &str {
        self.password.expose()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("name", &self.name)
            .field("password", &"[redacted]")
            .finish()
    }
}

impl LoginName {
    fn new(input: &str) -> Self {
        match Username::parse(input) {
            Ok(username) => Self {
                given: input.to_owned(),
                key: username.key(),
                could_exist: true,
            },
            // Still a key, normalised as a username would be: the failed
            // attempt counts against it like any other.
            Err(_) => Self {
                given: input.to_owned(),
                key: input.trim().nfkc().collect::<String>().to_lowercase(),
                could_exist: false,
            },
        }
    }

    /// The name as given (the audit log's `username`).
    pub fn as_given(&self) -> &str {
        &self.given
    }

    /// The case-insensitive form logins and the throttle are keyed on.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether a user by this name can exist, i.e. is worth a lookup.
    pub fn could_exist(&self) -> bool {
        self.could_exist
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(username: &str, password: &str) -> Vec<(&'static str, Vec<String>)> {
        match Credentials::parse(username, password.to_owned()) {
            Ok(_) => Vec::new(),
            Err(fields) => fields.into_iter().filter(|(_, e)| !e.is_empty()).collect(),
        }
    }

    #[test]
    fn blank_and_oversized_fields_are_refused() {
        assert_eq!(
            errors(" ", "\t"),
            [
                ("username", vec![BLANK.to_owned()]),
                ("password", vec![BLANK.to_owned()])
            ]
        );
        let long_name = "a".repeat(MAX_USERNAME_CHARS + 1);
        assert_eq!(errors(&long_name, "pw").len(), 1);
        let long_password = "p".repeat(MAX_PASSWORD_BYTES + 1);
        assert_eq!(errors("amy", &long_password).len(), 1);
        assert!(errors("amy", "pw").is_empty());
    }

    #[test]
    fn names_are_keyed_case_insensitively_and_odd_ones_exist_for_nobody() {
        let key = |name: &str| Credentials::parse(name, "pw".into()).map(|c| c.name);
        let alice = key("Alice").ok();
        assert_eq!(alice.as_ref().map(LoginName::key), Some("alice"));
        assert!(alice.is_some_and(|n| n.could_exist()));
        let odd = key("Al ice").ok();
        assert_eq!(odd.as_ref().map(LoginName::key), Some("al ice"));
        assert!(odd.is_some_and(|n| !n.could_exist()));
    }

    #[test]
    fn debug_hides_the_password() {
        let credentials = Credentials::parse("amy", "hunter2hunter2".into()).ok();
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }
}
