//! simplejwt's token_blacklist app: outstanding refresh tokens and the
//! blacklist, in the database so every replica sees them and a restart keeps
//! them.
//!
//! Issuing a refresh token and revoking all of a user's tokens serialise per
//! user: both run in a transaction that first locks the user's row
//! ([`lock_user_tokens`]). Without that, on PostgreSQL's READ COMMITTED a
//! revocation whose snapshot predates a concurrent rotation's commit would
//! miss the token that rotation minted, and a thief rotating a stolen token
//! in a loop would keep a live one after reuse was detected.

use chrono::{DateTime, NaiveDateTime};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection,
    EntityTrait, QueryFilter, QuerySelect,
};

use super::{
    StoreError, at_most_one,
    entities::{blacklisted_token, outstanding_token, user},
    error::unique_violation,
};
use crate::tokens::Claims;

/// Why a refresh token is on the blacklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlacklistReason {
    /// Replaced by its successor (rotation): seeing it again means reuse.
    RotatedOut,
    /// Ended by Logout (or by a writer that does not say why).
    LoggedOut,
    /// Revoked with the rest of its family after reuse was detected.
    Revoked,
}

impl BlacklistReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::RotatedOut => "rotated",
            Self::LoggedOut => "logout",
            Self::Revoked => "revoked",
        }
    }

    fn from_column(value: &str) -> Self {
        match value {
            "rotated" => Self::RotatedOut,
            "revoked" => Self::Revoked,
            _ => Self::LoggedOut,
        }
    }
}

/// Takes the per-user lock that issuing and revoking refresh tokens share:
/// the user's row, locked for update (on PostgreSQL `FOR NO KEY UPDATE`,
/// which still lets other transactions insert rows referencing the user).
/// SQLite has one writer at a time, and these transactions take its write
/// lock up front ([`super::begin_write`]), so there that does it.
async fn lock_user_tokens(db: &impl ConnectionTrait, user_id: i64) -> Result<(), StoreError> {
    use sea_orm::sea_query::LockType;
    let lock = match db.get_database_backend() {
        DatabaseBackend::Sqlite => return Ok(()),
        DatabaseBackend::Postgres => LockType::NoKeyUpdate,
        _ => LockType::Update,
    };
    user::Entity::find_by_id(user_id)
        .select_only()
        .column(user::Column::Id)
        .lock(lock)
        .into_tuple::<i64>()
        .all(db)
        .await?;
    Ok(())
}

/// Records `issued`, a refresh token we just made (simplejwt's
/// `OutstandingToken`), blacklisting `rotated_out` (the outstanding row of
/// the token it replaces) in the same transaction: both happen or neither.
///
/// # Errors
/// `rotated_out` was blacklisted already, even by a concurrent call or a
/// revocation: [`StoreError::AlreadyBlacklisted`].
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "token_blacklist.record_issued"))]
pub(super) async fn record_issued(
    db: &DatabaseConnection,
    issued: &Claims,
    rotated_out: Option<i64>,
    now: NaiveDateTime,
) -> Result<(), StoreError> {
    let txn = super::begin_write(db).await?;
    lock_user_tokens(&txn, issued.user_id).await?;
    if let Some(old) = rotated_out {
        blacklist(&txn, old, BlacklistReason::RotatedOut, now).await?;
    }
    insert_outstanding(&txn, issued, Some(issued.user_id), now).await?;
    txn.commit().await?;
    Ok(())
}

/// Inserts the outstanding row unless one with this jti exists.
async fn insert_outstanding(
    db: &impl ConnectionTrait,
    claims: &Claims,
    user_id: Option<i64>,
    now: NaiveDateTime,
) -> Result<(), StoreError> {
    let row = outstanding_token::ActiveModel {
        user_id: Set(user_id),
        jti: Set(claims.jti.clone()),
        created_at: Set(Some(now)),
        expires_at: Set(to_datetime(claims.exp)?),
        ..Default::default()
    };
    outstanding_token::Entity::insert(row)
        .on_conflict_do_nothing_on([outstanding_token::Column::Jti])
        .exec_without_returning(db)
        .await?;
    Ok(())
}

#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "token_blacklist.is_blacklisted"))]
pub(super) async fn is_blacklisted(
    db: &impl ConnectionTrait,
    jti: &str,
) -> Result<bool, StoreError> {
    Ok(blacklist_reason(db, jti).await?.is_some())
}

/// Why the refresh token `jti` is blacklisted; `None` if it is not.
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "token_blacklist.blacklist_reason"))]
pub(super) async fn blacklist_reason(
    db: &impl ConnectionTrait,
    jti: &str,
) -> Result<Option<BlacklistReason>, StoreError> {
    // `all`, not `one`: see `super::at_most_one`.
    let found: Vec<String> = blacklisted_token::Entity::find()
        .select_only()
        .column(blacklisted_token::Column::Reason)
        .inner_join(outstanding_token::Entity)
        .filter(outstanding_token::Column::Jti.eq(jti))
        .into_tuple()
        .all(db)
        .await?;
    Ok(at_most_one(found)?.map(|reason| BlacklistReason::from_column(&reason)))
}

/// The outstanding row of the refresh token `claims`, created if this
/// service never recorded it (a token from a Django service sharing the
/// key). `owner` is the token's user if it still exists.
///
/// Call outside the transaction that blacklists: the row's id never changes,
/// and keeping this read out lets that transaction start with its write
/// (SQLite then takes the write lock up front instead of failing to upgrade
/// a read lock, and InnoDB has no shared lock to deadlock on).
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "token_blacklist.outstanding_id"))]
pub(super) async fn outstanding_id(
    db: &impl ConnectionTrait,
    claims: &Claims,
    owner: Option<i64>,
    now: NaiveDateTime,
) -> Result<i64, StoreError> {
    let find = async || {
        let ids = outstanding_token::Entity::find()
            .select_only()
            .column(outstanding_token::Column::Id)
            .filter(outstanding_token::Column::Jti.eq(claims.jti.as_str()))
            .into_tuple::<i64>()
            .all(db)
            .await?;
        at_most_one(ids)
    };
    if let Some(id) = find().await? {
        return Ok(id);
    }
    insert_outstanding(db, claims, owner, now).await?;
    find()
        .await?
        .ok_or_else(|| StoreError::other("outstanding token row vanished"))
}

/// Blacklists the outstanding token `token_id`. A token blacklisted already,
/// even by a concurrent call, is refused as blacklisted: of two calls racing
/// with one token exactly one succeeds (the unique `token_id` decides).
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "token_blacklist.blacklist"))]
pub(super) async fn blacklist(
    db: &impl ConnectionTrait,
    token_id: i64,
    reason: BlacklistReason,
    now: NaiveDateTime,
) -> Result<(), StoreError> {
    let row = blacklisted_token::ActiveModel {
        token_id: Set(token_id),
        blacklisted_at: Set(now),
        reason: Set(reason.as_str().to_owned()),
        ..Default::default()
    };
    match blacklisted_token::Entity::insert(row)
        .exec_without_returning(db)
        .await
    {
        Ok(_) => Ok(()),
        Err(err) if unique_violation(&err).is_some() => Err(StoreError::AlreadyBlacklisted),
        Err(err) => Err(err.into()),
    }
}

/// Blacklists every refresh token of `user_id` that has not expired by
/// `expired_before` and is not blacklisted yet ("log out everywhere"), under
/// the per-user lock: a token being issued concurrently is either seen and
/// revoked here or issued after this commits, from a token this revoked.
/// Returns how many were blacklisted.
///
/// The live tokens are read with a plain query after the lock is taken (a
/// new snapshot on PostgreSQL's READ COMMITTED; InnoDB's first consistent
/// read), not inside `INSERT … SELECT`, which InnoDB runs as a locking read
/// whose gap locks make revocations of different users deadlock.
/// Concurrent calls for one user (several replays of a stolen token arrive
/// at once) insert overlapping rows: the loser skips them rather than fail.
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "token_blacklist.revoke_all_of_user"))]
pub(super) async fn revoke_all_of_user(
    db: &DatabaseConnection,
    user_id: i64,
    expired_before: NaiveDateTime,
    now: NaiveDateTime,
) -> Result<u64, StoreError> {
    use sea_orm::sea_query::{Expr, ExprTrait, Query};
    let txn = super::begin_write(db).await?;
    lock_user_tokens(&txn, user_id).await?;
    let already = Query::select()
        .column(blacklisted_token::Column::TokenId)
        .from(blacklisted_token::Entity)
        .to_owned();
    let live: Vec<i64> = outstanding_token::Entity::find()
        .select_only()
        .column(outstanding_token::Column::Id)
        .filter(outstanding_token::Column::UserId.eq(user_id))
        .filter(outstanding_token::Column::ExpiresAt.gt(expired_before))
        .filter(Expr::col(outstanding_token::Column::Id).not_in_subquery(already))
        .into_tuple()
        .all(&txn)
        .await?;
    let mut revoked = 0;
    // Under every backend's limit on bound parameters.
    for batch in live.chunks(1000) {
        let rows = batch
            .iter()
            .map(|&token_id| blacklisted_token::ActiveModel {
                token_id: Set(token_id),
                blacklisted_at: Set(now),
                reason: Set(BlacklistReason::Revoked.as_str().to_owned()),
                ..Default::default()
            });
        let inserted = blacklisted_token::Entity::insert_many(rows)
            .on_conflict_do_nothing_on([blacklisted_token::Column::TokenId])
            .exec_without_returning(&txn)
            .await?;
        if let sea_orm::TryInsertResult::Inserted(rows) = inserted {
            revoked += rows;
        }
    }
    txn.commit().await?;
    Ok(revoked)
}

/// Deletes outstanding tokens that expired by `expired_before`; their
/// blacklist rows go with them (ON DELETE CASCADE). Returns how many
/// outstanding tokens were deleted.
///
/// `expired_before` must allow for the tokens' leeway: a token still
/// accepted must keep its blacklist row, or flushing would revive it.
pub async fn flush_expired(
    db: &impl ConnectionTrait,
    expired_before: NaiveDateTime,
) -> Result<u64, StoreError> {
    let result = outstanding_token::Entity::delete_many()
        .filter(outstanding_token::Column::ExpiresAt.lte(expired_before))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

fn to_datetime(epoch_seconds: i64) -> Result<NaiveDateTime, StoreError> {
    DateTime::from_timestamp(epoch_seconds, 0)
        .map(|t| t.naive_utc())
        .ok_or(StoreError::ExpiryOutOfRange)
}
