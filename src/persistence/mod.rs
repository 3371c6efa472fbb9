//! Storage: connection set-up, SeaORM entities, the queries, and the
//! read-through caches in front of them. Nothing outside this module writes
//! SQL or builds queries, and rows that are cached are written only through
//! their cache ([`UserProfiles`], [`RefreshTokens`], [`ServiceAccounts`]), so this replica always
//! sees its own writes.
//!
//! Stateful parts (the caches) own a handle to the database given when they
//! are made; query functions take one per call.
//!
//! The queries a call makes have a `db.query` span each (DEBUG, on target
//! `auth_service::traces`): exported in traces, never shown in the log, and
//! not even constructed when traces are off.

pub mod assertion_ids;
pub mod django_users;
pub mod entities;
mod error;
mod fresh_cache;
pub mod login_attempts;
pub mod password_reset_tokens;
mod refresh_tokens;
pub mod service_accounts;
mod sqlite_reads;
pub mod token_blacklist;
mod user_profiles;
mod user_reads;
pub mod users;

pub use error::StoreError;
pub use refresh_tokens::RefreshTokens;
pub use service_accounts::ServiceAccounts;
pub use user_profiles::UserProfiles;
pub use user_reads::list_after_statement;

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};

use crate::{config::DatabaseSettings, telemetry::metrics::PoolState};

/// The connection pool now (open, idle, the most it opens): the
/// `auth_db_pool_*` gauges, read at each scrape. `None` for a backend
/// without a sqlx pool.
pub fn pool_state(db: &DatabaseConnection) -> Option<PoolState> {
    fn of<D: sea_orm::sqlx::Database>(pool: &sea_orm::sqlx::Pool<D>) -> PoolState {
        PoolState {
            size: u64::from(pool.size()),
            idle: pool.num_idle() as u64,
            max: u64::from(pool.options().get_max_connections()),
        }
    }
    match db.get_database_backend() {
        DbBackend::Postgres => Some(of(db.get_postgres_connection_pool())),
        DbBackend::MySql => Some(of(db.get_mysql_connection_pool())),
        DbBackend::Sqlite => Some(of(db.get_sqlite_connection_pool())),
        _ => None,
    }
}

/// Opens the connection pool described by `settings`.
///
/// SQLite runs in WAL mode so readers never wait for the writer, with a busy
/// timeout so concurrent writers queue instead of failing with "database is
/// locked", and `synchronous=FULL` so an acknowledged write survives a power
/// loss, not only a process crash.
///
/// # Errors
/// The database cannot be reached or the URL is malformed.
pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(settings.url.expose().to_owned());
    let busy_timeout = settings.timeout;
    options
        .max_connections(settings.max_connections)
        .min_connections(1)
        .connect_timeout(settings.timeout)
        .acquire_timeout(settings.timeout)
        .idle_timeout(Duration::from_secs(600))
        // Ping only connections idle for a while (the ones a restart or a
        // firewall may have cut), not every checkout: the default ping on
        // every acquire doubled the round trips of each query.
        .test_before_acquire_if_idle_for(Duration::from_secs(1))
        // sqlx would log every statement at INFO; the per-call line is enough.
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(busy_timeout)
                .foreign_keys(true)
        });
    // Replicas started together on a new SQLite file: all but one find it
    // locked while the first makes it WAL. They wait, up to the timeout.
    let started = std::time::Instant::now();
    loop {
        match Database::connect(options.clone()).await {
            Err(e) if error::is_busy_on_connect(&e) && started.elapsed() < settings.timeout => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            connected => return connected,
        }
    }
}

/// Connects and applies pending migrations: what every command that uses
/// the database does first.
///
/// # Errors
/// As [`connect`] and [`migrate`], with the step that failed named.
pub async fn open(settings: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    use anyhow::Context;
    let db = connect(settings)
        .await
        .context("cannot connect to the database")?;
    migrate(&db)
        .await
        .context("cannot apply database migrations")?;
    Ok(db)
}

/// Applies pending migrations, one process at a time.
///
/// Replicas started together on an empty database would otherwise race to
/// create the same tables, and all but one would fail. Each backend's lock is
/// held by one connection (a transaction pins it, whatever the pool size) and
/// the migrations run on that connection, so the next process finds them
/// applied once it gets the lock:
/// - PostgreSQL: a transaction-scoped advisory lock; the migrations commit
///   together with it (DDL is transactional there);
/// - MariaDB/MySQL: `GET_LOCK`, a session lock that survives the implicit
///   commits of DDL, released on every path;
/// - SQLite: `BEGIN IMMEDIATE`, which takes the write lock before the first
///   read (a deferred transaction that reads first could fail with
///   SQLITE_BUSY_SNAPSHOT instead of waiting on the busy timeout).
///
/// # Errors
/// A migration failed, or another process held the lock for longer than
/// [`MIGRATION_LOCK_TIMEOUT`] (PostgreSQL, MariaDB) or the busy timeout
/// (SQLite). PostgreSQL and SQLite roll back to the schema before the call;
/// MariaDB keeps the migrations that succeeded.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let txn = db.begin().await?;
            txn.execute_unprepared(&format!(
                "SET LOCAL lock_timeout = '{}s'",
                MIGRATION_LOCK_TIMEOUT.as_secs()
            ))
            .await?;
            txn.execute_unprepared(&format!(
                "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
            ))
            .await?;
            Migrator::up(&txn, None).await?;
            txn.commit().await
        }
        DbBackend::MySql => {
            let txn = db.begin().await?;
            // GET_LOCK is server-wide: name it after this database, so
            // services on other databases of the server do not wait on it.
            let got = txn
                .query_one_raw(Statement::from_string(
                    DbBackend::MySql,
                    format!(
                        "SELECT GET_LOCK({MYSQL_LOCK_NAME}, {}) AS got",
                        MIGRATION_LOCK_TIMEOUT.as_secs()
                    ),
                ))
                .await?
                .map(|row| row.try_get::<Option<i64>>("", "got"))
                .transpose()?
                .flatten();
            if got != Some(1) {
                let _ = txn.rollback().await;
                return Err(DbErr::Custom(format!(
                    "another process held the migration lock for over {MIGRATION_LOCK_TIMEOUT:?}"
                )));
            }
            let migrated = Migrator::up(&txn, None).await;
            let released = txn
                .execute_unprepared(&format!("DO RELEASE_LOCK({MYSQL_LOCK_NAME})"))
                .await;
            match (migrated, released) {
                (Ok(()), Ok(_)) => txn.commit().await,
                (Err(e), _) | (Ok(()), Err(e)) => {
                    let _ = txn.rollback().await;
                    Err(e)
                }
            }
        }
        DbBackend::Sqlite => {
            let txn = begin_write(db).await?;
            Migrator::up(&txn, None).await?;
            txn.commit().await
        }
        // The enum is non-exhaustive; only the three above are compiled in.
        backend => Err(DbErr::Custom(format!("unsupported database: {backend:?}"))),
    }
}

/// How long a process waits for another one's migrations.
const MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(300);
/// PostgreSQL advisory lock key for migrations ("authmigr"); advisory locks
/// are per database.
const MIGRATION_LOCK_KEY: i64 = 0x6175_7468_6d69_6772;
/// MariaDB lock name: a fixed prefix and a digest of the database name, under
/// MySQL's 64-character limit whatever the name.
const MYSQL_LOCK_NAME: &str = "CONCAT('auth_service_migrations:', MD5(DATABASE()))";

/// A transaction for read-then-write work. On SQLite it takes the write
/// lock up front (`BEGIN IMMEDIATE`): a deferred transaction that reads
/// first fails with "database is locked" when it comes to write after
/// another writer committed, instead of waiting on the busy timeout.
///
/// # Errors
/// The database's.
pub async fn begin_write(db: &DatabaseConnection) -> Result<sea_orm::DatabaseTransaction, DbErr> {
    if db.get_database_backend() != DbBackend::Sqlite {
        return db.begin().await;
    }
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

/// Now, as stored: naive UTC (portable across the three databases).
pub fn db_now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// The row of a lookup by a unique key, fetched with `all` rather than
/// `one`: `one` adds `LIMIT ?`, and SQLite re-prepares a statement with a
/// bound LIMIT on every execution (its planner peeks at the value), which
/// showed up in RefreshToken profiles (BENCHMARKS.md).
///
/// # Errors
/// More than one row: the key is not unique after all.
fn at_most_one<T>(rows: Vec<T>) -> Result<Option<T>, StoreError> {
    if rows.len() > 1 {
        return Err(StoreError::other(format_args!(
            "a lookup by a unique key found {} rows",
            rows.len()
        )));
    }
    Ok(rows.into_iter().next())
}

/// A cheap round trip, for readiness.
///
/// # Errors
/// The database did not answer.
pub async fn ping(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    db.execute_unprepared("SELECT 1").await.map(|_| ())
}

/// A migrated in-memory SQLite database, for unit tests.
#[cfg(test)]
pub(crate) async fn memory_database() -> DatabaseConnection {
    let db = Database::connect("sqlite::memory:")
        .await
        .expect("an in-memory database");
    migrate(&db).await.expect("migrations");
    db
}

#[cfg(test)]
mod tests {
    use super::at_most_one;

    #[test]
    fn at_most_one_row_or_an_error() {
        assert_eq!(at_most_one(Vec::<i64>::new()).ok(), Some(None));
        assert_eq!(at_most_one(vec![7]).ok(), Some(Some(7)));
        assert!(at_most_one(vec![7, 8]).is_err());
    }
}
