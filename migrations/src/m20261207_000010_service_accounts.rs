//! Service accounts (issue 15): machine identities, their credentials, and
//! the assertion ids already used.
//!
//! - `service_accounts`: the name is the OAuth `client_id`; `scopes` is the
//!   allowed set, space-separated and sorted (at most 32 × 64 characters);
//!   `tokens_valid_after` is set on deactivation, so that tokens issued up
//!   to then (by `iat`, to the second inclusive) stay refused after a
//!   reactivation.
//! - `service_account_secrets`: only the hex SHA-256 of each client secret
//!   (256 random bits: a fast hash is enough, and a dump holds no usable
//!   secret).
//! - `service_account_keys`: SPKI PEM public keys for signed assertions,
//!   with the algorithm derived from the key (`EdDSA`, `ES256`, `RS256`).
//! - `service_assertion_jtis`: assertions (RFC 7523) already used, so a
//!   replay is refused by the primary key on every backend. `jti` holds the
//!   hex SHA-256 of the client id, a newline and the assertion's `jti`:
//!   fixed length whatever the client sends, scoped to the client (two
//!   services may pick the same `jti`), and immune to MariaDB's
//!   case-insensitive collations. Rows past `expires_at` are deleted by
//!   `flush-expired-tokens`.
//!
//! Credential ids (`secret_id`, `kid`) are UUIDv4 in simple form, unique
//! across accounts: a service token's `cid` names one without its account.
//! Credentials go with their account (ON DELETE CASCADE).

use sea_orm_migration::{prelude::*, schema::*};

use crate::{exact_collation, unicode_table};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut name = string_len_uniq(ServiceAccounts::Name, 64);
        exact_collation(manager, &mut name);
        let mut accounts = Table::create()
            .table(ServiceAccounts::Table)
            .if_not_exists()
            .col(big_pk_auto(ServiceAccounts::Id))
            .col(name)
            .col(text(ServiceAccounts::Scopes))
            .col(boolean(ServiceAccounts::IsActive))
            .col(date_time(ServiceAccounts::CreatedAt))
            .col(date_time_null(ServiceAccounts::LastUsedAt))
            .col(date_time_null(ServiceAccounts::TokensValidAfter))
            .to_owned();
        unicode_table(manager, &mut accounts);
        manager.create_table(accounts).await?;

        let mut secret_id = string_len(ServiceAccountSecrets::SecretId, 32);
        exact_collation(manager, &mut secret_id);
        let mut secrets = Table::create()
            .table(ServiceAccountSecrets::Table)
            .if_not_exists()
            .col(secret_id.primary_key())
            .col(big_integer(ServiceAccountSecrets::AccountId))
            .col(string_len(ServiceAccountSecrets::SecretHash, 64))
            .col(date_time(ServiceAccountSecrets::CreatedAt))
            .foreign_key(
                ForeignKey::create()
                    .name("fk_service_account_secrets_account")
                    .from(
                        ServiceAccountSecrets::Table,
                        ServiceAccountSecrets::AccountId,
                    )
                    .to(ServiceAccounts::Table, ServiceAccounts::Id)
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .to_owned();
        unicode_table(manager, &mut secrets);
        manager.create_table(secrets).await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_service_account_secrets_account_id")
                    .table(ServiceAccountSecrets::Table)
                    .col(ServiceAccountSecrets::AccountId)
                    .to_owned(),
            )
            .await?;

        let mut kid = string_len(ServiceAccountKeys::Kid, 32);
        exact_collation(manager, &mut kid);
        let mut keys = Table::create()
            .table(ServiceAccountKeys::Table)
            .if_not_exists()
            .col(kid.primary_key())
            .col(big_integer(ServiceAccountKeys::AccountId))
            .col(string_len(ServiceAccountKeys::Algorithm, 16))
            .col(text(ServiceAccountKeys::PublicKeyPem))
            .col(date_time(ServiceAccountKeys::CreatedAt))
            .foreign_key(
                ForeignKey::create()
                    .name("fk_service_account_keys_account")
                    .from(ServiceAccountKeys::Table, ServiceAccountKeys::AccountId)
                    .to(ServiceAccounts::Table, ServiceAccounts::Id)
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .to_owned();
        unicode_table(manager, &mut keys);
        manager.create_table(keys).await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_service_account_keys_account_id")
                    .table(ServiceAccountKeys::Table)
                    .col(ServiceAccountKeys::AccountId)
                    .to_owned(),
            )
            .await?;

        let mut jti = string_len(ServiceAssertionJtis::Jti, 64);
        exact_collation(manager, &mut jti);
        let mut jtis = Table::create()
            .table(ServiceAssertionJtis::Table)
            .if_not_exists()
            .col(jti.primary_key())
            .col(date_time(ServiceAssertionJtis::ExpiresAt))
            .to_owned();
        unicode_table(manager, &mut jtis);
        manager.create_table(jtis).await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_service_assertion_jtis_expires_at")
                    .table(ServiceAssertionJtis::Table)
                    .col(ServiceAssertionJtis::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ServiceAssertionJtis::Table.into_iden(),
            ServiceAccountKeys::Table.into_iden(),
            ServiceAccountSecrets::Table.into_iden(),
            ServiceAccounts::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum ServiceAccounts {
    Table,
    Id,
    Name,
    Scopes,
    IsActive,
    CreatedAt,
    LastUsedAt,
    TokensValidAfter,
}

#[derive(DeriveIden)]
enum ServiceAccountSecrets {
    Table,
    SecretId,
    AccountId,
    SecretHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ServiceAccountKeys {
    Table,
    Kid,
    AccountId,
    Algorithm,
    PublicKeyPem,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ServiceAssertionJtis {
    Table,
    Jti,
    ExpiresAt,
}
