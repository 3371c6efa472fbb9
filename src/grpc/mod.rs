//! The gRPC layer: handlers for `auth.v1.AuthService` and
//! `auth.v1.UserService`, the bearer-token interceptor, the per-call log
//! line, and conversions between protobuf messages and our types.
//!
//! Handlers parse requests into domain types, call persistence, tokens and
//! passwords, and return `Result<_, Error>`; `Status` is made in one place
//! (`crate::error`).

mod active_users;
mod auth_service;
mod bearer;
mod call_log;
mod codec_status;
mod fresh_cache;
mod page_token;
mod refresh_blacklist;
mod user_service;

use std::sync::Arc;

use chrono::NaiveDateTime;
use sea_orm::DatabaseConnection;
use tonic_types::FieldViolation;

pub use active_users::ActiveUsers;
pub use auth_service::AuthApi;
pub use bearer::BearerAuth;
pub use call_log::CallLogLayer;
pub use page_token::PageTokenCodec;
pub use refresh_blacklist::RefreshBlacklist;
pub use user_service::UserApi;

use crate::{
    config::ListUsersAccess, error::Error, login_throttle::LoginThrottle, passwords::Hasher, pb,
    persistence::users::User, tokens::TokenCodec,
};

/// Everything the handlers share; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub tokens: Arc<TokenCodec>,
    pub hasher: Hasher,
    pub page_tokens: PageTokenCodec,
    pub policy: TokenPolicy,
    /// Who may call ListUsers.
    pub list_users: ListUsersAccess,
    pub throttle: LoginThrottle,
    /// The token's user, if it still exists and is active.
    pub active_users: ActiveUsers,
    /// Whether a refresh token was logged out (or rotated out).
    pub refresh_blacklist: RefreshBlacklist,
}

/// simplejwt's behaviour switches.
#[derive(Debug, Clone, Copy)]
pub struct TokenPolicy {
    pub rotate_refresh_tokens: bool,
    pub blacklist_after_rotation: bool,
    pub update_last_login: bool,
}

impl TokenPolicy {
    /// Reuse detection needs rotated-out tokens on the blacklist: without
    /// blacklisting after rotation they stay valid and nothing is "reused".
    pub fn detects_reuse(&self) -> bool {
        self.rotate_refresh_tokens && self.blacklist_after_rotation
    }
}

/// Collects the field violations of several parse results, so one answer
/// lists every bad field (and every broken rule of a field).
fn violations<const N: usize>(results: [(&str, Vec<String>); N]) -> Error {
    Error::InvalidArgument(
        results
            .into_iter()
            .flat_map(|(field, errors)| {
                errors
                    .into_iter()
                    .map(move |e| FieldViolation::new(field, e))
            })
            .collect(),
    )
}

fn timestamp(t: NaiveDateTime) -> prost_types::Timestamp {
    let t = t.and_utc();
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Records the caller's user id on the call's log line.
fn record_user(user_id: i64) {
    tracing::Span::current().record("user_id", user_id);
}

impl From<User> for pb::User {
    fn from(user: User) -> Self {
        pb::User {
            id: user.id,
            email: user.email,
            username: user.username,
            avatar: user.avatar,
            is_active: user.is_active,
            is_staff: user.is_staff,
            is_superuser: user.is_superuser,
            last_login: user.last_login.map(timestamp),
            date_joined: Some(timestamp(user.date_joined)),
        }
    }
}
