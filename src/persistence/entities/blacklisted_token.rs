use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "blacklisted_tokens")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub token_id: i64,
    pub blacklisted_at: DateTime,
    /// `rotated`, `logout` or `revoked`: see `token_blacklist::BlacklistReason`.
    pub reason: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::outstanding_token::Entity",
        from = "Column::TokenId",
        to = "super::outstanding_token::Column::Id"
    )]
    OutstandingToken,
}

impl Related<super::outstanding_token::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::OutstandingToken.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
