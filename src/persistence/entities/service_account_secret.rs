use std::fmt;

use sea_orm::entity::prelude::*;

/// A client secret of a service account: only its digest is stored.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "service_account_secrets")]
pub struct Model {
    /// UUIDv4, simple form: the `cid` of the tokens it obtains.
    #[sea_orm(primary_key, auto_increment = false)]
    pub secret_id: String,
    pub account_id: i64,
    /// Lower-case hex SHA-256 of the secret.
    pub secret_hash: String,
    /// UTC.
    pub created_at: DateTime,
}

/// By hand, so the digest never reaches a log line.
impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountSecret")
            .field("secret_id", &self.secret_id)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
