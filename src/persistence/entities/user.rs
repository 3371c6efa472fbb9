use std::fmt;

use sea_orm::entity::prelude::*;

#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub email: String,
    /// Lower-cased email: the unique key.
    pub email_key: String,
    pub username: String,
    /// Lower-cased username: the unique key and what login matches on.
    pub username_key: String,
    /// argon2id PHC string.
    pub password: String,
    pub avatar: Option<String>,
    pub is_active: bool,
    pub is_staff: bool,
    pub is_superuser: bool,
    /// UTC.
    pub last_login: Option<DateTime>,
    /// UTC.
    pub date_joined: DateTime,
    /// Bumped by every revocation of the user's tokens; carried in the
    /// tokens issued after it (claim `gen`).
    pub token_generation: i64,
    /// UTC: when the user's tokens were last revoked.
    pub tokens_revoked_at: Option<DateTime>,
    /// Why: `password_changed` or `token_revoked`.
    pub tokens_revoked_reason: Option<String>,
}

/// Hand-written so the password hash can never reach a log line.
impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("is_active", &self.is_active)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
