//! One-time password reset tokens: stored as SHA-256 digests, looked up by
//! digest, consumed by a conditional DELETE (see
//! [`super::UserProfiles::reset_password`], which does it in one
//! transaction with the new password).

use chrono::NaiveDateTime;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
};

use super::{
    StoreError, at_most_one,
    entities::password_reset_token::{self, Column, Entity as PasswordResetTokens},
};

/// A live reset token, as found by its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetTokenRow {
    pub id: i64,
    pub user_id: i64,
}

/// Records a token issued to `user_id` by its digest.
///
/// # Errors
/// The database's (a digest collision, which 256 random bits make
/// impossible in practice, would be a unique violation).
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "password_reset_tokens.insert"))]
pub async fn insert(
    db: &impl ConnectionTrait,
    user_id: i64,
    token_hash: String,
    expires_at: NaiveDateTime,
    now: NaiveDateTime,
) -> Result<(), StoreError> {
    let row = password_reset_token::ActiveModel {
        user_id: Set(user_id),
        token_hash: Set(token_hash),
        expires_at: Set(expires_at),
        created_at: Set(now),
        ..Default::default()
    };
    PasswordResetTokens::insert(row)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// The token with this digest, unless it has expired by `now` (or was used).
///
/// # Errors
/// The database's.
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "password_reset_tokens.find_live"))]
pub async fn find_live(
    db: &impl ConnectionTrait,
    token_hash: &str,
    now: NaiveDateTime,
) -> Result<Option<ResetTokenRow>, StoreError> {
    let rows: Vec<(i64, i64)> = PasswordResetTokens::find()
        .select_only()
        .column(Column::Id)
        .column(Column::UserId)
        .filter(Column::TokenHash.eq(token_hash))
        .filter(Column::ExpiresAt.gt(now))
        .into_tuple()
        .all(db)
        .await?;
    Ok(at_most_one(rows)?.map(|(id, user_id)| ResetTokenRow { id, user_id }))
}

/// Consumes the token `id` if it is still there and live at `now`: whether
/// this call consumed it. Of two concurrent calls, exactly one does (the
/// other's DELETE waits for the row lock, or the SQLite write lock, and
/// then finds nothing).
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "password_reset_tokens.consume"))]
pub(super) async fn consume(
    db: &impl ConnectionTrait,
    id: i64,
    now: NaiveDateTime,
) -> Result<bool, StoreError> {
    let deleted = PasswordResetTokens::delete_many()
        .filter(Column::Id.eq(id))
        .filter(Column::ExpiresAt.gt(now))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected == 1)
}

/// Deletes every reset token of `user_id` (their password changed, their
/// tokens were revoked, or they are gone).
///
/// # Errors
/// The database's.
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "password_reset_tokens.delete_of_user"))]
pub async fn delete_of_user(db: &impl ConnectionTrait, user_id: i64) -> Result<u64, StoreError> {
    let deleted = PasswordResetTokens::delete_many()
        .filter(Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected)
}

/// Deletes the tokens that expired by `now`: how many.
///
/// # Errors
/// The database's.
pub async fn flush_expired(
    db: &impl ConnectionTrait,
    now: NaiveDateTime,
) -> Result<u64, StoreError> {
    let deleted = PasswordResetTokens::delete_many()
        .filter(Column::ExpiresAt.lte(now))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected)
}
