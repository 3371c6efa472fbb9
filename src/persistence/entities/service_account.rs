use sea_orm::entity::prelude::*;

/// A machine identity (issue 15); its credentials are in
/// `service_account_secrets` and `service_account_keys`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "service_accounts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The OAuth `client_id`: `[a-z0-9-]{1,64}`, unique.
    #[sea_orm(unique)]
    pub name: String,
    /// Allowed scopes, space-separated and sorted.
    pub scopes: String,
    pub is_active: bool,
    /// UTC.
    pub created_at: DateTime,
    /// UTC: the last grant, recorded at most once a minute.
    pub last_used_at: Option<DateTime>,
    /// UTC: set on deactivation; tokens with an `iat` up to this second
    /// inclusive are refused, even after a reactivation.
    pub tokens_valid_after: Option<DateTime>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
