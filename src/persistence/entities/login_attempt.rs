use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "login_attempts")]
pub struct Model {
    /// `user:<SHA-256 of the username key>` or `addr:<client address>`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Failed attempts in the current window (see `persistence::login_attempts`).
    pub failures: i32,
    pub window_started_at: DateTime,
    /// Attempts admitted in lease epoch `lease_epoch` and still being checked.
    pub in_flight: i32,
    /// The same for the epoch before; older ones have expired.
    pub in_flight_before: i32,
    pub lease_epoch: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
