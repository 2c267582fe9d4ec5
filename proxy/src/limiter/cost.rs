//! What a request costs in tokens beyond its limits' own cost: a request
//! that counts as `n` (the verify API's `cost`, [`Bucket::with_cost`]), and
//! costs known from the response (`routes[].cost`, see
//! `tollgate_core::cost`): the buckets a reservation is taken from, and
//! settling it with the backend that took it.
//!
//! Both are [`Bucket::at_cost`]: the bucket keeps its identity (`id`,
//! `slot`, `name`: the same tokens in the local store and in Redis) and its
//! units (cost changes neither the emission interval nor the capacity);
//! only the fingerprint differs, so the Redis over-limit cache never serves
//! a refusal made for another cost. A Redis lease taken at one cost is
//! dropped when the next request of the subject has another (fewer
//! admissions, never more; see `redis::lease`).

use tollgate_core::config::LimiterConfig;
use tollgate_core::cost::{Basis, Settle};

use super::backends::Limiters;
use super::{Bucket, Subject};

/// The largest multiplier accepted.
pub const MAX_COST: u64 = 1_000_000;

impl Bucket {
    /// This bucket for a request that counts `n` times (`n` ≥ 1). A cost
    /// past `u64::MAX` saturates: far above any burst, it is never admitted.
    pub fn with_cost(&self, n: u64) -> Bucket {
        if n == 1 {
            return self.clone();
        }
        self.at_cost(self.limit.cost().saturating_mul(n), "cost")
    }
}

/// A copy of `b` whose requests take `reserve` tokens instead of the
/// limit's own cost: the same bucket (id, slot, name, so the same stored
/// TAT and Redis key), its own fingerprint (a refusal of a reservation is
/// cached apart from the bucket's ordinary refusals), and no leases in
/// Redis (see [`Bucket::reserved`]).
pub fn reserving(b: &Bucket, reserve: u64) -> Bucket {
    Bucket {
        reserved: true,
        ..b.at_cost(reserve, "reserve")
    }
}

pub use super::backends::{backend_of, Held, SETTLEMENTS};

impl Limiters {
    /// Settle a reservation held in `held`, taken at `admitted_us` (wall
    /// clock µs: the period of its quotas), waiting for Redis no longer
    /// than `redis_timeout`, and count it (`basis`). Never fails: an error
    /// leaves the reservation as it was (counted as `error`).
    pub async fn settle(
        &self,
        cfg: &LimiterConfig,
        held: Held,
        subject: &Subject,
        buckets: &[&Bucket],
        (s, basis): (Settle, Basis),
        admitted_us: i64,
    ) {
        let deadline = super::backends::redis_deadline(cfg);
        SETTLEMENTS.with_label_values(&[basis.label()]).inc();
        let wanted = match s {
            Settle::Take(n) => n,
            _ => 0,
        };
        let applied: Vec<i64> = match held {
            // Taken by the `local` fallback: from this proxy's share.
            Held::Local if cfg.backend == tollgate_core::config::LimiterBackend::Redis => {
                self.fallback_settle(subject, buckets, s, admitted_us)
            }
            Held::Local => self.local.settle(subject, buckets, s, admitted_us),
            Held::Redis => {
                let Some(redis) = self.redis_for(cfg) else {
                    SETTLEMENTS.with_label_values(&["error"]).inc();
                    return;
                };
                match redis
                    .settle_by(subject, buckets, s, admitted_us, deadline)
                    .await
                {
                    Ok(settled) => settled.iter().map(|s| s.applied).collect(),
                    Err(e) => {
                        tracing::debug!("settling a cost reservation: {e}");
                        SETTLEMENTS.with_label_values(&["error"]).inc();
                        return;
                    }
                }
            }
        };
        if wanted > 0
            && applied
                .iter()
                .any(|&a| u64::try_from(a).unwrap_or(0) < wanted)
        {
            SETTLEMENTS.with_label_values(&["capped"]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::{LocalLimiter, Scope, Subject};
    use std::time::Duration;
    use tollgate_core::limits::Limit;

    const S: u64 = 1_000_000_000;

    fn bucket(rate: u64, burst: u64) -> Bucket {
        Bucket::new(
            Scope::Key,
            Limit::new("hour", rate, Duration::from_secs(3600), Some(burst), None),
        )
    }

    #[test]
    fn a_reserving_bucket_is_the_same_bucket_at_another_cost() {
        let b = bucket(100, 100);
        let r = reserving(&b, 10);
        assert_eq!((r.id, r.slot, &r.name), (b.id, b.slot, &b.name));
        assert_ne!(r.fingerprint, b.fingerprint);
        assert_ne!(r.fingerprint, reserving(&b, 11).fingerprint);
        assert_eq!(r.policy.ns.cost, 10);
        assert!(r.reserved && !b.reserved);
        // Reserving and ordinary requests count on one bucket.
        let l = LocalLimiter::new(2);
        let k = Subject::Key(1);
        assert_eq!(l.check_at(&k, &[&r], S).limits[0].remaining, 90);
        assert_eq!(l.check_at(&k, &[&b], S).limits[0].remaining, 89);
    }

    #[test]
    fn local_settlement_returns_and_takes_within_one_reservation() {
        let b = bucket(100, 20);
        let r = reserving(&b, 10);
        let l = LocalLimiter::new(2);
        let k = Subject::Key(1);
        assert!(l.check_at(&k, &[&r], S).allowed);
        // Cost 4: 6 back.
        assert_eq!(l.settle_at(&k, &[&r], Settle::Return(6), S, 0, 0), vec![-6]);
        assert_eq!(l.check_at(&k, &[&b], S).limits[0].remaining, 15);
        assert!(l.check_at(&k, &[&r], S).allowed);
        // 5 left; cost 40: only 5 + 10 (one reservation of debt) taken.
        assert_eq!(l.settle_at(&k, &[&r], Settle::Take(30), S, 0, 0), vec![15]);
        let d = l.check_at(&k, &[&b], S);
        assert!(!d.allowed);
        assert_eq!(d.limits[0].remaining, 0);
        // 11 tokens of time later (36 s per token): the debt is paid and one is back.
        assert!(l.check_at(&k, &[&b], S + 11 * 36 * S).allowed);
        // A refund of a bucket that refilled meanwhile gives nothing twice.
        let m = Subject::Key(2);
        assert!(l.check_at(&m, &[&r], S).allowed);
        assert_eq!(
            l.settle_at(&m, &[&r], Settle::Return(10), S + 4 * 36 * S, 0, 0),
            vec![-6]
        );
        assert_eq!(
            l.check_at(&m, &[&b], S + 4 * 36 * S).limits[0].remaining,
            19
        );
    }

    #[test]
    fn settling_ignores_what_was_never_held() {
        let r = reserving(&bucket(10, 10), 3);
        let l = LocalLimiter::new(2);
        assert_eq!(
            l.settle_at(&Subject::Key(5), &[&r], Settle::Return(3), S, 0, 0),
            vec![0]
        );
        assert!(l.is_empty());
        assert_eq!(
            l.settle_at(&Subject::Key(5), &[&r], Settle::Keep, S, 0, 0),
            vec![0]
        );
    }

    #[test]
    fn a_cost_takes_that_many_tokens_of_the_same_bucket() {
        let b = Bucket::new(
            Scope::Key,
            Limit::new("m", 10, Duration::from_secs(60), None, None),
        );
        let three = b.with_cost(3);
        assert_eq!((three.id, three.slot, &three.name), (b.id, b.slot, &b.name));
        assert_ne!(three.fingerprint, b.fingerprint);
        let local = LocalLimiter::new(1);
        let s = Subject::Key(1);
        // 3 + 3 + 3 + 1 = 10 tokens; then neither cost fits.
        for _ in 0..3 {
            assert!(local.check(&s, &[&three]).allowed);
        }
        assert!(!local.check(&s, &[&three]).allowed);
        assert!(local.check(&s, &[&b]).allowed);
        assert!(!local.check(&s, &[&b]).allowed);
        assert_eq!(b.with_cost(1), b);
        let pricey = Bucket::new(
            Scope::Key,
            Limit::new("m", 10, Duration::from_secs(60), None, Some(u64::MAX / 2)),
        );
        let never = pricey.with_cost(3);
        assert_eq!(never.limit.cost, Some(u64::MAX));
        assert!(!local.check(&Subject::Key(2), &[&never]).allowed);
    }
}
