//! Per-subject throttles: how many missing or invalid keys one client
//! address (IPv6: one /64) may present per second before it gets 429
//! `too-many-auth-failures` ([`AuthThrottle`]), and how often one key may
//! read its own limits on `proxy.usage_path` ([`UsageReads`]).
//!
//! Exact and bounded: one token bucket per address in a sharded map (no
//! shared sketch cells, so one address's failures never throttle another),
//! at most [`AuthThrottle::capacity`] addresses. Only failures are counted,
//! and the service looks the key up first: a valid key is never refused here.
//! When the map is full, buckets that have refilled completely (they carry no
//! information) are dropped first; if that frees nothing, the least recently
//! failed eighth of a shard is evicted and counted in
//! `tollgate_auth_throttle_evictions_total`.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Instant;

use parking_lot::Mutex;

const SHARDS: usize = 16;
/// Addresses tracked at most, over all shards.
pub const DEFAULT_CAPACITY: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// One token bucket per subject `K`, bounded (see the module).
#[derive(Debug)]
pub struct Throttle<K> {
    shards: Vec<Mutex<HashMap<K, Bucket>>>,
    per_shard: usize,
    hasher: ahash::RandomState,
}

/// Failed key checks per client address.
pub type AuthThrottle = Throttle<IpAddr>;

/// Reads of `proxy.usage_path` per key id: they take nothing from the
/// key's limits, but each is a limiter read (one `EVALSHA` with Redis), so
/// a key refused 429 could otherwise flood it (black-box round 2).
pub type UsageReads = Throttle<i64>;

/// Reads of `proxy.usage_path` one key may make per second (and at once).
pub const USAGE_READS_PER_SECOND: u32 = 5;

impl<K: Hash + Eq + Copy> Default for Throttle<K> {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl<K: Hash + Eq + Copy> Throttle<K> {
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: ahash::RandomState::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    /// Addresses currently tracked.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, addr: &K) -> &Mutex<HashMap<K, Bucket>> {
        &self.shards[(self.hasher.hash_one(addr) as usize) % SHARDS]
    }

    /// Whether `addr` may still fail right now (a bucket of `per_second`
    /// tokens, refilled at `per_second`/s), without counting anything.
    pub fn is_throttled(&self, addr: K, per_second: u32, now: Instant) -> bool {
        let rate = f64::from(per_second.max(1));
        let map = self.shard(&addr).lock();
        map.get(&addr).is_some_and(|b| refill(b, rate, now) < 1.0)
    }

    /// Count one failure from `addr`. Returns `false` when the address had no
    /// failure left (the answer is then 429), and the number of addresses
    /// evicted to make room.
    pub fn fail(&self, addr: K, per_second: u32, now: Instant) -> (bool, usize) {
        let rate = f64::from(per_second.max(1));
        let mut map = self.shard(&addr).lock();
        let mut evicted = 0;
        if !map.contains_key(&addr) && map.len() >= self.per_shard {
            evicted = make_room(&mut map, rate, now, self.per_shard);
        }
        let bucket = map.entry(addr).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        let tokens = refill(bucket, rate, now);
        bucket.last = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            (true, evicted)
        } else {
            bucket.tokens = tokens;
            (false, evicted)
        }
    }
}

fn refill(b: &Bucket, rate: f64, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
    (b.tokens + elapsed * rate).min(rate)
}

/// Drop full buckets; if none, the least recently used eighth. Returns how
/// many entries that were still throttling information were evicted.
fn make_room<K>(map: &mut HashMap<K, Bucket>, rate: f64, now: Instant, cap: usize) -> usize {
    map.retain(|_, b| refill(b, rate, now) < rate);
    if map.len() < cap {
        return 0;
    }
    let mut ages: Vec<Instant> = map.values().map(|b| b.last).collect();
    let n = (cap / 8).max(1).min(ages.len());
    let (_, nth, _) = ages.select_nth_unstable(n - 1);
    let cutoff = *nth;
    let before = map.len();
    map.retain(|_, b| b.last > cutoff);
    before - map.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn per_address_and_exact() {
        let t = AuthThrottle::default();
        let now = Instant::now();
        for _ in 0..5 {
            assert!(t.fail(ip(1), 5, now).0);
        }
        assert!(!t.fail(ip(1), 5, now).0);
        assert!(t.is_throttled(ip(1), 5, now));
        // Another address is untouched, however many others failed.
        assert!(!t.is_throttled(ip(2), 5, now));
        assert!(t.fail(ip(2), 5, now).0);
        // Refill: one token after 1/5 s.
        let later = now + Duration::from_millis(210);
        assert!(!t.is_throttled(ip(1), 5, later));
        assert!(t.fail(ip(1), 5, later).0);
        assert!(!t.fail(ip(1), 5, later).0);
    }

    #[test]
    fn bounded_with_counted_evictions() {
        let t = AuthThrottle::new(64);
        let now = Instant::now();
        let mut evicted = 0;
        for i in 0..2000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let (_, e) = t.fail(a, 1, now + Duration::from_micros(u64::from(i)));
            evicted += e;
        }
        assert!(t.len() <= t.capacity(), "{} > {}", t.len(), t.capacity());
        assert!(evicted > 0);
        // Refilled buckets are dropped without counting as evictions.
        let t = AuthThrottle::new(16);
        for i in 0..16u8 {
            t.fail(ip(i), 100, now);
        }
        let much_later = now + Duration::from_secs(5);
        // Whichever shard the new address lands in holds only refilled buckets.
        assert_eq!(t.fail(ip(200), 100, much_later), (true, 0));
        assert!(t.len() <= 16);
    }
}
