//! A bounded map whose entries are used for at most `ttl`, and which a
//! concurrent write can keep from storing a value read before it.
//!
//! The building block of the caches in front of the database
//! ([`super::ActiveUsers`], [`super::RefreshBlacklist`]): each answers from
//! memory only what may be stale by `ttl` at most, and forgets a key
//! whenever this replica writes it.

use std::{
    hash::Hash,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use crate::config::CacheSettings;

#[derive(Debug)]
pub struct FreshCache<K, V> {
    entries: quick_cache::sync::Cache<K, (Instant, V)>,
    ttl: Duration,
    /// Bumped by every [`FreshCache::forget`]. A read that saw another
    /// value before its query started may have fetched what a concurrent
    /// write has since replaced, so [`FreshCache::store`] skips it.
    generation: AtomicU64,
}

impl<K: Eq + Hash + Clone, V: Clone> FreshCache<K, V> {
    /// `None` when `settings` turn caching off.
    pub fn new(settings: CacheSettings) -> Option<Self> {
        (!settings.ttl.is_zero() && settings.capacity > 0).then(|| Self {
            entries: quick_cache::sync::Cache::new(settings.capacity),
            ttl: settings.ttl,
            generation: AtomicU64::new(0),
        })
    }

    /// The value, if stored less than `ttl` ago.
    pub fn fresh(&self, key: &K) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(stored_at, _)| stored_at.elapsed() < self.ttl)
            .map(|(_, value)| value)
    }

    /// Read before querying the database, and handed to [`FreshCache::store`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps `value` unless a key was forgotten since `generation` was read.
    pub fn store(&self, key: K, generation: u64, value: V) {
        if self.generation() == generation {
            self.entries.insert(key, (Instant::now(), value));
        }
    }

    /// After this replica changed what `key` stands for.
    pub fn forget(&self, key: &K) {
        // Bumped first: a concurrent store either sees the new generation
        // and skips, or stored before the remove below.
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ttl: Duration) -> FreshCache<u32, &'static str> {
        FreshCache::new(CacheSettings { ttl, capacity: 4 }).unwrap_or_else(|| panic!("on"))
    }

    #[test]
    fn a_zero_ttl_or_capacity_means_no_cache() {
        let off = |ttl, capacity| FreshCache::<u32, u32>::new(CacheSettings { ttl, capacity });
        assert!(off(Duration::ZERO, 10).is_none());
        assert!(off(Duration::from_secs(1), 0).is_none());
    }

    #[test]
    fn entries_are_used_for_at_most_the_ttl() {
        let cache = cache(Duration::from_millis(50));
        cache.store(1, cache.generation(), "a");
        assert_eq!(cache.fresh(&1), Some("a"));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(cache.fresh(&1), None);
    }

    #[test]
    fn a_read_overlapping_a_forget_is_not_stored() {
        let cache = cache(Duration::from_secs(3600));
        let before = cache.generation();
        cache.forget(&1); // a write committed while the read was in flight
        cache.store(1, before, "old");
        assert_eq!(cache.fresh(&1), None);
        cache.store(1, cache.generation(), "new");
        assert_eq!(cache.fresh(&1), Some("new"));
        cache.forget(&1);
        assert_eq!(cache.fresh(&1), None);
    }
}
