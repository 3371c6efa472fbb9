//! "Who is the user behind this token?" — the one database read that
//! GetMe, UpdateAvatar, ListUsers, VerifyToken and RefreshToken all make,
//! answered from a small bounded cache of user profiles.
//!
//! Why a cache: that read was most of a GetMe's cost (the SQLite driver
//! hands every query to a connection thread and back; the PostgreSQL one
//! makes a network round trip). Why this is safe:
//! - every change to an existing user row goes through this type (the
//!   writers in [`super::users`] are private to storage), and drops the
//!   entry, so this replica never answers from a row older than its own
//!   last write;
//! - a change made elsewhere (another replica, an admin deactivating or
//!   deleting a user in the database) is seen within `ttl`: an entry is never
//!   used after `ttl`. `ttl = 0` turns the cache off;
//! - only the public profile is kept (no password hash), at most `capacity`
//!   of them.

use std::sync::Arc;

use chrono::NaiveDateTime;
use sea_orm::DatabaseConnection;

use super::{
    StoreError,
    fresh_cache::{FreshCache, write_then_forget},
    user_reads::UserReads,
    users,
};
use crate::{
    config::CacheSettings,
    domain::{Avatar, RevocationReason, User, UserFilter},
    telemetry::metrics::CacheMetrics,
};

#[derive(Debug, Clone)]
pub struct UserProfiles {
    db: DatabaseConnection,
    reads: UserReads,
    /// Users found, by id; `None` when the cache is off.
    cache: Option<Arc<FreshCache<i64, Option<User>>>>,
}

impl UserProfiles {
    /// `metrics`: where the cache counts its hits and misses.
    pub fn new(db: DatabaseConnection, settings: CacheSettings, metrics: CacheMetrics) -> Self {
        Self {
            reads: UserReads::new(db.clone()),
            db,
            cache: FreshCache::new(settings, metrics).map(Arc::new),
        }
    }

    /// The user's profile, active or not; `None` if there is no such user.
    ///
    /// # Errors
    /// The database's.
    pub async fn get(&self, user_id: i64) -> Result<Option<User>, StoreError> {
        let fetch = self.reads.find_by_id(user_id);
        match &self.cache {
            None => fetch.await,
            Some(cache) => cache.read_through(user_id, fetch, Option::is_some).await,
        }
    }

    /// The profiles of the users with these `ids` (distinct) that exist,
    /// active or not, in no particular order: fresh cache entries, and one
    /// query for all the others.
    ///
    /// # Errors
    /// The database's.
    pub async fn get_many(&self, ids: Vec<i64>) -> Result<Vec<User>, StoreError> {
        let fetch = |ids: Vec<i64>| async move {
            let users = self.reads.find_by_ids(ids).await?;
            Ok::<_, StoreError>(
                users
                    .into_iter()
                    .map(|user| (user.id, Some(user)))
                    .collect::<Vec<_>>(),
            )
        };
        let found = match &self.cache {
            None => fetch(ids).await?,
            Some(cache) => cache.read_through_many(ids, fetch, Option::is_some).await?,
        };
        Ok(found.into_iter().filter_map(|(_, user)| user).collect())
    }

    /// A page of profiles: up to `limit` users with an id above `after_id`
    /// that `filter` lets through, by id. Read from the database, not the
    /// cache: a page is read once, and a cached copy would only crowd out
    /// the profiles that tokens keep asking for.
    ///
    /// # Errors
    /// The database's.
    pub async fn list_after(
        &self,
        after_id: i64,
        filter: &UserFilter,
        limit: u64,
    ) -> Result<Vec<User>, StoreError> {
        self.reads.list_after(after_id, filter, limit).await
    }

    /// Sets or clears the user's avatar: the new profile, `None` if the
    /// user is gone.
    ///
    /// # Errors
    /// The database's.
    pub async fn set_avatar(
        &self,
        user_id: i64,
        avatar: Option<Avatar>,
    ) -> Result<Option<User>, StoreError> {
        let db = self.db.clone();
        let stored = async move { users::set_avatar(&db, user_id, avatar).await };
        Ok(self.write(user_id, stored).await?.map(User::from))
    }

    /// Replaces the user's password hash `old` by its rehash `new` (after
    /// a parameter upgrade), unless it changed meanwhile.
    ///
    /// # Errors
    /// The database's.
    pub async fn upgrade_password_hash(
        &self,
        user_id: i64,
        old: String,
        new: String,
    ) -> Result<(), StoreError> {
        let db = self.db.clone();
        let stored = async move { users::upgrade_password_hash(&db, user_id, old, new).await };
        self.write(user_id, stored).await
    }

    /// Revokes every token issued to the user so far (with a new password
    /// hash, if given): the generation the user's next tokens carry, `None`
    /// if the user is gone.
    ///
    /// # Errors
    /// The database's.
    pub async fn revoke_tokens(
        &self,
        user_id: i64,
        reason: RevocationReason,
        new_password_hash: Option<String>,
        now: NaiveDateTime,
    ) -> Result<Option<i64>, StoreError> {
        let db = self.db.clone();
        let revoked =
            async move { users::revoke_tokens(&db, user_id, reason, new_password_hash, now).await };
        self.write(user_id, revoked).await
    }

    /// Sets the administrative flags `change` names: the new profile,
    /// `None` if the user is gone.
    ///
    /// # Errors
    /// The database's.
    pub async fn set_flags(
        &self,
        user_id: i64,
        change: users::FlagChange,
    ) -> Result<Option<User>, StoreError> {
        let db = self.db.clone();
        let stored = async move { users::set_flags(&db, user_id, change).await };
        Ok(self.write(user_id, stored).await?.map(User::from))
    }

    /// Deletes the user with their refresh tokens, reset tokens and login
    /// counter (`throttle_key`): whether there was such a user.
    ///
    /// # Errors
    /// The database's.
    pub async fn delete(&self, user_id: i64, throttle_key: String) -> Result<bool, StoreError> {
        let db = self.db.clone();
        let deleted = async move { users::delete(&db, user_id, &throttle_key).await };
        self.write(user_id, deleted).await
    }

    /// Consumes the reset token `reset_token_id`, sets the new password
    /// hash and revokes the user's tokens, all or nothing: the generation
    /// the user's next tokens carry, `None` if the token was already
    /// consumed or expired (or the user is gone).
    ///
    /// # Errors
    /// The database's.
    pub async fn reset_password(
        &self,
        user_id: i64,
        reset_token_id: i64,
        password_hash: String,
        now: NaiveDateTime,
    ) -> Result<Option<i64>, StoreError> {
        let db = self.db.clone();
        let reset = async move {
            users::reset_password(&db, reset_token_id, user_id, password_hash, now).await
        };
        self.write(user_id, reset).await
    }

    /// Records a successful login as the user's `last_login`.
    ///
    /// # Errors
    /// The database's.
    pub async fn record_login(&self, user_id: i64, now: NaiveDateTime) -> Result<(), StoreError> {
        let db = self.db.clone();
        let recorded = async move { users::record_login(&db, user_id, now).await };
        self.write(user_id, recorded).await
    }

    /// Runs `write`, a change to user `user_id`'s row, to completion even if
    /// the caller is cancelled, and forgets the cached profile after it,
    /// whatever the outcome (see [`write_then_forget`]).
    async fn write<T: Send + 'static>(
        &self,
        user_id: i64,
        write: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        write_then_forget(self.cache.as_ref(), user_id, write).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::persistence::fresh_cache::cancelled;

    async fn sqlite() -> (DatabaseConnection, i64) {
        use sea_orm::ConnectionTrait;
        let db = crate::persistence::memory_database().await;
        db.execute_unprepared(
            "INSERT INTO users (email, email_key, username, username_key, password, is_active, \
             is_staff, is_superuser, date_joined) \
             VALUES ('a@example.com', 'a@example.com', 'amy', 'amy', 'x', TRUE, FALSE, FALSE, \
             '2026-01-01 00:00:00')",
        )
        .await
        .expect("a user row");
        (db, 1)
    }

    fn settings(ttl: Duration) -> CacheSettings {
        CacheSettings { ttl, capacity: 16 }
    }

    /// Behind the cache's back; owns its connection, as
    /// [`UserProfiles::write`] needs.
    async fn set_avatar(db: DatabaseConnection, id: i64, avatar: &str) -> Result<(), StoreError> {
        let avatar = Avatar::parse(avatar).expect("a valid avatar");
        users::set_avatar(&db, id, Some(avatar)).await.map(|_| ())
    }

    async fn avatar(users: &UserProfiles, id: i64) -> Option<String> {
        let user = users.get(id).await.expect("a read").expect("the user");
        user.avatar
    }

    #[tokio::test]
    async fn a_write_through_the_cache_is_seen_at_once() {
        let (db, id) = sqlite().await;
        let users = UserProfiles::new(
            db.clone(),
            settings(Duration::from_secs(3600)),
            CacheMetrics::default(),
        );
        assert_eq!(avatar(&users, id).await, None);
        let new = Avatar::parse("https://example.com/a.png").ok();
        users.set_avatar(id, new).await.expect("an update");
        assert_eq!(
            avatar(&users, id).await.as_deref(),
            Some("https://example.com/a.png")
        );
    }

    /// A caller cancelled (deadline, disconnect) after the commit, before
    /// the write returned: this replica must still see its own write at once.
    #[tokio::test]
    async fn a_write_cancelled_after_its_commit_is_seen_at_once() {
        let (db, id) = sqlite().await;
        let users = UserProfiles::new(
            db.clone(),
            settings(Duration::from_secs(3600)),
            CacheMetrics::default(),
        );
        assert_eq!(avatar(&users, id).await, None);
        cancelled::after_commit(|committed| {
            users.write(id, async move {
                set_avatar(db, id, "https://example.com/d.png").await?;
                let _ = committed.send(());
                // The answer never gets back to the caller.
                std::future::pending::<Result<(), StoreError>>().await
            })
        })
        .await;
        assert_eq!(
            avatar(&users, id).await.as_deref(),
            Some("https://example.com/d.png")
        );
    }

    /// A caller cancelled before the commit: the write still commits, and
    /// a profile cached meanwhile is forgotten when it does.
    #[tokio::test]
    async fn a_write_cancelled_before_its_commit_still_commits_and_forgets() {
        let (db, id) = sqlite().await;
        let users = UserProfiles::new(
            db.clone(),
            settings(Duration::from_secs(3600)),
            CacheMetrics::default(),
        );
        let (go, on_commit) = cancelled::before_commit(|on_go, committed| {
            users.write(id, async move {
                let _ = on_go.await;
                set_avatar(db, id, "https://example.com/e.png").await?;
                let _ = committed.send(());
                Ok(())
            })
        })
        .await;
        // Read (and cached) while the write is pending.
        assert_eq!(avatar(&users, id).await, None);
        let _ = go.send(());
        on_commit
            .await
            .expect("the write was abandoned with its caller");
        // On this single-threaded runtime the write's task has forgotten the
        // entry in the same poll that sent the signal.
        assert_eq!(
            avatar(&users, id).await.as_deref(),
            Some("https://example.com/e.png")
        );
    }

    #[tokio::test]
    async fn many_users_are_read_through_the_cache() {
        let (db, id) = sqlite().await;
        let users = UserProfiles::new(
            db.clone(),
            settings(Duration::from_secs(3600)),
            CacheMetrics::default(),
        );
        let found = users.get_many(vec![id, 99]).await.expect("a read");
        assert_eq!(found.iter().map(|u| u.id).collect::<Vec<_>>(), [id]);
        // Cached: a change behind the cache's back is not seen within the TTL...
        set_avatar(db.clone(), id, "https://example.com/m.png")
            .await
            .unwrap();
        let found = users.get_many(vec![id]).await.expect("a read");
        assert_eq!(found.first().and_then(|u| u.avatar.clone()), None);
        // ...and a write through it is, at once.
        let new = Avatar::parse("https://example.com/n.png").ok();
        users.set_avatar(id, new).await.expect("an update");
        let found = users.get_many(vec![id]).await.expect("a read");
        assert_eq!(
            found.first().and_then(|u| u.avatar.as_deref()),
            Some("https://example.com/n.png")
        );
    }

    #[tokio::test]
    async fn a_write_elsewhere_is_seen_after_the_ttl_and_not_before() {
        let (db, id) = sqlite().await;
        let ttl = Duration::from_millis(200);
        let users = UserProfiles::new(db.clone(), settings(ttl), CacheMetrics::default());
        assert!(users.get(id).await.is_ok_and(|u| u.is_some()));
        // Behind the cache's back, as another replica or an admin would.
        set_avatar(db.clone(), id, "https://example.com/b.png")
            .await
            .unwrap();
        assert_eq!(avatar(&users, id).await, None);
        tokio::time::sleep(ttl).await;
        assert_eq!(
            avatar(&users, id).await.as_deref(),
            Some("https://example.com/b.png")
        );
    }

    #[tokio::test]
    async fn with_a_zero_ttl_every_read_goes_to_the_database() {
        let (db, id) = sqlite().await;
        let users = UserProfiles::new(
            db.clone(),
            settings(Duration::ZERO),
            CacheMetrics::default(),
        );
        assert!(users.get(id).await.is_ok_and(|u| u.is_some()));
        set_avatar(db.clone(), id, "https://example.com/c.png")
            .await
            .unwrap();
        assert_eq!(
            avatar(&users, id).await.as_deref(),
            Some("https://example.com/c.png")
        );
    }

    #[tokio::test]
    async fn deactivation_through_the_cache_is_seen_at_once_and_missing_users_are_none() {
        use sea_orm::ConnectionTrait;
        let (db, id) = sqlite().await;
        let users = UserProfiles::new(
            db.clone(),
            settings(Duration::from_secs(3600)),
            CacheMetrics::default(),
        );
        let write_db = db.clone();
        users
            .write(id, async move {
                write_db
                    .execute_unprepared("UPDATE users SET is_active = FALSE")
                    .await?;
                Ok(())
            })
            .await
            .expect("an update");
        for _ in 0..2 {
            let user = users.get(id).await.expect("a read").expect("the user");
            assert!(!user.is_active);
        }
        assert_eq!(users.get(99).await.expect("a read"), None);
    }
}
