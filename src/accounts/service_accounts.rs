//! Administration of service accounts (issue 15): what staff (AdminService)
//! and the operator (`auth-service service-account …`) may do. Who may do
//! what, on top of `admin`'s rules for actors:
//! - any staff member manages service accounts, but granting a scope of
//!   this service's own (`auth.…`) needs a superuser or the operator;
//! - an account that holds such a scope is protected the same way: only a
//!   superuser or the operator changes it, deactivates or deletes it, or
//!   gives it a credential (a credential of an `auth.admin` account is
//!   that account's power);
//! - reading is open to any staff member.
//!
//! A client secret is 256 random bits, base64url (43 characters), shown
//! once; only its hex SHA-256 is stored. Key algorithms are read from the
//! key (see [`PublicKey`]).

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use super::{
    Accounts, Actor, Listing,
    admin::{Access, Authority},
};
use crate::{
    domain::{
        CredentialId, MAX_KEYS, MAX_SECRETS, PublicKey, Scopes, ServiceAccount, ServiceAccountName,
        client_secret_digest,
    },
    error::Error,
    persistence::{
        db_now,
        service_accounts::{CredentialAdded, ReservedScopes, ScopesSet},
    },
    telemetry::audit,
};

const NO_SUCH_ACCOUNT: &str = "No service account with that id.";
const NO_SUCH_SECRET: &str = "This service account has no secret with that id.";
const NO_SUCH_KEY: &str = "This service account has no key with that kid.";
const RESERVED_SCOPE_NEEDS_SUPERUSER: &str =
    "Only a superuser may grant scopes starting with \"auth.\".";
const PROTECTED_ACCOUNT: &str =
    "Only a superuser may manage a service account that holds \"auth.\" scopes.";
const SECRETS_FULL: &str = "This service account holds 2 secrets already, the most it may: \
     remove one (RemoveServiceAccountSecret) before adding another.";
const CREDENTIALS_BEFORE_RESERVED_SCOPE: &str = "This service account holds secrets or keys given \
     without the power of \"auth.\" scopes: remove them before granting one, then add new ones.";
const KEYS_FULL: &str = "This service account holds 4 keys already, the most it may: \
     remove one (RemoveServiceAccountKey) before adding another.";

const DEFAULT_PAGE_SIZE: u64 = 50;
const MAX_PAGE_SIZE: u64 = 1000;

// The messages above spell the limits out: keep them in step.
const _: () = assert!(MAX_SECRETS == 2 && MAX_KEYS == 4);

/// A service account to create.
#[derive(Debug, Clone)]
pub struct NewServiceAccount {
    pub name: ServiceAccountName,
    pub scopes: Scopes,
}

/// A client secret just added, shown once: only its digest is stored.
pub struct IssuedSecret {
    pub secret_id: CredentialId,
    pub secret: String,
}

impl fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedSecret")
            .field("secret_id", &self.secret_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// Which page of ListServiceAccounts: `size` accounts (0: the default)
/// after the position `token` stands for ("": the first page).
#[derive(Debug)]
pub struct ServiceAccountPageRequest<'a> {
    pub size: i32,
    pub token: &'a str,
}

/// One page of service accounts, and the token of the next ("" after the last).
#[derive(Debug)]
pub struct ServiceAccountPage {
    pub service_accounts: Vec<ServiceAccount>,
    pub next_page_token: String,
}

impl Authority {
    /// Whether this actor may give an account `scopes`.
    fn may_grant(&self, scopes: &Scopes) -> Result<(), Error> {
        if scopes.any_reserved() {
            self.require_superuser(RESERVED_SCOPE_NEEDS_SUPERUSER)?;
        }
        Ok(())
    }

    /// Whether this actor may change `account` or its credentials.
    fn may_manage_service_account(&self, account: &ServiceAccount) -> Result<(), Error> {
        if account.scopes.any_reserved() {
            self.require_superuser(PROTECTED_ACCOUNT)?;
        }
        Ok(())
    }

    /// The same rule, for storage to apply again under the account's lock
    /// when it adds a credential (a reserved scope may be granted meanwhile).
    fn reserved_scopes(&self) -> ReservedScopes {
        if self.is_superuser() {
            ReservedScopes::Allowed
        } else {
            ReservedScopes::Refused
        }
    }
}

impl Accounts {
    /// Creates an active service account without credentials.
    ///
    /// # Errors
    /// Not allowed (see the module); ALREADY_EXISTS on `name`; the database's.
    pub async fn create_service_account(
        &self,
        actor: Actor<'_>,
        new: NewServiceAccount,
    ) -> Result<ServiceAccount, Error> {
        let authority = self.authorize(actor, Access::Manage).await?;
        authority.may_grant(&new.scopes)?;
        let account = self
            .service_accounts
            .create(&new.name, &new.scopes, db_now())
            .await?;
        audit!(
            INFO,
            "service_account_created",
            "success",
            None::<i64>,
            authority,
            service_account_id = account.id,
            service_account = %account.name,
            scopes = %account.scopes,
            "service account created"
        );
        Ok(account)
    }

    /// The service account with this id.
    ///
    /// # Errors
    /// Not allowed; NOT_FOUND; the database's.
    pub async fn get_service_account(
        &self,
        actor: Actor<'_>,
        id: i64,
    ) -> Result<ServiceAccount, Error> {
        self.authorize(actor, Access::Read).await?;
        self.service_account(id).await
    }

    /// A page of service accounts by id (AIP-158).
    ///
    /// # Errors
    /// Not allowed; a negative size or a page token that is not ours (on
    /// `page_size`, `page_token`); the database's.
    pub async fn list_service_accounts(
        &self,
        actor: Actor<'_>,
        page: ServiceAccountPageRequest<'_>,
    ) -> Result<ServiceAccountPage, Error> {
        self.authorize(actor, Access::Read).await?;
        let page_size = match u64::try_from(page.size) {
            Err(_) => return Err(Error::invalid("page_size", "Must not be negative.")),
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(MAX_PAGE_SIZE),
        };
        let after_id = self
            .page_tokens
            .decode(page.token, Listing::ServiceAccounts)?;
        // One extra row tells whether another page follows.
        let mut service_accounts = self
            .service_accounts
            .list_after(after_id, page_size + 1)
            .await?;
        let next_page_token = if service_accounts.len() as u64 > page_size {
            service_accounts.truncate(page_size as usize);
            service_accounts
                .last()
                .map(|a| self.page_tokens.encode(a.id, Listing::ServiceAccounts))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(ServiceAccountPage {
            service_accounts,
            next_page_token,
        })
    }

    /// Activates or deactivates an account. Deactivation revokes its
    /// tokens for good: they are refused at once on this replica and within
    /// the cache TTL on others, and reactivating it does not bring them
    /// back (tokens issued up to the deactivation's second are refused).
    ///
    /// # Errors
    /// Not allowed (see the module); NOT_FOUND; the database's.
    pub async fn set_service_account_active(
        &self,
        actor: Actor<'_>,
        id: i64,
        active: bool,
    ) -> Result<ServiceAccount, Error> {
        let (authority, _) = self.managed_service_account(actor, id).await?;
        let account = self
            .service_accounts
            .set_active(id, active, db_now())
            .await?
            .ok_or(Error::NotFound(NO_SUCH_ACCOUNT))?;
        audit!(
            INFO,
            if active {
                "service_account_activated"
            } else {
                "service_account_deactivated"
            },
            "success",
            None::<i64>,
            authority,
            service_account_id = id,
            service_account = %account.name,
            "service account {}",
            if active {
                "activated"
            } else {
                "deactivated; every token of its revoked"
            }
        );
        Ok(account)
    }

    /// Replaces an account's allowed scopes. Its tokens that carry a scope
    /// taken away are refused from then on.
    ///
    /// # Errors
    /// Not allowed (see the module); NOT_FOUND; the database's.
    pub async fn set_service_account_scopes(
        &self,
        actor: Actor<'_>,
        id: i64,
        scopes: Scopes,
    ) -> Result<ServiceAccount, Error> {
        let (authority, _) = self.managed_service_account(actor, id).await?;
        authority.may_grant(&scopes)?;
        let account = match self.service_accounts.set_scopes(id, &scopes).await? {
            ScopesSet::Set(account) => account,
            ScopesSet::NoSuchAccount => return Err(Error::NotFound(NO_SUCH_ACCOUNT)),
            ScopesSet::CredentialsHeld => {
                return Err(Error::FailedPrecondition(CREDENTIALS_BEFORE_RESERVED_SCOPE));
            }
        };
        audit!(
            INFO,
            "service_account_scopes_changed",
            "success",
            None::<i64>,
            authority,
            service_account_id = id,
            service_account = %account.name,
            scopes = %account.scopes,
            "service account scopes changed"
        );
        Ok(account)
    }

    /// Deletes an account with its credentials; its tokens are refused from
    /// then on.
    ///
    /// # Errors
    /// Not allowed (see the module); NOT_FOUND; the database's.
    pub async fn delete_service_account(&self, actor: Actor<'_>, id: i64) -> Result<(), Error> {
        let (authority, account) = self.managed_service_account(actor, id).await?;
        if !self.service_accounts.delete(id).await? {
            return Err(Error::NotFound(NO_SUCH_ACCOUNT));
        }
        audit!(
            INFO,
            "service_account_deleted",
            "success",
            None::<i64>,
            authority,
            service_account_id = id,
            service_account = %account.name,
            "service account deleted with its credentials"
        );
        Ok(())
    }

    /// Adds a client secret: 256 random bits, base64url, returned this once.
    ///
    /// # Errors
    /// Not allowed (see the module); NOT_FOUND; FAILED_PRECONDITION when the
    /// account holds [`MAX_SECRETS`] already; the database's.
    pub async fn add_service_account_secret(
        &self,
        actor: Actor<'_>,
        id: i64,
    ) -> Result<IssuedSecret, Error> {
        let (authority, account) = self.managed_service_account(actor, id).await?;
        let secret = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let secret_id = CredentialId::generate();
        let added = self
            .service_accounts
            .add_secret(
                id,
                &secret_id,
                client_secret_digest(&secret),
                db_now(),
                authority.reserved_scopes(),
            )
            .await?;
        added_or_refused(added, SECRETS_FULL)?;
        audit!(
            INFO,
            "service_account_secret_added",
            "success",
            None::<i64>,
            authority,
            service_account_id = id,
            service_account = %account.name,
            secret_id = %secret_id,
            "service account secret added"
        );
        Ok(IssuedSecret { secret_id, secret })
    }

    /// Removes a client secret: the tokens it obtained are refused from
    /// then on.
    ///
    /// # Errors
    /// Not allowed (see the module); NOT_FOUND (account or secret); the
    /// database's.
    pub async fn remove_service_account_secret(
        &self,
        actor: Actor<'_>,
        id: i64,
        secret_id: &CredentialId,
    ) -> Result<(), Error> {
        let (authority, account) = self.managed_service_account(actor, id).await?;
        if !self.service_accounts.remove_secret(id, secret_id).await? {
            return Err(Error::NotFound(NO_SUCH_SECRET));
        }
        audit!(
            INFO,
            "service_account_secret_removed",
            "success",
            None::<i64>,
            authority,
            service_account_id = id,
            service_account = %account.name,
            secret_id = %secret_id,
            "service account secret removed"
        );
        Ok(())
    }

    /// Registers a public key for signed assertions: its new `kid`.
    ///
    /// # Errors
    /// Not allowed (see the module); NOT_FOUND; FAILED_PRECONDITION when the
    /// account holds [`MAX_KEYS`] already; the database's.
    pub async fn add_service_account_key(
        &self,
        actor: Actor<'_>,
        id: i64,
        key: PublicKey,
    ) -> Result<CredentialId, Error> {
        let (authority, account) = self.managed_service_account(actor, id).await?;
        let kid = CredentialId::generate();
        let added = self
            .service_accounts
            .add_key(id, &kid, &key, db_now(), authority.reserved_scopes())
            .await?;
        added_or_refused(added, KEYS_FULL)?;
        audit!(
            INFO,
            "service_account_key_added",
            "success",
            None::<i64>,
            authority,
            service_account_id = id,
            service_account = %account.name,
            kid = %kid,
            algorithm = key.algorithm().as_str(),
            "service account key added"
        );
        Ok(kid)
    }

    /// Removes a key: assertions signed with it are refused, and the tokens
    /// it obtained too, from then on.
    ///
    /// # Errors
    /// Not allowed (see the module); NOT_FOUND (account or key); the
    /// database's.
    pub async fn remove_service_account_key(
        &self,
        actor: Actor<'_>,
        id: i64,
        kid: &CredentialId,
    ) -> Result<(), Error> {
        let (authority, account) = self.managed_service_account(actor, id).await?;
        if !self.service_accounts.remove_key(id, kid).await? {
            return Err(Error::NotFound(NO_SUCH_KEY));
        }
        audit!(
            INFO,
            "service_account_key_removed",
            "success",
            None::<i64>,
            authority,
            service_account_id = id,
            service_account = %account.name,
            kid = %kid,
            "service account key removed"
        );
        Ok(())
    }

    /// The id of the service account named `name`: how the command line
    /// names accounts.
    ///
    /// # Errors
    /// The database's.
    pub async fn service_account_id_by_name(&self, name: &str) -> Result<Option<i64>, Error> {
        let Ok(name) = ServiceAccountName::parse(name) else {
            return Ok(None);
        };
        let found = self.service_accounts.credentials_by_name(&name).await?;
        Ok(found.map(|account| account.id))
    }

    /// The account `id` and the authority of `actor`, if it may change the
    /// account or its credentials.
    async fn managed_service_account(
        &self,
        actor: Actor<'_>,
        id: i64,
    ) -> Result<(Authority, ServiceAccount), Error> {
        let authority = self.authorize(actor, Access::Manage).await?;
        let account = self.service_account(id).await?;
        authority.may_manage_service_account(&account)?;
        Ok((authority, account))
    }

    /// The account, read afresh: rights are decided on its current scopes.
    async fn service_account(&self, id: i64) -> Result<ServiceAccount, Error> {
        self.service_accounts
            .get(id)
            .await?
            .ok_or(Error::NotFound(NO_SUCH_ACCOUNT))
    }
}

fn added_or_refused(added: CredentialAdded, full: &'static str) -> Result<(), Error> {
    match added {
        CredentialAdded::Added => Ok(()),
        CredentialAdded::Full => Err(Error::FailedPrecondition(full)),
        CredentialAdded::NoSuchAccount => Err(Error::NotFound(NO_SUCH_ACCOUNT)),
        CredentialAdded::Protected => Err(Error::PermissionDenied(PROTECTED_ACCOUNT)),
    }
}
