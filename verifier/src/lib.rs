//! Local verification of auth-service access tokens (and service tokens)
//! for tonic services.
//!
//! A [`Verifier`] fetches the auth service's public keys (its JWKS, from
//! `AuthService/GetJwks` or `GET /.well-known/jwks.json`), caches them by
//! `kid`, keeps them fresh in the background, and checks access tokens
//! without a call to the auth service: signature, `alg`, `exp`/`nbf`,
//! `token_type == "access"`, and `iss`/`aud` when configured. Refusals carry
//! the same UNAUTHENTICATED messages and `google.rpc.ErrorInfo` reasons as
//! the auth service's own ([`VerifyError`]).
//!
//! ```no_run
//! # async fn example(channel: tonic::transport::Channel) -> Result<(), Box<dyn std::error::Error>> {
//! use auth_verifier::{Algorithm, AuthenticatedUser, Verifier};
//!
//! let verifier = Verifier::builder()
//!     .jwks_grpc(channel) // or .jwks_url("http://auth:8080/.well-known/jwks.json")
//!     .algorithms([Algorithm::EdDSA])
//!     .build()
//!     .await?;
//! // tonic::transport::Server::builder().layer(verifier.layer()) …, then in a handler:
//! # let request = tonic::Request::new(());
//! let user_id = request
//!     .extensions()
//!     .get::<AuthenticatedUser>()
//!     .map(|user| user.user_id);
//! # Ok(()) }
//! ```
//!
//! # Service tokens
//!
//! The auth service also issues tokens to service accounts (`token_type`
//! `"service"`, `client_id`, `scope`). By default the guards take users'
//! access tokens only and refuse those, as the auth service's own user
//! calls do. To take them, say so on the guard:
//!
//! ```no_run
//! # fn example(verifier: auth_verifier::Verifier) {
//! // Services carrying both scopes; a user's token is PERMISSION_DENIED.
//! let services_only = verifier.layer().require_service(["orders.read", "orders.write"]);
//! // Users, or services carrying `orders.read`.
//! let either = verifier.layer().allow_service(["orders.read"]);
//! # }
//! ```
//!
//! A handler then reads the caller kind it takes: [`AuthenticatedUser`],
//! [`AuthenticatedService`], or [`Authenticated`] (both, matched
//! exhaustively). A missing scope is PERMISSION_DENIED with a
//! `google.rpc.ErrorInfo` naming it ([`AccessDenied`]);
//! [`AuthenticatedService::require_scopes`] checks more scopes per method.
//!
//! # Keys
//!
//! Only JWKS keys with a `kid`, for signatures (`use` is `sig` or absent),
//! and whose `alg` is one of the expected algorithms are kept; a token
//! without `kid`, or whose header `alg` is not expected (`none`, any HS
//! algorithm, …) is refused before any key lookup. The keys are fetched
//! when the verifier is built, again in the background at half the
//! `Cache-Control` max-age (HTTP) or every
//! [`refresh_interval`](VerifierBuilder::refresh_interval) (gRPC), and when
//! a token names an unknown `kid`, at most once per
//! [`min_refetch_interval`](VerifierBuilder::min_refetch_interval). A
//! failed fetch keeps the last good keys (and logs a warning), so a brief
//! auth-service outage does not stop verification.
//!
//! # The trade-off
//!
//! Local verification does not see a logout or a deactivation: an access
//! token stays valid here until its `exp`, even after its refresh token is
//! blacklisted or its user deactivated. Use short access-token lifetimes
//! with it (minutes), or call the auth service's `VerifyToken` (which checks
//! the blacklist and the user) for sensitive operations.

mod bearer;
mod callers;
mod claims;
mod error;
mod interceptor;
mod keys;
mod layer;
mod source;
mod verifier;

pub use claims::{Authenticated, AuthenticatedService, AuthenticatedUser, Claims, ServiceClaims};
pub use error::{AccessDenied, BuildError, ERROR_DOMAIN, FetchError, VerifyError};
pub use interceptor::VerifierInterceptor;
pub use jsonwebtoken::Algorithm;
pub use layer::{RequireAuth, VerifierLayer};
pub use verifier::{DEFAULT_ALGORITHMS, Verifier, VerifierBuilder};

/// The auth service's generated gRPC client and messages (`auth.v1`), as
/// used for `GetJwks`; also usable to call `VerifyToken`.
pub mod pb {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("auth.v1");
}
