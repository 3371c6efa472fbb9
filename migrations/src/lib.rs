//! Schema migrations for auth-service.
//!
//! Written with SeaQuery's portable builders only, so the same files run on
//! SQLite, PostgreSQL and MariaDB/MySQL. `auth-service migrate` applies them;
//! `auth-service serve` applies pending ones before it starts serving.

// `MigrationTrait` is an async_trait whose signatures elide `SchemaManager`'s
// lifetime; spelling it out breaks the trait match.
#![allow(elided_lifetimes_in_paths)]

pub use sea_orm_migration::prelude::*;

mod m20261129_000001_create_users;
mod m20261129_000002_create_token_blacklist;
mod m20261129_000003_create_login_attempts;
mod m20261206_000004_blacklist_reason;
mod m20261206_000005_login_attempts_in_flight;
mod m20261206_000006_token_revocation;
mod m20261206_000007_password_reset_tokens;
mod m20261206_000008_deleted_users;
mod m20261206_000009_users_flag_indexes;
mod m20261207_000010_service_accounts;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_create_users::Migration),
            Box::new(m20261129_000002_create_token_blacklist::Migration),
            Box::new(m20261129_000003_create_login_attempts::Migration),
            Box::new(m20261206_000004_blacklist_reason::Migration),
            Box::new(m20261206_000005_login_attempts_in_flight::Migration),
            Box::new(m20261206_000006_token_revocation::Migration),
            Box::new(m20261206_000007_password_reset_tokens::Migration),
            Box::new(m20261206_000008_deleted_users::Migration),
            Box::new(m20261206_000009_users_flag_indexes::Migration),
            Box::new(m20261207_000010_service_accounts::Migration),
        ]
    }
}

fn is_mysql(manager: &SchemaManager<'_>) -> bool {
    manager.get_database_backend() == sea_orm_migration::sea_orm::DatabaseBackend::MySql
}

/// On MySQL, tables are utf8mb4 whatever the server's default: usernames
/// are Unicode.
pub(crate) fn unicode_table(manager: &SchemaManager<'_>, table: &mut TableCreateStatement) {
    if is_mysql(manager) {
        table.character_set("utf8mb4");
    }
}

/// MariaDB's default utf8mb4 collations compare case- and accent-insensitively
/// ('José' = 'jose'). Uniqueness is decided by the lower-cased key columns, so
/// on MySQL they use a binary collation and compare exactly as on the others.
pub(crate) fn exact_collation(manager: &SchemaManager<'_>, column: &mut ColumnDef) {
    if is_mysql(manager) {
        column.extra("COLLATE utf8mb4_bin");
    }
}
