//! The one error type of the service. The application returns it; the
//! transport turns it into a status in one place (`grpc::status`).
//! Internal causes (SQL, paths, panics) are kept for the log and never
//! reach a caller.

use std::time::Duration;

use sea_orm::DbErr;

use crate::{domain::RevocationReason, persistence::StoreError, tokens::TokenError};

/// The message simplejwt answers for every failed login.
pub const INVALID_CREDENTIALS: &str = "No active account found with the given credentials";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed input: one entry per broken rule of each offending field.
    #[error("invalid argument")]
    InvalidArgument(Vec<FieldViolation>),

    /// A unique field (a user's email or username, a service account's
    /// name) is taken; `what` names the kind of thing.
    #[error("a {what} with that {field} already exists")]
    AlreadyExists {
        what: &'static str,
        field: &'static str,
    },

    /// The caller could not be authenticated.
    #[error("{}", .0.message())]
    Unauthenticated(AuthFailure),

    /// An authenticated caller this deployment does not allow the call
    /// (ListUsers for non-staff with `AUTH_LIST_USERS=staff`).
    #[error("{0}")]
    PermissionDenied(&'static str),

    /// A valid service token without the scope the call needs (named:
    /// scope names are not secrets).
    #[error("The token lacks the required scope: {0}")]
    InsufficientScope(&'static str),

    /// The call cannot be made in the current state (an account holding as
    /// many credentials as it may); the message says what to do first.
    #[error("{0}")]
    FailedPrecondition(&'static str),

    /// What the call names does not exist (AdminService: no user with that id).
    #[error("{0}")]
    NotFound(&'static str),

    /// Too much work queued, or too many failed logins; try again after
    /// `retry_after`.
    #[error("{message}")]
    Overloaded {
        message: &'static str,
        retry_after: Duration,
    },

    /// A concurrent transaction won a lock: the call can simply be retried.
    #[error("concurrent update conflict")]
    Conflict(#[source] DbErr),

    /// The database cannot be reached; the cause is logged, not returned.
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),

    /// A bug or an unexpected failure; the cause is logged, not returned.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// One broken rule of one request field, in words a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// Why a caller is not authenticated, with simplejwt's message and error
/// code (its JSON `code`, our `google.rpc.ErrorInfo` reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Unknown user, wrong password or inactive user: one answer for all,
    /// so it does not reveal which usernames exist.
    InvalidCredentials,
    /// A token that failed verification.
    Token(TokenError),
    /// A refresh token whose user is gone or inactive.
    NoActiveAccountForToken,
    /// An access token whose user no longer exists.
    UserNotFound,
    /// An access token whose user is inactive.
    UserInactive,
    /// No `authorization: Bearer …` metadata.
    NotProvided,
    /// An `authorization` value that is not `Bearer <token>`.
    BadAuthorizationHeader,
    /// A token issued before its user's password was changed.
    PasswordChanged,
    /// A token issued before its user's tokens were revoked (LogoutAll,
    /// deactivation).
    TokenRevoked,
    /// ChangePassword with a wrong current password.
    WrongCurrentPassword,
    /// ResetPassword with a token that is wrong, used or expired (or whose
    /// user is gone or inactive): one answer for all, so it reveals nothing.
    ResetTokenInvalid,
    /// A service token whose credential (`cid`) no longer exists, or
    /// whose account was deleted.
    ServiceCredentialRevoked,
    /// A service token whose account is inactive.
    ServiceAccountInactive,
    /// A service token issued before its account was last deactivated.
    ServiceTokenRevoked,
    /// A service token carrying a scope its account no longer has.
    ServiceScopeRevoked,
    /// ObtainServiceToken with an unknown, inactive or deleted client, a
    /// wrong or removed secret or key, a bad or replayed assertion: one
    /// answer for all (RFC 6749 §5.2 `invalid_client`), so it reveals
    /// nothing about which accounts exist.
    InvalidClient,
}

impl AuthFailure {
    /// The caller-facing message and simplejwt's code for it.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Self::InvalidCredentials => (INVALID_CREDENTIALS, "no_active_account"),
            Self::Token(e) => (e.message(), "token_not_valid"),
            Self::NoActiveAccountForToken => (
                "No active account found for the given token.",
                "no_active_account",
            ),
            Self::UserNotFound => ("User not found", "user_not_found"),
            Self::UserInactive => ("User is inactive", "user_inactive"),
            Self::NotProvided => (
                "Authentication credentials were not provided.",
                "not_authenticated",
            ),
            Self::BadAuthorizationHeader => (
                "Authorization header must contain two space-delimited values",
                "bad_authorization_header",
            ),
            Self::PasswordChanged => ("The user's password has been changed.", "password_changed"),
            Self::TokenRevoked => (
                "The user's tokens have been revoked; log in again.",
                "token_revoked",
            ),
            // Django's PasswordChangeForm.
            Self::WrongCurrentPassword => (
                "Your old password was entered incorrectly. Please enter it again.",
                "password_incorrect",
            ),
            Self::ResetTokenInvalid => (
                "The password reset token is invalid or has expired.",
                "reset_token_invalid",
            ),
            Self::ServiceCredentialRevoked => (
                "The credential that obtained this token has been removed.",
                "credential_revoked",
            ),
            Self::ServiceAccountInactive => {
                ("Service account is inactive", "service_account_inactive")
            }
            Self::ServiceTokenRevoked => (
                "The service account's tokens have been revoked; obtain a new one.",
                "token_revoked",
            ),
            Self::ServiceScopeRevoked => (
                "The token carries a scope its service account no longer has; obtain a new one.",
                "scope_revoked",
            ),
            Self::InvalidClient => ("Client authentication failed.", "invalid_client"),
        }
    }

    pub fn message(self) -> &'static str {
        self.describe().0
    }

    pub fn reason(self) -> &'static str {
        self.describe().1
    }
}

impl Error {
    /// One violation of one field.
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation {
            field: field.to_owned(),
            description: description.into(),
        }])
    }

    /// Every violation of several fields at once, so one answer lists every
    /// bad field (and every broken rule of a field).
    pub fn invalid_fields<'a>(fields: impl IntoIterator<Item = (&'a str, Vec<String>)>) -> Self {
        Self::InvalidArgument(
            fields
                .into_iter()
                .flat_map(|(field, descriptions)| {
                    descriptions
                        .into_iter()
                        .map(move |description| FieldViolation {
                            field: field.to_owned(),
                            description,
                        })
                })
                .collect(),
        )
    }

    /// A bug or an unexpected state, described for the log only.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(anyhow::anyhow!("{cause}"))
    }

    /// The password-hashing queue is full, or a call waited its whole
    /// timeout for a turn.
    pub fn hash_queue_full() -> Self {
        Self::Overloaded {
            message: "Too many password checks in progress; retry shortly",
            retry_after: Duration::from_secs(1),
        }
    }
}

impl From<RevocationReason> for AuthFailure {
    fn from(reason: RevocationReason) -> Self {
        match reason {
            RevocationReason::PasswordChanged => Self::PasswordChanged,
            RevocationReason::TokenRevoked => Self::TokenRevoked,
        }
    }
}

impl From<AuthFailure> for Error {
    fn from(failure: AuthFailure) -> Self {
        Self::Unauthenticated(failure)
    }
}

impl From<TokenError> for Error {
    fn from(err: TokenError) -> Self {
        Self::Unauthenticated(AuthFailure::Token(err))
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(cause) => Self::Unavailable(cause),
            StoreError::Conflict(cause) => Self::Conflict(cause),
            StoreError::Duplicate { what, field } => Self::AlreadyExists { what, field },
            StoreError::AlreadyBlacklisted => TokenError::Blacklisted.into(),
            StoreError::ExpiryOutOfRange => TokenError::Invalid.into(),
            StoreError::Other(cause) => Self::Internal(cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_of_several_fields_keep_their_order() {
        let Error::InvalidArgument(violations) = Error::invalid_fields([
            ("email", vec!["a".to_owned()]),
            ("username", vec![]),
            ("password", vec!["b".to_owned(), "c".to_owned()]),
        ]) else {
            panic!("not INVALID_ARGUMENT");
        };
        let fields: Vec<(&str, &str)> = violations
            .iter()
            .map(|v| (v.field.as_str(), v.description.as_str()))
            .collect();
        assert_eq!(
            fields,
            [("email", "a"), ("password", "b"), ("password", "c")]
        );
    }

    #[test]
    fn storage_errors_become_api_errors() {
        assert!(matches!(
            Error::from(StoreError::Duplicate {
                what: "user",
                field: "email"
            }),
            Error::AlreadyExists {
                what: "user",
                field: "email"
            }
        ));
        assert!(matches!(
            Error::from(StoreError::AlreadyBlacklisted),
            Error::Unauthenticated(AuthFailure::Token(TokenError::Blacklisted))
        ));
    }
}
