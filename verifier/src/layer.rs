//! The asynchronous `tower::Layer`.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::header::AUTHORIZATION;
use tonic::server::NamedService;
use tower::{Layer, Service};

use crate::{Verifier, bearer};

/// Wraps a service (all of a tonic server's with
/// `Server::builder().layer(..)`, or one) so that each call needs
/// `authorization: Bearer <access token>`: it refuses with UNAUTHENTICATED
/// (the auth service's message and `ErrorInfo` reason) or calls the inner
/// service with an [`AuthenticatedUser`](crate::AuthenticatedUser) in the
/// request's extensions. A token with an unknown `kid` waits for a
/// (rate-limited) JWKS fetch, so a key rotation refuses nothing.
#[derive(Debug, Clone)]
pub struct VerifierLayer {
    verifier: Verifier,
}

impl VerifierLayer {
    pub(crate) fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }
}

impl<S> Layer<S> for VerifierLayer {
    type Service = RequireAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAuth {
            inner,
            verifier: self.verifier.clone(),
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
        Box::pin(async move {
            let header = request
                .headers()
                .get(AUTHORIZATION)
                .map(|value| value.to_str().map_err(drop));
            let token = match bearer::token(header) {
                Ok(token) => token.to_owned(),
                Err(e) => return Ok(e.to_status().into_http()),
            };
            match verifier.verify(&token).await {
                Ok(user) => {
                    request.extensions_mut().insert(user);
                    inner.call(request).await
                }
                Err(e) => Ok(e.to_status().into_http()),
            }
        })
    }
}
