//! Why a call is refused, in the auth service's own words.

use std::{collections::HashMap, fmt, time::Duration};

use jsonwebtoken::Algorithm;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `google.rpc.ErrorInfo` domain the auth service uses.
pub const ERROR_DOMAIN: &str = "auth-service";

/// Why a token (or the `authorization` metadata carrying it) was refused.
///
/// [`message`](Self::message) and [`reason`](Self::reason) are the ones
/// the auth service answers for the same token (simplejwt's wording and
/// error code), so a client sees one vocabulary whichever service refused
/// it. `Into<tonic::Status>` gives UNAUTHENTICATED with a
/// `google.rpc.ErrorInfo { reason, domain: "auth-service" }` detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VerifyError {
    /// No `authorization` metadata, or another scheme than `Bearer`.
    NotProvided,
    /// `authorization` is not `Bearer <token>`.
    BadAuthorizationHeader,
    /// Bad signature, unknown or missing `kid`, malformed token or claims,
    /// `nbf`/`iat` in the future, wrong `iss`/`aud`, `alg: none`.
    Invalid,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// A header `alg` this verifier does not expect (an HS algorithm, or
    /// a public-key one not configured).
    WrongAlgorithm,
    /// No `jti` claim.
    NoId,
    /// No `token_type` claim.
    NoType,
    /// `token_type` is not `"access"` (a refresh token, say).
    WrongType,
    /// No usable `user_id` claim.
    NoUserId,
}

impl VerifyError {
    /// The caller-facing message, as the auth service words it.
    pub fn message(self) -> &'static str {
        match self {
            Self::NotProvided => "Authentication credentials were not provided.",
            Self::BadAuthorizationHeader => {
                "Authorization header must contain two space-delimited values"
            }
            Self::Invalid => "Token is invalid",
            Self::Expired => "Token is expired",
            Self::WrongAlgorithm => "Invalid algorithm specified",
            Self::NoId => "Token has no id",
            Self::NoType => "Token has no type",
            Self::WrongType => "Token has wrong type",
            Self::NoUserId => "Token contained no recognizable user identification",
        }
    }

    /// simplejwt's error code: the `google.rpc.ErrorInfo` reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotProvided => "not_authenticated",
            Self::BadAuthorizationHeader => "bad_authorization_header",
            _ => "token_not_valid",
        }
    }

    /// UNAUTHENTICATED with the message and an `ErrorInfo` detail.
    pub fn to_status(self) -> Status {
        Status::with_error_details(
            Code::Unauthenticated,
            self.message(),
            ErrorDetails::with_error_info(self.reason(), ERROR_DOMAIN, HashMap::new()),
        )
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for VerifyError {}

impl From<VerifyError> for Status {
    fn from(err: VerifyError) -> Self {
        err.to_status()
    }
}

/// Why a call with a valid token is refused by a guard that takes service
/// tokens ([`VerifierLayer::require_service`](crate::VerifierLayer::require_service),
/// [`VerifierLayer::allow_service`](crate::VerifierLayer::allow_service)),
/// or by [`AuthenticatedService::require_scopes`](crate::AuthenticatedService::require_scopes).
///
/// `Into<tonic::Status>` gives PERMISSION_DENIED, not UNAUTHENTICATED: the
/// token is good, so a client that would get a new token and retry on
/// UNAUTHENTICATED must not; the caller needs another credential or a
/// grant. The `google.rpc.ErrorInfo` detail (domain `auth-service`) has
/// reason `insufficient_scope` (RFC 6750's error code) with the missing
/// scopes, space-separated, under metadata key `scope`; or
/// `service_token_required`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AccessDenied {
    /// A user's access token where only service tokens are taken.
    ServiceRequired,
    /// A service token without these of the required scopes.
    MissingScopes(Vec<String>),
}

impl AccessDenied {
    /// The caller-facing message (scope names are not secrets).
    pub fn message(&self) -> String {
        match self {
            Self::ServiceRequired => "This call takes a service token, not a user's".to_owned(),
            Self::MissingScopes(missing) => {
                format!("The token lacks the required scope: {}", missing.join(" "))
            }
        }
    }

    /// The `google.rpc.ErrorInfo` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ServiceRequired => "service_token_required",
            Self::MissingScopes(_) => "insufficient_scope",
        }
    }

    /// PERMISSION_DENIED with the message and an `ErrorInfo` detail.
    pub fn to_status(&self) -> Status {
        let metadata = match self {
            Self::ServiceRequired => HashMap::new(),
            Self::MissingScopes(missing) => {
                HashMap::from([("scope".to_owned(), missing.join(" "))])
            }
        };
        Status::with_error_details(
            Code::PermissionDenied,
            self.message(),
            ErrorDetails::with_error_info(self.reason(), ERROR_DOMAIN, metadata),
        )
    }
}

impl fmt::Display for AccessDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for AccessDenied {}

impl From<AccessDenied> for Status {
    fn from(err: AccessDenied) -> Self {
        err.to_status()
    }
}

/// Why a guard refused a call: a bad token, or a good one not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Token(VerifyError),
    Denied(AccessDenied),
}

impl Refusal {
    pub(crate) fn to_status(&self) -> Status {
        match self {
            Self::Token(e) => e.to_status(),
            Self::Denied(e) => e.to_status(),
        }
    }
}

impl From<VerifyError> for Refusal {
    fn from(err: VerifyError) -> Self {
        Self::Token(err)
    }
}

impl From<AccessDenied> for Refusal {
    fn from(err: AccessDenied) -> Self {
        Self::Denied(err)
    }
}

/// Why [`VerifierBuilder::build`](crate::VerifierBuilder::build) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("no JWKS source: call jwks_grpc, jwks_url or jwks_json")]
    NoSource,
    #[error("no expected algorithm configured")]
    NoAlgorithms,
    #[error(
        "{0:?} needs the shared secret; this crate verifies public-key tokens only (EdDSA, ES256, RS256, ...)"
    )]
    SharedSecretAlgorithm(Algorithm),
    #[error("JWKS URL {url:?}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("the JWKS is not valid: {0}")]
    BadJwks(#[source] serde_json::Error),
    #[error("fetching the JWKS at start failed: {0}")]
    Fetch(#[source] FetchError),
    #[error("the JWKS has no signing key for the expected algorithms {0:?}")]
    NoUsableKey(Vec<Algorithm>),
    #[error("Verifier::build must run inside a tokio runtime")]
    NoRuntime,
}

/// Why fetching the JWKS failed (logged; the last good keys stay in use).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("GetJwks failed: {0}")]
    Grpc(Box<Status>),
    #[error("GET failed: {0}")]
    Http(String),
    #[error("GET answered HTTP {0}")]
    HttpStatus(http::StatusCode),
    #[error("the JWKS is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}
