use sea_orm::entity::prelude::*;

/// A public key a service account signs its assertions with.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "service_account_keys")]
pub struct Model {
    /// UUIDv4, simple form: the assertion's `kid` header, and the `cid` of
    /// the tokens it obtains.
    #[sea_orm(primary_key, auto_increment = false)]
    pub kid: String,
    pub account_id: i64,
    /// `EdDSA`, `ES256` or `RS256`, derived from the key.
    pub algorithm: String,
    /// SPKI PEM.
    pub public_key_pem: String,
    /// UTC.
    pub created_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
