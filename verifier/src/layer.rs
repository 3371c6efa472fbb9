//! The asynchronous `tower::Layer`.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::header::AUTHORIZATION;
use tonic::server::NamedService;
use tower::{Layer, Service};

use crate::{
    Verifier, bearer,
    callers::{self, Callers},
};

/// Wraps a service (all of a tonic server's with
/// `Server::builder().layer(..)`, or one) so that each call needs
/// `authorization: Bearer <access token>`: it refuses with UNAUTHENTICATED
/// (the auth service's message and `ErrorInfo` reason) or calls the inner
/// service with an [`AuthenticatedUser`](crate::AuthenticatedUser) (and an
/// [`Authenticated::User`](crate::Authenticated)) in the request's
/// extensions. A token with an unknown `kid` waits for a (rate-limited)
/// JWKS fetch, so a key rotation refuses nothing.
///
/// [`require_service`](Self::require_service) and
/// [`allow_service`](Self::allow_service) let service tokens in instead or
/// as well.
#[derive(Debug, Clone)]
pub struct VerifierLayer {
    verifier: Verifier,
    callers: Callers,
}

impl VerifierLayer {
    pub(crate) fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            callers: Callers::Users,
        }
    }

    /// Service tokens only, each carrying every one of `scopes` (none: any
    /// service token). The request gets an
    /// [`AuthenticatedService`](crate::AuthenticatedService) and an
    /// [`Authenticated::Service`](crate::Authenticated). A missing scope,
    /// or a user's access token, is PERMISSION_DENIED
    /// ([`AccessDenied`](crate::AccessDenied)); a bad token UNAUTHENTICATED.
    #[must_use]
    pub fn require_service<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        self.callers = Callers::Services(Callers::scopes(scopes));
        self
    }

    /// Users' access tokens as without it, or service tokens carrying every
    /// one of `scopes` (a missing scope is PERMISSION_DENIED). The request
    /// gets an [`Authenticated`](crate::Authenticated) and the user or
    /// service inside it: a handler that reads `AuthenticatedUser` still
    /// sees only users.
    #[must_use]
    pub fn allow_service<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        self.callers = Callers::UsersAndServices(Callers::scopes(scopes));
        self
    }
}

impl<S> Layer<S> for VerifierLayer {
    type Service = RequireAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAuth {
            inner,
            verifier: self.verifier.clone(),
            callers: self.callers.clone(),
        }
    }
}

/// The service [`VerifierLayer`] makes. It keeps the inner service's gRPC
/// name, so `Server::builder().add_service(verifier.layer().layer(svc))`
/// guards one service and leaves the others (health, reflection) open.
#[derive(Debug, Clone)]
pub struct RequireAuth<S> {
    inner: S,
    verifier: Verifier,
    callers: Callers,
}

impl<S: NamedService> NamedService for RequireAuth<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RequireAuth<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The clone that was not made ready goes back in `self`.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let callers = self.callers.clone();
        Box::pin(async move {
            let header = request
                .headers()
                .get(AUTHORIZATION)
                .map(|value| value.to_str().map_err(drop));
            let token = match bearer::token(header) {
                Ok(token) => token.to_owned(),
                Err(e) => return Ok(e.to_status().into_http()),
            };
            match callers.admit(&verifier, &token).await {
                Ok(caller) => {
                    callers::insert(request.extensions_mut(), caller);
                    inner.call(request).await
                }
                Err(refusal) => Ok(refusal.to_status().into_http()),
            }
        })
    }
}
