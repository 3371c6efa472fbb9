//! Administration: what staff (AdminService) and the operator
//! (`auth-service user …`) may do to accounts. Each use case is written once
//! and takes the [`Actor`]; who acts decides only what is allowed:
//! - a caller with a token must be staff *now*: the row is read afresh, not
//!   from the token or the cache, so a demotion takes effect at once;
//! - staff who are not superusers cannot act on staff or superuser accounts
//!   (else any staff member could lock out or take over an administrator),
//!   nor grant staff status;
//! - nobody deactivates, deletes or changes the staff flag of their own
//!   account (an administrator locking themselves out is a mistake, never
//!   an intent);
//! - the operator, who can run the binary against the database, may do
//!   everything, and alone may grant superuser status.
//!
//! - a service token (issue 15) administers with scope `auth.admin`, or
//!   only reads (GetUser, GetServiceAccount, ListServiceAccounts) with
//!   `auth.admin.read`, with the rights of a staff member who is not a
//!   superuser; the token must still stand (see `Accounts::token_service`)
//!   on every call.
//!
//! An [`Actor`] is turned into an [`Authority`] once, by `authorize`, and
//! the use cases (these, and those of service accounts) ask only the
//! authority what it may do.

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::NaiveDateTime;

use super::{Accounts, NewAccount, login_throttle};
use crate::{
    domain::{ADMIN_READ_SCOPE, ADMIN_SCOPE, RevocationReason, ServiceAccountName, User, Username},
    error::Error,
    persistence::{
        db_now, password_reset_tokens,
        users::{self, FlagChange, UserRow},
    },
    telemetry::audit,
    tokens::{Claims, DecodedToken, ServiceClaims},
};

const NOT_STAFF: &str = "This call requires a staff account.";
const NO_SUCH_USER: &str = "No user with that id.";
const PROTECTED_ACCOUNT: &str = "Only a superuser may manage a staff or superuser account.";
const STAFF_FLAG_NEEDS_SUPERUSER: &str = "Only a superuser may change staff status.";
const STAFF_ACCOUNT_NEEDS_SUPERUSER: &str = "Only a superuser may create staff accounts.";
const OWN_DEACTIVATION: &str = "You cannot deactivate your own account.";
const OWN_DELETION: &str = "You cannot delete your own account.";
const OWN_STAFF_FLAG: &str = "You cannot change your own staff status.";

/// Who is administering.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// The bearer of this access token; must be an active staff user.
    Caller(&'a Claims),
    /// The bearer of this service token; needs scope `auth.admin`, or
    /// `auth.admin.read` for reading.
    Service(&'a ServiceClaims),
    /// The command line, run by whoever operates the service.
    Operator,
}

impl<'a> From<&'a DecodedToken> for Actor<'a> {
    fn from(token: &'a DecodedToken) -> Self {
        match token {
            DecodedToken::User(claims) => Actor::Caller(claims),
            DecodedToken::Service(claims) => Actor::Service(claims),
        }
    }
}

/// A password reset token, shown once; only its digest is stored.
pub struct IssuedResetToken {
    pub token: String,
    pub expires_at: NaiveDateTime,
}

impl fmt::Debug for IssuedResetToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedResetToken")
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What a call needs of its actor: reading only, or changing things.
/// Staff and the operator may do both; a service token with just
/// `auth.admin.read` is refused [`Access::Manage`] by `authorize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    Manage,
}

/// An actor found allowed to administer, and with which rights.
pub(super) enum Authority {
    Staff(User),
    /// A service account's token with the scope the call needs: the rights
    /// of a staff member who is not a superuser.
    Service(ServiceAccountName),
    Operator,
}

impl Authority {
    pub(super) fn is_superuser(&self) -> bool {
        match self {
            Self::Staff(user) => user.is_superuser,
            Self::Service(_) => false,
            Self::Operator => true,
        }
    }

    pub(super) fn require_superuser(&self, refusal: &'static str) -> Result<(), Error> {
        if self.is_superuser() {
            Ok(())
        } else {
            Err(Error::PermissionDenied(refusal))
        }
    }

    /// Refused with `refusal` if `target_id` is the acting user.
    fn not_on_self(&self, target_id: i64, refusal: &'static str) -> Result<(), Error> {
        match self {
            Self::Staff(user) if user.id == target_id => Err(Error::PermissionDenied(refusal)),
            _ => Ok(()),
        }
    }

    /// Whether this actor may deactivate, delete, or reset the password of
    /// `target`.
    fn may_manage(&self, target: &UserRow) -> Result<(), Error> {
        if target.is_staff || target.is_superuser {
            self.require_superuser(PROTECTED_ACCOUNT)?;
        }
        Ok(())
    }
}

/// For the security log: `user 7`, `service account billing` or `operator`.
impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Staff(user) => write!(f, "user {}", user.id),
            Self::Service(name) => write!(f, "service account {name}"),
            Self::Operator => f.write_str("operator"),
        }
    }
}

impl Accounts {
    /// The user with this id.
    ///
    /// # Errors
    /// The actor may not administer (see [`Actor`]); NOT_FOUND.
    pub async fn get_user(&self, actor: Actor<'_>, id: i64) -> Result<User, Error> {
        self.authorize(actor, Access::Read).await?;
        Ok(self.target(id).await?.into())
    }

    /// Activates or deactivates a user. Deactivation revokes every token of
    /// theirs first, so reactivating later does not bring them back.
    ///
    /// # Errors
    /// Not allowed (see the module), NOT_FOUND, the database's.
    pub async fn set_user_active(
        &self,
        actor: Actor<'_>,
        id: i64,
        active: bool,
    ) -> Result<User, Error> {
        let authority = self.authorize(actor, Access::Manage).await?;
        if !active {
            authority.not_on_self(id, OWN_DEACTIVATION)?;
        }
        authority.may_manage(&self.target(id).await?)?;
        let change = FlagChange {
            is_active: Some(active),
            ..FlagChange::default()
        };
        let mut user = self.set_flags(id, change).await?;
        // Revoked after the row is inactive: a login that read it active
        // just before issues tokens of the generation revoked here, and
        // none can read the bumped generation while the row is still active.
        if !active {
            self.revoke_tokens(id, RevocationReason::TokenRevoked, None)
                .await?;
            user = self.target(id).await?.into();
        }
        audit!(
            INFO,
            if active {
                "user_activated"
            } else {
                "user_deactivated"
            },
            "success",
            Some(id),
            authority,
            "user {}",
            if active {
                "activated"
            } else {
                "deactivated; every token of theirs revoked"
            }
        );
        Ok(user)
    }

    /// Grants or takes away staff status: superusers (and the operator) only.
    ///
    /// # Errors
    /// Not allowed (see the module), NOT_FOUND, the database's.
    pub async fn set_user_staff(
        &self,
        actor: Actor<'_>,
        id: i64,
        staff: bool,
    ) -> Result<User, Error> {
        let authority = self.authorize(actor, Access::Manage).await?;
        authority.require_superuser(STAFF_FLAG_NEEDS_SUPERUSER)?;
        authority.not_on_self(id, OWN_STAFF_FLAG)?;
        let change = FlagChange {
            is_staff: Some(staff),
            ..FlagChange::default()
        };
        let user = self.set_flags(id, change).await?;
        audit!(
            INFO,
            "staff_changed",
            "success",
            Some(id),
            authority,
            is_staff = staff,
            "staff status changed"
        );
        Ok(user)
    }

    /// Grants (with staff status, without which a superuser could not
    /// administer) or takes away superuser status: the operator's alone,
    /// so there is no actor.
    ///
    /// # Errors
    /// NOT_FOUND, the database's.
    pub async fn set_user_superuser(&self, id: i64, superuser: bool) -> Result<User, Error> {
        let change = FlagChange {
            is_superuser: Some(superuser),
            is_staff: superuser.then_some(true),
            ..FlagChange::default()
        };
        let user = self.set_flags(id, change).await?;
        audit!(
            INFO,
            "superuser_changed",
            "success",
            Some(id),
            Authority::Operator,
            is_superuser = superuser,
            "superuser status changed"
        );
        Ok(user)
    }

    /// Deletes a user with their refresh and reset tokens and their login
    /// counter; their access tokens are refused from then on ("User not
    /// found"), at once on this replica, within the cache TTL on others.
    ///
    /// # Errors
    /// Not allowed (see the module), NOT_FOUND, the database's.
    pub async fn delete_user(&self, actor: Actor<'_>, id: i64) -> Result<(), Error> {
        let authority = self.authorize(actor, Access::Manage).await?;
        authority.not_on_self(id, OWN_DELETION)?;
        let target = self.target(id).await?;
        authority.may_manage(&target)?;
        let throttle_key = login_throttle::user_key(&target.username_key);
        if !self.users.delete(id, throttle_key).await? {
            return Err(Error::NotFound(NO_SUCH_USER));
        }
        audit!(
            INFO,
            "user_deleted",
            "success",
            Some(id),
            authority,
            "user deleted with their tokens"
        );
        Ok(())
    }

    /// Creates a user; staff accounts need a superuser. Works whatever
    /// `AUTH_REGISTRATION` says.
    ///
    /// # Errors
    /// Not allowed, ALREADY_EXISTS naming the taken field, hashing overload.
    pub async fn create_user(
        &self,
        actor: Actor<'_>,
        account: NewAccount,
        is_staff: bool,
    ) -> Result<User, Error> {
        let authority = self.authorize(actor, Access::Manage).await?;
        if is_staff {
            authority.require_superuser(STAFF_ACCOUNT_NEEDS_SUPERUSER)?;
        }
        let user = self.create_account(account, is_staff).await?;
        audit!(
            INFO,
            "user_created",
            "success",
            Some(user.id),
            authority,
            is_staff,
            "user created by an administrator"
        );
        Ok(user)
    }

    /// A one-time password reset token for the user, valid for the
    /// configured lifetime: 256 random bits, base64url, stored only as its
    /// SHA-256 digest. The caller delivers it; it is never logged.
    ///
    /// # Errors
    /// Not allowed (see the module), NOT_FOUND, the database's.
    pub async fn issue_password_reset_token(
        &self,
        actor: Actor<'_>,
        id: i64,
    ) -> Result<IssuedResetToken, Error> {
        let authority = self.authorize(actor, Access::Manage).await?;
        authority.may_manage(&self.target(id).await?)?;
        let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let now = db_now();
        let lifetime = chrono::TimeDelta::from_std(self.password_reset_lifetime)
            .map_err(|_| Error::internal("password reset lifetime out of range"))?;
        let expires_at = now
            .checked_add_signed(lifetime)
            .ok_or_else(|| Error::internal("password reset expiry out of range"))?;
        password_reset_tokens::insert(&self.db, id, reset_token_digest(&token), expires_at, now)
            .await?;
        audit!(
            INFO,
            "password_reset_issued",
            "success",
            Some(id),
            authority,
            "password reset token issued"
        );
        Ok(IssuedResetToken { token, expires_at })
    }

    /// Sets a user's password (validators apply) and revokes every token of
    /// theirs: `auth-service user set-password`.
    ///
    /// # Errors
    /// Not allowed, NOT_FOUND, a password the validators refuse (on
    /// `password`), hashing overload, the database's.
    pub async fn set_user_password(
        &self,
        actor: Actor<'_>,
        id: i64,
        new: String,
    ) -> Result<(), Error> {
        let authority = self.authorize(actor, Access::Manage).await?;
        let target = self.target(id).await?;
        authority.may_manage(&target)?;
        let old_hash = target.password.clone();
        let new = Self::new_password(&target.into(), new, "password")?;
        self.replace_password(id, &old_hash, &new).await?;
        audit!(
            INFO,
            "password_set",
            "success",
            Some(id),
            authority,
            "password set by an administrator; every earlier token of the user revoked"
        );
        Ok(())
    }

    /// The id of the user with this username (matched case-insensitively,
    /// as login does): how the command line names users.
    ///
    /// # Errors
    /// The database's.
    pub async fn user_id_by_username(&self, username: &str) -> Result<Option<i64>, Error> {
        let Ok(username) = Username::parse(username) else {
            return Ok(None);
        };
        let row = users::find_by_username(&self.db, &username.key()).await?;
        Ok(row.map(|row| row.id))
    }

    /// Whether `actor` may administer at all (see [`Actor`]).
    ///
    /// # Errors
    /// PERMISSION_DENIED, or the token's refusal.
    pub async fn authorize_admin(&self, actor: Actor<'_>) -> Result<(), Error> {
        self.authorize(actor, Access::Manage).await.map(|_| ())
    }

    /// What `actor` may do, if anything: a caller must hold a valid token
    /// of an active user who is staff in the database right now. Staff and
    /// the operator may make calls of either [`Access`]; a service token
    /// that still stands, those its scopes allow.
    pub(super) async fn authorize(
        &self,
        actor: Actor<'_>,
        access: Access,
    ) -> Result<Authority, Error> {
        let claims = match actor {
            Actor::Operator => return Ok(Authority::Operator),
            Actor::Service(claims) => return self.authorize_service(claims, access).await,
            Actor::Caller(claims) => claims,
        };
        // Afresh, not from the cache: staff status taken away, or the
        // token revoked, elsewhere must end administration at once, not
        // within the cache TTL.
        let current = users::find_by_id(&self.db, claims.user_id)
            .await?
            .map(User::from);
        let user = Self::check_token_user(current, claims)?;
        if !user.is_staff {
            return Err(Error::PermissionDenied(NOT_STAFF));
        }
        Ok(Authority::Staff(user))
    }

    /// A service token's authority: the token must still stand, and carry
    /// `auth.admin`, or `auth.admin.read` for [`Access::Read`]. The scope
    /// is checked on the token (what its bearer was granted) after the
    /// account (which must still allow it).
    async fn authorize_service(
        &self,
        claims: &ServiceClaims,
        access: Access,
    ) -> Result<Authority, Error> {
        let account = self.token_service(claims).await?;
        let allowed = claims.has_scope(ADMIN_SCOPE)
            || (access == Access::Read && claims.has_scope(ADMIN_READ_SCOPE));
        if !allowed {
            return Err(Error::InsufficientScope(match access {
                Access::Read => ADMIN_READ_SCOPE,
                Access::Manage => ADMIN_SCOPE,
            }));
        }
        Ok(Authority::Service(account.name))
    }

    /// The target's row, read afresh: rights are decided on its current flags.
    async fn target(&self, id: i64) -> Result<UserRow, Error> {
        users::find_by_id(&self.db, id)
            .await?
            .ok_or(Error::NotFound(NO_SUCH_USER))
    }

    async fn set_flags(&self, id: i64, change: FlagChange) -> Result<User, Error> {
        self.users
            .set_flags(id, change)
            .await?
            .ok_or(Error::NotFound(NO_SUCH_USER))
    }
}

/// How a reset token is stored and looked up: hex SHA-256. A fast hash is
/// right for 256 random bits (there is nothing to guess).
pub(super) fn reset_token_digest(token: &str) -> String {
    crate::domain::sha256_hex(token)
}
