//! simplejwt's token_blacklist app: every issued refresh token is recorded as
//! outstanding, and a blacklisted one gets a row pointing at it. Unlike
//! simplejwt, the raw token is not stored: the jti identifies it, and a
//! database dump then holds no usable credentials.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261129_000001_create_users::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OutstandingTokens::Table)
                    .if_not_exists()
                    .col(big_pk_auto(OutstandingTokens::Id))
                    // Nullable and SET NULL on delete, as simplejwt: the jti
                    // must stay known after its user is gone.
                    .col(big_integer_null(OutstandingTokens::UserId))
                    .col(string_len_uniq(OutstandingTokens::Jti, 64))
                    .col(date_time_null(OutstandingTokens::CreatedAt))
                    .col(date_time(OutstandingTokens::ExpiresAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_outstanding_tokens_user")
                            .from(OutstandingTokens::Table, OutstandingTokens::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_outstanding_tokens_user_id")
                    .table(OutstandingTokens::Table)
                    .col(OutstandingTokens::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_outstanding_tokens_expires_at")
                    .table(OutstandingTokens::Table)
                    .col(OutstandingTokens::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BlacklistedTokens::Table)
                    .if_not_exists()
                    .col(big_pk_auto(BlacklistedTokens::Id))
                    // Unique: blacklisting the same token twice races to one row.
                    .col(big_integer_uniq(BlacklistedTokens::TokenId))
                    .col(date_time(BlacklistedTokens::BlacklistedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_blacklisted_tokens_token")
                            .from(BlacklistedTokens::Table, BlacklistedTokens::TokenId)
                            .to(OutstandingTokens::Table, OutstandingTokens::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(BlacklistedTokens::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(OutstandingTokens::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum OutstandingTokens {
    Table,
    Id,
    UserId,
    Jti,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum BlacklistedTokens {
    Table,
    Id,
    TokenId,
    BlacklistedAt,
}
