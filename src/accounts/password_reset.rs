//! ResetPassword: a new password for whoever holds a reset token that
//! staff issued ([`Accounts::issue_password_reset_token`]).

use std::fmt;

use super::{Accounts, admin::reset_token_digest};
use crate::{
    domain::User,
    error::{AuthFailure, Error},
    persistence::{db_now, password_reset_tokens, users},
    telemetry::{audit, metrics::Revocation, record_user},
};

/// A reset token and the new password, neither validated yet (the
/// password is checked against the token's user once known).
pub struct PasswordReset {
    pub token: String,
    pub new: String,
}

impl fmt::Debug for PasswordReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordReset([redacted])")
    }
}

impl Accounts {
    /// Sets the password of the user a live reset token was issued to,
    /// consuming the token, and revokes every earlier token of the user.
    /// The password is validated before the token is consumed, so a weak one
    /// leaves the token usable.
    ///
    /// # Errors
    /// A wrong, used or expired token, or one whose user is gone or
    /// inactive: one UNAUTHENTICATED answer for all. A password the
    /// validators refuse (on `new_password`); hashing overload.
    pub async fn reset_password(&self, reset: PasswordReset) -> Result<(), Error> {
        let invalid = || Error::from(AuthFailure::ResetTokenInvalid);
        let digest = reset_token_digest(&reset.token);
        let found = password_reset_tokens::find_live(&self.db, &digest, db_now()).await?;
        let Some(found) = found else {
            return Err(invalid());
        };
        let Some(row) = users::find_by_id(&self.db, found.user_id).await? else {
            return Err(invalid());
        };
        if !row.is_active {
            return Err(invalid());
        }
        let old_hash = row.password.clone();
        let user = User::from(row);
        let new = Self::new_password(&user, reset.new, "new_password")?;
        let new_hash = self.hasher.hash(&new).await?;
        let now = db_now();
        // Consumed in the transaction that sets the password: of two resets
        // racing with one token, exactly one gets here with Some.
        self.users
            .reset_password(user.id, found.id, new_hash.clone(), now)
            .await?
            .ok_or_else(invalid)?;
        self.hasher.stored_hash_changed(Some(&old_hash), &new_hash);
        record_user(user.id);
        self.end_sessions(user.id, now).await?;
        self.metrics.revocation(Revocation::PasswordChanged);
        audit!(
            INFO,
            "password_reset",
            "success",
            Some(user.id),
            "self",
            "password reset with a reset token; every earlier token of the user revoked"
        );
        Ok(())
    }
}
