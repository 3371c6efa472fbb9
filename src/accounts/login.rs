use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use super::{Accounts, TokenPair};
use crate::{
    domain::Credentials,
    domain::LoginName,
    error::{AuthFailure, Error},
    persistence::{db_now, users},
    telemetry::{audit, metrics::LoginOutcome, record_user},
};

impl Accounts {
    /// Logs in with a username and password (simplejwt's
    /// `TokenObtainPairView`): a fresh refresh token and its access token.
    /// `client` is the end user's address, used only when logins are also
    /// limited per address.
    ///
    /// # Errors
    /// `InvalidCredentials` for an unknown user, a wrong password and an
    /// inactive user alike; throttled or overloaded.
    pub async fn log_in(
        &self,
        credentials: Credentials,
        client: Option<IpAddr>,
    ) -> Result<TokenPair, Error> {
        let name = &credentials.name;
        let refused = |reason: &str, error: Error| {
            login_failed(name, client, None, reason);
            self.metrics.login(match reason {
                "throttled" => LoginOutcome::Throttled,
                "overloaded" => LoginOutcome::Shed,
                _ => LoginOutcome::Error,
            });
            error
        };
        // In line for the hash first: a flood the queue sheds costs nothing more.
        let place = self
            .hasher
            .line_up()
            .map_err(|e| refused(failure_reason(&e, "overloaded"), e))?;
        // Counted before any hashing; unknown names too, or the throttle
        // itself would tell which names exist.
        let reservation = self
            .throttle
            .admit(name.key(), client, place.deadline())
            .await
            .map_err(|e| refused(failure_reason(&e, "throttled"), e))?;
        // A name that cannot be a username belongs to nobody: no lookup, but
        // still a (dummy) hash verification below, so no timing hint.
        let user = match name.could_exist() {
            true => users::find_by_username(&self.db, name.key())
                .await
                .map_err(|e| refused("error", e.into()))?,
            false => None,
        };
        let stored_hash = user.as_ref().map(|u| u.password.clone());
        // Inactive users pay for the hash too, and get the same answer.
        let active = user.as_ref().is_some_and(|u| u.is_active);
        let password = credentials.password().to_owned();
        // Whether the password matched, apart from whether it logs in: an
        // inactive user's right password is not a bad credential.
        let verified = Arc::new(AtomicBool::new(false));
        let matched = Arc::clone(&verified);
        let check = async move {
            let ok = place.verify(&password, stored_hash).await?;
            matched.store(ok, Ordering::Relaxed);
            Ok(ok && active)
        };
        let accepted = reservation
            .settle_after(check)
            .await
            .map_err(|e| refused(failure_reason(&e, "overloaded"), e))?;
        let user = match user {
            Some(user) if accepted => user,
            // One answer for the caller; the audit log tells them apart.
            found => {
                let (reason, outcome) = match &found {
                    None => ("unknown_user", LoginOutcome::BadCredentials),
                    Some(u) if !u.is_active && verified.load(Ordering::Relaxed) => {
                        ("inactive_user", LoginOutcome::Inactive)
                    }
                    Some(_) => ("wrong_password", LoginOutcome::BadCredentials),
                };
                self.metrics.login(outcome);
                login_failed(name, client, found.map(|u| u.id), reason);
                return Err(AuthFailure::InvalidCredentials.into());
            }
        };
        record_user(user.id);
        self.upgrade_hash(&user, credentials.password())
            .await
            .map_err(|e| refused("error", e))?;

        if self.policy.update_last_login {
            self.users
                .record_login(user.id, db_now())
                .await
                .map_err(|e| refused("error", e.into()))?;
        }
        let pair = self
            .issue_pair(user.id, user.token_generation)
            .await
            .map_err(|e| refused("error", e))?;
        audit!(
            INFO,
            "login",
            "success",
            Some(user.id),
            "self",
            username = name.as_given(),
            client = client.map(tracing::field::display),
            "login"
        );
        self.metrics.login(LoginOutcome::Ok);
        Ok(pair)
    }

    /// Rehashes a correct password whose stored hash is weaker than the
    /// configuration. Best effort: under hashing overload the login still
    /// succeeds and the upgrade waits for the next one.
    async fn upgrade_hash(&self, user: &users::UserRow, password: &str) -> Result<(), Error> {
        match self.hasher.upgrade(password, &user.password).await {
            Ok(Some(new_hash)) => {
                self.users
                    .upgrade_password_hash(user.id, user.password.clone(), new_hash.clone())
                    .await?;
                self.hasher
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
}

/// The audit record of a refused login: the name as given, the client's
/// address when known, and why.
fn login_failed(name: &LoginName, client: Option<IpAddr>, user_id: Option<i64>, reason: &str) {
    audit!(
        INFO,
        "login",
        "failure",
        user_id,
        "self",
        username = name.as_given(),
        client = client.map(tracing::field::display),
        reason,
        "login refused"
    );
}

/// `overloaded` for an `Overloaded` error (throttled or shed, as the step
/// that failed says), `error` for anything else.
fn failure_reason(error: &Error, overloaded: &'static str) -> &'static str {
    match error {
        Error::Overloaded { .. } => overloaded,
        _ => "error",
    }
}
