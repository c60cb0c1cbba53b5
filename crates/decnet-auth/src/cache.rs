//! A small bounded TTL cache for repository answers.
//!
//! Every entry lives for the same TTL, so insertion order is expiry order: a
//! FIFO queue beside the map finds both the expired and the oldest entries in
//! O(1), and eviction never scans the map.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
struct Entry<V> {
    value: V,
    inserted: Instant,
    /// Which insertion this is; a queue slot whose generation differs is stale.
    generation: u64,
}

#[derive(Debug)]
struct Inner<K, V> {
    map: HashMap<K, Entry<V>>,
    /// Keys in insertion order, with the generation they were inserted at.
    order: VecDeque<(K, u64)>,
    next_generation: u64,
}

/// A map whose entries expire `ttl` after insertion and which holds at most
/// `capacity` entries (the oldest go first).
#[derive(Debug)]
pub(crate) struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    // std Mutex: every critical section is a few map/queue operations, no `.await`.
    inner: Mutex<Inner<K, V>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
                next_generation: 0,
            }),
        }
    }

    /// How long an entry lives.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        // A poisoned lock only means a panic elsewhere mid-operation on plain
        // maps; a cache may always be used (at worst it misses).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached value, if present and younger than the TTL.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let inner = self.lock();
        let entry = inner.map.get(key)?;
        (entry.inserted.elapsed() < self.ttl).then(|| entry.value.clone())
    }

    /// Insert or replace `key`, evicting expired entries, then the oldest ones
    /// while the cache is over capacity.
    pub(crate) fn insert(&self, key: K, value: V) {
        let now = Instant::now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let generation = inner.next_generation;
        inner.next_generation = inner.next_generation.wrapping_add(1);
        inner.map.insert(
            key.clone(),
            Entry {
                value,
                inserted: now,
                generation,
            },
        );
        inner.order.push_back((key, generation));
        while let Some((front_key, front_generation)) = inner.order.front() {
            let current = inner
                .map
                .get(front_key)
                .filter(|entry| entry.generation == *front_generation);
            let evict = match current {
                // Stale slot: the key was re-inserted (or removed) since.
                None => true,
                Some(entry) => {
                    now.saturating_duration_since(entry.inserted) >= self.ttl
                        || inner.map.len() > self.capacity
                }
            };
            if !evict {
                break;
            }
            if let Some((front_key, front_generation)) = inner.order.pop_front()
                && inner
                    .map
                    .get(&front_key)
                    .is_some_and(|entry| entry.generation == front_generation)
            {
                inner.map.remove(&front_key);
            }
        }
        // Stale slots behind a fresh front (a key re-inserted within the TTL)
        // are dropped in bulk, so the queue stays within twice the capacity.
        if inner.order.len() > self.capacity.saturating_mul(2) {
            let map = &inner.map;
            inner.order.retain(|(key, generation)| {
                map.get(key).is_some_and(|e| e.generation == *generation)
            });
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }

    #[cfg(test)]
    fn queue_len(&self) -> usize {
        self.lock().order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl() {
        let cache = TtlCache::new(Duration::from_secs(10), 100);
        cache.insert("a".to_owned(), 1);
        assert_eq!(cache.get("a"), Some(1));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(cache.get("a"), Some(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(cache.get("a"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_evicts_the_oldest() {
        let cache = TtlCache::new(Duration::from_secs(10), 3);
        for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
            cache.insert(key.to_owned(), i);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("a"), None);
        assert_eq!(cache.get("d"), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_dropped_on_insert() {
        let cache = TtlCache::new(Duration::from_secs(1), 1_000);
        for i in 0..500 {
            cache.insert(i, i);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.insert(1_000, 0);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn reinsert_refreshes_and_its_stale_slot_does_not_evict_it() {
        let cache = TtlCache::new(Duration::from_secs(10), 10);
        cache.insert("a".to_owned(), 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        cache.insert("a".to_owned(), 2);
        tokio::time::advance(Duration::from_secs(6)).await;
        // The first slot of "a" is 11 s old, but "a" was re-inserted 6 s ago.
        cache.insert("b".to_owned(), 3);
        assert_eq!(cache.get("a"), Some(2));
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_reinserts_keep_the_queue_bounded() {
        let cache = TtlCache::new(Duration::from_secs(10), 4);
        for i in 0..1_000 {
            cache.insert("hot".to_owned(), i);
        }
        assert_eq!(cache.len(), 1);
        assert!(cache.queue_len() <= 8, "queue {}", cache.queue_len());
        assert_eq!(cache.get("hot"), Some(999));
    }
}
