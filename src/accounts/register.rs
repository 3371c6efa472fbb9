use super::Accounts;
use crate::{
    config::Registration,
    domain::{Avatar, Email, Password, User, Username},
    error::Error,
    persistence::{
        db_now,
        users::{self, NewUser},
    },
    telemetry::record_user,
};

/// A sign-up, every field already valid.
#[derive(Debug)]
pub struct NewAccount {
    pub email: Email,
    pub username: Username,
    pub password: Password,
    pub avatar: Option<Avatar>,
}

impl Accounts {
    /// Creates an ordinary (non-staff) user: the public sign-up.
    ///
    /// # Errors
    /// PERMISSION_DENIED when registration is closed; ALREADY_EXISTS naming
    /// the taken field; hashing overload.
    pub async fn register(&self, account: NewAccount) -> Result<User, Error> {
        if self.registration == Registration::Closed {
            return Err(Error::PermissionDenied(
                "Registration is closed; ask an administrator for an account.",
            ));
        }
        let user = self.create_account(account, false).await?;
        self.metrics.registration();
        // The new user is this call's user; CreateUser's is the caller.
        record_user(user.id);
        Ok(user)
    }

    /// Creates a user, staff or not: Register's work, and CreateUser's.
    ///
    /// # Errors
    /// ALREADY_EXISTS naming the taken field; hashing overload.
    pub(super) async fn create_account(
        &self,
        account: NewAccount,
        is_staff: bool,
    ) -> Result<User, Error> {
        let NewAccount {
            email,
            username,
            password,
            avatar,
        } = account;
        // Before hashing, so a taken name costs no argon2 work; the unique
        // indexes still decide races.
        if let Some(field) = users::taken_field(&self.db, &email, &username).await? {
            return Err(Error::AlreadyExists {
                what: "user",
                field,
            });
        }
        let password_hash = self.hasher.hash(&password).await?;
        let cost_of_new = password_hash.clone();
        let new = NewUser {
            email,
            username,
            password_hash,
            avatar,
            is_staff,
            is_superuser: false,
        };
        let user = users::insert(&self.db, new, db_now()).await?;
        self.hasher.stored_hash_changed(None, &cost_of_new);
        Ok(user.into())
    }
}
