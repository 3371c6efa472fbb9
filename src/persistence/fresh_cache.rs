//! A bounded map whose entries are used for at most `ttl`, and which a
//! concurrent write can keep from storing a value read before it.
//!
//! The building block of the caches in front of the database
//! ([`super::UserProfiles`], [`super::RefreshTokens`]): each answers from
//! memory only what may be stale by `ttl` at most, and forgets a key
//! whenever this replica writes it.

use std::{
    hash::Hash,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering, fence},
    },
    time::{Duration, Instant},
};

use tracing::Instrument;

use super::StoreError;
use crate::{config::CacheSettings, telemetry::metrics::CacheMetrics};

#[derive(Debug)]
pub(super) struct FreshCache<K, V> {
    entries: quick_cache::sync::Cache<K, (Instant, V)>,
    ttl: Duration,
    /// Bumped by every [`FreshCache::forget`]. A read that saw another
    /// value before its query started may have fetched what a concurrent
    /// write has since replaced, so [`FreshCache::store`] skips it.
    generation: AtomicU64,
    /// Reads answered from memory, and passed on to the database.
    metrics: CacheMetrics,
}

impl<K: Eq + Hash + Clone, V: Clone> FreshCache<K, V> {
    /// `None` when `settings` turn caching off.
    pub(super) fn new(settings: CacheSettings, metrics: CacheMetrics) -> Option<Self> {
        (!settings.ttl.is_zero() && settings.capacity > 0).then(|| Self {
            entries: quick_cache::sync::Cache::new(settings.capacity),
            ttl: settings.ttl,
            generation: AtomicU64::new(0),
            metrics,
        })
    }

    /// The value for `key`: the cached one if stored less than `ttl` ago,
    /// else `fetch`'s, which is kept if `keep` says so and no write
    /// overlapped the fetch.
    ///
    /// # Errors
    /// `fetch`'s.
    pub(super) async fn read_through<E>(
        &self,
        key: K,
        fetch: impl Future<Output = Result<V, E>>,
        keep: impl FnOnce(&V) -> bool,
    ) -> Result<V, E> {
        if let Some(value) = self.fresh(&key) {
            self.metrics.hit();
            return Ok(value);
        }
        self.metrics.miss();
        let ticket = self.ticket();
        let value = fetch.await?;
        if keep(&value) {
            self.store(key, ticket, value.clone());
        }
        Ok(value)
    }

    /// The values for `keys` (distinct): the cached ones stored less than
    /// `ttl` ago, and for the others what one `fetch` of all of them
    /// returns (keys it leaves out have no value). Fetched values are kept
    /// as by [`FreshCache::read_through`]. In no particular order.
    ///
    /// # Errors
    /// `fetch`'s.
    pub(super) async fn read_through_many<E, F>(
        &self,
        keys: impl IntoIterator<Item = K>,
        fetch: impl FnOnce(Vec<K>) -> F,
        keep: impl Fn(&V) -> bool,
    ) -> Result<Vec<(K, V)>, E>
    where
        F: Future<Output = Result<Vec<(K, V)>, E>>,
    {
        let mut found = Vec::new();
        let mut stale = Vec::new();
        // One clock read and one metrics update for the whole batch.
        let now = Instant::now();
        for key in keys {
            match self.fresh_at(&key, now) {
                Some(value) => found.push((key, value)),
                None => stale.push(key),
            }
        }
        self.metrics.many(found.len() as u64, stale.len() as u64);
        if stale.is_empty() {
            return Ok(found);
        }
        let ticket = self.ticket();
        let fetched = fetch(stale).await?;
        for (key, value) in &fetched {
            if keep(value) {
                self.store(key.clone(), ticket, value.clone());
            }
        }
        found.extend(fetched);
        Ok(found)
    }

    /// The value, if stored less than `ttl` ago.
    fn fresh(&self, key: &K) -> Option<V> {
        self.fresh_at(key, Instant::now())
    }

    /// The value, if stored less than `ttl` before `now`.
    fn fresh_at(&self, key: &K, now: Instant) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(stored_at, _)| now.saturating_duration_since(*stored_at) < self.ttl)
            .map(|(_, value)| value)
    }

    /// Taken before querying the database, and handed to [`FreshCache::store`].
    fn ticket(&self) -> Ticket {
        Ticket {
            generation: self.generation.load(Ordering::SeqCst),
            // The entry ages from the query's start: what it read may be
            // that old.
            queried_at: Instant::now(),
        }
    }

    /// Keeps `value` unless a key was forgotten since `ticket` was taken.
    fn store(&self, key: K, ticket: Ticket, value: V) {
        if self.generation.load(Ordering::SeqCst) == ticket.generation {
            self.insert_unless_forgotten(key, ticket, value);
        }
    }

    /// A forget() that bumps the generation right after the check in
    /// [`FreshCache::store`] may have removed nothing yet, so the check is
    /// made again after inserting: either the bump comes before this load
    /// (we remove our entry) or after it, and then its remove follows our
    /// insert.
    fn insert_unless_forgotten(&self, key: K, ticket: Ticket, value: V) {
        self.entries.insert(key.clone(), (ticket.queried_at, value));
        fence(Ordering::SeqCst);
        if self.generation.load(Ordering::SeqCst) != ticket.generation {
            self.entries.remove(&key);
        }
    }

    /// After this replica changed what some unknown keys stand for.
    pub(super) fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.entries.clear();
    }

    /// After this replica changed what `key` stands for.
    pub(super) fn forget(&self, key: &K) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.entries.remove(key);
    }
}

/// Runs `write`, a change to what `key` stands for, then forgets `key` in
/// `cache`, whatever the outcome (a failed write may still have committed).
///
/// The write runs on a task of its own: a caller that gives up (deadline,
/// disconnect) drops only its wait, never the commit-then-forget sequence.
/// And dropping the caller's future forgets `key` at once too, so a read
/// right after a cancellation does not race with that task.
///
/// # Errors
/// `write`'s; [`StoreError::Other`] if it panicked.
pub(super) async fn write_then_forget<K, V, T>(
    cache: Option<&Arc<FreshCache<K, V>>>,
    key: K,
    write: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    T: Send + 'static,
{
    write_then(cache, Forget::Key(key), write).await
}

/// As [`write_then_forget`], for a write that may change what any key
/// stands for: forgets them all.
///
/// # Errors
/// As [`write_then_forget`].
pub(super) async fn write_then_forget_all<K, V, T>(
    cache: Option<&Arc<FreshCache<K, V>>>,
    write: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    T: Send + 'static,
{
    write_then(cache, Forget::All, write).await
}

async fn write_then<K, V, T>(
    cache: Option<&Arc<FreshCache<K, V>>>,
    forget: Forget<K>,
    write: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    T: Send + 'static,
{
    let _forget_on_drop = cache.map(|cache| ForgetOnDrop {
        cache,
        forget: forget.clone(),
    });
    let cache = cache.cloned();
    let task = tokio::spawn(
        async move {
            let result = write.await;
            if let Some(cache) = cache {
                forget.apply(&cache);
            }
            result
        }
        .in_current_span(),
    );
    task.await
        .map_err(|e| StoreError::other(format_args!("cache write task: {e}")))?
}

/// What a write makes stale.
#[derive(Clone)]
enum Forget<K> {
    Key(K),
    All,
}

impl<K: Eq + Hash + Clone> Forget<K> {
    fn apply<V: Clone>(&self, cache: &FreshCache<K, V>) {
        match self {
            Self::Key(key) => cache.forget(key),
            Self::All => cache.forget_all(),
        }
    }
}

/// Forgets what its write made stale when dropped: when the write is
/// done, or its caller gone.
struct ForgetOnDrop<'a, K: Eq + Hash + Clone, V: Clone> {
    cache: &'a FreshCache<K, V>,
    forget: Forget<K>,
}

impl<K: Eq + Hash + Clone, V: Clone> Drop for ForgetOnDrop<'_, K, V> {
    fn drop(&mut self) {
        self.forget.apply(self.cache);
    }
}

/// Test support for the caches: callers that give up around a write's commit.
#[cfg(test)]
pub(super) mod cancelled {
    use tokio::sync::oneshot;

    /// Drives the write made by `write` until it reports its commit on the
    /// sender it is given, then drops it: a caller that gives up (deadline,
    /// disconnect) after the commit, before the answer.
    pub(in crate::persistence) async fn after_commit<F: Future>(
        write: impl FnOnce(oneshot::Sender<()>) -> F,
    ) {
        let (committed, on_commit) = oneshot::channel();
        let write = write(committed);
        tokio::select! {
            _ = write => panic!("the write cannot finish"),
            _ = on_commit => {} // drops the caller's future
        }
    }

    /// Polls the write made by `write` once and drops it, before it commits
    /// (it waits for the receiver it is given): a caller that gives up early.
    /// Returns the sender that lets the write go on, and the receiver that
    /// fires when it committed.
    pub(in crate::persistence) async fn before_commit<F: Future>(
        write: impl FnOnce(oneshot::Receiver<()>, oneshot::Sender<()>) -> F,
    ) -> (oneshot::Sender<()>, oneshot::Receiver<()>) {
        let (go, on_go) = oneshot::channel();
        let (committed, on_commit) = oneshot::channel();
        let write = write(on_go, committed);
        tokio::select! {
            biased;
            _ = write => panic!("the write cannot finish yet"),
            () = std::future::ready(()) => {} // polled once, then dropped
        }
        (go, on_commit)
    }
}

/// When a read began, for [`FreshCache::store`].
#[derive(Debug, Clone, Copy)]
struct Ticket {
    generation: u64,
    queried_at: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ttl: Duration) -> FreshCache<u32, &'static str> {
        FreshCache::new(CacheSettings { ttl, capacity: 4 }, CacheMetrics::default())
            .expect("a cache that is on")
    }

    #[tokio::test]
    async fn many_keys_fetch_only_the_stale_ones_in_one_go() {
        let cache = cache(Duration::from_secs(3600));
        cache.store(1, cache.ticket(), "cached");
        let mut fetches = Vec::new();
        let mut values = cache
            .read_through_many(
                [1, 2, 3],
                |keys| {
                    fetches.push(keys.clone());
                    // 3 has no value.
                    std::future::ready(Ok::<_, ()>(vec![(2, "fetched")]))
                },
                |_| true,
            )
            .await
            .unwrap_or_default();
        values.sort_unstable();
        assert_eq!(values, [(1, "cached"), (2, "fetched")]);
        assert_eq!(fetches, [vec![2, 3]]);
        assert_eq!(cache.fresh(&2), Some("fetched"));
        // All fresh now but 3: one fetch of 3 alone; none when all are fresh.
        let mut fetched = Vec::new();
        let _ = cache
            .read_through_many(
                [2, 3],
                |keys| {
                    fetched.extend(keys);
                    std::future::ready(Ok::<_, ()>(Vec::new()))
                },
                |_| true,
            )
            .await;
        assert_eq!(fetched, [3]);
        let values = cache
            .read_through_many(
                [1, 2],
                |_| std::future::ready(Err::<Vec<(u32, &str)>, _>("no fetch expected")),
                |_| true,
            )
            .await;
        assert_eq!(values.map(|v| v.len()), Ok(2));
    }

    #[test]
    fn a_zero_ttl_or_capacity_means_no_cache() {
        let off = |ttl, capacity| {
            FreshCache::<u32, u32>::new(CacheSettings { ttl, capacity }, CacheMetrics::default())
        };
        assert!(off(Duration::ZERO, 10).is_none());
        assert!(off(Duration::from_secs(1), 0).is_none());
    }

    #[test]
    fn entries_are_used_for_at_most_the_ttl() {
        let cache = cache(Duration::from_millis(50));
        cache.store(1, cache.ticket(), "a");
        assert_eq!(cache.fresh(&1), Some("a"));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(cache.fresh(&1), None);
    }

    #[test]
    fn entries_age_from_when_their_query_began() {
        let cache = cache(Duration::from_millis(50));
        let ticket = cache.ticket();
        std::thread::sleep(Duration::from_millis(50)); // a slow query
        cache.store(1, ticket, "a");
        assert_eq!(cache.fresh(&1), None);
    }

    #[test]
    fn a_read_overlapping_a_forget_is_not_stored() {
        let cache = cache(Duration::from_secs(3600));
        let before = cache.ticket();
        cache.forget(&1); // a write committed while the read was in flight
        cache.store(1, before, "old");
        assert_eq!(cache.fresh(&1), None);
        cache.store(1, cache.ticket(), "new");
        assert_eq!(cache.fresh(&1), Some("new"));
        cache.forget(&1);
        assert_eq!(cache.fresh(&1), None);
    }

    #[test]
    fn a_forget_between_the_check_and_the_insert_still_wins() {
        let cache = cache(Duration::from_secs(3600));
        let ticket = cache.ticket();
        // store() has checked the generation (unchanged) when the write's
        // forget() runs, before the insert.
        assert_eq!(cache.generation.load(Ordering::SeqCst), ticket.generation);
        cache.forget(&1);
        cache.insert_unless_forgotten(1, ticket, "old");
        assert_eq!(cache.fresh(&1), None, "an old value survived the forget");
    }
}
