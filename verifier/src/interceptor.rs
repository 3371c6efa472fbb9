//! The synchronous tonic interceptor.

use tonic::{Request, Status, service::Interceptor};

use crate::{
    Verifier, bearer,
    callers::{self, Callers},
};

/// Checks `authorization: Bearer <access token>` with the cached keys and
/// puts an [`AuthenticatedUser`](crate::AuthenticatedUser) (and an
/// [`Authenticated::User`](crate::Authenticated)) into the request's
/// extensions; refuses with UNAUTHENTICATED otherwise.
/// [`require_service`](Self::require_service) and
/// [`allow_service`](Self::allow_service) take service tokens, as the
/// layer's methods of the same names.
///
/// Interceptors are synchronous, so this one cannot wait for a fetch: a
/// token with a `kid` not in the cache (the auth service just rotated its
/// key) is refused, and a fetch starts in the background (rate-limited);
/// the client's retry then succeeds. [`Verifier::layer`] waits for the
/// fetch instead and refuses nothing valid: prefer it.
#[derive(Debug, Clone)]
pub struct VerifierInterceptor {
    verifier: Verifier,
    callers: Callers,
}

impl VerifierInterceptor {
    pub(crate) fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            callers: Callers::Users,
        }
    }

    /// Service tokens only, each carrying every one of `scopes`; see
    /// [`VerifierLayer::require_service`](crate::VerifierLayer::require_service).
    #[must_use]
    pub fn require_service<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        self.callers = Callers::Services(Callers::scopes(scopes));
        self
    }

    /// Users, or service tokens carrying every one of `scopes`; see
    /// [`VerifierLayer::allow_service`](crate::VerifierLayer::allow_service).
    #[must_use]
    pub fn allow_service<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        self.callers = Callers::UsersAndServices(Callers::scopes(scopes));
        self
    }
}

impl Interceptor for VerifierInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|value| value.to_str().map_err(drop));
        let caller = self
            .callers
            .admit_cached(&self.verifier, bearer::token(header)?)
            .map_err(|refusal| refusal.to_status())?;
        callers::insert(request.extensions_mut(), caller);
        Ok(request)
    }
}
