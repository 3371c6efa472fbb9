use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "login_attempts")]
pub struct Model {
    /// `user:<username key>` or `addr:<client address>`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Attempts in the current window (see `persistence::login_attempts`).
    pub failures: i32,
    pub window_started_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
