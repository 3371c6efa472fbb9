//! simplejwt's token_blacklist app: outstanding refresh tokens and the
//! blacklist, in the database so every replica sees them and a restart keeps
//! them.

use chrono::{DateTime, NaiveDateTime};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
};

use super::{
    at_most_one,
    entities::{blacklisted_token, outstanding_token},
};
use crate::{
    error::{Error, unique_violation},
    tokens::{Claims, TokenError},
};

/// Records a refresh token we issued (simplejwt's `OutstandingToken`).
pub async fn record_outstanding(
    db: &impl ConnectionTrait,
    claims: &Claims,
    now: NaiveDateTime,
) -> Result<(), Error> {
    insert_outstanding(db, claims, Some(claims.user_id), now).await
}

/// Inserts the outstanding row unless one with this jti exists.
async fn insert_outstanding(
    db: &impl ConnectionTrait,
    claims: &Claims,
    user_id: Option<i64>,
    now: NaiveDateTime,
) -> Result<(), Error> {
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

pub async fn is_blacklisted(db: &impl ConnectionTrait, jti: &str) -> Result<bool, Error> {
    // `all`, not `one`: see `super::at_most_one`.
    let found: Vec<i64> = blacklisted_token::Entity::find()
        .select_only()
        .column(blacklisted_token::Column::Id)
        .inner_join(outstanding_token::Entity)
        .filter(outstanding_token::Column::Jti.eq(jti))
        .into_tuple()
        .all(db)
        .await?;
    Ok(!found.is_empty())
}

/// The outstanding row of the refresh token `claims`, created if this
/// service never recorded it (a token from a Django service sharing the
/// key). `owner` is the token's user if it still exists.
///
/// Call outside the transaction that blacklists: the row's id never changes,
/// and keeping this read out lets that transaction start with its write
/// (SQLite then takes the write lock up front instead of failing to upgrade
/// a read lock, and InnoDB has no shared lock to deadlock on).
pub async fn outstanding_id(
    db: &impl ConnectionTrait,
    claims: &Claims,
    owner: Option<i64>,
    now: NaiveDateTime,
) -> Result<i64, Error> {
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
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("outstanding token row vanished")))
}

/// Blacklists the outstanding token `token_id`. A token blacklisted already,
/// even by a concurrent call, is refused as blacklisted: of two calls racing
/// with one token exactly one succeeds (the unique `token_id` decides).
pub async fn blacklist(
    db: &impl ConnectionTrait,
    token_id: i64,
    now: NaiveDateTime,
) -> Result<(), Error> {
    let row = blacklisted_token::ActiveModel {
        token_id: Set(token_id),
        blacklisted_at: Set(now),
        ..Default::default()
    };
    match blacklisted_token::Entity::insert(row)
        .exec_without_returning(db)
        .await
    {
        Ok(_) => Ok(()),
        Err(err) if unique_violation(&err).is_some() => Err(TokenError::Blacklisted.into()),
        Err(err) => Err(err.into()),
    }
}

/// Blacklists every unexpired refresh token of `user_id` not blacklisted
/// yet ("log out everywhere"). Returns how many were blacklisted.
///
/// Concurrent calls for one user (several replays of a stolen token arrive
/// at once) insert overlapping rows: the loser skips them rather than fail.
pub async fn blacklist_all_of_user(
    db: &impl ConnectionTrait,
    user_id: i64,
    now: NaiveDateTime,
) -> Result<u64, Error> {
    use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
    let already = Query::select()
        .column(blacklisted_token::Column::TokenId)
        .from(blacklisted_token::Entity)
        .to_owned();
    let live = Query::select()
        .column(outstanding_token::Column::Id)
        .expr(Expr::val(now))
        .from(outstanding_token::Entity)
        .and_where(outstanding_token::Column::UserId.eq(user_id))
        .and_where(outstanding_token::Column::ExpiresAt.gt(now))
        .and_where(Expr::col(outstanding_token::Column::Id).not_in_subquery(already))
        .to_owned();
    let insert = Query::insert()
        .into_table(blacklisted_token::Entity)
        .columns([
            blacklisted_token::Column::TokenId,
            blacklisted_token::Column::BlacklistedAt,
        ])
        .select_from(live)
        .map_err(|e| Error::Internal(anyhow::anyhow!("building the revoke-all query: {e}")))?
        .on_conflict(
            OnConflict::column(blacklisted_token::Column::TokenId)
                .do_nothing_on([blacklisted_token::Column::TokenId])
                .to_owned(),
        )
        .to_owned();
    Ok(db.execute(&insert).await?.rows_affected())
}

/// Deletes expired outstanding tokens; their blacklist rows go with them
/// (ON DELETE CASCADE). Returns how many outstanding tokens were deleted.
pub async fn flush_expired(db: &impl ConnectionTrait, now: NaiveDateTime) -> Result<u64, Error> {
    let result = outstanding_token::Entity::delete_many()
        .filter(outstanding_token::Column::ExpiresAt.lte(now))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

fn to_datetime(epoch_seconds: i64) -> Result<NaiveDateTime, Error> {
    DateTime::from_timestamp(epoch_seconds, 0)
        .map(|t| t.naive_utc())
        .ok_or(Error::Token(TokenError::Invalid))
}
