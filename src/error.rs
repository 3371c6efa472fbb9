//! The one error type of the service and its one mapping to `tonic::Status`.
//!
//! Handlers return `Result<_, Error>`; `From<Error> for Status` decides the
//! code and the caller-facing message. Internal causes (SQL, paths, panics)
//! are logged here and never sent to the caller.

use std::time::Duration;

use sea_orm::{DbErr, RuntimeErr, SqlErr, sqlx};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::tokens::TokenError;

/// The message simplejwt answers for every failed login.
pub const INVALID_CREDENTIALS: &str = "No active account found with the given credentials";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed input: one entry per offending field.
    #[error("invalid argument")]
    InvalidArgument(Vec<FieldViolation>),

    /// A unique field (email, username) is taken.
    #[error("a user with that {field} already exists")]
    AlreadyExists { field: &'static str },

    /// Unknown user, wrong password or inactive user: one answer for all, so
    /// the answer does not reveal which usernames exist.
    #[error("{INVALID_CREDENTIALS}")]
    InvalidCredentials,

    /// A token that failed verification.
    #[error(transparent)]
    Token(#[from] TokenError),

    /// Missing or malformed credentials metadata, or a token whose user is
    /// gone or inactive.
    #[error("{message}")]
    Unauthenticated {
        message: &'static str,
        reason: &'static str,
    },

    /// An authenticated caller this deployment does not allow the call
    /// (ListUsers for non-staff with `AUTH_LIST_USERS=staff`).
    #[error("{0}")]
    PermissionDenied(&'static str),

    /// Too much work queued (password hashing); try again after `retry_after`.
    #[error("{message}")]
    Overloaded {
        message: &'static str,
        retry_after: Duration,
    },

    /// A concurrent transaction won a lock (deadlock, serialization failure,
    /// SQLite busy past its timeout): the call can simply be retried.
    #[error("concurrent update conflict")]
    Conflict(#[source] DbErr),

    /// The database cannot be reached; the cause is logged, not returned.
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),

    /// A bug or an unexpected failure; the cause is logged, not returned.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// The token's user no longer exists.
    pub fn user_not_found() -> Self {
        Self::Unauthenticated {
            message: "User not found",
            reason: "user_not_found",
        }
    }

    /// The password-hashing queue is full, or a call waited its whole
    /// timeout for a turn.
    pub fn hash_queue_full() -> Self {
        Self::Overloaded {
            message: "Too many password checks in progress; retry shortly",
            retry_after: Duration::from_secs(1),
        }
    }

    pub fn user_inactive() -> Self {
        Self::Unauthenticated {
            message: "User is inactive",
            reason: "user_inactive",
        }
    }
}

impl From<DbErr> for Error {
    fn from(err: DbErr) -> Self {
        if is_connection_failure(&err) {
            Error::Unavailable(err)
        } else if is_lock_conflict(&err) {
            Error::Conflict(err)
        } else {
            Error::Internal(anyhow::Error::new(err))
        }
    }
}

/// Whether the database could not be reached at all, as opposed to a query
/// that reached it and failed.
fn is_connection_failure(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => matches!(
            **e,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_)
        ),
        _ => false,
    }
}

/// Deadlock or serialization failure (SQLSTATE 40001 on MySQL and
/// PostgreSQL, 40P01 on PostgreSQL), or SQLite still busy after its timeout.
fn is_lock_conflict(err: &DbErr) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err
    else {
        return false;
    };
    let sqlx::Error::Database(db_err) = &**e else {
        return false;
    };
    // SQLite reports its primary result code: 5 BUSY, 6 LOCKED, 517 BUSY_SNAPSHOT.
    matches!(
        db_err.code().as_deref(),
        Some("40001" | "40P01" | "5" | "6" | "517")
    )
}

/// The unique-index violation behind `err`, if that is what it is: its
/// database message, which names the index (and so the field).
pub(crate) fn unique_violation(err: &DbErr) -> Option<String> {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(message)) => Some(message),
        _ => None,
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(violations) => {
                let message = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                Status::with_error_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails::with_bad_request(violations),
                )
            }
            Error::AlreadyExists { .. } => Status::already_exists(err.to_string()),
            Error::InvalidCredentials => unauthenticated(INVALID_CREDENTIALS, "no_active_account"),
            Error::Token(e) => unauthenticated(e.message(), "token_not_valid"),
            Error::Unauthenticated { message, reason } => unauthenticated(message, reason),
            Error::PermissionDenied(message) => Status::permission_denied(message),
            Error::Overloaded {
                message,
                retry_after,
            } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            Error::Conflict(cause) => {
                tracing::warn!(error = %cause, "transaction conflict");
                Status::aborted("concurrent update conflict, retry the call")
            }
            Error::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                Status::unavailable("database unavailable, try again later")
            }
            Error::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// UNAUTHENTICATED with simplejwt's error code as `google.rpc.ErrorInfo`
/// reason, so clients can branch on it as they did on the JSON `code`.
fn unauthenticated(message: &str, reason: &str) -> Status {
    Status::with_error_details(
        Code::Unauthenticated,
        message,
        ErrorDetails::with_error_info(reason, "auth-service", std::collections::HashMap::new()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let status = Status::from(Error::Internal(anyhow::anyhow!(
            "SELECT * FROM users at /var/lib/auth.db"
        )));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn invalid_argument_carries_field_violations() {
        let status = Status::from(Error::invalid("email", "Enter a valid email address."));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "email: Enter a valid email address.");
        let details = status.get_error_details();
        let violations: Vec<(String, String)> = details
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| (v.field.clone(), v.description.clone()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            violations,
            [(
                "email".to_owned(),
                "Enter a valid email address.".to_owned()
            )]
        );
    }

    #[test]
    fn permission_denied_keeps_its_message() {
        let status = Status::from(Error::PermissionDenied("Staff only."));
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(status.message(), "Staff only.");
    }

    #[test]
    fn pool_timeouts_are_unavailable() {
        let status = Status::from(Error::from(DbErr::ConnectionAcquire(
            sea_orm::error::ConnAcquireErr::Timeout,
        )));
        assert_eq!(status.code(), Code::Unavailable);
    }
}
