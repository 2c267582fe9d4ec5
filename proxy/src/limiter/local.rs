//! The in-process limiter: token buckets (GCRA arithmetic from
//! `tollgate_core::limits`) in the limiters' [`ShardedMap`].
//!
//! All buckets of one subject live in one entry of one shard, so a request
//! checks and takes from all its buckets under a single short lock: atomic
//! all-or-nothing without a global lock. Full buckets carry no information and
//! are evicted by [`LocalLimiter::sweep`], which bounds memory by the number of
//! subjects active within one refill period.

use std::time::Instant;

use smallvec::SmallVec;
use tollgate_core::limits::{self, Decision, Limit, LimitState};

use super::sharded::ShardedMap;
use super::{Bucket, Subject};

type Tats = SmallVec<[(u64, u64); 3]>;

pub struct LocalLimiter {
    map: ShardedMap<Subject, Tats>,
    epoch: Instant,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::new(256)
    }
}

impl std::fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("shards", &self.map.shard_count())
            .field("subjects", &self.len())
            .finish()
    }
}

impl LocalLimiter {
    /// `shards` is rounded up to a power of two.
    pub fn new(shards: usize) -> Self {
        Self {
            map: ShardedMap::new(shards),
            epoch: Instant::now(),
        }
    }

    /// Monotonic nanoseconds on this limiter's clock (never 0).
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    pub fn check(&self, subject: &Subject, buckets: &[&Bucket]) -> Decision {
        self.check_at(subject, buckets, self.now())
    }

    /// Decide and, if admitted, take tokens from every bucket, at time `now`.
    pub fn check_at(&self, subject: &Subject, buckets: &[&Bucket], now: u64) -> Decision {
        if buckets.is_empty() {
            return Decision {
                allowed: true,
                limits: Vec::new(),
            };
        }
        let policies: SmallVec<[&Limit; 4]> = buckets.iter().map(|b| &*b.limit).collect();
        let mut map = self.map.lock(subject);
        // One hash lookup for a subject already held (the hot path).
        if let Some(entry) = map.get_mut(subject) {
            let tats: SmallVec<[u64; 4]> = buckets
                .iter()
                .map(|b| lookup(entry, b.id).unwrap_or(0))
                .collect();
            let (decision, new_tats) = limits::decide(&policies, &tats, now);
            if let Some(new_tats) = new_tats {
                for (b, tat) in buckets.iter().zip(new_tats) {
                    match entry.iter_mut().find(|(id, _)| *id == b.id) {
                        Some(slot) => slot.1 = tat,
                        None => entry.push((b.id, tat)),
                    }
                }
            }
            return decision;
        }
        let full: SmallVec<[u64; 4]> = buckets.iter().map(|_| 0).collect();
        let (decision, new_tats) = limits::decide(&policies, &full, now);
        if let Some(new_tats) = new_tats {
            map.insert(
                *subject,
                buckets.iter().map(|b| b.id).zip(new_tats).collect(),
            );
        }
        decision
    }

    /// The buckets as they stand, nothing taken (`proxy.usage_path`).
    pub fn peek(&self, subject: &Subject, buckets: &[&Bucket]) -> Vec<LimitState> {
        let now = self.now();
        let map = self.map.lock(subject);
        let entry = map.get(subject);
        buckets
            .iter()
            .map(|b| {
                let tat = entry.and_then(|e| lookup(e, b.id)).unwrap_or(0);
                limits::peek_bucket(&b.limit, tat.saturating_sub(now))
            })
            .collect()
    }

    /// Drop every subject whose buckets are all full again. Returns how many.
    pub fn sweep(&self) -> usize {
        self.sweep_at(self.now())
    }

    pub fn sweep_at(&self, now: u64) -> usize {
        self.map
            .retain(|_, tats| tats.iter().any(|&(_, tat)| tat > now))
    }

    /// Subjects currently held.
    pub fn len(&self) -> usize {
        self.map.len()
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

fn lookup(entry: &Tats, id: u64) -> Option<u64> {
    entry.iter().find(|(b, _)| *b == id).map(|&(_, tat)| tat)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

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
