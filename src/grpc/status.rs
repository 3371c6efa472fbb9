//! The one mapping from [`Error`] to `tonic::Status`: the code, the
//! caller-facing message and the rich details (`google.rpc.BadRequest`,
//! `ErrorInfo`, `RetryInfo`). Internal causes are logged here, never sent.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{AuthFailure, Error};

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(violations) => {
                let message = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                let violations = violations
                    .into_iter()
                    .map(|v| tonic_types::FieldViolation::new(v.field, v.description))
                    .collect::<Vec<_>>();
                Status::with_error_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails::with_bad_request(violations),
                )
            }
            Error::AlreadyExists { .. } => Status::already_exists(err.to_string()),
            Error::Unauthenticated(failure) => unauthenticated(failure),
            Error::PermissionDenied(message) => Status::permission_denied(message),
            // As the verifier crate answers (RFC 6750's error code), so a
            // client handles both alike.
            Error::InsufficientScope(scope) => Status::with_error_details(
                Code::PermissionDenied,
                err.to_string(),
                ErrorDetails::with_error_info(
                    "insufficient_scope",
                    "auth-service",
                    std::collections::HashMap::from([("scope".to_owned(), scope.to_owned())]),
                ),
            ),
            Error::NotFound(message) => Status::not_found(message),
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
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
fn unauthenticated(failure: AuthFailure) -> Status {
    let (message, reason) = failure.describe();
    Status::with_error_details(
        Code::Unauthenticated,
        message,
        ErrorDetails::with_error_info(reason, "auth-service", std::collections::HashMap::new()),
    )
}

#[cfg(test)]
mod tests {
    use sea_orm::DbErr;

    use super::*;
    use crate::persistence::StoreError;

    #[test]
    fn internal_errors_hide_their_cause() {
        let status = Status::from(Error::internal("SELECT * FROM users at /var/lib/auth.db"));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn invalid_argument_carries_field_violations() {
        let status = Status::from(Error::invalid("email", "Enter a valid email address."));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "email: Enter a valid email address.");
        let details = status.get_error_details();
        let violations = details.bad_request().map(|b| b.field_violations.as_slice());
        let [violation] = violations.unwrap_or_default() else {
            panic!("not one violation: {violations:?}");
        };
        assert_eq!(violation.field, "email");
        assert_eq!(violation.description, "Enter a valid email address.");
    }

    #[test]
    fn unauthenticated_carries_simplejwts_code() {
        let status = Status::from(Error::from(AuthFailure::UserInactive));
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "User is inactive");
        let reason = status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone());
        assert_eq!(reason.as_deref(), Some("user_inactive"));
    }

    #[test]
    fn permission_denied_keeps_its_message() {
        let status = Status::from(Error::PermissionDenied("Staff only."));
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(status.message(), "Staff only.");
    }

    #[test]
    fn insufficient_scope_names_the_scope() {
        let status = Status::from(Error::InsufficientScope("auth.admin"));
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(
            status.message(),
            "The token lacks the required scope: auth.admin"
        );
        let details = status.get_error_details();
        let info = details
            .error_info()
            .map(|i| (i.reason.clone(), i.metadata.clone()));
        let (reason, metadata) = info.unwrap_or_default();
        assert_eq!(reason, "insufficient_scope");
        assert_eq!(
            metadata.get("scope").map(String::as_str),
            Some("auth.admin")
        );
    }

    #[test]
    fn not_found_keeps_its_message() {
        let status = Status::from(Error::NotFound("No user with that id."));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "No user with that id.");
    }

    #[test]
    fn failed_precondition_and_already_exists_say_what_to_do() {
        let status = Status::from(Error::FailedPrecondition("Remove one first."));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "Remove one first.");
        let status = Status::from(Error::AlreadyExists {
            what: "service account",
            field: "name",
        });
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(
            status.message(),
            "a service account with that name already exists"
        );
    }

    #[test]
    fn pool_timeouts_are_unavailable() {
        let status = Status::from(Error::from(StoreError::from(DbErr::ConnectionAcquire(
            sea_orm::error::ConnAcquireErr::Timeout,
        ))));
        assert_eq!(status.code(), Code::Unavailable);
    }
}
