//! The in-process limiter: token buckets (GCRA arithmetic from
//! `tollgate_core::limits`) in the limiters' [`ShardedMap`].
//!
//! All buckets of one subject live in one entry of one shard, so a request
//! checks and takes from all its buckets under a single short lock: atomic
//! all-or-nothing without a global lock. Full buckets carry no information and
//! are evicted by [`LocalLimiter::sweep`], which bounds memory by the number of
//! subjects active within one refill period.

use std::hash::Hash;
use std::net::IpAddr;
use std::time::Instant;

use smallvec::SmallVec;
use tollgate_core::limits::{self, Decision, LimitState, Policy};

use super::quota::{any_quota, wall_now_us};
use super::sharded::ShardedMap;
use super::{Bucket, Subject};

mod quota;
mod seed;
mod settle;
mod shared;

/// Buckets held inline per subject: a plan's limit or two plus a route's.
const INLINE: usize = 3;

/// One subject's buckets, compact: 32-bit bucket slots ([`Bucket::slot`],
/// 0 = free) beside their TATs, 40 bytes. A subject with more buckets keeps
/// the rest in the limiter's overflow map.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    slots: [u32; INLINE],
    tats: [u64; INLINE],
}

impl Entry {
    fn get(&self, slot: u32) -> Option<u64> {
        self.slots
            .iter()
            .position(|&s| s == slot)
            .map(|i| self.tats[i])
    }

    /// Store `tat` for `slot` if the slot is here or there is room.
    fn set(&mut self, slot: u32, tat: u64) -> bool {
        let i = match self.slots.iter().position(|&s| s == slot) {
            Some(i) => i,
            None => match self.slots.iter().position(|&s| s == 0) {
                Some(i) => i,
                None => return false,
            },
        };
        self.slots[i] = slot;
        self.tats[i] = tat;
        true
    }

    /// Free the buckets that are full again; whether any is left.
    fn prune(&mut self, now: u64) -> bool {
        let mut live = false;
        for (s, &t) in self.slots.iter_mut().zip(&self.tats) {
            if t <= now {
                *s = 0;
            }
            live |= *s != 0;
        }
        live
    }
}

type More = SmallVec<[(u32, u64); 2]>;

pub struct LocalLimiter {
    /// Key subjects by id (8-byte keys: most subjects are keys).
    keys: ShardedMap<i64, Entry>,
    /// IP subjects (`auth: none` routes).
    ips: ShardedMap<IpAddr, Entry>,
    /// Buckets beyond [`INLINE`] of a subject (rare). Always locked after
    /// `map`'s shard, never alone on the request path.
    more: ShardedMap<Subject, More>,
    /// Identities' `scope: identity` buckets (see `shared`).
    identities: ShardedMap<i64, More>,
    epoch: Instant,
    /// Calendar quota counts (see [`quota`]); locked before `keys`/`ips`.
    quotas: ShardedMap<Subject, quota::Counts>,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::new(256)
    }
}

impl std::fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("shards", &self.keys.shard_count())
            .field("subjects", &self.len())
            .finish()
    }
}

impl LocalLimiter {
    /// `shards` is rounded up to a power of two.
    pub fn new(shards: usize) -> Self {
        Self {
            keys: ShardedMap::new(shards),
            ips: ShardedMap::new(shards),
            more: ShardedMap::new(shards),
            identities: ShardedMap::new(shards),
            epoch: Instant::now(),
            quotas: ShardedMap::new(shards),
        }
    }

    /// Monotonic nanoseconds on this limiter's clock (never 0).
    pub fn now(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    /// `at` on this limiter's clock.
    fn ns_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    pub fn check(&self, subject: &Subject, buckets: &[&Bucket]) -> Decision {
        self.check_at_instant(subject, buckets, Instant::now())
    }

    /// [`Self::check`] at `at`, an instant the caller read just before (the
    /// request path reads the clock once, for the decision and for its
    /// timing metric). An instant a little in the past only refills less.
    pub fn check_at_instant(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        at: Instant,
    ) -> Decision {
        let now = self.ns_at(at);
        if any_quota(buckets) {
            return self.check_quotas_at(subject, buckets, now, wall_now_us());
        }
        self.check_at(subject, buckets, now)
    }

    /// Decide and, if admitted, take tokens from every bucket, at time `now`.
    /// All of a subject's buckets are read and written under its shard's
    /// lock (and, for a bucket not held inline, the overflow shard's after
    /// it): the check is atomic.
    /// [`Self::check_at`] with the quotas' periods taken at `wall_us` (µs
    /// since the epoch); without a quota, exactly `check_at`.
    pub fn check_at_wall(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        now: u64,
        wall_us: i64,
    ) -> Decision {
        if any_quota(buckets) {
            return self.check_quotas_at(subject, buckets, now, wall_us);
        }
        self.check_at(subject, buckets, now)
    }

    /// With a quota among the buckets, `now` (ns) is also the wall clock
    /// for the quotas' periods (tests compare backends at chosen instants).
    pub fn check_at(&self, subject: &Subject, buckets: &[&Bucket], now: u64) -> Decision {
        if any_quota(buckets) {
            let wall_us = i64::try_from(now / 1_000).unwrap_or(i64::MAX);
            return self.check_quotas_at(subject, buckets, now, wall_us);
        }
        match subject {
            Subject::Key(id) => self.check_in(&self.keys, id, subject, buckets, now),
            Subject::Ip(ip) => self.check_in(&self.ips, ip, subject, buckets, now),
            Subject::Identity(id) => self.check_shared(None, *id, buckets, now),
            Subject::Member { key, identity } => {
                self.check_shared(Some(*key), *identity, buckets, now)
            }
        }
    }

    fn check_in<K: Hash + Eq + Copy>(
        &self,
        inline: &ShardedMap<K, Entry>,
        key: &K,
        subject: &Subject,
        buckets: &[&Bucket],
        now: u64,
    ) -> Decision {
        if buckets.is_empty() {
            return Decision {
                allowed: true,
                limits: Default::default(),
            };
        }
        let policies: SmallVec<[&Policy; 4]> = buckets.iter().map(|b| &b.policy).collect();
        let mut map = inline.lock(key);
        // One lookup for the read and the write.
        let (held, new) = match map.entry(*key) {
            std::collections::hash_map::Entry::Occupied(o) => (o.into_mut(), false),
            std::collections::hash_map::Entry::Vacant(v) => (v.insert(Entry::default()), true),
        };
        // A new entry is all free slots: no bucket of it is inline.
        let entry = *held;
        let mut more = None;
        let mut tats: SmallVec<[u64; 4]> = SmallVec::with_capacity(buckets.len());
        for b in buckets {
            // Hot path: a held subject's bucket is inline (one lookup).
            let tat = match entry.get(b.slot) {
                Some(tat) => tat,
                None => {
                    let more = more.get_or_insert_with(|| self.more.lock(subject));
                    more.get(subject)
                        .and_then(|m| m.iter().find(|(s, _)| *s == b.slot))
                        .map_or(0, |&(_, tat)| tat)
                }
            };
            tats.push(tat);
        }
        let (decision, new_tats) = limits::decide(&policies, &tats, now);
        if let Some(new_tats) = new_tats {
            let e = held;
            for (b, tat) in buckets.iter().zip(new_tats) {
                let in_more = more
                    .as_ref()
                    .and_then(|m| m.get(subject))
                    .is_some_and(|m| m.iter().any(|(s, _)| *s == b.slot));
                if !in_more && e.set(b.slot, tat) {
                    continue;
                }
                let more = more.get_or_insert_with(|| self.more.lock(subject));
                let m = more.entry(*subject).or_default();
                match m.iter_mut().find(|(s, _)| *s == b.slot) {
                    Some(held) => held.1 = tat,
                    None => m.push((b.slot, tat)),
                }
            }
        } else if new {
            // A subject refused on its first request holds nothing.
            map.remove(key);
        }
        decision
    }

    /// The buckets as they stand, nothing taken (`proxy.usage_path`).
    pub fn peek(&self, subject: &Subject, buckets: &[&Bucket]) -> Vec<LimitState> {
        if any_quota(buckets) {
            let wall_us = wall_now_us();
            return buckets
                .iter()
                .map(|b| match b.policy.calendar {
                    Some(_) => self.peek_quota(subject, b, wall_us),
                    None => self.peek_at(subject, &[b], self.now()).remove(0),
                })
                .collect();
        }
        self.peek_at(subject, buckets, self.now())
    }

    /// [`Self::peek`] of buckets (no quota) at `now`.
    fn peek_at(&self, subject: &Subject, buckets: &[&Bucket], now: u64) -> Vec<LimitState> {
        match *subject {
            Subject::Identity(id) => return self.peek_shared(None, id, buckets),
            Subject::Member { key, identity } => {
                return self.peek_shared(Some(key), identity, buckets)
            }
            Subject::Key(_) | Subject::Ip(_) => {}
        }
        let tat = |slot: u32| -> u64 {
            // Each shard guard is dropped at the end of its statement: the
            // overflow map is never locked while an inline shard is held.
            let inline = match subject {
                Subject::Key(id) => self.keys.lock(id).get(id).and_then(|e| e.get(slot)),
                Subject::Ip(ip) => self.ips.lock(ip).get(ip).and_then(|e| e.get(slot)),
                Subject::Identity(_) | Subject::Member { .. } => None,
            };
            inline
                .or_else(|| {
                    self.more
                        .lock(subject)
                        .get(subject)
                        .and_then(|m| m.iter().find(|(s, _)| *s == slot).map(|&(_, t)| t))
                })
                .unwrap_or(0)
        };
        buckets
            .iter()
            .map(|b| limits::peek_bucket(&b.policy, tat(b.slot).saturating_sub(now)))
            .collect()
    }

    /// Drop every bucket that is full again (a missing bucket is a full
    /// one), and every subject left with none. Returns how many subjects
    /// were dropped.
    pub fn sweep(&self) -> usize {
        self.sweep_quotas(wall_now_us());
        self.sweep_at(self.now())
    }

    pub fn sweep_at(&self, now: u64) -> usize {
        let removed = self.keys.retain(|_, e| e.prune(now))
            + self.ips.retain(|_, e| e.prune(now))
            + self.identities.retain(|_, m| {
                m.retain(|(_, tat)| *tat > now);
                !m.is_empty()
            });
        self.more.retain(|_, m| {
            m.retain(|(_, tat)| *tat > now);
            !m.is_empty()
        });
        removed
    }

    /// Subjects currently held (inline; one with only overflow buckets
    /// left is not counted).
    pub fn len(&self) -> usize {
        self.keys.len() + self.ips.len() + self.identities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod peek_tests {
    use super::*;
    use crate::limiter::{compile, Scope};
    use std::time::Duration;
    use tollgate_core::limits::Limit;

    #[test]
    fn peeking_takes_nothing() {
        let l = LocalLimiter::new(4);
        let buckets = compile(
            Scope::Key,
            &[Limit {
                name: "minute".into(),
                rate: 10,
                per: Duration::from_secs(60),
                burst: None,
                cost: None,
                quota: None,
                scope: Default::default(),
            }],
        );
        let refs: Vec<&Bucket> = buckets.iter().collect();
        let s = Subject::Key(7);
        assert_eq!(l.peek(&s, &refs)[0].remaining, 10);
        assert!(l.is_empty(), "a peek stores nothing");
        l.check(&s, &refs);
        l.check(&s, &refs);
        for _ in 0..50 {
            assert_eq!(l.peek(&s, &refs)[0].remaining, 8);
        }
        assert_eq!(l.check(&s, &refs).limits[0].remaining, 7);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tollgate_core::limits::Limit;

    use super::super::Scope;
    use super::*;

    const S: u64 = 1_000_000_000;

    fn bucket(scope: Scope<'_>, name: &str, rate: u64, per: u64, burst: u64) -> Bucket {
        Bucket::new(
            scope,
            Limit {
                name: name.into(),
                rate,
                per: Duration::from_secs(per),
                burst: Some(burst),
                cost: None,
                quota: None,
                scope: Default::default(),
            },
        )
    }

    #[test]
    fn refused_request_takes_nothing_from_other_buckets() {
        let l = LocalLimiter::new(4);
        let big = bucket(Scope::Key, "big", 100, 1, 100);
        let small = bucket(Scope::Route("r"), "small", 1, 60, 1);
        let k = Subject::Key(1);
        assert!(l.check_at(&k, &[&big, &small], S).allowed);
        for _ in 0..10 {
            let d = l.check_at(&k, &[&big, &small], S);
            assert!(!d.allowed);
            assert_eq!(d.violated_names(), vec!["small"]);
        }
        // Only the one admitted request used `big`.
        let d = l.check_at(&k, &[&big], S);
        assert!(d.allowed);
        assert_eq!(d.limits[0].remaining, 98);
    }

    #[test]
    fn subjects_are_independent_and_full_buckets_are_swept() {
        let l = LocalLimiter::new(4);
        let b = bucket(Scope::Key, "m", 1, 1, 1);
        assert!(l.check_at(&Subject::Key(1), &[&b], S).allowed);
        assert!(!l.check_at(&Subject::Key(1), &[&b], S).allowed);
        assert!(l.check_at(&Subject::Key(2), &[&b], S).allowed);
        assert_eq!(l.len(), 2);
        assert_eq!(l.sweep_at(S + S / 2), 0);
        assert_eq!(l.sweep_at(2 * S), 2);
        assert!(l.is_empty());
        // A swept subject starts full again.
        assert!(l.check_at(&Subject::Key(1), &[&b], 2 * S).allowed);
    }

    /// More buckets than fit inline: every one counts, the overflow is
    /// swept like the rest, and a bucket stays where it was first put.
    #[test]
    fn subjects_with_many_buckets() {
        let l = LocalLimiter::new(2);
        let bs: Vec<Bucket> = (0..6)
            .map(|i| bucket(Scope::Key, &format!("b{i}"), 1, 1, 2 + i))
            .collect();
        let all: Vec<&Bucket> = bs.iter().collect();
        let k = Subject::Key(9);
        assert!(l.check_at(&k, &all, S).allowed);
        let d = l.check_at(&k, &all, S);
        assert!(d.allowed);
        let remaining: Vec<u64> = d.limits.iter().map(|s| s.remaining).collect();
        assert_eq!(remaining, vec![0, 1, 2, 3, 4, 5]);
        // b0 (burst 2) is empty now: refused, nothing taken from the others.
        let d = l.check_at(&k, &all, S);
        assert_eq!(d.violated_names(), vec!["b0"]);
        // Only the last bucket (held in the overflow) still has its tokens counted.
        let d = l.check_at(&k, &[&bs[5]], S);
        assert_eq!(d.limits[0].remaining, 4);
        // In another order, the same buckets are found again.
        let rev: Vec<&Bucket> = bs.iter().rev().skip(1).collect();
        let d = l.check_at(&k, &rev, S);
        assert!(!d.allowed);
        assert_eq!(d.limits.last().map(|s| s.remaining), Some(0));
        assert_eq!(l.len(), 1);
        // Everything refills within 7 s: swept, and full again.
        assert_eq!(l.sweep_at(8 * S), 1);
        assert!(l.is_empty() && l.more.is_empty());
        let d = l.check_at(&k, &all, 8 * S);
        assert_eq!(d.limits[5].remaining, 6);
    }

    #[test]
    fn ip_subjects_are_apart_from_keys() {
        let l = LocalLimiter::new(4);
        let b = bucket(Scope::Key, "m", 1, 1, 1);
        let ip = Subject::Ip("192.0.2.1".parse().expect("ip"));
        assert!(l.check_at(&ip, &[&b], S).allowed);
        assert!(!l.check_at(&ip, &[&b], S).allowed);
        assert!(l.check_at(&Subject::Key(1), &[&b], S).allowed);
        assert_eq!(l.len(), 2);
        assert_eq!(l.sweep_at(2 * S), 2);
    }

    #[test]
    fn exact_under_concurrency() {
        // 8 threads hammer one key with a bucket of 1000 and no refill to speak of.
        let l = Arc::new(LocalLimiter::new(16));
        let b = Arc::new(bucket(Scope::Key, "day", 1000, 86_400, 1000));
        let admitted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (l, b, admitted) = (l.clone(), b.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if l.check(&Subject::Key(7), &[&b]).allowed {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 1000);
    }
}
