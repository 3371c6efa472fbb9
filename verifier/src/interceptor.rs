//! The synchronous tonic interceptor.

use tonic::{Request, Status, service::Interceptor};

use crate::{Verifier, bearer};

/// Checks `authorization: Bearer <access token>` with the cached keys and
/// puts an [`AuthenticatedUser`](crate::AuthenticatedUser) into the
/// request's extensions; refuses with UNAUTHENTICATED otherwise.
///
/// Interceptors are synchronous, so this one cannot wait for a fetch: a
/// token with a `kid` not in the cache (the auth service just rotated its
/// key) is refused, and a fetch starts in the background (rate-limited);
/// the client's retry then succeeds. [`Verifier::layer`] waits for the
/// fetch instead and refuses nothing valid: prefer it.
#[derive(Debug, Clone)]
pub struct VerifierInterceptor {
    verifier: Verifier,
}

impl VerifierInterceptor {
    pub(crate) fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }
}

impl Interceptor for VerifierInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|value| value.to_str().map_err(drop));
        let user = self.verifier.verify_cached(bearer::token(header)?)?;
        request.extensions_mut().insert(user);
        Ok(request)
    }
}
