//! `auth.v1.AuthService`: the public calls (register, login, refresh,
//! verify, logout).

use tonic::{Request, Response, Status};
use unicode_normalization::UnicodeNormalization;

use super::{AppState, record_user, violations};
use crate::{
    domain::{
        Avatar, Email, MAX_PASSWORD_BYTES, MAX_USERNAME_CHARS, Password, UserAttributes, Username,
    },
    error::Error,
    pb::{self, auth_service_server::AuthService},
    persistence::{
        db_now,
        token_blacklist::{self, BlacklistReason},
        users::{self, NewUser},
    },
    tokens::{Claims, TokenError, TokenType, unix_now},
};

#[derive(Debug, Clone)]
pub struct AuthApi {
    state: AppState,
}

impl AuthApi {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn register(&self, req: pb::RegisterRequest) -> Result<pb::User, Error> {
        let avatar = match req.avatar.as_deref() {
            None | Some("") => Ok(None),
            Some(url) => Avatar::parse(url).map(Some),
        };
        let parsed = (
            Email::parse(&req.email),
            Username::parse(&req.username),
            Password::parse(
                req.password,
                UserAttributes {
                    username: &req.username,
                    email: &req.email,
                },
            ),
            avatar,
        );
        let (email, username, password, avatar) = match parsed {
            (Ok(e), Ok(u), Ok(p), Ok(a)) => (e, u, p, a),
            (e, u, p, a) => {
                return Err(violations([
                    ("email", e.err().into_iter().collect()),
                    ("username", u.err().into_iter().collect()),
                    ("password", p.err().unwrap_or_default()),
                    ("avatar", a.err().into_iter().collect()),
                ]));
            }
        };
        if let Some(field) = users::taken_field(&self.state.db, &email, &username).await? {
            return Err(Error::AlreadyExists { field });
        }
        let password_hash = self.state.hasher.hash(&password).await?;
        let cost_of_new = password_hash.clone();
        let new = NewUser {
            email,
            username,
            password_hash,
            avatar,
            is_staff: false,
            is_superuser: false,
        };
        let user = users::insert(&self.state.db, new, db_now()).await?;
        self.state.hasher.stored_hash_changed(None, &cost_of_new);
        record_user(user.id);
        Ok(user.into())
    }

    async fn obtain_token_pair(
        &self,
        req: pb::ObtainTokenPairRequest,
        client_address: Option<String>,
    ) -> Result<pb::TokenPair, Error> {
        let blank = |s: &str| {
            s.trim()
                .is_empty()
                .then(|| "This field may not be blank.".to_owned())
        };
        // Bounded before any work: no name this long exists, and no
        // password this long is hashed.
        let long_name = (req.username.chars().count() > MAX_USERNAME_CHARS).then(|| {
            format!("Ensure this field has no more than {MAX_USERNAME_CHARS} characters.")
        });
        let long_password = (req.password.len() > MAX_PASSWORD_BYTES)
            .then(|| format!("Ensure this field has no more than {MAX_PASSWORD_BYTES} bytes."));
        let username_error = blank(&req.username).or(long_name);
        let password_error = blank(&req.password).or(long_password);
        if username_error.is_some() || password_error.is_some() {
            return Err(violations([
                ("username", username_error.into_iter().collect()),
                ("password", password_error.into_iter().collect()),
            ]));
        }

        // A name that is not a valid username (NUL, too long once
        // normalised, …) belongs to nobody: no lookup, but still a (dummy)
        // hash verification below, so no timing hint.
        let username = Username::parse(&req.username).ok();
        let key = username.as_ref().map_or_else(
            || {
                req.username
                    .trim()
                    .nfkc()
                    .collect::<String>()
                    .to_lowercase()
            },
            Username::key,
        );
        // In line for the hash first: a flood the queue sheds costs nothing more.
        let place = self.state.hasher.line_up()?;
        // Counted before any hashing; unknown names too, or the throttle
        // itself would tell which names exist.
        let reservation = self
            .state
            .throttle
            .admit(
                &self.state.db,
                &key,
                client_address.as_deref(),
                place.deadline(),
            )
            .await?;
        let user = match username {
            Some(_) => users::find_by_username(&self.state.db, &key).await?,
            None => None,
        };
        let stored_hash = user.as_ref().map(|u| u.password.clone());
        // Inactive users pay for the hash too, and get the same answer.
        let active = user.as_ref().is_some_and(|u| u.is_active);
        let password = req.password.clone();
        let check = async move { Ok(place.verify(&password, stored_hash).await? && active) };
        let accepted = reservation.settle_after(check).await?;
        let Some(user) = user.filter(|_| accepted) else {
            return Err(Error::InvalidCredentials);
        };
        record_user(user.id);
        self.upgrade_hash(&user, &req.password).await?;

        if self.state.policy.update_last_login {
            let (db, user_id, now) = (self.state.db.clone(), user.id, db_now());
            let recorded = async move { users::record_login(&db, user_id, now).await };
            self.state.active_users.write(user.id, recorded).await?;
        }
        let now = unix_now();
        let refresh = self.state.tokens.issue_refresh(user.id, now)?;
        token_blacklist::record_issued(&self.state.db, &refresh.claims, None, db_now()).await?;
        let access = self
            .state
            .tokens
            .access_from_refresh(&refresh.claims, now)?;
        Ok(pb::TokenPair {
            access: access.token,
            refresh: refresh.token,
        })
    }

    /// The end user's address, when the per-address login limit is on: the
    /// N-th entry from the right of the trusted header, N being the proxies
    /// in front of the service (each appends the address it saw; entries
    /// further left were written by the client). With fewer entries the
    /// call did not come through the proxies: the peer address counts.
    fn client_address<T>(&self, request: &Request<T>) -> Option<String> {
        if !self.state.throttle.address_limit_on() {
            return None;
        }
        let forwarded = self.state.throttle.address_header().and_then(|header| {
            let entries: Vec<&str> = request
                .metadata()
                .get_all(header)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .collect();
            let from_right = self.state.throttle.trusted_proxies();
            entries
                .len()
                .checked_sub(from_right)
                .and_then(|index| entries.get(index))
                // Only a real IP address becomes a counter key: bounded, canonical.
                .and_then(|address| address.trim().parse::<std::net::IpAddr>().ok())
        });
        forwarded
            .or_else(|| request.remote_addr().map(|peer| peer.ip()))
            .map(|ip| ip.to_string())
    }

    /// Rehashes a correct password whose stored hash is weaker than the
    /// configuration. Best effort: under hashing overload the login still
    /// succeeds and the upgrade waits for the next one.
    async fn upgrade_hash(&self, user: &users::User, password: &str) -> Result<(), Error> {
        match self.state.hasher.upgrade(password, &user.password).await {
            Ok(Some(new_hash)) => {
                let (db, user_id, stored_hash) = (self.state.db.clone(), user.id, new_hash.clone());
                let stored =
                    async move { users::set_password_hash(&db, user_id, stored_hash).await };
                self.state.active_users.write(user.id, stored).await?;
                self.state
                    .hasher
                    .stored_hash_changed(Some(&user.password), &new_hash);
                tracing::info!(
                    user_id = user.id,
                    "password hash upgraded to the current parameters"
                );
                Ok(())
            }
            Ok(None) | Err(Error::Overloaded { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn refresh_token(&self, req: pb::RefreshTokenRequest) -> Result<pb::TokenPair, Error> {
        let now = unix_now();
        let claims = self.state.tokens.decode(
            required("refresh", &req.refresh)?,
            Some(TokenType::Refresh),
            now,
        )?;
        record_user(claims.user_id);
        if self.state.refresh_blacklist.contains(&claims.jti).await? {
            if self.state.policy.detects_reuse() {
                self.revoke_if_reused(&claims).await?;
            }
            return Err(TokenError::Blacklisted.into());
        }
        // A deleted or deactivated user's refresh token yields nothing
        // (CVE-2024-22513 class; simplejwt ≥ 5.4 behaves the same).
        match self.state.active_users.get(claims.user_id).await {
            Ok(_) => {}
            Err(Error::Unauthenticated { .. }) => {
                return Err(Error::Unauthenticated {
                    message: "No active account found for the given token.",
                    reason: "no_active_account",
                });
            }
            Err(e) => return Err(e),
        }
        let access = self.state.tokens.access_from_refresh(&claims, now)?;
        let refresh = if self.state.policy.rotate_refresh_tokens {
            self.rotate(&claims, now).await?
        } else {
            String::new()
        };
        Ok(pb::TokenPair {
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
        let reason = token_blacklist::blacklist_reason(&self.state.db, &claims.jti).await?;
        if reason != Some(BlacklistReason::RotatedOut) {
            return Ok(());
        }
        let now = db_now();
        let revoked = token_blacklist::revoke_all_of_user(
            &self.state.db,
            claims.user_id,
            self.state.tokens.expired_before(now),
            now,
        )
        .await?;
        tracing::warn!(
            security_event = "refresh_token_reuse",
            user_id = claims.user_id,
            revoked,
            "a rotated-out refresh token was presented again; revoked every refresh token of the user"
        );
        Ok(())
    }

    /// Issues the successor of `old`, blacklisting `old` when configured,
    /// in one transaction: either both happen or neither.
    async fn rotate(&self, old: &Claims, now: i64) -> Result<String, Error> {
        let old_id = if self.state.policy.blacklist_after_rotation {
            Some(
                token_blacklist::outstanding_id(&self.state.db, old, Some(old.user_id), db_now())
                    .await?,
            )
        } else {
            None
        };
        let new = self.state.tokens.issue_refresh(old.user_id, now)?;
        token_blacklist::record_issued(&self.state.db, &new.claims, old_id, db_now()).await?;
        Ok(new.token)
    }

    async fn verify_token(
        &self,
        req: pb::VerifyTokenRequest,
    ) -> Result<pb::VerifyTokenResponse, Error> {
        let claims = self
            .state
            .tokens
            .decode(required("token", &req.token)?, None, unix_now())?;
        record_user(claims.user_id);
        if claims.token_type == TokenType::Refresh
            && self.state.refresh_blacklist.contains(&claims.jti).await?
        {
            return Err(TokenError::Blacklisted.into());
        }
        self.state.active_users.get(claims.user_id).await?;
        Ok(pb::VerifyTokenResponse {
            token_type: claims.token_type.as_str().to_owned(),
            user_id: claims.user_id,
            expires_at: Some(prost_types::Timestamp {
                seconds: claims.exp,
                nanos: 0,
            }),
        })
    }

    async fn logout(&self, req: pb::LogoutRequest) -> Result<pb::LogoutResponse, Error> {
        let claims = self.state.tokens.decode(
            required("refresh", &req.refresh)?,
            Some(TokenType::Refresh),
            unix_now(),
        )?;
        record_user(claims.user_id);
        // The owner is recorded only if it still exists (the column is a
        // foreign key); a deleted user's token can still be blacklisted.
        let owner = users::exists(&self.state.db, claims.user_id)
            .await?
            .then_some(claims.user_id);
        let token_id =
            token_blacklist::outstanding_id(&self.state.db, &claims, owner, db_now()).await?;
        let (db, now) = (self.state.db.clone(), db_now());
        let blacklisted = async move {
            token_blacklist::blacklist(&db, token_id, BlacklistReason::LoggedOut, now).await
        };
        self.state
            .refresh_blacklist
            .write(&claims.jti, blacklisted)
            .await?;
        Ok(pb::LogoutResponse {})
    }
}

/// `value`, unless it is blank: as DRF's `CharField`, a missing token is a
/// bad request naming the field, not a bad token.
fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, Error> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "This field may not be blank."));
    }
    Ok(value)
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::User>, Status> {
        Ok(Response::new(self.register(request.into_inner()).await?))
    }

    async fn obtain_token_pair(
        &self,
        request: Request<pb::ObtainTokenPairRequest>,
    ) -> Result<Response<pb::TokenPair>, Status> {
        let address = self.client_address(&request);
        Ok(Response::new(
            self.obtain_token_pair(request.into_inner(), address)
                .await?,
        ))
    }

    async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::TokenPair>, Status> {
        Ok(Response::new(
            self.refresh_token(request.into_inner()).await?,
        ))
    }

    async fn verify_token(
        &self,
        request: Request<pb::VerifyTokenRequest>,
    ) -> Result<Response<pb::VerifyTokenResponse>, Status> {
        Ok(Response::new(
            self.verify_token(request.into_inner()).await?,
        ))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        Ok(Response::new(self.logout(request.into_inner()).await?))
    }
}
