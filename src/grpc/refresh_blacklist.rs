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

use super::fresh_cache::FreshCache;
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

    /// Runs `write`, which blacklists the token `jti`, then forgets that it
    /// was not, whatever the outcome (a failed call may still have committed).
    pub async fn write<T>(
        &self,
        jti: &str,
        write: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let result = write.await;
        if let Some(cache) = &self.unlisted {
            cache.forget(&jti.to_owned());
        }
        result
    }
}
