//! The memory tier: a byte-bounded concurrent cache of whole objects on
//! quick_cache (chosen by measurement, see `benches/memory_tier.rs`), each
//! object weighed as body + meta + key string. Knows nothing of the disk.

use crate::disk::index::KeyBuild;
use crate::key::Key;
use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{Lifecycle, OptionsBuilder, Weighter};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Most shards the memory cache is split into (each bounds its share of the
/// budget alone).
const MAX_SHARDS: u64 = 16;
/// Object weight assumed to size the cache's tables.
const TYPICAL_OBJECT: u64 = 16 << 10;

/// A whole object held in memory.
#[derive(Debug)]
pub(crate) struct MemObject {
    /// The version (publish sequence) of the object.
    pub version: u64,
    pub key_str: Box<[u8]>,
    pub meta: Bytes,
    pub body: Bytes,
}

impl MemObject {
    fn weight(&self) -> u64 {
        (self.key_str.len() + self.meta.len() + self.body.len()).max(1) as u64
    }
}

type Val = Arc<MemObject>;

#[derive(Clone)]
struct Weigh;

impl Weighter<Key, Val> for Weigh {
    fn weight(&self, _k: &Key, v: &Val) -> u64 {
        v.weight()
    }
}

#[derive(Clone)]
struct CountEvictions(Arc<AtomicU64>);

impl Lifecycle<Key, Val> for CountEvictions {
    type RequestState = ();
    fn on_evict(&self, _: &mut (), _k: Key, _v: Val) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The memory tier.
pub(crate) struct MemoryTier {
    cache: Cache<Key, Val, Weigh, KeyBuild, CountEvictions>,
    max_object: u64,
    evictions: Arc<AtomicU64>,
}

impl MemoryTier {
    /// A tier of `budget` bytes holding bodies up to `max_object` bytes.
    pub fn new(budget: u64, max_object: u64) -> MemoryTier {
        // Every shard must hold the largest object with room to spare.
        let per_shard_min = max_object.saturating_mul(4).max(1);
        let shards = (budget / per_shard_min).clamp(1, MAX_SHARDS);
        let shards = 1u64 << (63 - shards.leading_zeros()); // power of two, rounded down
        let evictions = Arc::new(AtomicU64::new(0));
        let opts = OptionsBuilder::new()
            .shards(shards as usize)
            .estimated_items_capacity((budget / TYPICAL_OBJECT).max(64) as usize)
            .weight_capacity(budget)
            .build();
        let cache = match opts {
            Ok(o) => Cache::with_options(
                o,
                Weigh,
                KeyBuild::default(),
                CountEvictions(evictions.clone()),
            ),
            // Only a missing capacity is refused, and both are set.
            Err(_) => Cache::with(
                64,
                budget,
                Weigh,
                KeyBuild::default(),
                CountEvictions(evictions.clone()),
            ),
        };
        MemoryTier {
            cache,
            max_object,
            evictions,
        }
    }

    /// Whether an object of this body length and weight may enter.
    pub fn admits(&self, body_len: u64) -> bool {
        body_len <= self.max_object
    }

    /// The object of `key` if its key string is `key_str`.
    pub fn get(&self, key: Key, key_str: &[u8]) -> Option<Val> {
        self.cache.get(&key).filter(|o| &*o.key_str == key_str)
    }

    /// Stores `obj` under `key`, replacing what was there. An object too big
    /// for the tier is not stored and the old one is dropped. Returns whether
    /// it was stored.
    pub fn insert(&self, key: Key, obj: MemObject) -> bool {
        if !self.admits(obj.body.len() as u64) || obj.weight() > self.cache.shard_capacity() {
            self.cache.remove(&key);
            return false;
        }
        self.cache.insert(key, Arc::new(obj));
        true
    }

    /// Drops the object of `key` if its key string is `key_str`.
    pub fn remove(&self, key: Key, key_str: &[u8]) -> bool {
        self.cache
            .remove_if(&key, |o| &*o.key_str == key_str)
            .is_some()
    }

    /// Drops whatever `key` holds.
    pub fn remove_any(&self, key: Key) {
        self.cache.remove(&key);
    }

    /// The budget in bytes.
    pub fn capacity(&self) -> u64 {
        self.cache.capacity()
    }

    /// (objects, bytes, evictions).
    pub fn stats(&self) -> (u64, u64, u64) {
        (
            self.cache.len() as u64,
            self.cache.weight(),
            self.evictions.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(k: &[u8], len: usize) -> MemObject {
        MemObject {
            version: 1,
            key_str: k.into(),
            meta: Bytes::from_static(b"m"),
            body: Bytes::from(vec![1u8; len]),
        }
    }

    #[test]
    fn bounded_by_weight_and_counts_evictions() {
        let t = MemoryTier::new(1 << 20, 16 << 10);
        for i in 0..1000u32 {
            let k = format!("k{i}");
            assert!(t.insert(Key::of(k.as_bytes()), obj(k.as_bytes(), 8000)));
            assert!(t.stats().1 <= 1 << 20);
        }
        let (n, bytes, ev) = t.stats();
        assert!(n > 50 && n < 140, "{n}");
        assert!(bytes <= 1 << 20);
        assert_eq!(ev, 1000 - n);
    }

    #[test]
    fn refuses_large_and_drops_the_old_version() {
        let t = MemoryTier::new(1 << 20, 4096);
        let k = Key::of(b"a");
        assert!(t.insert(k, obj(b"a", 10)));
        assert!(!t.insert(k, obj(b"a", 5000)));
        assert!(t.get(k, b"a").is_none());
    }

    #[test]
    fn key_string_must_match() {
        let t = MemoryTier::new(1 << 20, 4096);
        let k = Key::of(b"a");
        t.insert(k, obj(b"a", 10));
        assert!(t.get(k, b"b").is_none());
        assert!(!t.remove(k, b"b"));
        assert!(t.get(k, b"a").is_some());
        assert!(t.remove(k, b"a"));
        assert!(t.get(k, b"a").is_none());
    }
}
