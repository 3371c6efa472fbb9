//! The ids of deleted users. A user row that came back under a deleted id
//! (re-running `import-django` after DeleteUser) would take the deleted
//! account's unexpired tokens with it: the import skips these ids.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DeletedUsers::Table)
                    .if_not_exists()
                    .col(big_integer(DeletedUsers::Id).primary_key())
                    .col(date_time(DeletedUsers::DeletedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DeletedUsers::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum DeletedUsers {
    Table,
    Id,
    DeletedAt,
}
