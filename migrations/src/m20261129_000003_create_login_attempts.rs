//! Failed-login counters, shared by every replica: one row per throttled
//! key (a username, or a client address when that limit is on).

use sea_orm_migration::{prelude::*, schema::*};

use crate::{exact_collation, unicode_table};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut key = string_len(LoginAttempts::Key, 320).primary_key().to_owned();
        exact_collation(manager, &mut key);
        let mut table = Table::create();
        table
            .table(LoginAttempts::Table)
            .if_not_exists()
            .col(key)
            .col(integer(LoginAttempts::Failures))
            .col(date_time(LoginAttempts::WindowStartedAt));
        unicode_table(manager, &mut table);
        manager.create_table(table).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LoginAttempts::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum LoginAttempts {
    Table,
    Key,
    Failures,
    WindowStartedAt,
}
