//! The reads of users' public profiles (a user by id, users by ids, a page
//! of users): only the columns a [`User`] has, decoded by position. On an
//! SQLite file they run through [`SqliteReads`]; on the other backends,
//! and on an in-memory SQLite database, through SeaORM. The statement is
//! the same either way: SeaORM's query builder makes it.

use std::sync::Arc;

use chrono::NaiveDateTime;
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QueryResult, QuerySelect, QueryTrait, Select,
};
use tokio::sync::OnceCell;

use super::{
    StoreError,
    entities::user::{Column, Entity as Users},
    sqlite_reads::SqliteReads,
};
use crate::domain::{RevocationReason, TokensRevoked, User, UserFilter};

/// The columns of a [`User`], in the order [`Profile`] reads them.
const PROFILE_COLUMNS: [Column; 12] = [
    Column::Id,
    Column::Email,
    Column::Username,
    Column::Avatar,
    Column::IsActive,
    Column::IsStaff,
    Column::IsSuperuser,
    Column::LastLogin,
    Column::DateJoined,
    Column::TokenGeneration,
    Column::TokensRevokedAt,
    Column::TokensRevokedReason,
];

#[derive(Debug, Clone)]
pub(super) struct UserReads {
    db: DatabaseConnection,
    /// Set on the first read: the database says then whether it is a file.
    sqlite: Arc<OnceCell<Option<Arc<SqliteReads>>>>,
}

impl UserReads {
    pub(super) fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            sqlite: Arc::new(OnceCell::new()),
        }
    }

    #[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
        skip_all, fields(db.operation = "users.find_profile"))]
    pub(super) async fn find_by_id(&self, id: i64) -> Result<Option<User>, StoreError> {
        let mut found = self.profiles(Users::find_by_id(id)).await?;
        Ok(found.pop())
    }

    /// The users with these ids (at most about a thousand: one bound value
    /// each), in no particular order; ids with no user are left out.
    #[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
        skip_all, fields(db.operation = "users.find_by_ids"))]
    pub(super) async fn find_by_ids(&self, ids: Vec<i64>) -> Result<Vec<User>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.profiles(Users::find().filter(Column::Id.is_in(ids)))
            .await
    }

    /// Up to `limit` users with an id above `after_id` that `filter` lets
    /// through, by id: keyset pagination, so a page starts where the last
    /// one ended however deep it is. An email or username restriction is
    /// one read of its unique index (`ux_users_email_key`,
    /// `ux_users_username_key`); a flag restriction alone is a range scan
    /// of `ix_users_is_staff_id` or `ix_users_is_active_id`, which hold the
    /// ids in order for each value. With both flags restricted, one of
    /// those indexes is read and the other flag checked on each row it
    /// yields: a page may then read rows the filter drops (rare
    /// combinations, such as inactive staff, cost the most).
    #[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
        skip_all, fields(db.operation = "users.list_after"))]
    pub(super) async fn list_after(
        &self,
        after_id: i64,
        filter: &UserFilter,
        limit: u64,
    ) -> Result<Vec<User>, StoreError> {
        self.profiles(list_after_query(after_id, filter, limit))
            .await
    }

    async fn profiles(&self, query: Select<Users>) -> Result<Vec<User>, StoreError> {
        let query = query.select_only().columns(PROFILE_COLUMNS);
        let sqlite = self
            .sqlite
            .get_or_try_init(|| SqliteReads::beside(&self.db))
            .await?;
        match sqlite {
            Some(sqlite) => {
                sqlite
                    .query(query.build(DbBackend::Sqlite), Profile::from_sqlite)
                    .await
            }
            None => Ok(query
                .into_model::<Profile>()
                .all(&self.db)
                .await?
                .into_iter()
                .map(|Profile(user)| user)
                .collect()),
        }
    }
}

/// The statement [`UserReads::list_after`] runs on `backend`, values
/// inlined: test support, for checking its query plan
/// (`tests/api/list_filter.rs`); not for running.
#[doc(hidden)]
pub fn list_after_statement(
    backend: DbBackend,
    after_id: i64,
    filter: &UserFilter,
    limit: u64,
) -> String {
    list_after_query(after_id, filter, limit)
        .select_only()
        .columns(PROFILE_COLUMNS)
        .build(backend)
        .to_string()
}

fn list_after_query(after_id: i64, filter: &UserFilter, limit: u64) -> Select<Users> {
    let mut query = Users::find().filter(Column::Id.gt(after_id));
    if let Some(key) = filter.email_key() {
        query = query.filter(Column::EmailKey.eq(key));
    }
    if let Some(key) = filter.username_key() {
        query = query.filter(Column::UsernameKey.eq(key));
    }
    if let Some(active) = filter.is_active() {
        query = query.filter(Column::IsActive.eq(active));
    }
    if let Some(staff) = filter.is_staff() {
        query = query.filter(Column::IsStaff.eq(staff));
    }
    query.order_by_asc(Column::Id).limit(limit)
}

/// A row of [`PROFILE_COLUMNS`].
struct Profile(User);

impl Profile {
    fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
        let datetime = |index: usize| -> rusqlite::Result<Option<NaiveDateTime>> {
            match row.get_ref(index)? {
                rusqlite::types::ValueRef::Null => Ok(None),
                value => parse_sqlite_datetime(value.as_str()?)
                    .map(Some)
                    .ok_or_else(|| {
                        rusqlite::Error::FromSqlConversionFailure(
                            index,
                            rusqlite::types::Type::Text,
                            "not a date and time".into(),
                        )
                    }),
            }
        };
        let date_joined = datetime(8)?.ok_or(rusqlite::Error::InvalidColumnType(
            8,
            "date_joined".to_owned(),
            rusqlite::types::Type::Null,
        ))?;
        Ok(profile(
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            [row.get(4)?, row.get(5)?, row.get(6)?],
            datetime(7)?,
            date_joined,
            row.get(9)?,
            datetime(10)?,
            row.get_ref(11)?.as_str_or_null()?,
        ))
    }
}

impl FromQueryResult for Profile {
    fn from_query_result(row: &QueryResult, _pre: &str) -> Result<Self, DbErr> {
        let reason: Option<String> = row.try_get_by_index(11)?;
        Ok(Self(profile(
            row.try_get_by_index(0)?,
            row.try_get_by_index(1)?,
            row.try_get_by_index(2)?,
            row.try_get_by_index(3)?,
            [
                row.try_get_by_index(4)?,
                row.try_get_by_index(5)?,
                row.try_get_by_index(6)?,
            ],
            row.try_get_by_index(7)?,
            row.try_get_by_index(8)?,
            row.try_get_by_index(9)?,
            row.try_get_by_index(10)?,
            reason.as_deref(),
        )))
    }
}

/// A [`User`] from the values of [`PROFILE_COLUMNS`], in that order.
#[allow(clippy::too_many_arguments, reason = "one argument per column")]
fn profile(
    id: i64,
    email: String,
    username: String,
    avatar: Option<String>,
    [is_active, is_staff, is_superuser]: [bool; 3],
    last_login: Option<NaiveDateTime>,
    date_joined: NaiveDateTime,
    token_generation: i64,
    tokens_revoked_at: Option<NaiveDateTime>,
    tokens_revoked_reason: Option<&str>,
) -> User {
    User {
        id,
        email,
        username,
        avatar,
        is_active,
        is_staff,
        is_superuser,
        last_login,
        date_joined,
        token_generation,
        tokens_revoked: tokens_revoked_at.map(|at| TokensRevoked {
            at: at.and_utc().timestamp(),
            reason: RevocationReason::parse(tokens_revoked_reason.unwrap_or("")),
        }),
    }
}

/// A date and time as sqlx stores it on SQLite (`%F %T%.f`, UTC), read
/// without chrono's general parser for the common shape; other shapes sqlx
/// accepts (a `T`, an offset) go to chrono.
fn parse_sqlite_datetime(text: &str) -> Option<NaiveDateTime> {
    fast_datetime(text).or_else(|| {
        [
            "%F %T%.f",
            "%FT%T%.f",
            "%F %T%.f%:z",
            "%FT%T%.f%:z",
            "%FT%T%.fZ",
        ]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
    })
}

/// `YYYY-MM-DD HH:MM:SS` with an optional `.` and 1 to 9 digits.
fn fast_datetime(text: &str) -> Option<NaiveDateTime> {
    let bytes = text.as_bytes();
    let (head, fraction) = match bytes.get(19) {
        None if bytes.len() == 19 => (bytes, &b""[..]),
        Some(b'.') => (bytes.get(..19)?, bytes.get(20..)?),
        _ => return None,
    };
    if head.get(4) != Some(&b'-')
        || head.get(7) != Some(&b'-')
        || head.get(10) != Some(&b' ')
        || head.get(13) != Some(&b':')
        || head.get(16) != Some(&b':')
        || fraction.len() > 9
        || (fraction.is_empty() && bytes.len() > 19)
    {
        return None;
    }
    let number = |digits: &[u8]| -> Option<u32> {
        digits.iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let nanos = number(fraction)? * 10u32.pow(9 - fraction.len() as u32);
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(number(head.get(0..4)?)?).ok()?,
        number(head.get(5..7)?)?,
        number(head.get(8..10)?)?,
    )?;
    date.and_hms_nano_opt(
        number(head.get(11..13)?)?,
        number(head.get(14..16)?)?,
        number(head.get(17..19)?)?,
        nanos,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_read_as_sqlx_writes_them() {
        for at in [
            "2026-12-06 17:44:20",
            "2026-12-06 17:44:20.5",
            "2026-12-06 17:44:20.123456",
            "2026-12-06 17:44:20.123456789",
            "1999-01-31 00:00:00.000000001",
        ] {
            let expected = NaiveDateTime::parse_from_str(at, "%F %T%.f").ok();
            assert!(expected.is_some(), "{at}");
            assert_eq!(fast_datetime(at), expected, "{at}");
            assert_eq!(parse_sqlite_datetime(at), expected, "{at}");
        }
        let written = chrono::Utc::now().naive_utc();
        let text = written.format("%F %T%.f").to_string();
        assert_eq!(fast_datetime(&text), Some(written));
    }

    #[test]
    fn other_shapes_fall_back_to_chrono_or_fail() {
        let t = |s: &str| NaiveDateTime::parse_from_str(s, "%FT%T%.f").ok();
        assert_eq!(fast_datetime("2026-12-06T17:44:20"), None);
        assert_eq!(
            parse_sqlite_datetime("2026-12-06T17:44:20.25"),
            t("2026-12-06T17:44:20.25")
        );
        // More digits than nanoseconds: chrono's reading (truncated).
        let long = "2026-12-06 17:44:20.1234567890";
        assert_eq!(fast_datetime(long), None);
        assert_eq!(
            parse_sqlite_datetime(long),
            NaiveDateTime::parse_from_str(long, "%F %T%.f").ok()
        );
        for bad in [
            "",
            "2026-12-06",
            "2026-12-06 17:44:2x",
            "2026-13-06 17:44:20",
            "2026-12-06 17:44:20.",
            "2026-12-06 17:44:20 ",
        ] {
            assert_eq!(fast_datetime(bad), None, "{bad:?}");
            assert_eq!(parse_sqlite_datetime(bad), None, "{bad:?}");
        }
    }
}
