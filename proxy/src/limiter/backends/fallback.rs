//! The `on_redis_error: local` fallback's share of each limit: with N live
//! proxies (counted from the `instances` table by the heartbeat, see
//! `usage::flusher`), a request Redis cannot decide is decided by this
//! process's own bucket holding 1/N of the limit's rate and burst
//! (`core::limits::share`), so the proxies together admit about the limit
//! instead of N × it. The in-process backend (`backend: local`) never reads
//! N.
//!
//! Each share starts from what Redis last reported: whenever a Redis call
//! of this proxy returns (a decision, a lease granted or refilled), each
//! bucket's share is lowered to at most what Redis had left / N
//! (`core::limits::seed_tat`), never raised. So when Redis is healthy but
//! late (some calls miss `redis_timeout`), the fallback admits what Redis
//! had left, shared, plus the share's refill, not a fresh 1/N of the burst
//! on top of Redis' admissions. A lease spent here costs nothing more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use smallvec::SmallVec;
use tollgate_core::limits::{seed_tat, Decision, LimitState, Policy};

use super::Limiters;
use crate::limiter::{Bucket, Subject};
use crate::metrics;

/// How many live proxies share each limit when Redis cannot decide: at
/// least 1, set by each heartbeat pass, read by the fallback.
#[derive(Debug)]
pub struct Peers(AtomicU64);

impl Default for Peers {
    fn default() -> Self {
        Self(AtomicU64::new(1))
    }
}

impl Peers {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed).max(1)
    }

    /// `n` live proxies (0, a count taken before this proxy's own beat
    /// landed, counts as 1); shown as `tollgate_limiter_fallback_peers`.
    pub fn set(&self, n: u64) {
        let n = n.max(1);
        self.0.store(n, Ordering::Relaxed);
        metrics::FALLBACK_PEERS.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// `b` as one of `peers` proxies enforces it alone ([`Limit::shared`]):
/// the same bucket (id, slot: the same local state) with the shared rate
/// and burst, reported as such (`RateLimit`, `RateLimit-Policy`).
///
/// [`Limit::shared`]: tollgate_core::limits::Limit::shared
pub fn shared(b: &Bucket, peers: u64) -> Bucket {
    let limit = b.limit.shared(peers);
    let policy = Policy::new(&limit);
    Bucket {
        policy_header: crate::headers::policy_member(&policy).into(),
        policy,
        limit: Arc::new(limit),
        name: b.name.clone(),
        ..*b
    }
}

/// Run `f` on the buckets as this proxy's share of them: the buckets
/// themselves with one peer (nothing built), shared copies with more.
fn with_share<T>(buckets: &[&Bucket], peers: u64, f: impl FnOnce(&[&Bucket]) -> T) -> T {
    if peers <= 1 {
        return f(buckets);
    }
    let owned: SmallVec<[Bucket; 4]> = buckets.iter().map(|b| shared(b, peers)).collect();
    let refs: SmallVec<[&Bucket; 4]> = owned.iter().collect();
    f(&refs)
}

impl Limiters {
    /// The live proxies the fallback shares each limit with.
    pub fn peers(&self) -> Arc<Peers> {
        self.peers.clone()
    }

    /// The `local` fallback's decision: this process's share of the limits.
    pub(super) fn fallback_check(&self, subject: &Subject, buckets: &[&Bucket]) -> Decision {
        with_share(buckets, self.peers.get(), |b| self.local.check(subject, b))
    }

    /// Lower this proxy's fallback shares of `buckets` to what Redis
    /// reported left in each (`left`, in the buckets' order) over N: a
    /// later fallback decision admits only what Redis had left, shared,
    /// plus the refill since. Calendar quotas are not shared (counted per
    /// proxy from zero). Nothing is allocated; nothing stored for a share
    /// Redis leaves as it is.
    pub(super) fn fallback_seed(&self, subject: &Subject, buckets: &[&Bucket], left: &[u64]) {
        let peers = self.peers.get();
        self.local.lower(subject, buckets, |i, tat, now| {
            match (buckets.get(i), left.get(i)) {
                (Some(b), Some(&remaining)) if b.policy.calendar.is_none() => {
                    seed_tat(tat, now, b.limit.shared_ns(peers), remaining, peers)
                }
                _ => tat,
            }
        });
    }

    /// The `local` fallback's view of the buckets (`proxy.usage_path`).
    pub(super) fn fallback_peek(&self, subject: &Subject, buckets: &[&Bucket]) -> Vec<LimitState> {
        with_share(buckets, self.peers.get(), |b| self.local.peek(subject, b))
    }

    /// Settle a reservation the `local` fallback admitted, on the share it
    /// was taken from (N as it is now).
    pub(crate) fn fallback_settle(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        s: tollgate_core::cost::Settle,
        admitted_us: i64,
    ) -> Vec<i64> {
        with_share(buckets, self.peers.get(), |b| {
            self.local.settle(subject, b, s, admitted_us)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tollgate_core::config::{LimiterBackend, LimiterConfig};
    use tollgate_core::limits::Limit;

    use super::super::Verdict;
    use super::*;
    use crate::limiter::{LocalLimiter, Scope};

    fn cfg(backend: LimiterBackend) -> LimiterConfig {
        // Redis without a URL: every decision is the fallback's.
        crate::limiter::fallback_only(backend)
    }

    fn bucket(per_s: u64) -> Bucket {
        Bucket::new(
            Scope::Key,
            Limit::new("b", 10, Duration::from_secs(per_s), None, None),
        )
    }

    /// Requests of `subject` admitted out of `tries`, and who decided them.
    async fn admitted(
        l: &Limiters,
        backend: LimiterBackend,
        subject: i64,
        b: &Bucket,
        tries: usize,
    ) -> (usize, Vec<&'static str>) {
        let (mut n, mut by) = (0, Vec::new());
        for _ in 0..tries {
            let deadline = Instant::now() + Duration::from_secs(1);
            match l
                .decide(&cfg(backend), &Subject::Key(subject), &[b], deadline)
                .await
            {
                Verdict::Decided(d, who) => {
                    n += usize::from(d.allowed);
                    if !by.contains(&who) {
                        by.push(who);
                    }
                }
                Verdict::Unavailable => panic!("local policy"),
            }
        }
        (n, by)
    }

    #[tokio::test]
    async fn the_fallback_admits_its_share_of_the_burst() {
        let b = bucket(3600);
        let l = Limiters::new(Arc::new(LocalLimiter::new(4)));
        let redis = LimiterBackend::Redis;
        assert_eq!(l.peers().get(), 1);
        assert_eq!(admitted(&l, redis, 1, &b, 30).await, (10, vec!["fallback"]));
        l.peers().set(2);
        assert_eq!(admitted(&l, redis, 2, &b, 30).await.0, 5);
        l.peers().set(3);
        assert_eq!(admitted(&l, redis, 3, &b, 30).await.0, 4, "rounded up");
        l.peers().set(0);
        assert_eq!(l.peers().get(), 1, "never below one");
    }

    #[tokio::test]
    async fn the_local_backend_ignores_the_peers() {
        let b = bucket(3600);
        let l = Limiters::new(Arc::new(LocalLimiter::new(4)));
        l.peers().set(2);
        let local = LimiterBackend::Local;
        assert_eq!(admitted(&l, local, 1, &b, 30).await, (10, vec!["local"]));
    }

    /// Tokens given back to a fallback bucket are the share's tokens (a
    /// share's token is N × the limit's time).
    #[test]
    fn a_settlement_gives_back_the_shares_tokens() {
        let b = bucket(3600);
        let l = Limiters::new(Arc::new(LocalLimiter::new(4)));
        l.peers().set(2);
        let k = Subject::Key(1);
        let take = |n| {
            (0..n)
                .filter(|_| l.fallback_check(&k, &[&b]).allowed)
                .count()
        };
        assert_eq!(take(10), 5);
        let back = l.fallback_settle(&k, &[&b], tollgate_core::cost::Settle::Return(2), 0);
        assert_eq!(back, vec![-2]);
        assert_eq!(take(10), 2);
    }

    /// Round 14's "Redis healthy but late": a share is lowered to what Redis
    /// last reported left / N (never raised), so the fallback admits that,
    /// not a fresh share of the burst.
    #[test]
    fn the_share_starts_from_what_redis_had_left() {
        let b = bucket(3600);
        let l = Limiters::new(Arc::new(LocalLimiter::new(4)));
        l.peers().set(2);
        let take = |k: &Subject| {
            (0..10)
                .filter(|_| l.fallback_check(k, &[&b]).allowed)
                .count()
        };
        // Plenty left in Redis: nothing stored, the share stays full.
        l.fallback_seed(&Subject::Key(1), &[&b], &[10]);
        assert!(
            l.local.is_empty(),
            "a seed that lowers nothing stores nothing"
        );
        assert_eq!(take(&Subject::Key(1)), 5);
        // Redis had 3 left: 2 for each of 2 proxies (rounded up).
        l.fallback_seed(&Subject::Key(2), &[&b], &[3]);
        assert_eq!(take(&Subject::Key(2)), 2);
        // Redis had none left: nothing.
        l.fallback_seed(&Subject::Key(3), &[&b], &[0]);
        assert_eq!(take(&Subject::Key(3)), 0);
        // Never raised: a drained share stays drained whatever Redis reports.
        l.fallback_seed(&Subject::Key(1), &[&b], &[10]);
        assert_eq!(take(&Subject::Key(1)), 0);
        // An identity's buckets and an IP's are seeded too.
        let ip = Subject::Ip("192.0.2.7".parse().expect("ip"));
        l.fallback_seed(&ip, &[&b], &[0]);
        assert_eq!(take(&ip), 0);
        l.fallback_seed(&Subject::Identity(9), &[&b], &[2]);
        assert_eq!(take(&Subject::Identity(9)), 1);
    }

    #[test]
    fn the_fallback_reports_its_share() {
        let b = bucket(60);
        let l = Limiters::new(Arc::new(LocalLimiter::new(4)));
        l.peers().set(2);
        let d = l.fallback_check(&Subject::Key(1), &[&b]);
        assert_eq!((d.limits[0].quota, d.limits[0].remaining), (5, 4));
        let peeked = l.fallback_peek(&Subject::Key(1), &[&b]);
        assert_eq!((peeked[0].quota, peeked[0].remaining), (5, 4));
        let s = shared(&b, 2);
        assert_eq!((s.id, s.slot, &s.name), (b.id, b.slot, &b.name));
        assert_eq!(&*s.policy_header, "\"b\";q=5;w=60");
    }
}
