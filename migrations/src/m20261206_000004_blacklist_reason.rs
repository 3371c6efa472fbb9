//! Why a refresh token was blacklisted: only a token that was rotated out
//! proves, when presented again, that two parties hold one token family.
//! Rows written before this column existed, or by another writer of the
//! table (a Django service sharing it), count as logged out.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(BlacklistedTokens::Table)
                    .add_column(string_len(BlacklistedTokens::Reason, 16).default("logout"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(BlacklistedTokens::Table)
                    .drop_column(BlacklistedTokens::Reason)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum BlacklistedTokens {
    Table,
    Reason,
}
