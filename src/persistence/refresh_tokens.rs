//! The refresh tokens we issued (simplejwt's outstanding tokens) and their
//! blacklist: every write to them goes through [`RefreshTokens`], which also
//! answers "is this refresh token blacklisted?" — asked by every
//! RefreshToken and by VerifyToken for refresh tokens — from memory for
//! tokens found not blacklisted less than `ttl` ago.
//!
//! Why the cache: with the user check cached, this read was the only
//! database round trip of a RefreshToken. The contract is the user cache's:
//! - a Logout on this replica forgets the token at once
//!   ([`RefreshTokens::log_out`]);
//! - a Logout on another replica is seen within `ttl` (default 1 s). The
//!   access tokens of that login stay valid until they expire whatever the
//!   setting (simplejwt does not revoke them either), so this is the
//!   smaller window;
//! - with rotation on, nothing is cached: a rotated-out token must be
//!   recognised at once on every replica for reuse detection, and every
//!   refresh writes anyway.

use std::sync::Arc;

use chrono::NaiveDateTime;
use sea_orm::DatabaseConnection;

use super::{
    StoreError,
    fresh_cache::{FreshCache, write_then_forget},
    token_blacklist::{self, BlacklistReason},
    users,
};
use crate::{config::CacheSettings, telemetry::metrics::CacheMetrics, tokens::Claims};

#[derive(Debug, Clone)]
pub struct RefreshTokens {
    db: DatabaseConnection,
    /// jti → blacklisted, holding only tokens found not blacklisted;
    /// `None` when off.
    unlisted: Option<Arc<FreshCache<String, bool>>>,
}

impl RefreshTokens {
    /// `metrics`: where the cache counts its hits and misses.
    pub fn new(
        db: DatabaseConnection,
        settings: CacheSettings,
        rotation: bool,
        metrics: CacheMetrics,
    ) -> Self {
        let unlisted = if rotation {
            None
        } else {
            FreshCache::new(settings, metrics).map(Arc::new)
        };
        Self { db, unlisted }
    }

    /// Whether the refresh token `jti` is blacklisted.
    ///
    /// # Errors
    /// The database's.
    pub async fn is_blacklisted(&self, jti: &str) -> Result<bool, StoreError> {
        let lookup = token_blacklist::is_blacklisted(&self.db, jti);
        match &self.unlisted {
            None => lookup.await,
            Some(cache) => {
                let unlisted_only = |listed: &bool| !*listed;
                cache
                    .read_through(jti.to_owned(), lookup, unlisted_only)
                    .await
            }
        }
    }

    /// Why the refresh token `jti` is blacklisted; `None` if it is not.
    /// Always asks the database.
    ///
    /// # Errors
    /// The database's.
    pub async fn blacklist_reason(&self, jti: &str) -> Result<Option<BlacklistReason>, StoreError> {
        token_blacklist::blacklist_reason(&self.db, jti).await
    }

    /// Records `issued`, a refresh token just made at login.
    ///
    /// # Errors
    /// The database's.
    pub async fn record_issued(
        &self,
        issued: &Claims,
        now: NaiveDateTime,
    ) -> Result<(), StoreError> {
        token_blacklist::record_issued(&self.db, issued, None, now).await
    }

    /// Records `new`, the successor of `old`, blacklisting `old` in the same
    /// transaction when `blacklist_old` (both happen or neither).
    ///
    /// # Errors
    /// [`StoreError::AlreadyBlacklisted`]: `old` was blacklisted already,
    /// even by a concurrent rotation; and the database's.
    pub async fn rotate(
        &self,
        old: &Claims,
        new: &Claims,
        blacklist_old: bool,
        now: NaiveDateTime,
    ) -> Result<(), StoreError> {
        let rotated_out = if blacklist_old {
            Some(token_blacklist::outstanding_id(&self.db, old, Some(old.user_id), now).await?)
        } else {
            None
        };
        let recorded = token_blacklist::record_issued(&self.db, new, rotated_out, now).await;
        if rotated_out.is_some() {
            self.forget(&old.jti);
        }
        recorded
    }

    /// Blacklists the refresh token `claims` (Logout), to completion even if
    /// the caller is cancelled, and forgets that it was not blacklisted.
    /// A token this service never recorded (one from a Django service
    /// sharing the key) is recorded first.
    ///
    /// # Errors
    /// [`StoreError::AlreadyBlacklisted`], and the database's.
    pub async fn log_out(&self, claims: &Claims, now: NaiveDateTime) -> Result<(), StoreError> {
        // The owner is recorded only if it still exists (the column is a
        // foreign key); a deleted user's token can still be blacklisted.
        let owner = users::exists(&self.db, claims.user_id)
            .await?
            .then_some(claims.user_id);
        let token_id = token_blacklist::outstanding_id(&self.db, claims, owner, now).await?;
        let db = self.db.clone();
        let blacklisted = async move {
            token_blacklist::blacklist(&db, token_id, BlacklistReason::LoggedOut, now).await
        };
        write_then_forget(self.unlisted.as_ref(), claims.jti.clone(), blacklisted).await
    }

    /// Blacklists every refresh token of `user_id` still valid at
    /// `expired_before` (reuse detected): how many were revoked.
    ///
    /// # Errors
    /// The database's.
    pub async fn revoke_all_of_user(
        &self,
        user_id: i64,
        expired_before: NaiveDateTime,
        now: NaiveDateTime,
    ) -> Result<u64, StoreError> {
        let revoked =
            token_blacklist::revoke_all_of_user(&self.db, user_id, expired_before, now).await;
        // Which jtis were revoked is not known here; reuse detection runs
        // with rotation on, when nothing is cached anyway.
        if let Some(cache) = &self.unlisted {
            cache.forget_all();
        }
        revoked
    }

    fn forget(&self, jti: &str) {
        if let Some(cache) = &self.unlisted {
            cache.forget(&jti.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{persistence::fresh_cache::cancelled, tokens::TokenType};

    impl RefreshTokens {
        /// Any blacklisting, through the cache as [`RefreshTokens::log_out`]'s.
        async fn write_for_test(
            &self,
            jti: &str,
            write: impl Future<Output = Result<(), StoreError>> + Send + 'static,
        ) -> Result<(), StoreError> {
            write_then_forget(self.unlisted.as_ref(), jti.to_owned(), write).await
        }
    }

    /// An in-memory database with one outstanding refresh token, not
    /// blacklisted: its jti and row id.
    async fn sqlite() -> (DatabaseConnection, String, i64) {
        let db = crate::persistence::memory_database().await;
        let now = chrono::Utc::now();
        let claims = Claims {
            token_type: TokenType::Refresh,
            exp: now.timestamp() + 3600,
            iat: now.timestamp(),
            jti: "0123456789abcdef0123456789abcdef".to_owned(),
            user_id: 1,
            generation: Some(0),
        };
        let id = token_blacklist::outstanding_id(&db, &claims, None, now.naive_utc())
            .await
            .expect("an outstanding token");
        (db, claims.jti, id)
    }

    fn cached(db: &DatabaseConnection) -> RefreshTokens {
        let settings = CacheSettings {
            ttl: Duration::from_secs(3600),
            capacity: 16,
        };
        RefreshTokens::new(db.clone(), settings, false, CacheMetrics::default())
    }

    async fn contains(blacklist: &RefreshTokens, jti: &str) -> bool {
        blacklist.is_blacklisted(jti).await.expect("a lookup")
    }

    #[tokio::test]
    async fn a_logout_through_the_cache_is_seen_at_once() {
        let (db, jti, id) = sqlite().await;
        let blacklist = cached(&db);
        assert!(!contains(&blacklist, &jti).await);
        let write_db = db.clone();
        blacklist
            .write_for_test(&jti, async move { log_out(&write_db, id).await })
            .await
            .expect("a logout");
        assert!(contains(&blacklist, &jti).await);
    }

    /// What Logout writes: the outstanding token `id` blacklisted.
    async fn log_out(db: &DatabaseConnection, id: i64) -> Result<(), StoreError> {
        let now = chrono::Utc::now().naive_utc();
        token_blacklist::blacklist(db, id, token_blacklist::BlacklistReason::LoggedOut, now).await
    }

    /// A Logout cancelled (deadline, disconnect) after the commit, before
    /// the write returned: this replica must still refuse the token at once.
    #[tokio::test]
    async fn a_logout_cancelled_after_its_commit_is_seen_at_once() {
        let (db, jti, id) = sqlite().await;
        let blacklist = cached(&db);
        assert!(!contains(&blacklist, &jti).await);
        cancelled::after_commit(|committed| {
            blacklist.write_for_test(&jti, async move {
                log_out(&db, id).await?;
                let _ = committed.send(());
                // The answer never gets back to the caller.
                std::future::pending::<Result<(), StoreError>>().await
            })
        })
        .await;
        assert!(
            contains(&blacklist, &jti).await,
            "logged-out token accepted"
        );
    }

    /// A Logout cancelled before the commit: the blacklisting still
    /// commits, and an answer cached meanwhile is forgotten when it does.
    #[tokio::test]
    async fn a_logout_cancelled_before_its_commit_still_commits_and_forgets() {
        let (db, jti, id) = sqlite().await;
        let blacklist = cached(&db);
        let (go, on_commit) = cancelled::before_commit(|on_go, committed| {
            blacklist.write_for_test(&jti, async move {
                let _ = on_go.await;
                log_out(&db, id).await?;
                let _ = committed.send(());
                Ok(())
            })
        })
        .await;
        // Read (and cached) while the write is pending.
        assert!(!contains(&blacklist, &jti).await);
        let _ = go.send(());
        on_commit
            .await
            .expect("the logout was abandoned with its caller");
        // On this single-threaded runtime the write's task has forgotten the
        // entry in the same poll that sent the signal.
        assert!(
            contains(&blacklist, &jti).await,
            "logged-out token accepted"
        );
    }
}
