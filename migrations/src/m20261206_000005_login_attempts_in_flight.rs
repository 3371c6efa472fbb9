//! Login-attempt counters keep checks in flight apart from failures, and
//! their keys become fixed-length digests (a username of 150 characters can
//! grow 18-fold under NFKC). The counters only matter for one window, so the
//! table is replaced rather than converted.

use sea_orm_migration::{prelude::*, schema::*};

use crate::{exact_collation, unicode_table};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(LoginAttempts::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        let mut key = string_len(LoginAttempts::Key, 80).primary_key().to_owned();
        exact_collation(manager, &mut key);
        let mut table = Table::create();
        table
            .table(LoginAttempts::Table)
            .col(key)
            .col(integer(LoginAttempts::Failures))
            .col(date_time(LoginAttempts::WindowStartedAt))
            .col(integer(LoginAttempts::InFlight))
            .col(integer(LoginAttempts::InFlightBefore))
            .col(big_integer(LoginAttempts::LeaseEpoch));
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
    InFlight,
    InFlightBefore,
    LeaseEpoch,
}
