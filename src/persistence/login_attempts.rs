//! Login-attempt counters for throttling, updated atomically in the
//! database so that every replica shares them and parallel attempts cannot
//! slip past a limit (the ZITADEL lockout bypass, GHSA-7h8m-vrxx-vr4m, read
//! a counter and wrote it back in two steps).
//!
//! A row per key counts the attempts that failed in the current window and,
//! apart from them, the attempts admitted and still being checked. Only
//! failures refuse an attempt; checks in flight make it wait its turn, so
//! that failures plus checks never exceed the limit.
//!
//! A check whose settlement never arrives (its process died, its database
//! write failed) must not hold the budget for ever, however busy the key
//! stays. So checks in flight are counted per lease epoch (time cut into
//! lease-long slices): the current epoch's and the one before count, older
//! ones have expired. Each check thus expires on its own, between one and
//! two leases after its admission, with two counters per row.

use std::time::Duration;

use chrono::NaiveDateTime;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    sea_query::{Expr, ExprTrait},
};

use super::{
    StoreError, at_most_one,
    entities::login_attempt::{self, Column, Entity as LoginAttempts},
};

/// The rules one key is admitted under.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Failures (plus checks in flight) allowed per window.
    pub limit: u32,
    pub window: Duration,
    /// How long a check may stay in flight before it is taken to be lost.
    pub lease: Duration,
}

impl Budget {
    /// The lease epoch `now` falls in.
    fn epoch(&self, now: NaiveDateTime) -> i64 {
        let lease = Ord::max(i64::try_from(self.lease.as_secs()).unwrap_or(i64::MAX), 1);
        now.and_utc().timestamp().div_euclid(lease)
    }

    fn window_start_before(&self, now: NaiveDateTime) -> NaiveDateTime {
        let window = chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::MAX);
        now.checked_sub_signed(window).unwrap_or(NaiveDateTime::MIN)
    }
}

/// What [`admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted as in flight in this lease epoch: check the password, then
    /// [`settle`] with the epoch.
    Admitted { epoch: i64 },
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
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "login_attempts.admit"))]
pub async fn admit(
    db: &DatabaseConnection,
    key: &str,
    budget: Budget,
    now: NaiveDateTime,
) -> Result<Admission, StoreError> {
    if let Some(row) = find(db, key).await?
        && let refusal @ (Admission::Throttled { .. } | Admission::Busy) = decide(&row, budget, now)
    {
        return Ok(refusal);
    }
    let epoch = budget.epoch(now);
    let fresh = login_attempt::ActiveModel {
        key: Set(key.to_owned()),
        failures: Set(0),
        window_started_at: Set(now),
        in_flight: Set(0),
        in_flight_before: Set(0),
        lease_epoch: Set(epoch),
    };
    let col = |c: Column| Expr::col((LoginAttempts, c));
    let window_over = col(Column::WindowStartedAt).lte(budget.window_start_before(now));
    // A caller whose `now` was read just before an epoch began may commit
    // after one that read it just after: the row's epoch never goes back,
    // or the checks in flight would be forgotten (and one more admitted).
    let ahead = col(Column::LeaseEpoch).gt(epoch);
    let same_epoch = col(Column::LeaseEpoch).eq(epoch);
    let last_epoch = col(Column::LeaseEpoch).eq(epoch - 1);
    // Assignments run left to right on MySQL, later ones seeing earlier
    // ones: each column is set after every column whose old value it reads.
    let normalise = sea_orm::sea_query::OnConflict::column(Column::Key)
        .value(
            Column::Failures,
            Expr::case(window_over.clone(), 0).finally(col(Column::Failures)),
        )
        .value(
            Column::InFlightBefore,
            Expr::case(ahead.clone(), col(Column::InFlightBefore))
                .case(same_epoch.clone(), col(Column::InFlightBefore))
                .case(last_epoch, col(Column::InFlight))
                .finally(0),
        )
        .value(
            Column::InFlight,
            Expr::case(ahead.clone(), col(Column::InFlight))
                .case(same_epoch, col(Column::InFlight))
                .finally(0),
        )
        .value(
            Column::WindowStartedAt,
            Expr::case(window_over, now).finally(col(Column::WindowStartedAt)),
        )
        .value(
            Column::LeaseEpoch,
            Expr::case(ahead, col(Column::LeaseEpoch)).finally(epoch),
        )
        .to_owned();

    let txn = super::begin_write(db).await?;
    LoginAttempts::insert(fresh)
        .on_conflict(normalise)
        .exec_without_returning(&txn)
        .await?;
    let row = find(&txn, key)
        .await?
        .ok_or_else(|| StoreError::other("login attempt row vanished"))?;
    let admission = decide(&row, budget, now);
    if let Admission::Admitted { .. } = admission {
        LoginAttempts::update_many()
            .col_expr(Column::InFlight, Expr::col(Column::InFlight).add(1))
            .filter(Column::Key.eq(key))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(admission)
}

/// The decision for `row` as of `now`, counting only what has not expired.
fn decide(row: &login_attempt::Model, budget: Budget, now: NaiveDateTime) -> Admission {
    // A row already in a later epoch (another caller's clock read a little
    // later) counts from that epoch: its checks in flight are all current.
    let epoch = Ord::max(budget.epoch(now), row.lease_epoch);
    let failures = if row.window_started_at <= budget.window_start_before(now) {
        0
    } else {
        i64::from(row.failures)
    };
    let in_flight = match epoch - row.lease_epoch {
        0 => i64::from(row.in_flight) + i64::from(row.in_flight_before),
        1 => i64::from(row.in_flight),
        _ => 0,
    };
    let limit = i64::from(budget.limit);
    if failures >= limit {
        Admission::Throttled {
            window_started_at: row.window_started_at,
        }
    } else if failures + in_flight >= limit {
        Admission::Busy
    } else {
        Admission::Admitted { epoch }
    }
}

async fn find(
    db: &impl ConnectionTrait,
    key: &str,
) -> Result<Option<login_attempt::Model>, StoreError> {
    at_most_one(LoginAttempts::find_by_id(key.to_owned()).all(db).await?)
}

/// Ends one attempt of `key` admitted in lease epoch `epoch`: takes it out
/// of the checks in flight (unless it has expired) and counts the outcome.
/// One statement; rows with nothing left to count stay for
/// [`flush_stale`] (deleting and re-inserting a hot key's row on every
/// login would only invite lock conflicts).
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "login_attempts.settle"))]
pub async fn settle(
    db: &impl ConnectionTrait,
    key: &str,
    epoch: i64,
    outcome: Outcome,
) -> Result<(), StoreError> {
    let one_less = |counter: Column, admitted_in: i64| -> Expr {
        Expr::case(
            Expr::col(Column::LeaseEpoch)
                .eq(admitted_in)
                .and(Expr::col(counter).gt(0)),
            Expr::col(counter).sub(1),
        )
        .finally(Expr::col(counter))
        .into()
    };
    let mut update = LoginAttempts::update_many()
        .col_expr(Column::InFlight, one_less(Column::InFlight, epoch))
        .col_expr(
            Column::InFlightBefore,
            one_less(Column::InFlightBefore, epoch + 1),
        )
        .filter(Column::Key.eq(key));
    update = match outcome {
        Outcome::Failed => update.col_expr(Column::Failures, Expr::col(Column::Failures).add(1)),
        Outcome::Succeeded { resets: true } => update.col_expr(Column::Failures, Expr::value(0)),
        Outcome::Succeeded { resets: false } | Outcome::Withdrawn => update,
    };
    update.exec(db).await?;
    Ok(())
}

/// Whether `key` has used up its failures in the current window: the start
/// of that window if so. A read only, for callers that count failures
/// alone ([`record_failure`]), with no check in flight to wait for.
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "login_attempts.find"))]
pub async fn exhausted(
    db: &impl ConnectionTrait,
    key: &str,
    budget: Budget,
    now: NaiveDateTime,
) -> Result<Option<NaiveDateTime>, StoreError> {
    Ok(find(db, key).await?.and_then(|row| {
        let current = row.window_started_at > budget.window_start_before(now);
        (current && i64::from(row.failures) >= i64::from(budget.limit))
            .then_some(row.window_started_at)
    }))
}

/// Counts one failure of `key` in one statement: a new window if the last
/// one is over. Leaves the checks in flight alone (another kind of caller,
/// logins, may share no key with it, but the row is the same shape).
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "login_attempts.record_failure"))]
pub async fn record_failure(
    db: &impl ConnectionTrait,
    key: &str,
    budget: Budget,
    now: NaiveDateTime,
) -> Result<(), StoreError> {
    let fresh = login_attempt::ActiveModel {
        key: Set(key.to_owned()),
        failures: Set(1),
        window_started_at: Set(now),
        in_flight: Set(0),
        in_flight_before: Set(0),
        lease_epoch: Set(budget.epoch(now)),
    };
    let col = |c: Column| Expr::col((LoginAttempts, c));
    let window_over = col(Column::WindowStartedAt).lte(budget.window_start_before(now));
    // Failures first: on MySQL it must read the old window start.
    let count = sea_orm::sea_query::OnConflict::column(Column::Key)
        .value(
            Column::Failures,
            Expr::case(window_over.clone(), 1).finally(col(Column::Failures).add(1)),
        )
        .value(
            Column::WindowStartedAt,
            Expr::case(window_over, now).finally(col(Column::WindowStartedAt)),
        )
        .to_owned();
    LoginAttempts::insert(fresh)
        .on_conflict(count)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Deletes counters whose window started before `window_before` and whose
/// checks in flight, if any, have expired by `now`.
pub async fn flush_stale(
    db: &impl ConnectionTrait,
    window_before: NaiveDateTime,
    budget: Budget,
    now: NaiveDateTime,
) -> Result<u64, StoreError> {
    let epoch = budget.epoch(now);
    let nothing_in_flight = Column::LeaseEpoch
        .lt(epoch - 1)
        .or(Column::InFlight.lte(0).and(
            Column::InFlightBefore
                .lte(0)
                .or(Column::LeaseEpoch.lt(epoch)),
        ));
    let result = LoginAttempts::delete_many()
        .filter(Column::WindowStartedAt.lte(window_before))
        .filter(nothing_in_flight)
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(60);

    fn budget() -> Budget {
        Budget {
            limit: 3,
            window: Duration::from_secs(900),
            lease: LEASE,
        }
    }

    fn at(seconds: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(seconds, 0)
            .map(|t| t.naive_utc())
            .unwrap_or_default()
    }

    fn row(failures: i32, in_flight: i32, before: i32, epoch: i64) -> login_attempt::Model {
        login_attempt::Model {
            key: "user:x".into(),
            failures,
            window_started_at: at(60_000),
            in_flight,
            in_flight_before: before,
            lease_epoch: epoch,
        }
    }

    #[test]
    fn failures_refuse_and_checks_in_flight_make_wait() {
        let now = at(60_010); // epoch 1000
        assert_eq!(
            decide(&row(3, 0, 0, 1000), budget(), now),
            Admission::Throttled {
                window_started_at: at(60_000)
            }
        );
        assert_eq!(decide(&row(1, 1, 1, 1000), budget(), now), Admission::Busy);
        assert_eq!(
            decide(&row(1, 1, 0, 1000), budget(), now),
            Admission::Admitted { epoch: 1000 }
        );
    }

    #[test]
    fn each_check_in_flight_expires_within_two_leases_however_busy_the_key() {
        // Three lost checks, admitted in epoch 1000.
        let lost = row(0, 3, 0, 1000);
        assert_eq!(decide(&lost, budget(), at(60_010)), Admission::Busy);
        // Next epoch: they still count (a check may take up to a lease).
        assert_eq!(decide(&lost, budget(), at(60_070)), Admission::Busy);
        // Two epochs on: expired, even though the key kept being used.
        let busy_since = row(0, 0, 3, 1001);
        assert_eq!(
            decide(&busy_since, budget(), at(60_130)),
            Admission::Admitted { epoch: 1002 }
        );
    }

    #[test]
    fn a_row_in_a_later_epoch_keeps_its_checks_in_flight() {
        // Epoch 1001 began (another attempt read its clock after the
        // boundary); this one read 60_059, in epoch 1000.
        let late = at(60_059);
        assert_eq!(decide(&row(0, 2, 3, 1001), budget(), late), Admission::Busy);
        assert_eq!(
            decide(&row(0, 1, 1, 1001), budget(), late),
            Admission::Admitted { epoch: 1001 }
        );
    }

    #[tokio::test]
    async fn an_admission_that_read_its_clock_before_an_epoch_does_not_forget_the_next_ones() {
        let db = crate::persistence::memory_database().await;
        let budget = budget();
        // Three checks admitted just after the boundary (epoch 1001)…
        for _ in 0..2 {
            let admitted = admit(&db, "user:x", budget, at(60_061)).await;
            assert!(
                matches!(admitted, Ok(Admission::Admitted { epoch: 1001 })),
                "{admitted:?}"
            );
        }
        // …and one whose clock was read just before it commits after them:
        // the two in flight still count, and it is held to the limit.
        let late = admit(&db, "user:x", budget, at(60_059)).await;
        assert!(
            matches!(late, Ok(Admission::Admitted { epoch: 1001 })),
            "{late:?}"
        );
        let over = admit(&db, "user:x", budget, at(60_059)).await;
        assert!(matches!(over, Ok(Admission::Busy)), "{over:?}");
        // Settled with the epoch it was given, each check leaves the count.
        for _ in 0..3 {
            settle(&db, "user:x", 1001, Outcome::Withdrawn)
                .await
                .expect("settled");
        }
        let again = admit(&db, "user:x", budget, at(60_062)).await;
        assert!(
            matches!(again, Ok(Admission::Admitted { epoch: 1001 })),
            "{again:?}"
        );
    }

    #[test]
    fn a_window_over_forgets_its_failures() {
        let old = row(3, 0, 0, 1000);
        assert_eq!(
            decide(&old, budget(), at(60_000 + 900)),
            Admission::Admitted { epoch: 1015 }
        );
    }
}
