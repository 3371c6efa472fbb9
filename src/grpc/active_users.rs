//! "Who is the active user behind this token?" — the one database read that
//! GetMe, UpdateAvatar, ListUsers, VerifyToken and RefreshToken all make,
//! answered from a small bounded cache of user profiles.
//!
//! Why a cache: on two cores that read was most of a GetMe's cost (the
//! SQLite driver hands every query to a connection thread and back; the
//! PostgreSQL one makes a network round trip). Why this is safe:
//! - every write this replica makes to a user row goes through
//!   [`ActiveUsers::write`], which drops the entry, so this replica never
//!   answers from a row older than its own last write;
//! - a change made elsewhere (another replica, an admin deactivating or
//!   deleting a user in the database) is seen within `ttl`: an entry is never
//!   used after `ttl`. `ttl = 0` turns the cache off;
//! - only the public profile is kept (no password hash), at most `capacity`
//!   of them.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use super::fresh_cache::{FreshCache, write_then_forget};
use crate::{config::CacheSettings, error::Error, pb, persistence::users};

#[derive(Debug, Clone)]
pub struct ActiveUsers {
    db: DatabaseConnection,
    /// `None` when the cache is off.
    cache: Option<Arc<FreshCache<i64, pb::User>>>,
}

impl ActiveUsers {
    pub fn new(db: DatabaseConnection, settings: CacheSettings) -> Self {
        Self {
            db,
            cache: FreshCache::new(settings).map(Arc::new),
        }
    }

    /// The user's profile, if the user still exists and is active
    /// (simplejwt's `JWTAuthentication.get_user`).
    ///
    /// # Errors
    /// NOT_FOUND-like `user_not_found`, `user_inactive`, or the database's error.
    pub async fn get(&self, user_id: i64) -> Result<pb::User, Error> {
        let fetch = self.fetch(user_id);
        let profile = match &self.cache {
            None => fetch.await?,
            Some(cache) => cache.read_through(user_id, fetch, |_| true).await?,
        };
        if !profile.is_active {
            return Err(Error::user_inactive());
        }
        Ok(profile)
    }

    /// Runs `write`, a change to user `user_id`'s row, to completion even if
    /// the caller is cancelled, and forgets the cached profile after it,
    /// whatever the outcome (see [`write_then_forget`]).
    ///
    /// # Errors
    /// `write`'s.
    pub async fn write<T: Send + 'static>(
        &self,
        user_id: i64,
        write: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        write_then_forget(self.cache.as_ref(), user_id, write).await
    }

    async fn fetch(&self, user_id: i64) -> Result<pb::User, Error> {
        users::find_by_id(&self.db, user_id)
            .await?
            .map(pb::User::from)
            .ok_or_else(Error::user_not_found)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
        .unwrap_or_else(|e| panic!("{e}"));
        (db, 1)
    }

    fn settings(ttl: Duration) -> CacheSettings {
        CacheSettings { ttl, capacity: 16 }
    }

    /// Owns its connection, as [`ActiveUsers::write`] needs.
    async fn set_avatar(db: DatabaseConnection, id: i64, avatar: &str) -> Result<(), Error> {
        let avatar = crate::domain::Avatar::parse(avatar).unwrap_or_else(|e| panic!("{e}"));
        users::set_avatar(&db, id, Some(avatar)).await.map(|_| ())
    }

    #[tokio::test]
    async fn a_write_through_the_cache_is_seen_at_once() {
        let (db, id) = sqlite().await;
        let users = ActiveUsers::new(db.clone(), settings(Duration::from_secs(3600)));
        assert_eq!(users.get(id).await.map(|u| u.avatar).ok(), Some(None));
        users
            .write(id, set_avatar(db.clone(), id, "https://example.com/a.png"))
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let avatar = users.get(id).await.map(|u| u.avatar).ok().flatten();
        assert_eq!(avatar.as_deref(), Some("https://example.com/a.png"));
    }

    /// A caller cancelled (deadline, disconnect) after the commit, before
    /// the write returned: this replica must still see its own write at once.
    #[tokio::test]
    async fn a_write_cancelled_after_its_commit_is_seen_at_once() {
        let (db, id) = sqlite().await;
        let users = ActiveUsers::new(db.clone(), settings(Duration::from_secs(3600)));
        assert_eq!(users.get(id).await.map(|u| u.avatar).ok(), Some(None));
        let (committed, on_commit) = tokio::sync::oneshot::channel();
        let write_db = db.clone();
        let write = users.write(id, async move {
            set_avatar(write_db, id, "https://example.com/d.png").await?;
            let _ = committed.send(());
            // The answer never gets back to the caller.
            std::future::pending::<Result<(), Error>>().await
        });
        tokio::select! {
            _ = write => panic!("the write cannot finish"),
            _ = on_commit => {} // drops the caller's future
        }
        let avatar = users.get(id).await.map(|u| u.avatar).ok().flatten();
        assert_eq!(avatar.as_deref(), Some("https://example.com/d.png"));
    }

    /// A caller cancelled before the commit: the write still commits, and
    /// a profile cached meanwhile is forgotten when it does.
    #[tokio::test]
    async fn a_write_cancelled_before_its_commit_still_commits_and_forgets() {
        let (db, id) = sqlite().await;
        let users = ActiveUsers::new(db.clone(), settings(Duration::from_secs(3600)));
        let (go, on_go) = tokio::sync::oneshot::channel::<()>();
        let (committed, on_commit) = tokio::sync::oneshot::channel();
        let write_db = db.clone();
        let write = users.write(id, async move {
            let _ = on_go.await;
            set_avatar(write_db, id, "https://example.com/e.png").await?;
            let _ = committed.send(());
            Ok(())
        });
        tokio::select! {
            biased;
            _ = write => panic!("the write cannot finish yet"),
            () = std::future::ready(()) => {} // polled once, then dropped
        }
        // Read (and cached) while the write is pending.
        assert_eq!(users.get(id).await.map(|u| u.avatar).ok(), Some(None));
        let _ = go.send(());
        on_commit
            .await
            .unwrap_or_else(|_| panic!("the write was abandoned with its caller"));
        // On this single-threaded runtime the write's task has forgotten the
        // entry in the same poll that sent the signal.
        let avatar = users.get(id).await.map(|u| u.avatar).ok().flatten();
        assert_eq!(avatar.as_deref(), Some("https://example.com/e.png"));
    }

    #[tokio::test]
    async fn a_write_elsewhere_is_seen_after_the_ttl_and_not_before() {
        let (db, id) = sqlite().await;
        let ttl = Duration::from_millis(200);
        let users = ActiveUsers::new(db.clone(), settings(ttl));
        assert!(users.get(id).await.is_ok());
        // Behind the cache's back, as another replica or an admin would.
        set_avatar(db.clone(), id, "https://example.com/b.png")
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(users.get(id).await.map(|u| u.avatar).ok(), Some(None));
        tokio::time::sleep(ttl).await;
        let avatar = users.get(id).await.map(|u| u.avatar).ok().flatten();
        assert_eq!(avatar.as_deref(), Some("https://example.com/b.png"));
    }

    #[tokio::test]
    async fn with_a_zero_ttl_every_read_goes_to_the_database() {
        let (db, id) = sqlite().await;
        let users = ActiveUsers::new(db.clone(), settings(Duration::ZERO));
        assert!(users.get(id).await.is_ok());
        set_avatar(db.clone(), id, "https://example.com/c.png")
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let avatar = users.get(id).await.map(|u| u.avatar).ok().flatten();
        assert_eq!(avatar.as_deref(), Some("https://example.com/c.png"));
    }

    #[tokio::test]
    async fn inactive_and_missing_users_are_refused_also_from_the_cache() {
        use sea_orm::ConnectionTrait;
        let (db, id) = sqlite().await;
        let users = ActiveUsers::new(db.clone(), settings(Duration::from_secs(3600)));
        let write_db = db.clone();
        users
            .write(id, async move {
                write_db
                    .execute_unprepared("UPDATE users SET is_active = FALSE")
                    .await?;
                Ok(())
            })
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        for _ in 0..2 {
            assert!(matches!(
                users.get(id).await,
                Err(Error::Unauthenticated { .. })
            ));
        }
        assert!(matches!(
            users.get(99).await,
            Err(Error::Unauthenticated { .. })
        ));
    }
}
