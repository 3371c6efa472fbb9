//! Login-attempt counters for throttling, updated atomically in the
//! database so that every replica shares them and parallel attempts cannot
//! slip past a limit (the ZITADEL lockout bypass, GHSA-7h8m-vrxx-vr4m, read
//! a counter and wrote it back in two steps).
//!
//! A row per key counts the attempts that failed in the current window and,
//! apart from them, the attempts admitted and still being checked. Only
//! failures refuse an attempt; checks in flight make it wait its turn, so
//! that failures plus checks never exceed the limit.

use std::time::Duration;

use chrono::NaiveDateTime;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, TransactionTrait,
    sea_query::{Expr, ExprTrait, OnConflict, SimpleExpr},
};

use super::{
    at_most_one,
    entities::login_attempt::{self, Column, Entity as LoginAttempts},
};
use crate::error::Error;

/// The rules one key is admitted under.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Failures (plus checks in flight) allowed per window.
    pub limit: u32,
    pub window: Duration,
    /// Checks in flight admitted longer ago than this are taken to have died
    /// with their process, and stop taking up the budget.
    pub lease: Duration,
}

/// What [`admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted as in flight: check the password, then [`settle`].
    Admitted,
    /// `limit` attempts failed in the window that started then.
    Throttled { window_started_at: NaiveDateTime },
    /// Failures and checks in flight use up the budget: wait for a check
    /// to end.
    Busy,
}

/// How an admitted attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The password check failed.
    Failed,
    /// The password was right: a key that `resets` forgets its failures.
    Succeeded { resets: bool },
    /// Never reached the password check (overload, cancelled call).
    Withdrawn,
}

/// Admits one attempt for `key` if its budget allows.
///
/// A read first answers the common refusals without writing (a throttled
/// flood costs no disk write); an admission then upserts and re-reads the
/// row in one transaction, so the row is locked from the upsert until the
/// decision is committed and concurrent callers decide one after the other.
pub async fn admit(
    db: &DatabaseConnection,
    key: &str,
    budget: Budget,
    now: NaiveDateTime,
) -> Result<Admission, Error> {
    if let Some(row) = find(db, key).await? {
        let refusal = decide(&row, budget, now);
        if refusal != Admission::Admitted {
            return Ok(refusal);
        }
    }
    let (window_over, lease_over) = expired(budget, now);
    let fresh = login_attempt::ActiveModel {
        key: Set(key.to_owned()),
        failures: Set(0),
        in_flight: Set(0),
        window_started_at: Set(now),
        reserved_at: Set(now),
    };
    // Assignments run left to right on MySQL, later ones seeing earlier
    // ones: the window start, which the others test, is set last.
    let normalise = OnConflict::column(Column::Key)
        .value(
            Column::Failures,
            Expr::case(window_over.clone(), 0)
                .finally(Expr::col((LoginAttempts, Column::Failures))),
        )
        .value(
            Column::InFlight,
            Expr::case(lease_over, 0).finally(Expr::col((LoginAttempts, Column::InFlight))),
        )
        .value(
            Column::WindowStartedAt,
            Expr::case(window_over, now)
                .finally(Expr::col((LoginAttempts, Column::WindowStartedAt))),
        )
        .to_owned();

    let txn = db.begin().await?;
    LoginAttempts::insert(fresh)
        .on_conflict(normalise)
        .exec_without_returning(&txn)
        .await?;
    let row = find(&txn, key)
        .await?
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("login attempt row vanished")))?;
    let admission = decide(&row, budget, now);
    if admission == Admission::Admitted {
        LoginAttempts::update_many()
            .col_expr(Column::InFlight, Expr::col(Column::InFlight).add(1))
            .col_expr(Column::ReservedAt, Expr::value(now))
            .filter(Column::Key.eq(key))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(admission)
}

/// The decision for `row` as of `now` (before any upsert normalised it).
fn decide(row: &login_attempt::Model, budget: Budget, now: NaiveDateTime) -> Admission {
    let window = chrono::Duration::from_std(budget.window).unwrap_or(chrono::Duration::MAX);
    let lease = chrono::Duration::from_std(budget.lease).unwrap_or(chrono::Duration::MAX);
    let window_over = row.window_started_at <= now - window;
    let lease_over = row.reserved_at <= now - lease;
    let failures = if window_over {
        0
    } else {
        Ord::max(row.failures, 0)
    };
    let in_flight = if lease_over {
        0
    } else {
        Ord::max(row.in_flight, 0)
    };
    let limit = i64::from(budget.limit);
    if i64::from(failures) >= limit {
        Admission::Throttled {
            window_started_at: row.window_started_at,
        }
    } else if i64::from(failures) + i64::from(in_flight) >= limit {
        Admission::Busy
    } else {
        Admission::Admitted
    }
}

/// SQL conditions: the row's window is over; its checks in flight are stale.
fn expired(budget: Budget, now: NaiveDateTime) -> (SimpleExpr, SimpleExpr) {
    let window = chrono::Duration::from_std(budget.window).unwrap_or(chrono::Duration::MAX);
    let lease = chrono::Duration::from_std(budget.lease).unwrap_or(chrono::Duration::MAX);
    (
        Expr::col((LoginAttempts, Column::WindowStartedAt)).lte(now - window),
        Expr::col((LoginAttempts, Column::ReservedAt)).lte(now - lease),
    )
}

async fn find(db: &impl ConnectionTrait, key: &str) -> Result<Option<login_attempt::Model>, Error> {
    at_most_one(LoginAttempts::find_by_id(key.to_owned()).all(db).await?)
}

/// Ends one admitted attempt of `key`. A row left with nothing to count is
/// deleted, so attempts that never failed leave no trace.
pub async fn settle(db: &impl ConnectionTrait, key: &str, outcome: Outcome) -> Result<(), Error> {
    let one_less: Expr = Expr::case(
        Expr::col(Column::InFlight).gt(0),
        Expr::col(Column::InFlight).sub(1),
    )
    .finally(0)
    .into();
    let update = LoginAttempts::update_many()
        .col_expr(Column::InFlight, one_less)
        .filter(Column::Key.eq(key));
    let (last_in_flight, update) = match outcome {
        Outcome::Failed => {
            let failed = update.col_expr(Column::Failures, Expr::col(Column::Failures).add(1));
            failed.exec(db).await?;
            return Ok(());
        }
        Outcome::Succeeded { resets: true } => (
            Column::InFlight.lte(1),
            update.col_expr(Column::Failures, Expr::value(0)),
        ),
        Outcome::Succeeded { resets: false } | Outcome::Withdrawn => {
            (Column::InFlight.lte(1).and(Column::Failures.eq(0)), update)
        }
    };
    let deleted = LoginAttempts::delete_many()
        .filter(Column::Key.eq(key))
        .filter(last_in_flight)
        .exec(db)
        .await?;
    if deleted.rows_affected == 0 {
        update.exec(db).await?;
        // Others ending at the same time each saw more in flight than
        // themselves; whoever ends last clears the row.
        LoginAttempts::delete_many()
            .filter(Column::Key.eq(key))
            .filter(Column::InFlight.lte(0).and(Column::Failures.eq(0)))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Deletes counters whose window started before `window_before` and that
/// have no check in flight admitted after `lease_before`.
pub async fn flush_stale(
    db: &impl ConnectionTrait,
    window_before: NaiveDateTime,
    lease_before: NaiveDateTime,
) -> Result<u64, Error> {
    let result = LoginAttempts::delete_many()
        .filter(Column::WindowStartedAt.lte(window_before))
        .filter(
            Column::InFlight
                .lte(0)
                .or(Column::ReservedAt.lte(lease_before)),
        )
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}
