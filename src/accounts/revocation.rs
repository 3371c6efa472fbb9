//! Ending every session of a user at once: ChangePassword, LogoutAll, and
//! the revocation the administration and reset calls share.
//!
//! A revocation bumps the user's token generation; every token carries the
//! generation it was issued under, and [`Accounts::token_user`] refuses the
//! older ones (see [`crate::domain::User::revokes`]). The user's refresh
//! tokens are also blacklisted, so the blacklist tells the same story to a
//! Django peer sharing it.

use std::{fmt, net::IpAddr};

use super::{Accounts, TokenPair};
use crate::{
    domain::{GivenPassword, Password, RevocationReason, User, UserAttributes},
    error::{AuthFailure, Error},
    persistence::{db_now, password_reset_tokens, users},
    telemetry::{audit, metrics::Revocation},
    tokens::{Claims, unix_now},
};

/// ChangePassword's two passwords: the current one to check, and the new
/// one, validated against the user once they are known.
pub struct PasswordChange {
    pub current: GivenPassword,
    pub new: String,
}

impl fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordChange([redacted])")
    }
}

impl Accounts {
    /// Changes the caller's password, revokes every token issued to them so
    /// far, and hands out a fresh pair for this session. `client` is the end
    /// user's address, for the login throttle, which counts a wrong current
    /// password as a failed login.
    ///
    /// # Errors
    /// As for any call with a token; a wrong current password
    /// (UNAUTHENTICATED); a new password the validators refuse; throttled
    /// or overloaded.
    pub async fn change_password(
        &self,
        caller: &Claims,
        change: PasswordChange,
        client: Option<IpAddr>,
    ) -> Result<TokenPair, Error> {
        let user = self.token_user(caller).await?;
        let new = Self::new_password(&user, change.new, "new_password")?;
        let row = users::find_by_id(&self.db, user.id)
            .await?
            .ok_or(AuthFailure::UserNotFound)?;
        // In line for the hash first, then counted by the throttle under the
        // user's login name, as a login.
        let place = self.hasher.line_up()?;
        let refused = |reason: &str| {
            audit!(
                INFO,
                "password_change",
                "failure",
                Some(user.id),
                "self",
                client = client.map(tracing::field::display),
                reason,
                "password change refused"
            );
        };
        let reservation = match self
            .throttle
            .admit(&row.username_key, client, place.deadline())
            .await
        {
            Ok(reservation) => reservation,
            Err(e @ Error::Overloaded { .. }) => {
                refused("throttled");
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let old_hash = row.password;
        let stored = Some(old_hash.clone());
        let current = change.current;
        let check = async move { place.verify(current.expose(), stored).await };
        if !reservation.settle_after(check).await? {
            refused("wrong_current_password");
            return Err(AuthFailure::WrongCurrentPassword.into());
        }
        let generation = self.replace_password(user.id, &old_hash, &new).await?;
        audit!(
            INFO,
            "password_change",
            "success",
            Some(user.id),
            "self",
            "password changed; every earlier token of the user revoked"
        );
        self.issue_pair(user.id, generation).await
    }

    /// Revokes every token of the caller's, this one included ("log out
    /// everywhere").
    ///
    /// # Errors
    /// As for any call with a token.
    pub async fn log_out_all(&self, caller: &Claims) -> Result<(), Error> {
        let user = self.token_user(caller).await?;
        self.revoke_tokens(user.id, RevocationReason::TokenRevoked, None)
            .await?;
        audit!(
            INFO,
            "logout_all",
            "success",
            Some(user.id),
            "self",
            "every token of the user revoked"
        );
        Ok(())
    }

    /// `new` as a password for `user`, through Django's validators (the
    /// similarity ones against the user's own username and email); broken
    /// rules are reported on `field`.
    pub(super) fn new_password(user: &User, new: String, field: &str) -> Result<Password, Error> {
        let attributes = UserAttributes {
            username: &user.username,
            email: &user.email,
        };
        Password::parse(new, attributes).map_err(|e| Error::invalid_fields([(field, e)]))
    }

    /// Hashes `new` and stores it in place of `old_hash`, revoking every
    /// earlier token of the user: the generation their next tokens carry.
    ///
    /// # Errors
    /// Hashing overload; the user is gone; the database's.
    pub(super) async fn replace_password(
        &self,
        user_id: i64,
        old_hash: &str,
        new: &Password,
    ) -> Result<i64, Error> {
        let new_hash = self.hasher.hash(new).await?;
        self.hasher.stored_hash_changed(Some(old_hash), &new_hash);
        self.revoke_tokens(user_id, RevocationReason::PasswordChanged, Some(new_hash))
            .await
    }

    /// Revokes every token issued to `user_id` so far (setting a new
    /// password hash in the same transaction, if given), blacklists their
    /// refresh tokens and drops their pending password reset tokens: the
    /// generation the user's next tokens carry.
    ///
    /// # Errors
    /// The user is gone (UNAUTHENTICATED), or the database's.
    pub(super) async fn revoke_tokens(
        &self,
        user_id: i64,
        reason: RevocationReason,
        new_password_hash: Option<String>,
    ) -> Result<i64, Error> {
        let now = db_now();
        let generation = self
            .users
            .revoke_tokens(user_id, reason, new_password_hash, now)
            .await?
            .ok_or(AuthFailure::UserNotFound)?;
        self.end_sessions(user_id, now).await?;
        self.metrics.revocation(match reason {
            RevocationReason::PasswordChanged => Revocation::PasswordChanged,
            RevocationReason::TokenRevoked => Revocation::TokensRevoked,
        });
        Ok(generation)
    }

    /// What follows every revocation of a user's tokens (whose generation
    /// was bumped at `now`): their refresh tokens go on the blacklist, so a
    /// Django peer sharing it agrees, and a pending password reset token no
    /// longer works either.
    pub(super) async fn end_sessions(
        &self,
        user_id: i64,
        now: chrono::NaiveDateTime,
    ) -> Result<(), Error> {
        self.refresh_tokens
            .revoke_all_of_user(user_id, self.tokens.expired_before(now), now)
            .await?;
        password_reset_tokens::delete_of_user(&self.db, user_id).await?;
        Ok(())
    }

    /// A fresh refresh token, recorded as outstanding, and its access token.
    pub(super) async fn issue_pair(
        &self,
        user_id: i64,
        generation: i64,
    ) -> Result<TokenPair, Error> {
        let now = unix_now();
        let refresh = self.tokens.issue_refresh(user_id, generation, now)?;
        self.refresh_tokens
            .record_issued(&refresh.claims, db_now())
            .await?;
        let access = self.tokens.access_from_refresh(&refresh.claims, now)?;
        Ok(TokenPair {
            access: access.token,
            refresh: Some(refresh.token),
        })
    }
}
