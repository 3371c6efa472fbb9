//! The application: every use case of the service — register, log in,
//! refresh, verify, log out, read and update one's profile, list users — as
//! a method of [`Accounts`] over domain values. No transport types here: the
//! gRPC handlers (and any future surface) decode their requests into
//! domain values, call one of these, and encode the result. Administration
//! (`admin`) serves both AdminService and the `auth-service user` commands;
//! `service_accounts` both AdminService and `auth-service service-account`;
//! `service_grant` is ObtainServiceToken.

mod admin;
mod login;
pub mod login_throttle;
mod page_token;
mod password_reset;
mod profile;
mod register;
mod revocation;
mod service_accounts;
mod service_grant;
mod sessions;

use std::{sync::Arc, time::Duration};

use sea_orm::DatabaseConnection;

pub use admin::{Actor, IssuedResetToken};
pub use login_throttle::LoginThrottle;
pub use page_token::{Listing, PageTokenCodec};
pub use password_reset::PasswordReset;
pub use profile::{Page, PageRequest, UserBatch};
pub use register::NewAccount;
pub use revocation::PasswordChange;
pub use service_accounts::{
    IssuedSecret, NewServiceAccount, ServiceAccountPage, ServiceAccountPageRequest,
};
pub use service_grant::{ClientCredential, ServiceGrant, ServiceToken};
pub use sessions::{TokenPair, VerifiedToken};

use crate::{
    config::{ListUsersAccess, Registration, TokenPolicy},
    domain::{CredentialId, ServiceAccountCredentials, User},
    error::{AuthFailure, Error},
    passwords::Hasher,
    persistence::{RefreshTokens, ServiceAccounts, UserProfiles, assertion_ids::UsedAssertionIds},
    telemetry::metrics::Metrics,
    tokens::{Claims, ServiceClaims, TokenCodec},
};

/// Everything the use cases share; cheap to clone.
#[derive(Debug, Clone)]
pub struct Accounts {
    pub(crate) db: DatabaseConnection,
    pub(crate) tokens: Arc<TokenCodec>,
    pub(crate) hasher: Hasher,
    pub(crate) page_tokens: PageTokenCodec,
    pub(crate) policy: TokenPolicy,
    /// Who may call ListUsers.
    pub(crate) list_users: ListUsersAccess,
    /// Whether the public Register creates accounts.
    pub(crate) registration: Registration,
    /// How long a password reset token works.
    pub(crate) password_reset_lifetime: Duration,
    pub(crate) throttle: LoginThrottle,
    pub(crate) users: UserProfiles,
    pub(crate) service_accounts: ServiceAccounts,
    /// The assertion ids grants used (replays refused).
    pub(crate) assertion_ids: Arc<UsedAssertionIds>,
    pub(crate) refresh_tokens: RefreshTokens,
    /// What the use cases count (logins by outcome, refreshes, revocations …).
    pub(crate) metrics: Metrics,
}

impl Accounts {
    /// This application's metrics, for the call log and `/metrics`.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// The codec the bearer check verifies access tokens with.
    pub fn token_codec(&self) -> Arc<TokenCodec> {
        Arc::clone(&self.tokens)
    }

    /// The user behind a token, if it still exists, is active (simplejwt's
    /// `JWTAuthentication.get_user`) and has not revoked the token since it
    /// was issued: the check behind every call made with a token.
    async fn token_user(&self, claims: &Claims) -> Result<User, Error> {
        Self::check_token_user(self.users.get(claims.user_id).await?, claims)
    }

    /// [`Self::token_user`]'s verdict on `user`, as read by the caller.
    fn check_token_user(user: Option<User>, claims: &Claims) -> Result<User, Error> {
        let user = match user {
            None => return Err(AuthFailure::UserNotFound.into()),
            Some(user) if !user.is_active => return Err(AuthFailure::UserInactive.into()),
            Some(user) => user,
        };
        match user.revokes(claims.generation, claims.iat) {
            Some(reason) => Err(AuthFailure::from(reason).into()),
            None => Ok(user),
        }
    }

    /// The account behind a service token, if the token still stands: its
    /// credential (`cid`) still exists and belongs to the account named by
    /// `client_id`, which is active, was not deactivated after the token
    /// was issued, and still has every scope the token carries. Read
    /// through the service-account cache: a change is seen at once on this
    /// replica, within the cache TTL on others.
    async fn token_service(
        &self,
        claims: &ServiceClaims,
    ) -> Result<ServiceAccountCredentials, Error> {
        // A cid we never issued names no credential.
        let cid =
            CredentialId::parse(&claims.cid).map_err(|_| AuthFailure::ServiceCredentialRevoked)?;
        let account = self
            .service_accounts
            .credentials_by_cid(&cid)
            .await?
            // The credential is gone, or now (impossibly) another account's.
            .filter(|account| account.name.as_str() == claims.client_id)
            .ok_or(AuthFailure::ServiceCredentialRevoked)?;
        if !account.is_active {
            return Err(AuthFailure::ServiceAccountInactive.into());
        }
        // To the second inclusive, as for a user's token without a
        // generation: `iat` says no more.
        if account
            .tokens_valid_after
            .is_some_and(|valid_after| claims.iat <= valid_after)
        {
            return Err(AuthFailure::ServiceTokenRevoked.into());
        }
        if !claims
            .scopes
            .iter()
            .all(|scope| account.scopes.contains(scope))
        {
            return Err(AuthFailure::ServiceScopeRevoked.into());
        }
        Ok(account)
    }
}
