//! Bulk reads on an SQLite file, straight through rusqlite on the blocking
//! pool, beside the SeaORM pool that does everything else.
//!
//! Why: sqlx's SQLite driver runs each query on a connection thread and
//! sends every row back over a channel, copying each value into its own
//! allocation; that hand-off, not SQLite, bounded ListUsers (see
//! BENCHMARKS.md, "ListUsers on SQLite"). Here one blocking task steps the
//! statement and decodes each row by position into the value the caller
//! wants. The statements still come from SeaORM's query builder, so the
//! entities stay the one description of the schema.
//!
//! The connections are read-only: nothing can write through them, and in
//! WAL mode they never wait for the writer.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, Value};
use tokio::sync::Semaphore;

use super::StoreError;

/// Read connections held open at most, and so reads running at once.
const MAX_CONNECTIONS: usize = 4;

/// A small pool of read-only rusqlite connections to one database file.
#[derive(Debug)]
pub(super) struct SqliteReads {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<rusqlite::Connection>>,
    /// One per connection: as many reads run at once as there are
    /// connections, so a connection is opened only when all are busy.
    permits: Arc<Semaphore>,
}

impl SqliteReads {
    /// Reads beside `db`'s pool, if `db` is an SQLite file; `None` for an
    /// in-memory or temporary database (another connection would not see
    /// its data) and for the other backends.
    ///
    /// # Errors
    /// The database's, asked which file it is.
    pub(super) async fn beside(db: &DatabaseConnection) -> Result<Option<Arc<Self>>, StoreError> {
        if db.get_database_backend() != DbBackend::Sqlite {
            return Ok(None);
        }
        // SQLite's own answer: a URL's `mode=memory` keeps the file name
        // it was given, and sqlx does not say which mode it opened.
        let main = db
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT file FROM pragma_database_list WHERE name = 'main'",
            ))
            .await?;
        let file: String = match main {
            Some(row) => row.try_get_by_index(0)?,
            None => String::new(),
        };
        if file.is_empty() {
            return Ok(None);
        }
        let pool = db.get_sqlite_connection_pool();
        let connections = MAX_CONNECTIONS.min(
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1),
        );
        Ok(Some(Arc::new(Self {
            path: PathBuf::from(file),
            // `persistence::connect` gives SQLite the same busy timeout as
            // the pool's acquire timeout.
            busy_timeout: pool.options().get_acquire_timeout(),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(connections)),
        })))
    }

    /// Runs `statement` (built for SQLite) and decodes each row with `decode`.
    ///
    /// # Errors
    /// SQLite's, or a row `decode` refused.
    pub(super) async fn query<T: Send + 'static>(
        self: &Arc<Self>,
        statement: Statement,
        decode: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        // The permit goes with the read, not with the caller: a caller that
        // gives up (the client reset the call) does not free a slot while
        // its read still runs, so reads and connections stay bounded.
        let permit =
            tokio::time::timeout(self.busy_timeout, Arc::clone(&self.permits).acquire_owned())
                .await
                .map_err(|_| {
                    super::error::db_unavailable(sea_orm::DbErr::Custom(
                        "timed out waiting for an SQLite read connection".to_owned(),
                    ))
                })?
                .map_err(|_| StoreError::other("the SQLite read pool is closed"))?;
        let reads = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            reads.run(&statement, decode)
        })
        .await
        .map_err(|e| StoreError::other(format!("an SQLite read failed: {e}")))?
    }

    fn run<T>(
        &self,
        statement: &Statement,
        decode: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let connection = match self.lock_idle().pop() {
            Some(connection) => connection,
            None => self.open().map_err(read_failed)?,
        };
        let rows = query_with(&connection, statement, decode).map_err(read_failed);
        // A connection whose statement failed is still sound: SQLite resets
        // the statement when it is returned to the cache.
        self.lock_idle().push(connection);
        rows
    }

    fn open(&self) -> rusqlite::Result<rusqlite::Connection> {
        use rusqlite::{OpenFlags, config::DbConfig};
        let connection = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(self.busy_timeout)?;
        // The bundled SQLite has STAT4, which re-plans a cached statement
        // on its first step after any bound value changes: every page
        // (a new `id > ?`) and every batch paid a full re-prepare. The
        // stability guarantee keeps the first plan; ours do not depend on
        // the values (see BENCHMARKS.md, "ListUsers read path").
        connection.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        Ok(connection)
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<rusqlite::Connection>> {
        // The list stays valid whatever a panicking holder was doing.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn query_with<T>(
    connection: &rusqlite::Connection,
    statement: &Statement,
    decode: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut prepared = connection.prepare_cached(&statement.sql)?;
    let values = statement.values.as_ref().map_or(&[][..], |v| &v.0[..]);
    for (index, value) in values.iter().enumerate() {
        prepared.raw_bind_parameter(index + 1, sqlite_value(value)?)?;
    }
    let mut rows = prepared.raw_query();
    let mut decoded = Vec::new();
    while let Some(row) = rows.next()? {
        decoded.push(decode(row)?);
    }
    Ok(decoded)
}

/// The kinds of value our queries bind (ids, limits, flags, keys).
fn sqlite_value(value: &Value) -> rusqlite::Result<rusqlite::types::Value> {
    use rusqlite::types::Value as Sqlite;
    let integer = |n: Option<i64>| n.map_or(Sqlite::Null, Sqlite::Integer);
    Ok(match value {
        Value::BigInt(n) => integer(*n),
        Value::Int(n) => integer(n.map(i64::from)),
        Value::Unsigned(n) => integer(n.map(i64::from)),
        Value::BigUnsigned(Some(n)) => Sqlite::Integer(
            i64::try_from(*n).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?,
        ),
        Value::BigUnsigned(None) => Sqlite::Null,
        Value::Bool(b) => integer(b.map(i64::from)),
        Value::String(Some(text)) => Sqlite::Text(text.to_string()),
        Value::String(None) => Sqlite::Null,
        other => {
            return Err(rusqlite::Error::ToSqlConversionFailure(
                format!("no SQLite binding for {other:?}").into(),
            ));
        }
    })
}

fn read_failed(err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Conflict(
            sea_orm::DbErr::Custom(format!("SQLite busy past its timeout: {err}")),
        ),
        Some(ErrorCode::CannotOpen | ErrorCode::NotADatabase | ErrorCode::SystemIoFailure) => {
            super::error::db_unavailable(sea_orm::DbErr::Custom(format!(
                "cannot read the SQLite file: {err}"
            )))
        }
        _ => StoreError::Other(anyhow::Error::new(err).context("an SQLite read failed")),
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::Database;

    use super::*;

    #[tokio::test]
    async fn only_a_database_file_is_read_beside_the_pool() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("users.db");
        for (url, is_file) in [
            ("sqlite::memory:".to_owned(), false),
            (format!("sqlite://{}?mode=memory", file.display()), false),
            (format!("sqlite://{}?mode=rwc", file.display()), true),
        ] {
            let db = Database::connect(&url).await.expect("a database");
            let reads = SqliteReads::beside(&db).await.expect("an answer");
            assert_eq!(reads.is_some(), is_file, "{url}");
            if let Some(reads) = reads {
                assert_eq!(reads.path.canonicalize().ok(), file.canonicalize().ok());
                let statement = Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    "SELECT ? + 1",
                    [Value::BigUnsigned(Some(41))],
                );
                let read = reads
                    .query(statement, |row| row.get::<_, i64>(0))
                    .await
                    .expect("a read");
                assert_eq!(read, vec![42]);
            }
        }
    }

    #[tokio::test]
    async fn a_cached_statement_is_not_planned_again_for_new_values() {
        use rusqlite::StatementStatus;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("users.db").display()
        );
        let db = Database::connect(&url).await.expect("a database");
        db.execute_unprepared(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, is_staff BOOLEAN NOT NULL);
             CREATE INDEX ix_users_is_staff_id ON users (is_staff, id);
             INSERT INTO users (is_staff) VALUES (0), (1), (0), (1), (0);",
        )
        .await
        .expect("a table");
        let reads = SqliteReads::beside(&db)
            .await
            .expect("an answer")
            .expect("a file");
        let connection = reads.open().expect("a read connection");
        let sql = "SELECT id FROM users WHERE id > ? AND is_staff = ? ORDER BY id LIMIT ?";
        let page = |after: i64, staff: bool| {
            let statement = Statement::from_sql_and_values(
                DbBackend::Sqlite,
                sql,
                [
                    Value::BigInt(Some(after)),
                    Value::Bool(Some(staff)),
                    Value::BigUnsigned(Some(2)),
                ],
            );
            query_with(&connection, &statement, |row| row.get::<_, i64>(0)).expect("a page")
        };
        assert_eq!(page(0, false), [1, 3]);
        assert_eq!(page(3, false), [5]);
        assert_eq!(page(0, true), [2, 4]);
        let reprepared = connection
            .prepare_cached(sql)
            .expect("the cached statement")
            .get_status(StatementStatus::RePrepare);
        assert_eq!(reprepared, 0);
    }
}
