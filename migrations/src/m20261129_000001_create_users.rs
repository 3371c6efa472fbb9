use sea_orm_migration::{prelude::*, schema::*};

use crate::{exact_collation, unicode_table};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Case-insensitive uniqueness, portably: the lower-cased forms live in
        // their own columns with plain unique indexes (PostgreSQL would need an
        // expression index, MariaDB a collation, SQLite COLLATE NOCASE is ASCII-only).
        let mut email_key = string_len(Users::EmailKey, 255);
        exact_collation(manager, &mut email_key);
        let mut username_key = string_len(Users::UsernameKey, 300);
        exact_collation(manager, &mut username_key);

        let mut table = Table::create();
        table
            .table(Users::Table)
            .if_not_exists()
            .col(big_pk_auto(Users::Id))
            .col(string_len(Users::Email, 255))
            .col(email_key)
            .col(string_len(Users::Username, 150))
            .col(username_key)
            .col(string_len(Users::Password, 255))
            .col(string_len_null(Users::Avatar, 200))
            .col(boolean(Users::IsActive))
            .col(boolean(Users::IsStaff))
            .col(boolean(Users::IsSuperuser))
            .col(date_time_null(Users::LastLogin))
            .col(date_time(Users::DateJoined));
        unicode_table(manager, &mut table);
        manager.create_table(table).await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_users_email_key")
                    .table(Users::Table)
                    .col(Users::EmailKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_users_username_key")
                    .table(Users::Table)
                    .col(Users::UsernameKey)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Users::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub(crate) enum Users {
    Table,
    Id,
    Email,
    EmailKey,
    Username,
    UsernameKey,
    Password,
    Avatar,
    IsActive,
    IsStaff,
    IsSuperuser,
    LastLogin,
    DateJoined,
}
