//! Which callers a guard lets in: users (the default, as before service
//! tokens existed), services carrying given scopes, or either.

use std::sync::Arc;

use crate::{AccessDenied, Authenticated, Verifier, VerifyError, error::Refusal};

/// The callers a guard admits. Scopes are what a service token is allowed;
/// a user's rights are the handler's business, so they never apply to
/// users.
#[derive(Debug, Clone, Default)]
pub(crate) enum Callers {
    /// Access tokens only; a service token has the wrong type
    /// (UNAUTHENTICATED), as on the auth service's own user calls.
    #[default]
    Users,
    /// Service tokens carrying every one of these scopes; a user's token is
    /// PERMISSION_DENIED.
    Services(Arc<[String]>),
    /// Access tokens, or service tokens carrying every one of these scopes.
    UsersAndServices(Arc<[String]>),
}

impl Callers {
    pub(crate) fn scopes<S: Into<String>>(scopes: impl IntoIterator<Item = S>) -> Arc<[String]> {
        scopes.into_iter().map(Into::into).collect()
    }

    /// Verifies `token` (awaiting a JWKS fetch for an unknown `kid`) and
    /// lets its caller in or not.
    pub(crate) async fn admit(
        &self,
        verifier: &Verifier,
        token: &str,
    ) -> Result<Authenticated, Refusal> {
        let caller = match self {
            Self::Users => Authenticated::User(verifier.verify(token).await?),
            Self::Services(_) | Self::UsersAndServices(_) => verifier.verify_any(token).await?,
        };
        self.let_in(caller)
    }

    /// [`Self::admit`] with the cached keys only.
    pub(crate) fn admit_cached(
        &self,
        verifier: &Verifier,
        token: &str,
    ) -> Result<Authenticated, Refusal> {
        let caller = match self {
            Self::Users => Authenticated::User(verifier.verify_cached(token)?),
            Self::Services(_) | Self::UsersAndServices(_) => verifier.verify_any_cached(token)?,
        };
        self.let_in(caller)
    }

    fn let_in(&self, caller: Authenticated) -> Result<Authenticated, Refusal> {
        match (self, &caller) {
            (Self::Users | Self::UsersAndServices(_), Authenticated::User(_)) => Ok(caller),
            (Self::Services(_), Authenticated::User(_)) => {
                Err(AccessDenied::ServiceRequired.into())
            }
            (
                Self::Services(required) | Self::UsersAndServices(required),
                Authenticated::Service(service),
            ) => {
                service.require_scopes(required)?;
                Ok(caller)
            }
            // `verify` refuses them already.
            (Self::Users, Authenticated::Service(_)) => Err(VerifyError::WrongType.into()),
        }
    }
}

/// Puts `caller` into a request's extensions: the [`Authenticated`] and the
/// [`AuthenticatedUser`](crate::AuthenticatedUser) or
/// [`AuthenticatedService`](crate::AuthenticatedService) it holds.
pub(crate) fn insert(extensions: &mut http::Extensions, caller: Authenticated) {
    match &caller {
        Authenticated::User(user) => {
            extensions.insert(user.clone());
        }
        Authenticated::Service(service) => {
            extensions.insert(service.clone());
        }
    }
    extensions.insert(caller);
}
