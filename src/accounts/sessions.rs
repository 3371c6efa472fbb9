//! What a refresh token is good for: new access tokens, its own
//! verification, and logging out.

use jsonwebtoken::jwk::JwkSet;

use super::Accounts;
use crate::{
    domain::TokenText,
    error::{AuthFailure, Error},
    persistence::{db_now, token_blacklist::BlacklistReason},
    telemetry::{audit, metrics::Revocation, record_service, record_user},
    tokens::{Claims, DecodedToken, TokenError, TokenType, unix_now},
};

/// A new access token and, with rotation on, the refresh token that
/// replaces the one presented.
#[derive(Debug)]
pub struct TokenPair {
    pub access: String,
    pub refresh: Option<String>,
}

/// What VerifyToken tells about a valid token.
#[derive(Debug)]
pub enum VerifiedToken {
    /// A user's access or refresh token.
    User {
        token_type: TokenType,
        user_id: i64,
        /// `exp`, in seconds since the epoch.
        expires_at: i64,
    },
    /// A service token that still stands.
    Service {
        client_id: String,
        scopes: Vec<String>,
        /// `exp`, in seconds since the epoch.
        expires_at: i64,
    },
}

impl Accounts {
    /// A new access token for a refresh token (simplejwt's
    /// `TokenRefreshView`), and with rotation its successor.
    ///
    /// # Errors
    /// An invalid, expired or blacklisted token; a token whose user is gone
    /// or inactive.
    pub async fn refresh(&self, token: TokenText<'_>) -> Result<TokenPair, Error> {
        let now = unix_now();
        let claims = self
            .tokens
            .decode(token.as_str(), Some(TokenType::Refresh), now)?;
        record_user(claims.user_id);
        if self.refresh_tokens.is_blacklisted(&claims.jti).await? {
            if self.policy.detects_reuse() {
                self.revoke_if_reused(&claims).await?;
            }
            return Err(self.why_blacklisted(&claims).await);
        }
        // A deleted or deactivated user's refresh token yields nothing
        // (CVE-2024-22513 class; simplejwt ≥ 5.4 behaves the same).
        let user = match self.token_user(&claims).await {
            Ok(user) => user,
            Err(Error::Unauthenticated(AuthFailure::UserNotFound | AuthFailure::UserInactive)) => {
                return Err(AuthFailure::NoActiveAccountForToken.into());
            }
            Err(e) => return Err(e),
        };
        // A Django peer's token has no generation; it passed on its `iat`.
        let claims = Claims {
            generation: Some(claims.generation.unwrap_or(user.token_generation)),
            ..claims
        };
        let access = self.tokens.access_from_refresh(&claims, now)?;
        let refresh = if self.policy.rotate_refresh_tokens {
            let new = self
                .tokens
                .issue_refresh(claims.user_id, user.token_generation, now)?;
            self.refresh_tokens
                .rotate(
                    &claims,
                    &new.claims,
                    self.policy.blacklist_after_rotation,
                    db_now(),
                )
                .await?;
            Some(new.token)
        } else {
            None
        };
        self.metrics.refresh();
        Ok(TokenPair {
            access: access.token,
            refresh,
        })
    }

    /// Refresh-token reuse detection (OAuth 2.0 Security BCP, beyond
    /// simplejwt): with rotation, a refresh token is used once; seeing a
    /// rotated-out one again means two parties hold the token family, so
    /// every refresh token of the user is revoked. A token ended by Logout
    /// is only refused: a stale retry must not log out every device.
    /// (Losing a race against a concurrent rotation of the same token does
    /// not land here: that call fails on the blacklist's unique index.)
    async fn revoke_if_reused(&self, claims: &Claims) -> Result<(), Error> {
        let reason = self.refresh_tokens.blacklist_reason(&claims.jti).await?;
        if reason != Some(BlacklistReason::RotatedOut) {
            return Ok(());
        }
        let now = db_now();
        let revoked = self
            .refresh_tokens
            .revoke_all_of_user(claims.user_id, self.tokens.expired_before(now), now)
            .await?;
        self.metrics.reuse_detected();
        // A replay of a token already answered for revokes nothing more.
        if revoked > 0 {
            self.metrics.revocation(Revocation::RefreshTokenReuse);
        }
        audit!(
            WARN,
            "refresh_token_reuse",
            "success",
            Some(claims.user_id),
            "service",
            revoked,
            "a rotated-out refresh token was presented again; revoked every refresh token of the user"
        );
        Ok(())
    }

    /// Whether a token of any type is valid now: a user's not blacklisted
    /// and its user still active; a service token still standing (its
    /// credential, account and scopes, as AdminService checks it).
    ///
    /// # Errors
    /// As for a call made with the token.
    pub async fn verify(&self, token: TokenText<'_>) -> Result<VerifiedToken, Error> {
        // The same decoding as for a user's token alone; only a service
        // token takes the other arm.
        let claims = match self.tokens.decode_any(token.as_str(), unix_now())? {
            DecodedToken::User(claims) => claims,
            DecodedToken::Service(claims) => {
                record_service(&claims.client_id);
                self.token_service(&claims).await?;
                return Ok(VerifiedToken::Service {
                    expires_at: claims.exp,
                    client_id: claims.client_id,
                    scopes: claims.scopes,
                });
            }
        };
        record_user(claims.user_id);
        if claims.token_type == TokenType::Refresh
            && self.refresh_tokens.is_blacklisted(&claims.jti).await?
        {
            return Err(self.why_blacklisted(&claims).await);
        }
        self.token_user(&claims).await?;
        Ok(VerifiedToken::User {
            token_type: claims.token_type,
            user_id: claims.user_id,
            expires_at: claims.exp,
        })
    }

    /// What a blacklisted refresh token is told: that its user revoked it,
    /// if that is why (a password change blacklists every refresh token of
    /// the user), or else that it is blacklisted.
    async fn why_blacklisted(&self, claims: &Claims) -> Error {
        match self.token_user(claims).await {
            Err(
                revoked @ Error::Unauthenticated(
                    AuthFailure::PasswordChanged | AuthFailure::TokenRevoked,
                ),
            ) => revoked,
            _ => TokenError::Blacklisted.into(),
        }
    }

    /// The public keys consumers verify our tokens with.
    pub fn public_keys(&self) -> JwkSet {
        self.tokens.public_keys()
    }

    /// Blacklists a refresh token (simplejwt's `TokenBlacklistView`).
    ///
    /// # Errors
    /// An invalid or expired token, or one blacklisted already.
    pub async fn log_out(&self, token: TokenText<'_>) -> Result<(), Error> {
        let claims = self
            .tokens
            .decode(token.as_str(), Some(TokenType::Refresh), unix_now())?;
        record_user(claims.user_id);
        self.refresh_tokens.log_out(&claims, db_now()).await?;
        Ok(())
    }
}
