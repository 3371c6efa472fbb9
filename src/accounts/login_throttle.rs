//! Throttling of failed logins (credential stuffing, password guessing).
//!
//! Design: checks in flight are kept apart from failures. Each attempt is
//! admitted in the database before any hashing, atomically, as one more
//! check in flight, and only while failures plus checks in flight stay under
//! the limit; when its check ends it becomes a failure, or clears the
//! username's failures (a success), or is handed back (never checked). So
//! at most `limit` wrong passwords are ever hashed per key and window, on
//! any number of replicas, while correct logins arriving together are not
//! mistaken for failures: an attempt that finds the budget taken by checks
//! still running waits for them (in line for the hash queue, within its
//! timeout) instead of being refused. Only `limit` actual failures refuse,
//! with the time until the window ends as `google.rpc.RetryInfo`.
//!
//! Within a replica, at most `limit` attempts per key ask the database at a
//! time (a local semaphore per key), and an ended check wakes them; others
//! replicas' checks are noticed by polling.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use sea_orm::DatabaseConnection;
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tracing::Instrument;

use crate::{
    config::ThrottleSettings,
    error::Error,
    persistence::{
        StoreError, db_now,
        login_attempts::{self, Admission, Budget, Outcome},
    },
};

/// How long an admitted check may take before its reservation counts as
/// lost with its process: far beyond any hash queue wait plus a hash.
const LEASE_MARGIN: Duration = Duration::from_secs(60);
/// Polling interval bounds while another replica's checks hold the budget.
const FIRST_POLL: Duration = Duration::from_millis(10);
const LAST_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct LoginThrottle {
    db: DatabaseConnection,
    settings: ThrottleSettings,
    lease: Duration,
    gates: Arc<Gates>,
}

impl LoginThrottle {
    /// `max_wait`: the longest an attempt may wait for its turn (the hash
    /// queue's timeout), which bounds how long a check can be in flight.
    pub fn new(db: DatabaseConnection, settings: ThrottleSettings, max_wait: Duration) -> Self {
        Self {
            db,
            settings,
            lease: max_wait.saturating_add(LEASE_MARGIN),
            gates: Arc::default(),
        }
    }

    fn address_limit_on(&self) -> bool {
        self.settings.address_failure_limit > 0
    }

    /// Admits one attempt for `username_key` (and `address` when that limit
    /// is on), waiting until `deadline` for checks in flight to end if they
    /// hold the budget.
    ///
    /// # Errors
    /// `Overloaded`: the throttle's refusal (a limit of failures reached), or
    /// the hash queue's once `deadline` passes; and database errors.
    pub async fn admit(
        &self,
        username_key: &str,
        address: Option<IpAddr>,
        deadline: Instant,
    ) -> Result<Reservation, Error> {
        let mut reservation = Reservation {
            held: Some(Held {
                db: self.db.clone(),
                keys: Vec::new(),
            }),
        };
        let mut keys = Vec::new();
        if self.settings.failure_limit > 0 {
            keys.push((user_key(username_key), self.settings.failure_limit, true));
        }
        if let (true, Some(address)) = (self.address_limit_on(), address) {
            // A gateway's address must not be reset by one good login, or an
            // attacker with one valid account could keep resetting it.
            keys.push((
                format!("addr:{address}"),
                self.settings.address_failure_limit,
                false,
            ));
        }
        // Always username before address: no two attempts wait on each
        // other's keys in opposite orders.
        for (key, limit, resets) in keys {
            let held = self.admit_key(key, limit, resets, deadline).await?;
            if let Some(reservation) = reservation.held.as_mut() {
                reservation.keys.push(held);
            }
        }
        Ok(reservation)
    }

    async fn admit_key(
        &self,
        key: String,
        limit: u32,
        resets: bool,
        deadline: Instant,
    ) -> Result<HeldKey, Error> {
        let gate = self.gates.get(&key, limit);
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&gate.turns).acquire_owned())
            .await
            .map_err(|_| Error::hash_queue_full())?
            .map_err(|_| Error::internal("login throttle gate closed"))?;
        let budget = self.budget(limit);
        let mut pause = FIRST_POLL;
        let waiting = Arc::clone(&gate);
        loop {
            let settled = waiting.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let now = db_now();
            match admit_detached(&self.db, &key, budget, now).await? {
                Admission::Admitted { epoch } => {
                    return Ok(HeldKey {
                        key,
                        epoch,
                        resets,
                        gate,
                        _turn: permit,
                    });
                }
                Admission::Throttled { window_started_at } => {
                    return Err(Error::Overloaded {
                        message: "Too many failed login attempts; try again later",
                        retry_after: self.retry_after(window_started_at, now),
                    });
                }
                Admission::Busy => {}
            }
            tokio::select! {
                () = &mut settled => {}
                () = tokio::time::sleep(pause) => pause = (pause * 2).min(LAST_POLL),
                () = tokio::time::sleep_until(deadline) => return Err(Error::hash_queue_full()),
            }
        }
    }

    fn budget(&self, limit: u32) -> Budget {
        Budget {
            limit,
            window: self.settings.window,
            lease: self.lease,
        }
    }

    /// Refuses a failed grant of the client whose counter is `key`
    /// ([`client_key`]) once it has failed `limit` times in the window;
    /// reads only. Grants check no password, so they have no checks in
    /// flight to count: a failed one asks this, then
    /// [`Self::count_failure`], and a success asks nothing.
    ///
    /// # Errors
    /// `Overloaded` with the time until the window ends; database errors.
    pub async fn refuse_if_exhausted(&self, key: &str) -> Result<(), Error> {
        if self.settings.failure_limit == 0 {
            return Ok(());
        }
        let now = db_now();
        let budget = self.budget(self.settings.failure_limit);
        match login_attempts::exhausted(&self.db, key, budget, now).await? {
            None => Ok(()),
            Some(window_started_at) => Err(Error::Overloaded {
                message: "Too many failed token requests for this client; try again later",
                retry_after: self.retry_after(window_started_at, now),
            }),
        }
    }

    /// Counts one failed grant against `key` (see [`Self::refuse_if_exhausted`]).
    ///
    /// # Errors
    /// Database errors.
    pub async fn count_failure(&self, key: &str) -> Result<(), Error> {
        if self.settings.failure_limit == 0 {
            return Ok(());
        }
        let budget = self.budget(self.settings.failure_limit);
        Ok(login_attempts::record_failure(&self.db, key, budget, db_now()).await?)
    }

    /// The wait until the window that started at `window_started_at` ends:
    /// at least a second.
    fn retry_after(
        &self,
        window_started_at: chrono::NaiveDateTime,
        now: chrono::NaiveDateTime,
    ) -> Duration {
        let window =
            chrono::Duration::from_std(self.settings.window).unwrap_or(chrono::Duration::MAX);
        let left = (window_started_at + window - now)
            .to_std()
            .unwrap_or(Duration::ZERO);
        left.max(Duration::from_secs(1))
    }

    /// Deletes counters whose window is over.
    ///
    /// # Errors
    /// Database errors.
    pub async fn flush_stale(&self) -> Result<u64, StoreError> {
        let now = db_now();
        let window =
            chrono::Duration::from_std(self.settings.window).unwrap_or(chrono::Duration::MAX);
        let window_before = now
            .checked_sub_signed(window)
            .unwrap_or(chrono::NaiveDateTime::MIN);
        login_attempts::flush_stale(&self.db, window_before, self.budget(0), now).await
    }
}

/// [`login_attempts::admit`] on a task of its own: a caller that goes away
/// while the admission commits cannot leave a check counted in flight that
/// nobody will settle; the task hands it back instead.
async fn admit_detached(
    db: &DatabaseConnection,
    key: &str,
    budget: Budget,
    now: chrono::NaiveDateTime,
) -> Result<Admission, Error> {
    let (answer, admission) = tokio::sync::oneshot::channel();
    let (db, key) = (db.clone(), key.to_owned());
    tokio::spawn(
        async move {
            let result = login_attempts::admit(&db, &key, budget, now).await;
            if let Err(Ok(Admission::Admitted { epoch })) = answer.send(result) {
                settle_retrying(&db, &key, epoch, Outcome::Withdrawn)
                    .await
                    .ok();
            }
        }
        .in_current_span(),
    );
    let admitted = admission
        .await
        .map_err(|_| Error::internal("login admission task ended early"))?;
    Ok(admitted?)
}

/// Settles with a few retries: a settlement lost to a passing database
/// error would hold a check in flight until its lease runs out.
async fn settle_retrying(
    db: &DatabaseConnection,
    key: &str,
    epoch: i64,
    outcome: Outcome,
) -> Result<(), StoreError> {
    let mut pause = Duration::from_millis(50);
    for _ in 0..3 {
        match login_attempts::settle(db, key, epoch, outcome).await {
            Err(StoreError::Conflict(_) | StoreError::Unavailable(_)) => {
                tokio::time::sleep(pause).await;
                pause *= 4;
            }
            settled => return settled,
        }
    }
    login_attempts::settle(db, key, epoch, outcome).await
}

/// The counter row of a username (`user:<digest>`); deleting a user deletes it.
pub(super) fn user_key(username_key: &str) -> String {
    // A fixed-length digest of the normalised username: any input, however
    // long or odd, makes a valid key of the same size.
    format!("user:{}", crate::domain::sha256_hex(username_key))
}

/// The counter row of a service account's grants (`client:<digest>`), in
/// a namespace of its own: a client id never shares a counter with a
/// username or an address.
pub(super) fn client_key(client_id: &str) -> String {
    format!("client:{}", crate::domain::sha256_hex(client_id))
}

/// The checks in flight one attempt holds, to settle once its outcome is
/// known. Dropped unsettled (the call was cancelled, or never reached the
/// password check), it hands them back.
#[derive(Debug)]
pub struct Reservation {
    held: Option<Held>,
}

#[derive(Debug)]
struct Held {
    db: DatabaseConnection,
    keys: Vec<HeldKey>,
}

#[derive(Debug)]
struct HeldKey {
    key: String,
    /// The lease epoch it was admitted in.
    epoch: i64,
    /// A success clears this key's failures (usernames, not addresses).
    resets: bool,
    gate: Arc<Gate>,
    _turn: OwnedSemaphorePermit,
}

impl Reservation {
    /// Runs `check` (the password check: `Ok(true)` for a successful login)
    /// and records its outcome, both on a task of their own: once hashing
    /// has started, a caller that goes away cannot keep a wrong password
    /// from counting. A `check` that fails (hash queue overload) never
    /// reached the password: its reservation is handed back.
    ///
    /// # Errors
    /// `check`'s, and database errors.
    pub async fn settle_after(
        mut self,
        check: impl Future<Output = Result<bool, Error>> + Send + 'static,
    ) -> Result<bool, Error> {
        let held = self.held.take();
        let task = async move {
            let Some(held) = held else {
                return check.await;
            };
            let outcome = check.await;
            let settled = held.settle(outcome.as_ref().ok().copied()).await;
            let succeeded = outcome?;
            settled.map(|()| succeeded)
        };
        // Still the call's work: its span (log context, trace parent) goes along.
        tokio::spawn(task.in_current_span())
            .await
            .map_err(|e| Error::internal(format_args!("login check task failed: {e}")))?
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let (Some(held), Ok(runtime)) = (self.held.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                if let Err(e) = held.settle(None).await {
                    tracing::warn!(error = %e, "could not hand back a login attempt's reservation");
                }
            });
        }
    }
}

impl Held {
    /// `None`: the password was never checked.
    async fn settle(self, password_ok: Option<bool>) -> Result<(), Error> {
        let mut result = Ok(());
        for held in self.keys {
            let outcome = match password_ok {
                Some(true) => Outcome::Succeeded {
                    resets: held.resets,
                },
                Some(false) => Outcome::Failed,
                None => Outcome::Withdrawn,
            };
            let settled = settle_retrying(&self.db, &held.key, held.epoch, outcome)
                .await
                .map_err(Error::from);
            result = result.and(settled);
            let gate = Arc::clone(&held.gate);
            drop(held); // the turn goes back before the waiters look
            gate.settled.notify_waiters();
        }
        result
    }
}

/// Per-key coordination within this replica.
#[derive(Debug)]
struct Gate {
    /// At most `limit` attempts of a key ask the database at once: more
    /// could not be admitted anyway, and the rest wait here without queries.
    turns: Arc<Semaphore>,
    /// Signalled whenever a check of this key ends.
    settled: Notify,
}

#[derive(Debug, Default)]
struct Gates {
    by_key: Mutex<GateMap>,
}

#[derive(Debug, Default)]
struct GateMap {
    gates: HashMap<String, Weak<Gate>>,
    /// Dead entries are swept when the map reaches this size.
    sweep_at: usize,
}

impl Gates {
    fn get(&self, key: &str, limit: u32) -> Arc<Gate> {
        let mut map = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(gate) = map.gates.get(key).and_then(Weak::upgrade) {
            return gate;
        }
        if map.gates.len() >= map.sweep_at {
            map.gates.retain(|_, gate| gate.strong_count() > 0);
            map.sweep_at = (map.gates.len() * 2).max(64);
        }
        let gate = Arc::new(Gate {
            turns: Arc::new(Semaphore::new(usize::try_from(limit).unwrap_or(usize::MAX))),
            settled: Notify::new(),
        });
        map.gates.insert(key.to_owned(), Arc::downgrade(&gate));
        gate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_length_whatever_the_name() {
        let long = "\u{FDFA}".repeat(150).to_lowercase();
        for name in ["a", "ab\0cd", long.as_str()] {
            let key = user_key(name);
            assert_eq!(key.len(), 69, "{key}");
            assert!(key.is_ascii());
        }
        assert_ne!(user_key("alice"), user_key("bob"));
        assert_ne!(client_key("alice"), user_key("alice"));
        assert!(client_key("billing").starts_with("client:"));
    }

    #[test]
    fn gates_are_shared_while_in_use_and_swept_after() {
        let gates = Gates::default();
        let a = gates.get("a", 5);
        assert!(Arc::ptr_eq(&a, &gates.get("a", 5)));
        drop(a);
        for i in 0..200 {
            drop(gates.get(&i.to_string(), 5));
        }
        let map = gates.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(map.gates.len() <= 64, "{}", map.gates.len());
    }
}
