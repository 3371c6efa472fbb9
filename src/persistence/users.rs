//! Queries on the `users` table. The writers of existing rows are private
//! to storage: the rest of the service changes a user through
//! [`super::UserProfiles`], which keeps its cache in step.

use std::{
    collections::{HashMap, HashSet},
    fmt,
};

use chrono::NaiveDateTime;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait,
    DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter, QuerySelect, prelude::Expr,
};

use super::{StoreError, error::unique_violation};
use super::{
    at_most_one,
    entities::{
        deleted_user,
        user::{self, Entity as Users},
    },
};
use crate::domain::{self, Avatar, Email, RevocationReason, TokensRevoked, Username};

/// A whole user row, password hash included: for logins and commands.
pub use user::Model as UserRow;

impl From<UserRow> for domain::User {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            email: row.email,
            username: row.username,
            avatar: row.avatar,
            is_active: row.is_active,
            is_staff: row.is_staff,
            is_superuser: row.is_superuser,
            last_login: row.last_login,
            date_joined: row.date_joined,
            token_generation: row.token_generation,
            tokens_revoked: row.tokens_revoked_at.map(|at| TokensRevoked {
                at: at.and_utc().timestamp(),
                reason: RevocationReason::parse(row.tokens_revoked_reason.as_deref().unwrap_or("")),
            }),
        }
    }
}

/// A user about to be inserted; the password is already hashed.
#[derive(Debug)]
pub struct NewUser {
    pub email: Email,
    pub username: Username,
    pub password_hash: String,
    pub avatar: Option<Avatar>,
    pub is_staff: bool,
    pub is_superuser: bool,
}

/// The first of `username`, `email` that another user already has. Checked
/// before hashing so that a taken name costs no argon2 work; the unique
/// indexes still decide races (see [`insert`]).
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "users.taken_field"))]
pub async fn taken_field(
    db: &impl ConnectionTrait,
    email: &Email,
    username: &Username,
) -> Result<Option<&'static str>, StoreError> {
    let (email_key, username_key) = (email.key(), username.key());
    let clashes: Vec<(String, String)> = Users::find()
        .select_only()
        .column(user::Column::EmailKey)
        .column(user::Column::UsernameKey)
        .filter(
            Condition::any()
                .add(user::Column::EmailKey.eq(email_key.as_str()))
                .add(user::Column::UsernameKey.eq(username_key.as_str())),
        )
        .limit(2)
        .into_tuple()
        .all(db)
        .await?;
    let field = if clashes.iter().any(|(_, u)| *u == username_key) {
        Some("username")
    } else if clashes.iter().any(|(e, _)| *e == email_key) {
        Some("email")
    } else {
        None
    };
    Ok(field)
}

/// Inserts `new`. A concurrent insert of the same username or email loses on
/// the unique index and comes back as ALREADY_EXISTS naming the field.
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "users.insert"))]
pub async fn insert(
    db: &impl ConnectionTrait,
    new: NewUser,
    now: NaiveDateTime,
) -> Result<UserRow, StoreError> {
    new_row(new, now)
        .insert(db)
        .await
        .map_err(already_exists_or)
}

/// Inserts all of `users` in one statement (bulk loading: seeding a
/// benchmark database, imports). Keep batches to about a thousand rows,
/// under every backend's limit on bound parameters.
pub async fn insert_many(
    db: &impl ConnectionTrait,
    users: Vec<NewUser>,
    now: NaiveDateTime,
) -> Result<(), StoreError> {
    if users.is_empty() {
        return Ok(());
    }
    Users::insert_many(users.into_iter().map(|new| new_row(new, now)))
        .exec_without_returning(db)
        .await
        .map_err(already_exists_or)?;
    Ok(())
}

fn new_row(new: NewUser, now: NaiveDateTime) -> user::ActiveModel {
    user::ActiveModel {
        email_key: Set(new.email.key()),
        email: Set(new.email.as_str().to_owned()),
        username_key: Set(new.username.key()),
        username: Set(new.username.as_str().to_owned()),
        password: Set(new.password_hash),
        avatar: Set(new.avatar.map(Avatar::into_string)),
        is_active: Set(true),
        is_staff: Set(new.is_staff),
        is_superuser: Set(new.is_superuser),
        last_login: Set(None),
        date_joined: Set(now),
        ..Default::default()
    }
}

/// A user brought from another system (`import-django`), inserted with its
/// own id and stored hash.
pub struct ImportedUser {
    pub id: i64,
    pub email: Email,
    pub username: Username,
    /// Stored as it is: a hash the password module can check, or an
    /// unusable one.
    pub password_hash: String,
    pub avatar: Option<Avatar>,
    pub is_active: bool,
    pub is_staff: bool,
    pub is_superuser: bool,
    pub last_login: Option<NaiveDateTime>,
    pub date_joined: NaiveDateTime,
}

/// By hand, so the password hash never reaches a log line.
impl fmt::Debug for ImportedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportedUser")
            .field("id", &self.id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What became of one [`ImportedUser`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    Imported,
    /// A user with this id and the same username or email is here already
    /// (an earlier run): left as it is.
    AlreadyPresent,
    /// A user with this id was deleted here: not brought back (with the
    /// deleted account's unexpired tokens).
    DeletedHere,
    /// Not inserted, nothing overwritten: `field` (`"id"`, `"username"`,
    /// `"email"`) belongs to another user here, or to an earlier user of
    /// the same import.
    Conflict {
        field: &'static str,
    },
}

/// Inserts the users of `batch` that are not here yet, in one transaction,
/// and says what became of each (in `batch`'s order). Ids, usernames and
/// emails are checked before inserting, so a clash is reported rather than
/// aborting the transaction; a concurrent writer that takes a name in
/// between still fails the batch on the unique index (run it again).
///
/// On PostgreSQL the id sequence is then moved past the largest id, so the
/// next registration does not collide with an imported user.
///
/// # Errors
/// The database's; nothing of the batch is kept then.
pub async fn import_batch(
    db: &DatabaseConnection,
    batch: Vec<ImportedUser>,
) -> Result<Vec<(i64, ImportOutcome)>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let txn = super::begin_write(db).await?;
    let ids: Vec<i64> = batch.iter().map(|u| u.id).collect();
    let emails: Vec<String> = batch.iter().map(|u| u.email.key()).collect();
    let usernames: Vec<String> = batch.iter().map(|u| u.username.key()).collect();
    if txn.get_database_backend() == DbBackend::Postgres {
        // The lookups below bind hundreds of values. From the sixth batch on,
        // PostgreSQL's generic plan for them compared every row with every
        // value (0.7 s a batch at 30,000 users); planned for the actual
        // values, the lists are hashed or the indexes used.
        txn.execute_unprepared("SET LOCAL plan_cache_mode = force_custom_plan")
            .await?;
    }
    // One lookup per unique index, each able to use its index.
    let mut here = Vec::new();
    for condition in [
        user::Column::Id.is_in(ids),
        user::Column::EmailKey.is_in(emails),
        user::Column::UsernameKey.is_in(usernames),
    ] {
        let rows: Vec<(i64, String, String)> = Users::find()
            .select_only()
            .column(user::Column::Id)
            .column(user::Column::EmailKey)
            .column(user::Column::UsernameKey)
            .filter(condition)
            .into_tuple()
            .all(&txn)
            .await?;
        here.extend(rows);
    }
    let deleted: HashSet<i64> = deleted_user::Entity::find()
        .select_only()
        .column(deleted_user::Column::Id)
        .filter(deleted_user::Column::Id.is_in(batch.iter().map(|u| u.id)))
        .into_tuple()
        .all(&txn)
        .await?
        .into_iter()
        .collect();
    let by_id: HashMap<i64, (String, String)> = here
        .iter()
        .map(|(id, email, username)| (*id, (email.clone(), username.clone())))
        .collect();
    let mut emails_taken: HashSet<String> = here.iter().map(|(_, e, _)| e.clone()).collect();
    let mut usernames_taken: HashSet<String> = here.iter().map(|(_, _, u)| u.clone()).collect();

    let mut outcomes = Vec::with_capacity(batch.len());
    let mut rows = Vec::new();
    for new in batch {
        let (email_key, username_key) = (new.email.key(), new.username.key());
        let outcome = match by_id.get(&new.id) {
            None if deleted.contains(&new.id) => ImportOutcome::DeletedHere,
            Some((email, username)) if *email == email_key || *username == username_key => {
                ImportOutcome::AlreadyPresent
            }
            Some(_) => ImportOutcome::Conflict { field: "id" },
            None if usernames_taken.contains(&username_key) => {
                ImportOutcome::Conflict { field: "username" }
            }
            None if emails_taken.contains(&email_key) => ImportOutcome::Conflict { field: "email" },
            None => {
                emails_taken.insert(email_key);
                usernames_taken.insert(username_key);
                ImportOutcome::Imported
            }
        };
        outcomes.push((new.id, outcome));
        if outcome == ImportOutcome::Imported {
            rows.push(imported_row(new));
        }
    }
    if !rows.is_empty() {
        Users::insert_many(rows)
            .exec_without_returning(&txn)
            .await
            .map_err(already_exists_or)?;
        if txn.get_database_backend() == DbBackend::Postgres {
            // Only ever forward: a registration running meanwhile may hold
            // a value past the largest committed id.
            txn.execute_unprepared(
                "SELECT setval(seq, top) FROM (\
                   SELECT pg_get_serial_sequence('users', 'id')::regclass AS seq, \
                          (SELECT MAX(id) FROM users) AS top) AS s \
                 WHERE top > COALESCE(pg_sequence_last_value(seq), 0)",
            )
            .await?;
        }
    }
    txn.commit().await?;
    Ok(outcomes)
}

fn imported_row(imported: ImportedUser) -> user::ActiveModel {
    let new = NewUser {
        email: imported.email,
        username: imported.username,
        password_hash: imported.password_hash,
        avatar: imported.avatar,
        is_staff: imported.is_staff,
        is_superuser: imported.is_superuser,
    };
    let mut row = new_row(new, imported.date_joined);
    row.id = Set(imported.id);
    row.is_active = Set(imported.is_active);
    row.last_login = Set(imported.last_login);
    row
}

/// Names the field behind a unique-index violation; other errors pass through.
fn already_exists_or(err: DbErr) -> StoreError {
    match unique_violation(&err) {
        // Every backend's message names the index or column: ux_users_username_key,
        // users.username_key, …
        Some(message) if message.contains("username_key") => StoreError::Duplicate {
            what: "user",
            field: "username",
        },
        Some(message) if message.contains("email_key") => StoreError::Duplicate {
            what: "user",
            field: "email",
        },
        _ => StoreError::from(err),
    }
}

#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "users.find_by_id"))]
pub async fn find_by_id(db: &impl ConnectionTrait, id: i64) -> Result<Option<UserRow>, StoreError> {
    at_most_one(Users::find_by_id(id).all(db).await?)
}

/// Login lookup: usernames match case-insensitively.
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "users.find_by_username"))]
pub async fn find_by_username(
    db: &impl ConnectionTrait,
    username_key: &str,
) -> Result<Option<UserRow>, StoreError> {
    at_most_one(
        Users::find()
            .filter(user::Column::UsernameKey.eq(username_key))
            .all(db)
            .await?,
    )
}

/// Sets or clears the avatar; `None` if the user is gone.
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "users.set_avatar"))]
pub(super) async fn set_avatar(
    db: &impl ConnectionTrait,
    id: i64,
    avatar: Option<Avatar>,
) -> Result<Option<UserRow>, StoreError> {
    Users::update_many()
        .col_expr(
            user::Column::Avatar,
            Expr::value(avatar.map(Avatar::into_string)),
        )
        .filter(user::Column::Id.eq(id))
        .exec(db)
        .await?;
    // Re-read rather than trust rows_affected: MySQL counts only rows that
    // changed, so setting the same avatar again reports 0.
    find_by_id(db, id).await
}

/// Replaces the stored password hash `old` by `new` (a rehash after a
/// login): only if it is still `old`, so a login that read the row before a
/// password change cannot write the old password back over the new one.
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "users.upgrade_password_hash"))]
pub(super) async fn upgrade_password_hash(
    db: &impl ConnectionTrait,
    id: i64,
    old: String,
    new: String,
) -> Result<(), StoreError> {
    Users::update_many()
        .col_expr(user::Column::Password, Expr::value(new))
        .filter(user::Column::Id.eq(id))
        .filter(user::Column::Password.eq(old))
        .exec(db)
        .await?;
    Ok(())
}

/// Revokes every token issued to the user so far, in one transaction with
/// `new_password_hash` when given: the user's new token generation, `None`
/// if the user is gone.
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "users.revoke_tokens"))]
pub(super) async fn revoke_tokens(
    db: &DatabaseConnection,
    id: i64,
    reason: RevocationReason,
    new_password_hash: Option<String>,
    now: NaiveDateTime,
) -> Result<Option<i64>, StoreError> {
    let txn = super::begin_write(db).await?;
    let generation = revoke_tokens_in(&txn, id, reason, new_password_hash, now).await?;
    txn.commit().await?;
    Ok(generation)
}

/// [`revoke_tokens`]'s work, inside the caller's transaction.
async fn revoke_tokens_in(
    txn: &impl ConnectionTrait,
    id: i64,
    reason: RevocationReason,
    new_password_hash: Option<String>,
    now: NaiveDateTime,
) -> Result<Option<i64>, StoreError> {
    use sea_orm::sea_query::ExprTrait as _;
    let mut update = Users::update_many()
        .col_expr(
            user::Column::TokenGeneration,
            Expr::col(user::Column::TokenGeneration).add(1i64),
        )
        .col_expr(user::Column::TokensRevokedAt, Expr::value(Some(now)))
        .col_expr(
            user::Column::TokensRevokedReason,
            Expr::value(Some(reason.as_str())),
        );
    if let Some(hash) = new_password_hash {
        update = update.col_expr(user::Column::Password, Expr::value(hash));
    }
    update.filter(user::Column::Id.eq(id)).exec(txn).await?;
    // Read back inside the transaction: the generation our own new tokens carry.
    let generation: Vec<i64> = Users::find_by_id(id)
        .select_only()
        .column(user::Column::TokenGeneration)
        .into_tuple()
        .all(txn)
        .await?;
    at_most_one(generation)
}

/// Consumes the password reset token `reset_token_id` and, in the same
/// transaction, sets the user's new password hash and revokes their
/// tokens: the user's new token generation; `None` if the token was
/// consumed already (by a concurrent reset), expired meanwhile, or the
/// user is gone.
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "users.reset_password"))]
pub(super) async fn reset_password(
    db: &DatabaseConnection,
    reset_token_id: i64,
    id: i64,
    password_hash: String,
    now: NaiveDateTime,
) -> Result<Option<i64>, StoreError> {
    let txn = super::begin_write(db).await?;
    if !super::password_reset_tokens::consume(&txn, reset_token_id, now).await? {
        txn.rollback().await?;
        return Ok(None);
    }
    let reason = RevocationReason::PasswordChanged;
    let generation = revoke_tokens_in(&txn, id, reason, Some(password_hash), now).await?;
    txn.commit().await?;
    Ok(generation)
}

/// The flags an administrator changes; `None` leaves one as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlagChange {
    pub is_active: Option<bool>,
    pub is_staff: Option<bool>,
    pub is_superuser: Option<bool>,
}

/// Sets the flags `change` names: the row after, `None` if the user is gone.
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "users.set_flags"))]
pub(super) async fn set_flags(
    db: &DatabaseConnection,
    id: i64,
    change: FlagChange,
) -> Result<Option<UserRow>, StoreError> {
    let txn = super::begin_write(db).await?;
    // A reset token issued while the user was unprivileged (by staff who
    // may manage only such users) must not outlive a promotion.
    if change.is_staff == Some(true) || change.is_superuser == Some(true) {
        super::password_reset_tokens::delete_of_user(&txn, id).await?;
    }
    let columns = [
        (user::Column::IsActive, change.is_active),
        (user::Column::IsStaff, change.is_staff),
        (user::Column::IsSuperuser, change.is_superuser),
    ];
    let mut update = Users::update_many().filter(user::Column::Id.eq(id));
    let mut any = false;
    for (column, value) in columns {
        if let Some(value) = value {
            update = update.col_expr(column, Expr::value(value));
            any = true;
        }
    }
    if any {
        update.exec(&txn).await?;
    }
    // Re-read rather than trust rows_affected (MySQL counts changed rows only).
    let row = find_by_id(&txn, id).await?;
    txn.commit().await?;
    Ok(row)
}

/// Deletes the user, with their refresh tokens (outstanding and
/// blacklisted), their
/// reset tokens and their login counter (`throttle_key`), in one
/// transaction: whether the user existed.
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "users.delete"))]
pub(super) async fn delete(
    db: &DatabaseConnection,
    id: i64,
    throttle_key: &str,
) -> Result<bool, StoreError> {
    use super::entities::{login_attempt, outstanding_token};
    let txn = super::begin_write(db).await?;
    // Their blacklist rows go with them (ON DELETE CASCADE, as in flushing).
    outstanding_token::Entity::delete_many()
        .filter(outstanding_token::Column::UserId.eq(id))
        .exec(&txn)
        .await?;
    super::password_reset_tokens::delete_of_user(&txn, id).await?;
    login_attempt::Entity::delete_many()
        .filter(login_attempt::Column::Key.eq(throttle_key))
        .exec(&txn)
        .await?;
    let deleted = Users::delete_many()
        .filter(user::Column::Id.eq(id))
        .exec(&txn)
        .await?;
    if deleted.rows_affected > 0 {
        deleted_user::Entity::insert(deleted_user::ActiveModel {
            id: Set(id),
            deleted_at: Set(super::db_now()),
        })
        .exec_without_returning(&txn)
        .await?;
    }
    txn.commit().await?;
    Ok(deleted.rows_affected == 1)
}

#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "users.record_login"))]
pub(super) async fn record_login(
    db: &impl ConnectionTrait,
    id: i64,
    now: NaiveDateTime,
) -> Result<(), StoreError> {
    Users::update_many()
        .col_expr(user::Column::LastLogin, Expr::value(Some(now)))
        .filter(user::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// Whether a user with this id exists (for recording a token's owner).
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "users.exists"))]
pub async fn exists(db: &impl ConnectionTrait, id: i64) -> Result<bool, StoreError> {
    let found: Vec<i64> = Users::find_by_id(id)
        .select_only()
        .column(user::Column::Id)
        .into_tuple()
        .all(db)
        .await?;
    Ok(!found.is_empty())
}

/// Up to `size` stored password hashes, spread evenly over the id range, and
/// how many users each stands for (an estimate from that range): what the
/// stored hashes typically cost, without reading every row.
pub async fn sample_password_hashes(
    db: &impl ConnectionTrait,
    size: u32,
) -> Result<(Vec<String>, f64), StoreError> {
    let bounds: Vec<(Option<i64>, Option<i64>)> = Users::find()
        .select_only()
        .expr(user::Column::Id.min())
        .expr(user::Column::Id.max())
        .into_tuple()
        .all(db)
        .await?;
    let Some((Some(first), Some(last))) = bounds.into_iter().next() else {
        return Ok((Vec::new(), 1.0));
    };
    let span = last.saturating_sub(first).saturating_add(1);
    let step = (span / i64::from(size.max(1))).max(1);
    let ids: Vec<i64> = (0..i64::from(size))
        .map(|i| first.saturating_add(i.saturating_mul(step)))
        .take_while(|id| *id <= last)
        .collect();
    let hashes: Vec<String> = Users::find()
        .select_only()
        .column(user::Column::Password)
        .filter(user::Column::Id.is_in(ids))
        .into_tuple()
        .all(db)
        .await?;
    #[allow(clippy::cast_precision_loss, reason = "an estimate")]
    let weight = (span as f64 / hashes.len().max(1) as f64).max(1.0);
    Ok((hashes, weight))
}
