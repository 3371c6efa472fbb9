//! OAuth scopes (RFC 6749 §3.3): what a service account may be granted,
//! and what its tokens carry in `scope`.

use std::{collections::BTreeSet, fmt};

/// The most characters of one scope.
pub const MAX_SCOPE_CHARS: usize = 64;
/// The most scopes one account holds.
pub const MAX_SCOPES: usize = 32;
/// Scopes starting with this are this service's own (`auth.admin`,
/// `auth.admin.read`): only a superuser or the operator grants them.
pub const RESERVED_SCOPE_PREFIX: &str = "auth.";
/// Every AdminService call.
pub const ADMIN_SCOPE: &str = "auth.admin";
/// The read-only AdminService calls.
pub const ADMIN_READ_SCOPE: &str = "auth.admin.read";

/// One scope: 1–64 of `A-Z a-z 0-9 . _ : / -`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope(String);

impl Scope {
    /// # Errors
    /// The broken rule, naming the scope.
    pub fn parse(input: &str) -> Result<Self, String> {
        if input.is_empty() {
            return Err("A scope may not be empty.".into());
        }
        if input.chars().count() > MAX_SCOPE_CHARS {
            return Err(format!(
                "Scope {:?} is longer than {MAX_SCOPE_CHARS} characters.",
                truncated(input)
            ));
        }
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-');
        if !input.chars().all(allowed) {
            return Err(format!(
                "Scope {input:?} may contain only letters, digits and . _ : / - characters."
            ));
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether only a superuser or the operator may grant it.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(RESERVED_SCOPE_PREFIX)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A set of scopes: at most [`MAX_SCOPES`], sorted, without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    /// The scopes of a request, in any order, duplicates allowed.
    ///
    /// # Errors
    /// One description per broken rule: each bad scope, and too many.
    pub fn parse<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Result<Self, Vec<String>> {
        let mut set = BTreeSet::new();
        let mut errors = Vec::new();
        for scope in scopes {
            match Scope::parse(scope) {
                Ok(scope) => {
                    set.insert(scope);
                }
                Err(e) => errors.push(e),
            }
        }
        if set.len() > MAX_SCOPES {
            errors.push(format!(
                "An account may hold at most {MAX_SCOPES} scopes ({} given).",
                set.len()
            ));
        }
        if errors.is_empty() {
            Ok(Self(set))
        } else {
            Err(errors)
        }
    }

    /// Scopes as stored and as a token's `scope` claim: space-separated
    /// (RFC 6749 §3.3); empty for none.
    ///
    /// # Errors
    /// As [`Self::parse`].
    pub fn parse_space_separated(text: &str) -> Result<Self, Vec<String>> {
        Self::parse(text.split(' ').filter(|s| !s.is_empty()))
    }

    /// Space-separated, sorted: one text per set.
    pub fn to_space_separated(&self) -> String {
        let mut text = String::new();
        for scope in &self.0 {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(scope.as_str());
        }
        text
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s.as_str() == scope)
    }

    /// Whether every scope of `self` is in `allowed`.
    pub fn is_subset(&self, allowed: &Scopes) -> bool {
        self.0.is_subset(&allowed.0)
    }

    /// Whether any scope is this service's own (see [`Scope::is_reserved`]).
    pub fn any_reserved(&self) -> bool {
        self.0.iter().any(Scope::is_reserved)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_space_separated())
    }
}

/// A too-long input, shortened for a message.
fn truncated(input: &str) -> String {
    let mut short: String = input.chars().take(MAX_SCOPE_CHARS).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_characters() {
        for good in [
            "read",
            "a",
            "orders:write",
            "api/v1.read_all-x",
            &"s".repeat(64),
        ] {
            assert!(Scope::parse(good).is_ok(), "{good:?} was refused");
        }
    }

    #[test]
    fn refuses_other_characters_and_lengths_naming_the_scope() {
        for bad in ["", "a b", "é", "a,b", "a*", "\"x\"", &"s".repeat(65)] {
            assert!(Scope::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let message = Scope::parse("bad scope").err().unwrap_or_default();
        assert!(message.contains("\"bad scope\""), "{message}");
    }

    #[test]
    fn sets_are_sorted_and_deduplicated() {
        let scopes = Scopes::parse(["b", "a", "b", "c:d"]).unwrap_or_default();
        assert_eq!(scopes.to_space_separated(), "a b c:d");
        assert_eq!(scopes.len(), 3);
        let again = Scopes::parse_space_separated("c:d a b").unwrap_or_default();
        assert_eq!(again, scopes);
        assert!(Scopes::parse_space_separated("").is_ok_and(|s| s.is_empty()));
    }

    #[test]
    fn every_bad_scope_and_too_many_are_reported() {
        let errors = Scopes::parse(["ok", "no good", "bad!"])
            .err()
            .unwrap_or_default();
        assert_eq!(errors.len(), 2, "{errors:?}");
        let many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
        let errors = Scopes::parse(many.iter().map(String::as_str))
            .err()
            .unwrap_or_default();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("at most 32"), "{errors:?}");
        let exactly: Vec<String> = (0..32).map(|i| format!("s{i}")).collect();
        assert!(Scopes::parse(exactly.iter().map(String::as_str)).is_ok());
    }

    #[test]
    fn reserved_scopes_and_subsets() {
        let admin = Scopes::parse(["auth.admin", "orders"]).unwrap_or_default();
        assert!(admin.any_reserved());
        assert!(admin.contains(ADMIN_SCOPE));
        assert!(
            !Scopes::parse(["authx", "auth"])
                .unwrap_or_default()
                .any_reserved()
        );
        let orders = Scopes::parse(["orders"]).unwrap_or_default();
        assert!(orders.is_subset(&admin));
        assert!(!admin.is_subset(&orders));
        assert!(Scopes::default().is_subset(&orders));
        assert!(Scope::parse(ADMIN_READ_SCOPE).is_ok_and(|s| s.is_reserved()));
    }
}
