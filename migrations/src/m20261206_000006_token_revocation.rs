//! Per-user revocation of every token issued before a moment. Tokens we
//! issue carry the user's `token_generation` (claim `gen`), so a revocation,
//! which bumps it, refuses exactly the earlier ones, even within the same
//! second; tokens without the claim (issued by a Django peer sharing the key)
//! are judged by `iat` against `tokens_revoked_at`.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        let columns = [
            big_integer(Users::TokenGeneration).default(0).to_owned(),
            date_time_null(Users::TokensRevokedAt),
            string_len_null(Users::TokensRevokedReason, 32),
        ];
        for column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Users::TokenGeneration,
            Users::TokensRevokedAt,
            Users::TokensRevokedReason,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    TokenGeneration,
    TokensRevokedAt,
    TokensRevokedReason,
}
