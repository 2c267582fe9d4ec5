//! The over-limit cache: refusals Redis gave, remembered until their
//! Retry-After so the same request of the same subject is refused locally
//! without a round trip (see [`OverLimitCache`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use tollgate_core::limits::{ceil_secs, retry_secs, Decision, LimitState, NEVER};

use super::script::LimitTimes;
use crate::limiter::sharded::ShardedMap;
use crate::limiter::{Bucket, Subject};

struct CachedLimit {
    state: LimitState,
    reset_at: Instant,
    /// `None`: never admits (cost > burst).
    retry_at: Option<Instant>,
}

struct Refusal {
    ids: SmallVec<[u64; 4]>,
    until: Instant,
    limits: Vec<CachedLimit>,
}

type Refusals = SmallVec<[Refusal; 1]>;

/// Refusals Redis gave, remembered until their Retry-After so the same
/// request of the same subject is refused locally without a round trip.
///
/// A refused request takes nothing and tokens only come back with time, so
/// until the longest wait among the violated limits Redis could only refuse
/// again: serving the refusal locally changes no decision (requests through
/// other proxies need the same violated bucket and are refused too). Keyed by
/// subject and the exact list of bucket fingerprints: a different route's
/// request, or the same request after a limit's values changed (a config
/// reload raising a limit), is asked again. The limit states served are those of the refusal, with
/// reset and retry-after counted down; a subject's refusals are dropped when
/// this process admits one of its requests, so only admissions through other
/// proxies can leave the `remaining` of a non-violated limit overstated. Bounded: at most `capacity` subjects (expired entries are swept
/// when a shard is full; if still full, the refusal is not cached), each
/// held at most `max_ttl`.
pub struct OverLimitCache {
    map: ShardedMap<Subject, Refusals>,
    per_shard: usize,
    max_ttl: Duration,
    hits: AtomicU64,
}

impl fmt::Debug for OverLimitCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OverLimitCache")
            .field("subjects", &self.len())
            .field("hits", &self.hits())
            .finish()
    }
}

const CACHE_SHARDS: usize = 64;

/// The refusal was made for exactly these buckets, with these limit values.
fn same_ids(ids: &[u64], buckets: &[&Bucket]) -> bool {
    ids.len() == buckets.len() && ids.iter().zip(buckets).all(|(id, b)| *id == b.fingerprint)
}

fn until_ns(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_nanos()).unwrap_or(u64::MAX)
}

impl OverLimitCache {
    pub fn new(capacity: usize, max_ttl: Duration) -> Self {
        Self {
            map: ShardedMap::new(CACHE_SHARDS),
            per_shard: capacity.div_ceil(CACHE_SHARDS),
            max_ttl,
            hits: AtomicU64::new(0),
        }
    }

    /// The cached refusal of this request at `now`, if one is still running.
    pub fn get(&self, subject: &Subject, buckets: &[&Bucket], now: Instant) -> Option<Decision> {
        let mut map = self.map.lock(subject);
        let refusals = map.get_mut(subject)?;
        let i = refusals.iter().position(|r| same_ids(&r.ids, buckets))?;
        if refusals[i].until <= now {
            refusals.swap_remove(i);
            if refusals.is_empty() {
                map.remove(subject);
            }
            return None;
        }
        let refusal = &refusals[i];
        let limits = refusal
            .limits
            .iter()
            .map(|c| LimitState {
                reset_secs: ceil_secs(until_ns(now, c.reset_at)),
                retry_after_secs: if c.state.violated {
                    retry_secs(c.retry_at.map_or(NEVER, |t| until_ns(now, t)))
                } else {
                    0
                },
                ..c.state.clone()
            })
            .collect();
        drop(map);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(Decision {
            allowed: false,
            limits,
        })
    }

    /// Remember a refusal made at `now`; `times` in the order of `decision.limits`.
    pub fn insert(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        decision: &Decision,
        times: &[LimitTimes],
        now: Instant,
    ) {
        if decision.allowed
            || decision.limits.len() != buckets.len()
            || times.len() != buckets.len()
        {
            return;
        }
        let wait = decision
            .limits
            .iter()
            .zip(times)
            .filter(|(l, _)| l.violated)
            .map(|(_, t)| t.retry.unwrap_or(self.max_ttl))
            .max()
            .unwrap_or(Duration::ZERO)
            .min(self.max_ttl);
        if wait.is_zero() {
            return;
        }
        let refusal = Refusal {
            ids: buckets.iter().map(|b| b.fingerprint).collect(),
            until: now + wait,
            limits: decision
                .limits
                .iter()
                .zip(times)
                .map(|(l, t)| CachedLimit {
                    state: l.clone(),
                    reset_at: now + t.reset,
                    retry_at: t.retry.map(|r| now + r),
                })
                .collect(),
        };
        let mut map = self.map.lock(subject);
        if map.len() >= self.per_shard && !map.contains_key(subject) {
            map.retain(|_, refusals| {
                refusals.retain(|r| r.until > now);
                !refusals.is_empty()
            });
            if map.len() >= self.per_shard {
                return;
            }
        }
        let refusals = map.entry(*subject).or_default();
        match refusals.iter_mut().find(|r| same_ids(&r.ids, buckets)) {
            Some(slot) => *slot = refusal,
            None => refusals.push(refusal),
        }
    }

    /// Drop the subject's refusals (after an admission of one of its requests).
    pub fn forget(&self, subject: &Subject) {
        let mut map = self.map.lock(subject);
        if !map.is_empty() {
            map.remove(subject);
        }
    }

    /// Drop the refusals of every subject `which` picks (a quota reset or
    /// adjustment: they may admit again). Returns how many were dropped.
    pub fn forget_where(&self, which: impl Fn(&Subject) -> bool) -> usize {
        self.map.retain(|s, _| !which(s))
    }

    /// Drop every expired refusal. Returns how many subjects were dropped.
    pub fn sweep(&self, now: Instant) -> usize {
        self.map.retain(|_, refusals| {
            refusals.retain(|r| r.until > now);
            !refusals.is_empty()
        })
    }

    /// Subjects held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests refused from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::Scope;
    use tollgate_core::limits::Limit;

    fn refusal() -> (Vec<Bucket>, Decision, Vec<LimitTimes>) {
        let a = Bucket::new(
            Scope::Key,
            Limit::new("a", 100, Duration::from_secs(1), None, None),
        );
        let b = Bucket::new(
            Scope::Route("r"),
            Limit::new("b", 1, Duration::from_secs(60), Some(1), None),
        );
        let decision = Decision {
            allowed: false,
            limits: smallvec::smallvec![
                LimitState {
                    name: "a".into(),
                    quota: 100,
                    window_secs: 1,
                    remaining: 99,
                    reset_secs: 1,
                    violated: false,
                    retry_after_secs: 0,
                },
                LimitState {
                    name: "b".into(),
                    quota: 1,
                    window_secs: 60,
                    remaining: 0,
                    reset_secs: 30,
                    violated: true,
                    retry_after_secs: 30,
                },
            ],
        };
        let times = vec![
            LimitTimes {
                reset: Duration::from_millis(10),
                retry: Some(Duration::ZERO),
            },
            LimitTimes {
                reset: Duration::from_millis(29_500),
                retry: Some(Duration::from_millis(29_500)),
            },
        ];
        (vec![a, b], decision, times)
    }

    #[test]
    fn cache_refuses_until_retry_after() {
        let cache = OverLimitCache::new(1000, Duration::from_secs(3600));
        let t0 = Instant::now();
        let (buckets, decision, times) = refusal();
        let refs: Vec<&Bucket> = buckets.iter().collect();
        let k = Subject::Key(9);
        assert!(cache.get(&k, &refs, t0).is_none());
        cache.insert(&k, &refs, &decision, &times, t0);
        let d = cache
            .get(&k, &refs, t0 + Duration::from_secs(10))
            .expect("cached");
        assert!(!d.allowed);
        assert_eq!(d.violated_names(), vec!["b"]);
        assert_eq!(d.retry_after_secs(), 20, "19.5 s left, rounded up");
        assert_eq!(d.limits[1].reset_secs, 20);
        assert_eq!(d.limits[0].remaining, 99);
        assert_eq!(cache.hits(), 1);
        // Another subject, or another set of buckets, is not refused.
        assert!(cache.get(&Subject::Key(10), &refs, t0).is_none());
        assert!(cache.get(&k, &refs[..1], t0).is_none());
        assert!(cache.get(&k, &[refs[1], refs[0]], t0).is_none());
        // An admission of the subject drops its refusals.
        cache.forget(&Subject::Key(10));
        assert!(cache.get(&k, &refs, t0).is_some());
        cache.forget(&k);
        assert!(cache.get(&k, &refs, t0).is_none());
        cache.insert(&k, &refs, &decision, &times, t0);
        // Expired at exactly the retry instant, and dropped.
        assert!(cache
            .get(&k, &refs, t0 + Duration::from_millis(29_500))
            .is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn cache_caps_ttl_and_never_caches_admissions() {
        let cache = OverLimitCache::new(1000, Duration::from_secs(5));
        let t0 = Instant::now();
        let (buckets, mut decision, mut times) = refusal();
        let refs: Vec<&Bucket> = buckets.iter().collect();
        let k = Subject::Key(1);
        times[1].retry = None; // cost > burst: never fits
        cache.insert(&k, &refs, &decision, &times, t0);
        let d = cache
            .get(&k, &refs, t0 + Duration::from_secs(4))
            .expect("cached");
        assert_eq!(d.retry_after(), tollgate_core::limits::RetryAfter::Never);
        assert!(cache.get(&k, &refs, t0 + Duration::from_secs(5)).is_none());
        decision.allowed = true;
        cache.insert(&Subject::Key(2), &refs, &decision, &times, t0);
        assert!(cache.is_empty());
    }

    #[test]
    fn cache_is_bounded_and_sweeps() {
        let cache = OverLimitCache::new(CACHE_SHARDS * 2, Duration::from_secs(3600));
        let t0 = Instant::now();
        let (buckets, decision, times) = refusal();
        let refs: Vec<&Bucket> = buckets.iter().collect();
        for id in 0..10_000 {
            cache.insert(&Subject::Key(id), &refs, &decision, &times, t0);
        }
        assert!(cache.len() <= CACHE_SHARDS * 2, "{}", cache.len());
        assert!(cache.len() >= CACHE_SHARDS, "{}", cache.len());
        // Once expired, room is made again.
        let later = t0 + Duration::from_secs(31);
        cache.insert(&Subject::Key(20_000), &refs, &decision, &times, later);
        assert!(cache.get(&Subject::Key(20_000), &refs, later).is_some());
        let held = cache.len();
        assert_eq!(cache.sweep(later), held - 1, "all but the new one expired");
        assert_eq!(cache.sweep(later + Duration::from_secs(31)), 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_changed_limit_is_not_served_from_the_cache() {
        let cache = OverLimitCache::new(1000, Duration::from_secs(3600));
        let t0 = Instant::now();
        let (buckets, decision, times) = refusal();
        let refs: Vec<&Bucket> = buckets.iter().collect();
        let k = Subject::Key(3);
        cache.insert(&k, &refs, &decision, &times, t0);
        assert!(cache.get(&k, &refs, t0).is_some());
        // The same limit "b" (same name, same bucket id) raised from 1 to 100 per minute.
        let raised = Bucket::new(
            Scope::Route("r"),
            Limit::new("b", 100, Duration::from_secs(60), Some(100), None),
        );
        assert_eq!(raised.id, buckets[1].id, "same bucket");
        assert!(cache.get(&k, &[refs[0], &raised], t0).is_none());
        // Any value counts: per, burst and cost too.
        for changed in [
            Limit::new("b", 1, Duration::from_secs(30), Some(1), None),
            Limit::new("b", 1, Duration::from_secs(60), Some(2), None),
            Limit::new("b", 1, Duration::from_secs(60), Some(1), Some(1)),
        ] {
            let b = Bucket::new(Scope::Route("r"), changed);
            assert!(cache.get(&k, &[refs[0], &b], t0).is_none());
        }
        assert!(
            cache.get(&k, &refs, t0).is_some(),
            "unchanged: still cached"
        );
    }
}
