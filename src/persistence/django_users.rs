//! Reading the users of a Django project (`import-django`): the seed blog's
//! `users_userprofile` or Django's stock `auth_user`, on SQLite, PostgreSQL
//! or MariaDB/MySQL. The source is only ever read: SQLite is opened
//! read-only and PostgreSQL sessions are read-only too; MariaDB gets
//! nothing but `SELECT`s.

use std::{collections::BTreeSet, fmt, time::Duration};

use chrono::{DateTime, NaiveDateTime, Utc};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, QueryResult,
    Statement,
    sea_query::{Alias, Expr, ExprTrait, Func, Order, Query},
};

use super::StoreError;

/// The columns every Django user table has (`AbstractBaseUser` plus the
/// email and username both models declare).
const REQUIRED: [&str; 4] = ["id", "password", "username", "email"];
/// Read when present; a flag that is missing takes Django's default.
const OPTIONAL: [&str; 6] = [
    "avatar",
    "is_active",
    "is_staff",
    "is_superuser",
    "last_login",
    "date_joined",
];

/// One row of the source table, as Django stored it (nothing parsed yet).
pub struct DjangoUser {
    pub id: i64,
    pub email: String,
    pub username: String,
    /// Django's encoded hash (`pbkdf2_sha256$…`, `!…`, …).
    pub password: String,
    pub avatar: Option<String>,
    pub is_active: bool,
    pub is_staff: bool,
    pub is_superuser: bool,
    /// UTC.
    pub last_login: Option<NaiveDateTime>,
    /// UTC; `None` when the table has no such column (the seed's model).
    pub date_joined: Option<NaiveDateTime>,
}

/// By hand, so the password hash never reaches a log line.
impl fmt::Debug for DjangoUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DjangoUser")
            .field("id", &self.id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// An open source table and the columns found in it.
#[derive(Debug)]
pub struct DjangoSource {
    db: DatabaseConnection,
    table: String,
    columns: BTreeSet<String>,
}

impl DjangoSource {
    /// Connects to `url` and checks that `table` has the columns of a Django
    /// user model.
    ///
    /// # Errors
    /// The database cannot be reached, or the table is missing or lacks a
    /// required column (named in the message).
    pub async fn open(url: &str, table: &str) -> Result<Self, StoreError> {
        if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StoreError::other(format_args!(
                "{table:?} is not a table name (letters, digits and _)"
            )));
        }
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(2)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(30))
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|opts| opts.read_only(true).create_if_missing(false))
            .map_sqlx_postgres_opts(|opts| opts.options([("default_transaction_read_only", "on")]));
        let db = Database::connect(options).await?;
        let columns = columns_of(&db, table).await?;
        if columns.is_empty() {
            // A stock Django project keeps its users in auth_user.
            let hint = match table != "auth_user" && !columns_of(&db, "auth_user").await?.is_empty()
            {
                true => " (it has Django's auth_user: --table auth_user)",
                false => "",
            };
            return Err(StoreError::other(format_args!(
                "no table {table} in the source database{hint}"
            )));
        }
        let missing: Vec<&str> = REQUIRED
            .into_iter()
            .filter(|c| !columns.contains(*c))
            .collect();
        if !missing.is_empty() {
            return Err(StoreError::other(format_args!(
                "{table} is not a Django user table: no column {}",
                missing.join(", ")
            )));
        }
        Ok(Self {
            db,
            table: table.to_owned(),
            columns,
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn has_column(&self, column: &str) -> bool {
        self.columns.contains(column)
    }

    /// Django's stock `auth_user` (or a model built on `AbstractUser`),
    /// rather than a custom `AbstractBaseUser` model like the seed's.
    pub fn is_abstract_user(&self) -> bool {
        ["date_joined", "first_name", "last_name"]
            .iter()
            .all(|c| self.has_column(c))
    }

    /// Rows in the table.
    ///
    /// # Errors
    /// The database's.
    pub async fn count(&self) -> Result<u64, StoreError> {
        let query = Query::select()
            .expr_as(Func::count(Expr::col(Alias::new("id"))), Alias::new("n"))
            .from(Alias::new(self.table.as_str()))
            .to_owned();
        let row = self.db.query_one(&query).await?;
        let n = match row {
            Some(row) => get_i64(&row, "n")?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Up to `limit` users with an id above `after_id`, by id.
    ///
    /// # Errors
    /// The database's, or a column of an unexpected type.
    pub async fn batch_after(
        &self,
        after_id: i64,
        limit: u64,
    ) -> Result<Vec<DjangoUser>, StoreError> {
        let mut query = Query::select();
        let wanted = REQUIRED
            .into_iter()
            .chain(OPTIONAL)
            .filter(|c| self.has_column(c));
        for column in wanted {
            query.column(Alias::new(column));
        }
        query
            .from(Alias::new(self.table.as_str()))
            .and_where(Expr::col(Alias::new("id")).gt(after_id))
            .order_by(Alias::new("id"), Order::Asc)
            .limit(limit);
        let rows = self.db.query_all(&query).await?;
        rows.iter().map(|row| self.user(row)).collect()
    }

    fn user(&self, row: &QueryResult) -> Result<DjangoUser, StoreError> {
        let flag = |column: &str, default: bool| match self.has_column(column) {
            true => get_bool(row, column),
            false => Ok(default),
        };
        let when = |column: &str| match self.has_column(column) {
            true => get_datetime(row, column),
            false => Ok(None),
        };
        Ok(DjangoUser {
            id: get_i64(row, "id")?,
            email: get(row, "email")?,
            username: get(row, "username")?,
            password: get(row, "password")?,
            avatar: match self.has_column("avatar") {
                true => get(row, "avatar")?,
                false => None,
            },
            // AbstractBaseUser's and PermissionsMixin's defaults.
            is_active: flag("is_active", true)?,
            is_staff: flag("is_staff", false)?,
            is_superuser: flag("is_superuser", false)?,
            last_login: when("last_login")?,
            date_joined: when("date_joined")?,
        })
    }

    /// Closes the connections.
    pub async fn close(self) {
        let _ = self.db.close().await;
    }
}

/// The column names of `table`: empty if there is no such table.
async fn columns_of(db: &DatabaseConnection, table: &str) -> Result<BTreeSet<String>, StoreError> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Sqlite => "SELECT name FROM pragma_table_info(?)",
        DbBackend::Postgres => {
            "SELECT column_name::text AS name FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1"
        }
        DbBackend::MySql => {
            "SELECT CAST(column_name AS CHAR) AS name FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = ?"
        }
        other => {
            return Err(StoreError::other(format_args!(
                "unsupported source database: {other:?}"
            )));
        }
    };
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, sql, [table.into()]))
        .await?;
    rows.iter()
        .map(|row| get::<String>(row, "name").map(|name| name.to_lowercase()))
        .collect()
}

fn get<T: sea_orm::TryGetable>(row: &QueryResult, column: &str) -> Result<T, StoreError> {
    row.try_get("", column).map_err(|e| unreadable(column, &e))
}

/// Django's ids are `integer` or `bigint` depending on DEFAULT_AUTO_FIELD.
fn get_i64(row: &QueryResult, column: &str) -> Result<i64, StoreError> {
    row.try_get::<i64>("", column)
        .or_else(|_| row.try_get::<i32>("", column).map(i64::from))
        .map_err(|e| unreadable(column, &e))
}

/// `boolean` on PostgreSQL, `bool` (an integer) on SQLite, `tinyint(1)` on MariaDB.
fn get_bool(row: &QueryResult, column: &str) -> Result<bool, StoreError> {
    row.try_get::<bool>("", column)
        .or_else(|_| row.try_get::<i64>("", column).map(|v| v != 0))
        .or_else(|_| row.try_get::<i8>("", column).map(|v| v != 0))
        .map_err(|e| unreadable(column, &e))
}

/// `timestamp with time zone` on PostgreSQL; naive UTC (USE_TZ) elsewhere.
fn get_datetime(row: &QueryResult, column: &str) -> Result<Option<NaiveDateTime>, StoreError> {
    row.try_get::<Option<NaiveDateTime>>("", column)
        .or_else(|_| {
            row.try_get::<Option<DateTime<Utc>>>("", column)
                .map(|v| v.map(|v| v.naive_utc()))
        })
        .map_err(|e| unreadable(column, &e))
}

fn unreadable(column: &str, err: &sea_orm::DbErr) -> StoreError {
    StoreError::other(format_args!("cannot read column {column}: {err}"))
}
