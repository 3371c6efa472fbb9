//! argon2id password hashing, off the async workers.
//!
//! A hash costs tens of milliseconds of CPU (BENCHMARKS.md) and
//! `memory_kib` of RAM (19 MiB at the OWASP defaults). Running it on a tokio worker would stall every other call on
//! that thread, and running an unbounded number at once would let a login
//! flood exhaust memory. So every hash runs on the blocking pool behind a
//! semaphore with one permit per allowed concurrent hash, and the queue in
//! front of it is bounded in length and in waiting time: past either, the
//! call is shed with RESOURCE_EXHAUSTED instead of piling up latency.
//!
//! Each hash also reuses one of `permits` preallocated memory areas instead
//! of allocating its own: glibc's malloc serves a freed 19 MiB block from
//! the heap the next time (its mmap threshold grows) and keeps it per
//! thread arena, so a login flood grew the process by a block per thread
//! with only `permits` hashes ever running. With the areas reused, memory
//! stays at permits × `memory_kib` plus the rest of the server.
//!
//! Stored hashes imported from Django are checked here too, on the same
//! pool and permits ([`django`]); the first successful login replaces them
//! with argon2id ([`Hasher::upgrade`]).

pub mod django;

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::phc::{Output, ParamsString, Salt},
};
use tokio::{sync::Semaphore, time::Instant};

use crate::{
    config::Argon2Settings,
    domain::Password,
    error::Error,
    telemetry::{
        metrics::{HashingMetrics, HashingQueue, Metrics},
        traces,
    },
};

#[derive(Clone)]
pub struct Hasher {
    inner: Arc<Inner>,
}

struct Inner {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// How many permits there are (the semaphore only tells the free ones).
    permit_count: usize,
    /// Waits for a permit and their length.
    metrics: HashingMetrics,
    /// Calls waiting for a permit now, and how many may.
    waiting: AtomicUsize,
    queue_limit: usize,
    queue_timeout: Duration,
    /// Verified against when the username is unknown, so that answer takes
    /// as long as a wrong password (no user enumeration by timing).
    dummy: DummyHash,
    /// Argon2 working memory, one area per permit, reused (see module docs).
    memory: std::sync::Mutex<Vec<Vec<Block>>>,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("params", self.inner.argon2.params())
            .field("available_permits", &self.inner.permits.available_permits())
            .finish()
    }
}

/// argon2id (v0x13) with `settings`' cost parameters.
///
/// # Errors
/// Parameters out of argon2's ranges.
pub fn argon2id(settings: &Argon2Settings) -> anyhow::Result<Argon2<'static>> {
    let params = Params::new(
        settings.memory_kib,
        settings.iterations,
        settings.parallelism,
        None,
    )
    .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

impl Hasher {
    /// # Errors
    /// Argon2 parameters out of range.
    pub async fn new(settings: Argon2Settings) -> anyhow::Result<Self> {
        Self::with_metrics(settings, HashingMetrics::default()).await
    }

    /// As [`Hasher::new`], recording permit waits in `metrics`.
    ///
    /// # Errors
    /// Argon2 parameters out of range.
    pub async fn with_metrics(
        settings: Argon2Settings,
        metrics: HashingMetrics,
    ) -> anyhow::Result<Self> {
        let argon2 = argon2id(&settings)?;
        let permits = settings
            .max_concurrent
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, usize::from);

        let cost = Cost::of_params(argon2.params());
        let dummy_hash = tokio::task::spawn_blocking(move || dummy_phc(cost))
            .await?
            .map_err(|e| anyhow::anyhow!("argon2 self-test failed: {e}"))?;

        Ok(Self {
            inner: Arc::new(Inner {
                argon2,
                permits: Arc::new(Semaphore::new(permits)),
                permit_count: permits,
                metrics,
                waiting: AtomicUsize::new(0),
                memory: std::sync::Mutex::new(Vec::new()),
                queue_limit: settings.queue_limit,
                queue_timeout: settings.queue_timeout,
                dummy: DummyHash::new(cost, dummy_hash),
            }),
        })
    }

    /// Lets `metrics` read the queue's gauges (permits in use, calls
    /// waiting) at each scrape, for as long as this hasher lives.
    pub fn sample_into(&self, metrics: &Metrics) {
        let inner = Arc::downgrade(&self.inner);
        metrics.sample_hashing(move || {
            let inner = inner.upgrade()?;
            let free = inner.permits.available_permits();
            Some(HashingQueue {
                permits: inner.permit_count as u64,
                in_use: inner.permit_count.saturating_sub(free) as u64,
                waiting: inner.waiting.load(Ordering::Relaxed) as u64,
            })
        });
    }

    /// The PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) for `password`.
    ///
    /// # Errors
    /// Overloaded when the hashing queue is full; otherwise internal only.
    pub async fn hash(&self, password: &Password) -> Result<String, Error> {
        self.hash_str(password.expose()).await
    }

    /// A new hash of `password` if `stored` was made with an older algorithm
    /// or weaker parameters than the configured ones (Django's
    /// `must_update`): called after a successful login, so stored hashes
    /// follow the configuration up.
    ///
    /// # Errors
    /// As [`Hasher::hash`].
    pub async fn upgrade(&self, password: &str, stored: &str) -> Result<Option<String>, Error> {
        if !self.is_weaker(stored) {
            return Ok(None);
        }
        self.hash_str(password).await.map(Some)
    }

    fn is_weaker(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return true;
        };
        let current = self.inner.argon2.params();
        match Params::try_from(&parsed) {
            Ok(params) if parsed.algorithm == argon2::ARGON2ID_IDENT => {
                params.m_cost() < current.m_cost()
                    || params.t_cost() < current.t_cost()
                    || params.p_cost() < current.p_cost()
            }
            _ => true,
        }
    }

    async fn hash_str(&self, password: &str) -> Result<String, Error> {
        let password = password.to_owned();
        let span = tracing::debug_span!(target: traces::TARGET, "password.hash");
        self.run(span, move |argon2, memory| {
            hash_phc(argon2, password.as_bytes(), memory)
                .map_err(|e| Error::internal(format_args!("argon2 hashing failed: {e}")))
        })
        .await?
    }

    /// Whether `password` matches `stored`. With no stored hash (unknown user)
    /// the dummy hash is verified instead, and the answer is `false`.
    ///
    /// # Errors
    /// Internal only, if the blocking pool has gone away.
    pub async fn verify(&self, password: &str, stored: Option<String>) -> Result<bool, Error> {
        let permit = self.acquire().await?;
        self.verify_with(permit, password.to_owned(), stored).await
    }

    async fn verify_with(
        &self,
        permit: tokio::sync::OwnedSemaphorePermit,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, Error> {
        let dummy = self.inner.dummy.current();
        let span = tracing::debug_span!(target: traces::TARGET, "password.verify");
        self.run_with(permit, span, move |_, memory| {
            let known = stored.is_some();
            let stored = stored.unwrap_or_else(|| dummy.clone());
            let checked = django::verify(password.as_bytes(), &stored, memory)
                .or_else(|| verify_phc(password.as_bytes(), &stored, memory));
            match checked {
                Some(matches) => known && matches,
                // A hash we cannot read (another hasher, an unusable
                // password, a disabled account):
                // spend the same time anyway, then refuse.
                None => {
                    let _ = verify_phc(password.as_bytes(), &dummy, memory);
                    false
                }
            }
        })
        .await
    }

    /// A place in line for one password check, taken before anything else a
    /// login does: refused at once when the queue is full, so a flood costs
    /// no database work, and held while the login waits for its throttle
    /// turn, so those waits count against the same queue limit and timeout.
    ///
    /// # Errors
    /// Overloaded when the queue is full.
    pub fn line_up(&self) -> Result<PlaceInLine, Error> {
        let inner = &self.inner;
        let queued = inner
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < inner.queue_limit).then_some(n + 1)
            });
        if queued.is_err() {
            return Err(Error::hash_queue_full());
        }
        Ok(PlaceInLine {
            hasher: self.clone(),
            deadline: Instant::now() + inner.queue_timeout,
        })
    }

    /// Points the dummy hash at the cost most stored hashes have, from a
    /// sample of them, each standing for `weight` users: right after the
    /// parameters are raised, most users still have the old, cheaper hashes
    /// until they log in, and an unknown name must cost what they cost.
    ///
    /// # Errors
    /// The dummy hash could not be made.
    pub async fn calibrate_dummy(&self, sample: &[String], weight: f64) -> anyhow::Result<()> {
        for stored in sample {
            if let Some(cost) = Cost::of_phc(stored) {
                self.inner.dummy.count(cost, weight);
            }
        }
        self.refresh_dummy().await
    }

    /// A stored hash was written (`old` replaced, or a new user): keeps the
    /// dummy hash's cost following the stored ones.
    pub fn stored_hash_changed(&self, old: Option<&str>, new: &str) {
        if let Some(cost) = old.and_then(Cost::of_phc) {
            self.inner.dummy.count(cost, -1.0);
        }
        if let Some(cost) = Cost::of_phc(new) {
            self.inner.dummy.count(cost, 1.0);
        }
        if self.inner.dummy.needs_refresh() {
            let hasher = self.clone();
            tokio::spawn(async move {
                if let Err(e) = hasher.refresh_dummy().await {
                    tracing::warn!(error = %e, "could not remake the dummy password hash");
                }
            });
        }
    }

    async fn refresh_dummy(&self) -> anyhow::Result<()> {
        let Some(cost) = self.inner.dummy.wanted() else {
            return Ok(());
        };
        let phc = tokio::task::spawn_blocking(move || dummy_phc(cost)).await??;
        self.inner.dummy.set(cost, phc);
        Ok(())
    }

    /// Runs `work` on the blocking pool once a permit is free. The permit
    /// moves into the blocking task, so a caller that gives up (deadline,
    /// cancelled call) still cannot push concurrency past the limit.
    /// `span` (a trace-only one) covers the hashing itself, on the blocking
    /// thread, which a span does not follow by itself.
    async fn run<T: Send + 'static>(
        &self,
        span: tracing::Span,
        work: impl FnOnce(&Argon2<'static>, &mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let permit = self.acquire().await?;
        self.run_with(permit, span, work).await
    }

    async fn run_with<T: Send + 'static>(
        &self,
        permit: tokio::sync::OwnedSemaphorePermit,
        span: tracing::Span,
        work: impl FnOnce(&Argon2<'static>, &mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            let _permit = permit;
            // Holding a permit means an area is free (or not yet made).
            let taken = inner.memory.lock().map(|mut areas| areas.pop());
            let mut memory = taken.ok().flatten().unwrap_or_default();
            let result = work(&inner.argon2, &mut memory);
            // An area grown for a stronger stored hash (a Django import at
            // 100 MiB, say) is not kept: the pool stays at the configured size.
            if memory.len() > inner.argon2.params().block_count() {
                memory = Vec::new();
            }
            if let Ok(mut areas) = inner.memory.lock() {
                areas.push(memory);
            }
            result
        })
        .await
        .map_err(|e| Error::internal(format_args!("password hashing task failed: {e}")))
    }

    async fn acquire(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        if let Ok(permit) = Arc::clone(&self.inner.permits).try_acquire_owned() {
            self.inner.metrics.permit_acquired(None);
            return Ok(permit);
        }
        self.line_up()?.permit().await
    }
}

/// A call's place in the hashing queue ([`Hasher::line_up`]); it leaves the
/// queue when it gets its turn to hash or is dropped.
#[derive(Debug)]
pub struct PlaceInLine {
    hasher: Hasher,
    deadline: Instant,
}

impl PlaceInLine {
    /// Past this, the call is shed with the queue's RESOURCE_EXHAUSTED.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// As [`Hasher::verify`], once a hashing permit is free.
    ///
    /// # Errors
    /// Overloaded past the deadline; otherwise internal only.
    pub async fn verify(self, password: &str, stored: Option<String>) -> Result<bool, Error> {
        let hasher = self.hasher.clone();
        let permit = self.permit().await?;
        hasher
            .verify_with(permit, password.to_owned(), stored)
            .await
    }

    async fn permit(self) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        let inner = &self.hasher.inner;
        // Free now (a login's place in line is taken before its throttle
        // turn, so it often has no wait left): not a wait.
        if let Ok(permit) = Arc::clone(&inner.permits).try_acquire_owned() {
            inner.metrics.permit_acquired(None);
            return Ok(permit);
        }
        let started = Instant::now();
        let permit = Arc::clone(&inner.permits).acquire_owned();
        match tokio::time::timeout_at(self.deadline, permit).await {
            Ok(Ok(permit)) => {
                inner.metrics.permit_acquired(Some(started.elapsed()));
                Ok(permit)
            }
            Ok(Err(_)) => Err(Error::internal("password hasher closed")),
            Err(_) => Err(Error::hash_queue_full()),
        }
    }
}

impl Drop for PlaceInLine {
    fn drop(&mut self) {
        self.hasher.inner.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What checking a password against a stored argon2 hash costs: its
/// memory, iterations and lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Cost {
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

impl Cost {
    fn of_params(params: &Params) -> Self {
        Self {
            memory_kib: params.m_cost(),
            iterations: params.t_cost(),
            parallelism: params.p_cost(),
        }
    }

    /// `None` for anything but an argon2 PHC string.
    fn of_phc(stored: &str) -> Option<Self> {
        let parsed = PasswordHash::new(stored).ok()?;
        Algorithm::new(parsed.algorithm.as_str()).ok()?;
        Params::try_from(&parsed).ok().map(|p| Self::of_params(&p))
    }
}

/// The hash verified for unknown usernames, at the cost most stored hashes
/// have (by a census: a start-up sample, then this replica's writes).
struct DummyHash {
    census: Mutex<HashMap<Cost, f64>>,
    current: RwLock<(Cost, Arc<str>)>,
}

impl DummyHash {
    fn new(cost: Cost, phc: String) -> Self {
        Self {
            census: Mutex::default(),
            current: RwLock::new((cost, phc.into())),
        }
    }

    fn current(&self) -> String {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.1.to_string()
    }

    fn count(&self, cost: Cost, weight: f64) {
        let mut census = self.census.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = census.entry(cost).or_insert(0.0);
        *entry = (*entry + weight).max(0.0);
    }

    /// The most common cost, if it is not the current one.
    fn wanted(&self) -> Option<Cost> {
        let census = self.census.lock().unwrap_or_else(PoisonError::into_inner);
        let (current, _) = *self.current.read().unwrap_or_else(PoisonError::into_inner);
        let most = census
            .iter()
            .filter(|(_, weight)| **weight > 0.0)
            .max_by(|(a_cost, a), (b_cost, b)| {
                a.total_cmp(b)
                    .then_with(|| (**a_cost == current).cmp(&(**b_cost == current)))
            })
            .map(|(cost, _)| *cost)?;
        (most != current).then_some(most)
    }

    fn needs_refresh(&self) -> bool {
        self.wanted().is_some()
    }

    fn set(&self, cost: Cost, phc: String) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = (cost, phc.into());
    }
}

/// A hash of a fixed dummy password at `cost`.
fn dummy_phc(cost: Cost) -> anyhow::Result<String> {
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
        .map_err(|e| anyhow::anyhow!("argon2 parameters of a stored hash: {e}"))?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut memory = vec![Block::new(); argon2.params().block_count()];
    hash_phc(
        &argon2,
        b"dummy password to equalise login timing",
        &mut memory,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Hashes `password` with a fresh random salt into a PHC string, in `memory`
/// (grown to the parameters' size if it is smaller).
fn hash_phc(
    argon2: &Argon2<'_>,
    password: &[u8],
    memory: &mut Vec<Block>,
) -> Result<String, argon2::password_hash::Error> {
    let salt: [u8; 16] = rand::random();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let params = argon2.params();
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    argon2.hash_password_into_with_memory(password, &salt, &mut out, &mut memory[..blocks])?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params)?,
        salt: Some(Salt::new(&salt)?),
        hash: Some(Output::new(&out)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored`, computed in `memory`
/// with the parameters the hash was made with; `None` if `stored` is not an
/// argon2 hash we can check.
fn verify_phc(password: &[u8], stored: &str, memory: &mut Vec<Block>) -> Option<bool> {
    let parsed = PasswordHash::new(stored).ok()?;
    let algorithm = Algorithm::new(parsed.algorithm.as_str()).ok()?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).ok()?,
        None => Version::V0x13,
    };
    let params = Params::try_from(&parsed).ok()?;
    check_argon2(
        password,
        Argon2::new(algorithm, version, params),
        &parsed.salt?,
        parsed.hash?.as_bytes(),
        memory,
    )
}

/// Whether `argon2` turns `password` and `salt` into `expected`, computed in
/// `memory` (grown to the parameters' size if it is smaller); `None` if
/// argon2 refuses the inputs.
fn check_argon2(
    password: &[u8],
    argon2: Argon2<'_>,
    salt: &Salt,
    expected: &[u8],
    memory: &mut Vec<Block>,
) -> Option<bool> {
    let blocks = argon2.params().block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let mut out = vec![0u8; expected.len()];
    argon2
        .hash_password_into_with_memory(password, salt, &mut out, &mut memory[..blocks])
        .ok()?;
    Some(constant_time_eq(&out, expected))
}

/// Whether two hash outputs are equal, in time that depends only on their
/// length: no early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserAttributes;

    fn cheap() -> Argon2Settings {
        Argon2Settings {
            memory_kib: 64,
            iterations: 1,
            ..Argon2Settings::default()
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_use_argon2id_phc_format() {
        let hasher = Hasher::new(cheap()).await.unwrap();
        let user = UserAttributes {
            username: "u",
            email: "u@example.com",
        };
        let password = Password::parse("correct horse".into(), user).unwrap();
        let hash = hasher.hash(&password).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert!(matches!(
            hasher.verify("correct horse", Some(hash.clone())).await,
            Ok(true)
        ));
        assert!(matches!(
            hasher.verify("wrong horse", Some(hash)).await,
            Ok(false)
        ));
    }

    #[tokio::test]
    async fn unknown_users_and_unreadable_hashes_never_match() {
        let hasher = Hasher::new(cheap()).await.unwrap();
        let dummy = "dummy password to equalise login timing";
        assert!(matches!(hasher.verify(dummy, None).await, Ok(false)));
        assert!(matches!(
            hasher.verify(dummy, Some("!unusable".into())).await,
            Ok(false)
        ));
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;
    use crate::domain::UserAttributes;

    #[tokio::test]
    async fn the_queue_is_measured_waits_and_all() {
        let metrics = Metrics::new();
        let settings = Argon2Settings {
            memory_kib: 64,
            iterations: 1,
            max_concurrent: std::num::NonZeroUsize::new(1),
            ..Argon2Settings::default()
        };
        let hasher = Hasher::with_metrics(settings, metrics.hashing())
            .await
            .unwrap();
        hasher.sample_into(&metrics);
        let scraped = |name: &str| {
            let text = metrics.encode_prometheus().unwrap();
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|value| value.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        };
        let held = hasher.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.verify("password", None).await }
        });
        while hasher.inner.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(scraped("auth_password_hash_permits"), 1.0);
        assert_eq!(scraped("auth_password_hash_permits_in_use"), 1.0);
        assert_eq!(scraped("auth_password_hash_queue_depth"), 1.0);
        drop(held);
        assert!(matches!(waiter.await.unwrap(), Ok(false)));
        assert_eq!(scraped("auth_password_hash_waits_total"), 1.0);
        assert_eq!(scraped("auth_password_hash_queue_wait_seconds_count"), 2.0);
        assert_eq!(scraped("auth_password_hash_permits_in_use"), 0.0);
        assert_eq!(scraped("auth_password_hash_queue_depth"), 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_sheds_load_at_once() {
        // One slow hash at a time, one caller allowed to wait.
        let settings = Argon2Settings {
            memory_kib: 8 * 1024,
            iterations: 30,
            max_concurrent: std::num::NonZeroUsize::new(1),
            queue_limit: 1,
            queue_timeout: Duration::from_secs(60),
            ..Argon2Settings::default()
        };
        let hasher = Hasher::new(settings).await.unwrap();
        let user = UserAttributes {
            username: "u",
            email: "u@example.com",
        };
        let password = Password::parse("correct horse".into(), user).unwrap();
        let calls = (0..6).map(|_| hasher.hash(&password));
        let results = futures::future::join_all(calls).await;
        let done = results.iter().filter(|r| r.is_ok()).count();
        let shed = results
            .iter()
            .filter(|r| matches!(r, Err(Error::Overloaded { .. })))
            .count();
        // One runs, one waits; the other four are refused without waiting.
        assert_eq!((done, shed), (2, 4), "{results:?}");
        assert_eq!(hasher.inner.waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_wait_times_out() {
        let settings = Argon2Settings {
            memory_kib: 8 * 1024,
            iterations: 200,
            max_concurrent: std::num::NonZeroUsize::new(1),
            queue_limit: 10,
            queue_timeout: Duration::from_millis(1),
            ..Argon2Settings::default()
        };
        let hasher = Hasher::new(settings).await.unwrap();
        let results = futures::future::join_all((0..3).map(|_| hasher.verify("pw", None))).await;
        let shed = results
            .iter()
            .filter(|r| matches!(r, Err(Error::Overloaded { .. })))
            .count();
        assert_eq!(shed, 2, "{results:?}");
    }
}

#[cfg(test)]
mod phc_tests {
    use argon2::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[test]
    fn our_phc_strings_interoperate_with_the_argon2_crate() {
        let argon2 = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(256, 2, 1, None).unwrap(),
        );
        let mut memory = Vec::new();
        let ours = hash_phc(&argon2, b"pw", &mut memory).unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=256,t=2,p=1$"), "{ours}");
        assert!(argon2.verify_password(b"pw", ours.as_str()).is_ok());

        let theirs = argon2
            .hash_password(b"pw")
            .map(|h| h.to_string())
            .unwrap_or_default();
        assert_eq!(verify_phc(b"pw", &theirs, &mut memory), Some(true));
        assert_eq!(verify_phc(b"other", &theirs, &mut memory), Some(false));
        assert_eq!(
            verify_phc(b"pw", "pbkdf2_sha256$1000000$salt$hash", &mut memory),
            None
        );
    }
}

#[cfg(test)]
mod upgrade_tests {
    use super::*;

    #[tokio::test]
    async fn upgrades_hashes_weaker_than_configured() {
        let weak = Hasher::new(Argon2Settings {
            memory_kib: 64,
            iterations: 1,
            ..Argon2Settings::default()
        })
        .await
        .unwrap();
        let strong = Hasher::new(Argon2Settings {
            memory_kib: 128,
            iterations: 2,
            ..Argon2Settings::default()
        })
        .await
        .unwrap();
        let old = weak.hash_str("pw").await.unwrap();
        let new = strong.upgrade("pw", &old).await.unwrap();
        let new = new.expect("an upgrade");
        assert!(new.starts_with("$argon2id$v=19$m=128,t=2,p=1$"), "{new}");
        assert!(
            matches!(strong.upgrade("pw", &new).await, Ok(None)),
            "already current"
        );
        assert!(
            matches!(weak.upgrade("pw", &new).await, Ok(None)),
            "stronger is kept"
        );
        let argon2i =
            "$argon2i$v=19$m=4096,t=3,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A";
        assert!(
            matches!(strong.upgrade("pw", argon2i).await, Ok(Some(_))),
            "argon2i is upgraded to argon2id"
        );
    }
}

#[cfg(test)]
mod django_tests {
    use super::*;

    /// Made by Django 5.2.8's PBKDF2PasswordHasher (at 1,000 iterations).
    const PBKDF2: &str =
        "pbkdf2_sha256$1000$vvPBSaMWWzRp4FxYKXrBPW$FtHD1bVt/FWs2t5D+JYRtL+CtyKloZvmdbHgCQ7ug40=";
    const PASSWORD: &str = "correct horse battery staple";

    #[tokio::test]
    async fn django_hashes_verify_on_the_pool_and_are_upgraded_to_argon2id() {
        let hasher = Hasher::new(Argon2Settings {
            memory_kib: 64,
            iterations: 1,
            ..Argon2Settings::default()
        })
        .await
        .unwrap();
        let stored = Some(PBKDF2.to_owned());
        assert!(matches!(
            hasher.verify(PASSWORD, stored.clone()).await,
            Ok(true)
        ));
        assert!(matches!(hasher.verify("wrong", stored).await, Ok(false)));
        let upgraded = hasher.upgrade(PASSWORD, PBKDF2).await.unwrap();
        let upgraded = upgraded.expect("a Django hash is always upgraded");
        assert!(
            upgraded.starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
            "{upgraded}"
        );
        assert!(matches!(
            hasher.verify(PASSWORD, Some(upgraded)).await,
            Ok(true)
        ));
        // Unusable: never, even with the characters after the `!`.
        let unusable = format!("!{PBKDF2}");
        assert!(matches!(
            hasher.verify(PASSWORD, Some(unusable)).await,
            Ok(false)
        ));
    }
}
