//! Per-key concurrency (`plans.NAME.concurrency`): exact in-flight counts.
//!
//! [`InFlight`] holds one counter per key that has requests in flight, and
//! nothing for any other key: an entry is removed when its last request ends,
//! so memory is bounded by the requests in flight (no sketch whose collisions
//! could refuse an innocent key). A request holds an [`InFlightGuard`] while
//! it runs; dropping the guard (the request ends, however it ends) releases
//! its slot.
//!
//! With the Redis backend the count is global across proxies (see
//! `redis/holds.rs`), and this table still counts every slot this process
//! holds, in Redis or taken by the `on_redis_error: local` fallback: a
//! process never runs more than the cap itself, Redis up or down
//! (`backends::Limiters::acquire`).

use std::sync::Arc;

use super::sharded::ShardedMap;

const SHARDS: usize = 64;

/// Exact in-flight counts per key.
pub struct InFlight {
    map: ShardedMap<i64, u32>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("keys", &self.keys())
            .finish()
    }
}

impl Default for InFlight {
    fn default() -> Self {
        Self {
            map: ShardedMap::new(SHARDS),
        }
    }
}

impl InFlight {
    /// Take one of `key`'s `max` slots, or `None` if all are taken.
    pub fn try_acquire(self: &Arc<Self>, key: i64, max: u32) -> Option<InFlightGuard> {
        let mut map = self.map.lock(&key);
        let count = map.entry(key).or_insert(0);
        if *count >= max {
            if *count == 0 {
                map.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(InFlightGuard {
            table: self.clone(),
            key,
        })
    }

    /// Requests of `key` in flight now.
    pub fn count(&self, key: i64) -> u32 {
        self.map.lock(&key).get(&key).copied().unwrap_or(0)
    }

    /// Keys with requests in flight (entries held).
    pub fn keys(&self) -> usize {
        self.map.len()
    }

    fn release(&self, key: i64) {
        let mut map = self.map.lock(&key);
        if let Some(count) = map.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&key);
            }
        }
    }
}

/// One request's slot; released on drop.
pub struct InFlightGuard {
    table: Arc<InFlight>,
    key: i64,
}

impl std::fmt::Debug for InFlightGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlightGuard")
            .field("key", &self.key)
            .finish()
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.table.release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_per_key_and_released_on_drop() {
        let t = Arc::new(InFlight::default());
        let a1 = t.try_acquire(1, 2).expect("first");
        let a2 = t.try_acquire(1, 2).expect("second");
        assert!(t.try_acquire(1, 2).is_none(), "third refused");
        // Thousands of other keys at their limit never refuse key 2.
        let others: Vec<_> = (100..5_100)
            .map(|k| t.try_acquire(k, 1).expect("other key"))
            .collect();
        let b = t
            .try_acquire(2, 1)
            .expect("key 2 is not affected by others");
        assert_eq!((t.count(1), t.count(2)), (2, 1));
        drop(a1);
        let a3 = t.try_acquire(1, 2).expect("a slot came back");
        drop((a2, a3, b, others));
        assert_eq!(t.keys(), 0, "nothing held once every request ended");
        assert!(t.try_acquire(3, 0).is_none(), "0 admits nothing");
        assert_eq!(t.keys(), 0, "a refusal holds nothing");
    }

    #[test]
    fn concurrent_acquires_never_exceed_the_limit() {
        let t = Arc::new(InFlight::default());
        let peak = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (t, peak) = (t.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..5_000 {
                        if let Some(g) = t.try_acquire(7, 3) {
                            peak.fetch_max(t.count(7), std::sync::atomic::Ordering::Relaxed);
                            drop(g);
                        }
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().expect("thread");
        }
        assert!(peak.load(std::sync::atomic::Ordering::Relaxed) <= 3);
        assert_eq!(t.keys(), 0);
    }
}
