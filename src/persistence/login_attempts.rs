//! Login-attempt counters for throttling, updated atomically in the
//! database so that every replica shares them and parallel attempts cannot
//! slip past a limit (the ZITADEL lockout bypass, GHSA-7h8m-vrxx-vr4m, read
//! a counter and wrote it back in two steps).

use std::time::Duration;

use chrono::NaiveDateTime;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, TransactionTrait,
    sea_query::{Expr, ExprTrait, OnConflict},
};

use super::{
    at_most_one,
    entities::login_attempt::{self, Column, Entity as LoginAttempts},
};
use crate::error::Error;

/// Counts one more attempt for `key`, starting a new window if the last one
/// is over, and returns the count and when its window started. The upsert
/// and the read run in one transaction, so concurrent callers each see
/// their own, distinct count.
pub async fn reserve(
    db: &DatabaseConnection,
    key: &str,
    now: NaiveDateTime,
    window: Duration,
) -> Result<(i32, NaiveDateTime), Error> {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let window_over = Expr::col((LoginAttempts, Column::WindowStartedAt)).lte(now - window);
    let failures = Expr::case(window_over.clone(), 1)
        .finally(Expr::col((LoginAttempts, Column::Failures)).add(1));
    let started =
        Expr::case(window_over, now).finally(Expr::col((LoginAttempts, Column::WindowStartedAt)));
    let row = login_attempt::ActiveModel {
        key: Set(key.to_owned()),
        failures: Set(1),
        window_started_at: Set(now),
    };

    let txn = db.begin().await?;
    LoginAttempts::insert(row)
        .on_conflict(
            OnConflict::column(Column::Key)
                .value(Column::Failures, failures)
                .value(Column::WindowStartedAt, started)
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
    let counted = at_most_one(LoginAttempts::find_by_id(key.to_owned()).all(&txn).await?)?
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("login attempt row vanished")))?;
    txn.commit().await?;
    Ok((counted.failures, counted.window_started_at))
}

/// Forgets `key`'s attempts (a successful login resets its username).
pub async fn forget(db: &impl ConnectionTrait, key: &str) -> Result<(), Error> {
    LoginAttempts::delete_by_id(key.to_owned()).exec(db).await?;
    Ok(())
}

/// Takes back one reserved attempt that turned out to be a success (for
/// keys, such as a gateway's address, that a success must not reset).
pub async fn release(db: &impl ConnectionTrait, key: &str) -> Result<(), Error> {
    LoginAttempts::update_many()
        .col_expr(Column::Failures, Expr::col(Column::Failures).sub(1))
        .filter(Column::Key.eq(key))
        .filter(Column::Failures.gt(0))
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes counters whose window ended before `before`.
pub async fn flush_stale(db: &impl ConnectionTrait, before: NaiveDateTime) -> Result<u64, Error> {
    let result = LoginAttempts::delete_many()
        .filter(Column::WindowStartedAt.lte(before))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}
