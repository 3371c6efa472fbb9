//! "Is this refresh token blacklisted?" — asked by every RefreshToken and by
//! VerifyToken for refresh tokens, answered from memory for tokens found
//! not blacklisted less than `ttl` ago.
//!
//! Why: with the user check cached, this read was the only database round
//! trip of a RefreshToken, and on PostgreSQL sharing two cores it held
//! refresh at 16 % of the health ceiling. The contract is the user cache's:
//! - a Logout on this replica forgets the token at once
//!   ([`RefreshBlacklist::write`]);
//! - a Logout on another replica is seen within `ttl` (default 1 s). The
//!   access tokens of that login stay valid until they expire whatever the
//!   setting (simplejwt does not revoke them either), so this is the
//!   smaller window;
//! - with rotation on, nothing is cached: a rotated-out token must be
//!   recognised at once on every replica for reuse detection, and every
//!   refresh writes anyway.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use super::fresh_cache::{FreshCache, write_then_forget};
use crate::{config::CacheSettings, error::Error, persistence::token_blacklist};

#[derive(Debug, Clone)]
pub struct RefreshBlacklist {
    db: DatabaseConnection,
    /// jti → blacklisted, holding only tokens found not blacklisted;
    /// `None` when off.
    unlisted: Option<Arc<FreshCache<String, bool>>>,
}

impl RefreshBlacklist {
    pub fn new(db: DatabaseConnection, settings: CacheSettings, rotation: bool) -> Self {
        let unlisted = if rotation {
            None
        } else {
            FreshCache::new(settings).map(Arc::new)
        };
        Self { db, unlisted }
    }

    /// Whether the refresh token `jti` is blacklisted.
    ///
    /// # Errors
    /// The database's.
    pub async fn contains(&self, jti: &str) -> Result<bool, Error> {
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

    /// Runs `write`, which blacklists the token `jti`, to completion even if
    /// the caller is cancelled, and forgets that the token was not
    /// blacklisted after it, whatever the outcome (see [`write_then_forget`]).
    ///
    /// # Errors
    /// `write`'s.
    pub async fn write<T: Send + 'static>(
        &self,
        jti: &str,
        write: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        write_then_forget(self.unlisted.as_ref(), jti.to_owned(), write).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tokens::{Claims, TokenType};

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
        };
        let id = token_blacklist::outstanding_id(&db, &claims, None, now.naive_utc())
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        (db, claims.jti, id)
    }

    fn cached(db: &DatabaseConnection) -> RefreshBlacklist {
        let settings = CacheSettings {
            ttl: Duration::from_secs(3600),
            capacity: 16,
        };
        RefreshBlacklist::new(db.clone(), settings, false)
    }

    async fn contains(blacklist: &RefreshBlacklist, jti: &str) -> bool {
        blacklist
            .contains(jti)
            .await
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[tokio::test]
    async fn a_logout_through_the_cache_is_seen_at_once() {
        let (db, jti, id) = sqlite().await;
        let blacklist = cached(&db);
        assert!(!contains(&blacklist, &jti).await);
        let write_db = db.clone();
        blacklist
            .write(&jti, async move { log_out(&write_db, id).await })
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(contains(&blacklist, &jti).await);
    }

    /// What Logout writes: the outstanding token `id` blacklisted.
    async fn log_out(db: &DatabaseConnection, id: i64) -> Result<(), Error> {
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
        let (committed, on_commit) = tokio::sync::oneshot::channel();
        let write_db = db.clone();
        let write = blacklist.write(&jti, async move {
            log_out(&write_db, id).await?;
            let _ = committed.send(());
            // The answer never gets back to the caller.
            std::future::pending::<Result<(), Error>>().await
        });
        tokio::select! {
            _ = write => panic!("the write cannot finish"),
            _ = on_commit => {} // drops the caller's future
        }
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
        let (go, on_go) = tokio::sync::oneshot::channel::<()>();
        let (committed, on_commit) = tokio::sync::oneshot::channel();
        let write_db = db.clone();
        let write = blacklist.write(&jti, async move {
            let _ = on_go.await;
            log_out(&write_db, id).await?;
            let _ = committed.send(());
            Ok(())
        });
        tokio::select! {
            biased;
            _ = write => panic!("the write cannot finish yet"),
            () = std::future::ready(()) => {} // polled once, then dropped
        }
        // Read (and cached) while the write is pending.
        assert!(!contains(&blacklist, &jti).await);
        let _ = go.send(());
        on_commit
            .await
            .unwrap_or_else(|_| panic!("the logout was abandoned with its caller"));
        // On this single-threaded runtime the write's task has forgotten the
        // entry in the same poll that sent the signal.
        assert!(
            contains(&blacklist, &jti).await,
            "logged-out token accepted"
        );
    }
}
