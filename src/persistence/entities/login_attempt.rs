use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "login_attempts")]
pub struct Model {
    /// `user:<SHA-256 of the username key>` or `addr:<client address>`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Failed attempts in the current window (see `persistence::login_attempts`).
    pub failures: i32,
    /// Attempts admitted and still being checked.
    pub in_flight: i32,
    pub window_started_at: DateTime,
    /// When the latest in-flight attempt was admitted.
    pub reserved_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
