//! What can go wrong in storage, classified here so that the layers above
//! never look at driver errors or SQLSTATEs.

use sea_orm::{DbErr, RuntimeErr, SqlErr, sqlx};

use crate::telemetry::metrics;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (connection refused or cut, pool
    /// timed out): the same call may work later.
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),

    /// A concurrent transaction won a lock (deadlock, serialization
    /// failure, SQLite busy past its timeout): the call can be retried.
    #[error("concurrent update conflict")]
    Conflict(#[source] DbErr),

    /// A unique field of a new row is taken: `what` names the kind of row
    /// (`"user"`, `"service account"`), `field` the field (`"email"`,
    /// `"username"`, `"name"`).
    #[error("a {what} with that {field} already exists")]
    Duplicate {
        what: &'static str,
        field: &'static str,
    },

    /// The refresh token was blacklisted already, possibly by a concurrent call.
    #[error("the refresh token is blacklisted already")]
    AlreadyBlacklisted,

    /// A token's `exp` lies outside the range the database can store.
    #[error("token expiry out of range")]
    ExpiryOutOfRange,

    /// Anything else: a failed query, a broken invariant.
    #[error(transparent)]
    Other(anyhow::Error),
}

impl StoreError {
    pub(crate) fn other(message: impl std::fmt::Display) -> Self {
        Self::Other(anyhow::anyhow!("{message}"))
    }

    /// This error once more, for another of the callers one statement
    /// served: its kind and message (the driver's value is not `Clone`).
    pub(super) fn for_another_caller(&self) -> Self {
        match self {
            Self::Unavailable(e) => Self::Unavailable(DbErr::Custom(e.to_string())),
            Self::Conflict(e) => Self::Conflict(DbErr::Custom(e.to_string())),
            Self::Duplicate { what, field } => Self::Duplicate { what, field },
            Self::AlreadyBlacklisted => Self::AlreadyBlacklisted,
            Self::ExpiryOutOfRange => Self::ExpiryOutOfRange,
            Self::Other(e) => Self::other(format_args!("{e:#}")),
        }
    }
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        if is_connection_failure(&err) {
            db_unavailable(err)
        } else if is_lock_conflict(&err) {
            Self::Conflict(err)
        } else {
            Self::Other(anyhow::Error::new(err))
        }
    }
}

/// `err` as a database that cannot be reached, counted.
pub(super) fn db_unavailable(err: DbErr) -> StoreError {
    metrics::db_connection_failed();
    StoreError::Unavailable(err)
}

/// Whether the database could not be reached at all, as opposed to a query
/// that reached it and failed.
fn is_connection_failure(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => matches!(
            **e,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_)
        ),
        _ => false,
    }
}

/// SQLite busy while a connection was being opened: another process holds
/// the lock while it switches the new database to WAL, which SQLite
/// answers at once rather than through the busy timeout.
pub(super) fn is_busy_on_connect(err: &DbErr) -> bool {
    let DbErr::Conn(RuntimeErr::SqlxError(e)) = err else {
        return false;
    };
    let sqlx::Error::Database(db_err) = &**e else {
        return false;
    };
    matches!(db_err.code().as_deref(), Some("5" | "6"))
}

/// Deadlock or serialization failure (SQLSTATE 40001 on MySQL and
/// PostgreSQL, 40P01 on PostgreSQL), or SQLite still busy after its timeout.
fn is_lock_conflict(err: &DbErr) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err
    else {
        return false;
    };
    let sqlx::Error::Database(db_err) = &**e else {
        return false;
    };
    // SQLite reports its primary result code: 5 BUSY, 6 LOCKED, 517 BUSY_SNAPSHOT.
    matches!(
        db_err.code().as_deref(),
        Some("40001" | "40P01" | "5" | "6" | "517")
    )
}

/// The unique-index violation behind `err`, if that is what it is: its
/// database message, which names the index (and so the field).
pub(super) fn unique_violation(err: &DbErr) -> Option<String> {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(message)) => Some(message),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_timeouts_are_unavailable() {
        let err = StoreError::from(DbErr::ConnectionAcquire(
            sea_orm::error::ConnAcquireErr::Timeout,
        ));
        assert!(matches!(err, StoreError::Unavailable(_)));
    }
}
