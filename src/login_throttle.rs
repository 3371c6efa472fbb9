//! Throttling of failed logins (credential stuffing, password guessing).
//!
//! Every attempt first reserves a slot in its counters, atomically in the
//! database; an attempt past the limit is refused before any hashing, with
//! the time until the window ends as `google.rpc.RetryInfo`. Reserving
//! before hashing, rather than counting after, is what stops N parallel
//! attempts from all passing a check that saw the counter at 0. A success
//! resets the username's counter and gives back its address slot.

use std::time::Duration;

use sea_orm::DatabaseConnection;

use crate::{
    config::ThrottleSettings,
    error::Error,
    persistence::{db_now, login_attempts},
};

#[derive(Debug, Clone)]
pub struct LoginThrottle {
    settings: ThrottleSettings,
}

/// The counters one attempt reserved, to settle once its outcome is known.
#[derive(Debug, Default)]
pub struct Reservation {
    username_key: Option<String>,
    address_key: Option<String>,
}

impl LoginThrottle {
    pub fn new(settings: ThrottleSettings) -> Self {
        Self { settings }
    }

    /// The trusted header naming the end user's address, if configured and
    /// the address limit is on.
    pub fn address_header(&self) -> Option<&str> {
        self.address_limit_on()
            .then_some(self.settings.address_header.as_deref())
            .flatten()
    }

    pub fn address_limit_on(&self) -> bool {
        self.settings.address_failure_limit > 0
    }

    /// Counts this attempt against `username` (and `address` when that
    /// limit is on), refusing it if a limit is already reached.
    ///
    /// # Errors
    /// `Overloaded` (RESOURCE_EXHAUSTED with a retry delay) past a limit.
    pub async fn admit(
        &self,
        db: &DatabaseConnection,
        username: &str,
        address: Option<&str>,
    ) -> Result<Reservation, Error> {
        let mut reservation = Reservation::default();
        if self.settings.failure_limit > 0 {
            let key = format!("user:{username}");
            self.reserve(db, &key, self.settings.failure_limit).await?;
            reservation.username_key = Some(key);
        }
        if let (true, Some(address)) = (self.address_limit_on(), address) {
            let key = format!("addr:{address}");
            self.reserve(db, &key, self.settings.address_failure_limit)
                .await?;
            reservation.address_key = Some(key);
        }
        Ok(reservation)
    }

    /// The attempt succeeded: it was not a failure after all.
    ///
    /// # Errors
    /// Database errors.
    pub async fn succeeded(
        &self,
        db: &DatabaseConnection,
        reservation: Reservation,
    ) -> Result<(), Error> {
        if let Some(key) = reservation.username_key {
            login_attempts::forget(db, &key).await?;
        }
        // A gateway's address must not be reset by one good login, or an
        // attacker with one valid account could keep resetting it.
        if let Some(key) = reservation.address_key {
            login_attempts::release(db, &key).await?;
        }
        Ok(())
    }

    async fn reserve(&self, db: &DatabaseConnection, key: &str, limit: u32) -> Result<(), Error> {
        let now = db_now();
        let (attempts, started) =
            login_attempts::reserve(db, key, now, self.settings.window).await?;
        if u32::try_from(attempts).unwrap_or(u32::MAX) <= limit {
            return Ok(());
        }
        let window =
            chrono::Duration::from_std(self.settings.window).unwrap_or(chrono::Duration::MAX);
        let retry_after = (started + window - now).to_std().unwrap_or(Duration::ZERO);
        Err(Error::Overloaded {
            message: "Too many failed login attempts; try again later",
            retry_after: retry_after.max(Duration::from_secs(1)),
        })
    }

    /// Deletes counters whose window is over.
    ///
    /// # Errors
    /// Database errors.
    pub async fn flush_stale(&self, db: &DatabaseConnection) -> Result<u64, Error> {
        let window =
            chrono::Duration::from_std(self.settings.window).unwrap_or(chrono::Duration::MAX);
        login_attempts::flush_stale(db, db_now() - window).await
    }
}
