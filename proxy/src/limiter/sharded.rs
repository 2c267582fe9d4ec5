//! One sharded map for the limiters' per-subject state: the local token
//! buckets ([`super::local`]), the over-limit cache ([`super::redis::over_limit`])
//! and the in-flight counts ([`super::concurrency`]).
//!
//! A key's entry lives in one shard chosen by a hash, so operations on one
//! key take one short lock and different keys rarely contend; there is no
//! global lock. Sweeps walk the shards one at a time.

use std::collections::HashMap;
use std::hash::Hash;

use parking_lot::{Mutex, MutexGuard};

/// One shard: a plain map behind its own lock.
pub type Shard<K, V> = HashMap<K, V, ahash::RandomState>;

/// A map split into a power-of-two number of locked shards.
pub struct ShardedMap<K, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    hasher: ahash::RandomState,
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    /// `shards` is rounded up to a power of two (at least 1).
    pub fn new(shards: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        Self {
            shards: (0..n).map(|_| Mutex::new(HashMap::default())).collect(),
            hasher: ahash::RandomState::new(),
        }
    }

    /// How many shards there are.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The locked shard holding `key`'s entry.
    pub fn lock(&self, key: &K) -> MutexGuard<'_, Shard<K, V>> {
        let h = self.hasher.hash_one(key);
        self.shards[(h as usize) & (self.shards.len() - 1)].lock()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep only the entries for which `keep` is true, shard by shard.
    /// Returns how many were removed.
    pub fn retain(&self, mut keep: impl FnMut(&K, &mut V) -> bool) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            let before = map.len();
            map.retain(|k, v| keep(k, v));
            removed += before - map.len();
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_a_power_of_two_and_entries_are_found_again() {
        assert_eq!(ShardedMap::<u64, u64>::new(0).shard_count(), 1);
        assert_eq!(ShardedMap::<u64, u64>::new(48).shard_count(), 64);
        let m = ShardedMap::new(8);
        for k in 0..1_000u64 {
            m.lock(&k).insert(k, k * 2);
        }
        assert_eq!(m.len(), 1_000);
        assert!((0..1_000u64).all(|k| m.lock(&k).get(&k) == Some(&(k * 2))));
        assert_eq!(m.retain(|k, _| k % 2 == 0), 500);
        assert_eq!(m.len(), 500);
        assert_eq!(m.retain(|_, _| false), 500);
        assert!(m.is_empty());
    }
}
