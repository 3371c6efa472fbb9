//! ListUsers' `filter` on a flag alone (`is_staff = true`,
//! `is_active = false`) pages by id among the users with that flag: each
//! index keeps those ids in order, so a page is one index range scan rather
//! than a walk over the whole table.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEXES: [(&str, Users); 2] = [
    ("ix_users_is_staff_id", Users::IsStaff),
    ("ix_users_is_active_id", Users::IsActive),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, flag) in INDEXES {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Users::Table)
                        .col(flag)
                        .col(Users::Id)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, _) in INDEXES {
            manager
                .drop_index(Index::drop().name(name).table(Users::Table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Users {
    Table,
    Id,
    IsActive,
    IsStaff,
}
