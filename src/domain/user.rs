use chrono::NaiveDateTime;

/// A user as the API shows it: the public profile, never the password hash;
/// plus what decides whether a token of theirs still counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub username: String,
    pub avatar: Option<String>,
    pub is_active: bool,
    pub is_staff: bool,
    pub is_superuser: bool,
    pub last_login: Option<NaiveDateTime>,
    pub date_joined: NaiveDateTime,
    /// Stamped into every token issued to the user (claim `gen`).
    pub token_generation: i64,
    /// The last revocation of the user's tokens, if any.
    pub tokens_revoked: Option<TokensRevoked>,
}

/// "Every token issued before this moment is refused."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokensRevoked {
    /// Seconds since the Unix epoch.
    pub at: i64,
    pub reason: RevocationReason,
}

/// Why a user's tokens were revoked; decides what a refused token is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReason {
    /// ChangePassword, ResetPassword, `user set-password`.
    PasswordChanged,
    /// LogoutAll, deactivation.
    TokenRevoked,
}

impl RevocationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordChanged => "password_changed",
            Self::TokenRevoked => "token_revoked",
        }
    }

    /// Anything else stored (a newer replica's reason) counts as a revocation.
    pub fn parse(stored: &str) -> Self {
        match stored {
            "password_changed" => Self::PasswordChanged,
            _ => Self::TokenRevoked,
        }
    }
}

impl User {
    /// Why a token of this user's is refused, if it was issued before the
    /// last revocation. Our tokens carry the generation they were issued
    /// under (`generation`), which decides exactly; a token without one (a
    /// Django peer's) is judged by `iat` and refused up to the revocation's
    /// second inclusive.
    pub fn revokes(&self, generation: Option<i64>, iat: i64) -> Option<RevocationReason> {
        let revoked = self.tokens_revoked?;
        let still_valid = match generation {
            Some(generation) => generation >= self.token_generation,
            None => iat > revoked.at,
        };
        (!still_valid).then_some(revoked.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(token_generation: i64, tokens_revoked: Option<TokensRevoked>) -> User {
        User {
            id: 1,
            email: "a@example.com".into(),
            username: "amy".into(),
            avatar: None,
            is_active: true,
            is_staff: false,
            is_superuser: false,
            last_login: None,
            date_joined: NaiveDateTime::default(),
            token_generation,
            tokens_revoked,
        }
    }

    #[test]
    fn a_user_never_revoked_accepts_every_token() {
        let amy = user(0, None);
        assert_eq!(amy.revokes(Some(0), 10), None);
        assert_eq!(amy.revokes(None, 0), None);
    }

    #[test]
    fn the_generation_decides_within_the_revocation_second() {
        let revoked = TokensRevoked {
            at: 100,
            reason: RevocationReason::PasswordChanged,
        };
        let amy = user(3, Some(revoked));
        // Issued in the revocation's second, before it and after it.
        assert_eq!(
            amy.revokes(Some(2), 100),
            Some(RevocationReason::PasswordChanged)
        );
        assert_eq!(amy.revokes(Some(3), 100), None);
        assert_eq!(amy.revokes(Some(4), 100), None);
    }

    #[test]
    fn tokens_without_a_generation_are_judged_by_their_second() {
        let revoked = TokensRevoked {
            at: 100,
            reason: RevocationReason::TokenRevoked,
        };
        let amy = user(1, Some(revoked));
        assert_eq!(amy.revokes(None, 99), Some(RevocationReason::TokenRevoked));
        assert_eq!(amy.revokes(None, 100), Some(RevocationReason::TokenRevoked));
        assert_eq!(amy.revokes(None, 101), None);
    }
}
