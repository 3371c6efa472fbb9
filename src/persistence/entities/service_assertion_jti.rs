use sea_orm::entity::prelude::*;

/// An assertion already used for a grant, kept until it expires so that a
/// replay is refused.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "service_assertion_jtis")]
pub struct Model {
    /// Hex SHA-256 of the client id, a newline and the assertion's `jti`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub jti: String,
    /// UTC: the assertion's `exp`.
    pub expires_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
