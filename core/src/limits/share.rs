//! One proxy's share of a limit that several proxies enforce each on its
//! own: the `on_redis_error: local` fallback of N live proxies takes 1/N of
//! every rate limit (like Tyk's distributed rate limiter), so together they
//! admit about the limit instead of N × it.

use super::{clamp_ns, clamp_values, emission_ns, Clamped, Limit, MAX_SPAN_NS};

/// `amount` split over `peers` (at least 1): rounded up, never below 1
/// (one request) and never above `amount` (for `amount ≥ 1`). So
/// `share × peers ≥ amount`: N proxies never get less than the whole.
pub fn share(amount: u64, peers: u64) -> u64 {
    amount.div_ceil(peers.max(1)).max(1)
}

impl Limit {
    /// This limit as one of `peers` proxies enforces it alone: its rate and
    /// its burst [`share`]d (the period kept), the burst never below one
    /// request's cost (a request that fits the whole limit fits a share of
    /// it). A calendar quota is kept whole: the fallback counts it per
    /// proxy, from zero, as before. One peer: the limit unchanged.
    pub fn shared(&self, peers: u64) -> Limit {
        if peers <= 1 || self.is_quota() {
            return self.clone();
        }
        let burst = self.burst();
        Limit {
            rate: share(self.rate, peers),
            burst: Some(share(burst, peers).max(self.cost().min(burst))),
            ..self.clone()
        }
    }
}

impl Limit {
    /// [`clamp_ns`] of [`Self::shared`], without building the shared limit
    /// (no allocation: the fallback seeds its shares on Redis replies).
    pub fn shared_ns(&self, peers: u64) -> Clamped {
        if peers <= 1 || self.is_quota() {
            return clamp_ns(self);
        }
        let (burst, cost) = (self.burst(), self.cost());
        let rate = share(self.rate, peers);
        let shared_burst = share(burst, peers).max(cost.min(burst));
        clamp_values(shared_burst, cost, emission_ns(self.per, rate), MAX_SPAN_NS)
    }
}

/// The most tokens one of `peers` proxies' fallback share of a limit may
/// hold once Redis reported `remaining` tokens left in the whole limit:
/// `remaining / peers`, rounded up like [`share`], and 0 when Redis had
/// none. So the N shares together hold at most what Redis had left (plus
/// less than one token per proxy), not N × 1/N of the burst.
pub fn seeded_level(remaining: u64, peers: u64) -> u64 {
    remaining.div_ceil(peers.max(1))
}

/// A share bucket's TAT (ns; `share` its clamped numbers,
/// [`Limit::shared_ns`]) lowered at `now` to hold at most
/// [`seeded_level`]`(remaining, peers)` tokens: the TAT never moves back (a
/// seed never refills a bucket, whatever Redis reports), and never past
/// empty (`now + burst × interval`, unless it already was: a settled debt
/// stays), and unchanged when it holds no more than that already. From
/// there the share refills at its own rate (rate / N).
pub fn seed_tat(tat: u64, now: u64, share: Clamped, remaining: u64, peers: u64) -> u64 {
    let level = seeded_level(remaining, peers).min(share.burst);
    let empty_for = (share.burst - level).saturating_mul(share.interval);
    let lowered = now.saturating_add(empty_for);
    if lowered > tat.max(now) {
        lowered
    } else {
        // Already as low (or a full bucket left full): unchanged.
        tat
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_share_is_rounded_up_and_never_below_one() {
        assert_eq!(share(10, 1), 10);
        assert_eq!(share(10, 2), 5);
        assert_eq!(share(10, 3), 4);
        assert_eq!(share(1, 5), 1);
        assert_eq!(share(7, 0), 7, "no peers counts as one");
        assert_eq!(share(u64::MAX, 2), u64::MAX / 2 + 1);
    }

    #[test]
    fn a_shared_limit_splits_rate_and_burst_and_keeps_a_costly_request_fitting() {
        let l = Limit::new("m", 100, Duration::from_secs(60), Some(10), None);
        let s = l.shared(4);
        assert_eq!((s.rate, s.burst, s.per), (25, Some(3), l.per));
        assert_eq!(l.shared(1), l);
        // Burst defaulting to the rate.
        let d = Limit::new("d", 9, Duration::from_secs(1), None, None).shared(2);
        assert_eq!((d.rate, d.burst()), (5, 5));
        // A cost of 6 fits a burst of 10; its share (3) would never admit it.
        let c = Limit::new("c", 10, Duration::from_secs(1), None, Some(6)).shared(4);
        assert_eq!((c.burst(), c.never_fits()), (6, false));
        // A cost above the burst stays above it.
        let over = Limit::new("o", 10, Duration::from_secs(1), None, Some(11)).shared(4);
        assert!(over.never_fits());
    }

    #[test]
    fn a_quota_is_kept_whole() {
        let spec = crate::quota::QuotaSpec {
            period: crate::quota::Period::Month,
            anchor: None,
            time_zone: None,
        };
        let q = Limit::new_quota("q", 1000, spec, None);
        assert_eq!(q.shared(3), q);
    }

    /// Tokens a bucket with TAT `tat` holds at `now` (as a check counts them).
    fn level(c: Clamped, tat: u64, now: u64) -> u64 {
        (c.burst * c.interval).saturating_sub(tat.saturating_sub(now)) / c.interval
    }

    #[test]
    fn a_seed_lowers_a_share_to_what_redis_had_left_over_n() {
        let l = Limit::new("b", 10, Duration::from_secs(3600), None, None);
        let c = l.shared_ns(2);
        assert_eq!((c.burst, c.interval), (5, 720_000_000_000));
        let now = 1_000;
        // Redis had nothing left: the share is empty.
        let empty = seed_tat(0, now, c, 0, 2);
        assert_eq!((empty, level(c, empty, now)), (now + 5 * c.interval, 0));
        // 3 left over 2 proxies: 2 each (rounded up).
        assert_eq!(level(c, seed_tat(0, now, c, 3, 2), now), 2);
        // Plenty left: a full share stays as it is (nothing stored).
        assert_eq!(seed_tat(0, now, c, 10, 2), 0);
        // Never raised: a share holding 1 keeps 1 whatever Redis reports.
        let one = now + 4 * c.interval;
        assert_eq!(seed_tat(one, now, c, 10, 2), one);
        // One proxy: the share is the limit.
        let whole = l.shared_ns(1);
        assert_eq!(level(whole, seed_tat(0, now, whole, 7, 1), now), 7);
        assert_eq!(seeded_level(0, 0), 0);
        assert_eq!(seeded_level(7, 0), 7, "no peers counts as one");
    }

    proptest! {
        #[test]
        fn shared_ns_is_the_shared_limits_clamp(
            rate in 1u64..1_000_000,
            per_ms in 1u64..100_000_000,
            burst in proptest::option::of(1u64..1_000_000),
            cost in proptest::option::of(1u64..1_000),
            peers in 1u64..100,
        ) {
            let l = Limit::new("l", rate, Duration::from_millis(per_ms), burst, cost);
            prop_assert_eq!(l.shared_ns(peers), clamp_ns(&l.shared(peers)));
        }

        #[test]
        fn a_seed_never_exceeds_redis_over_n_and_never_grows_a_bucket(
            rate in 1u64..100_000,
            per_ms in 1u64..100_000_000,
            burst in proptest::option::of(1u64..100_000),
            peers in 1u64..50,
            now in 1u64..(1 << 60),
            used in 0u64..(1 << 52),
            remaining in 0u64..200_000,
        ) {
            let l = Limit::new("l", rate, Duration::from_millis(per_ms), burst, None);
            let c = l.shared_ns(peers);
            let tat = if used == 0 { 0 } else { now + used.min(2 * c.burst * c.interval) };
            let seeded = seed_tat(tat, now, c, remaining, peers);
            prop_assert!(seeded >= tat, "never grows a bucket");
            let after = level(c, seeded, now);
            prop_assert!(after <= level(c, tat, now));
            prop_assert!(after <= remaining.div_ceil(peers));
            prop_assert!(after == level(c, tat, now).min(seeded_level(remaining, peers)));
            // Never below empty (0 tokens) unless it already was.
            prop_assert!(seeded <= tat.max(now + c.burst * c.interval));
        }

        #[test]
        fn shares_cover_the_limit_and_stay_within_it(amount in 1u64.., peers in 1u64..10_000) {
            let s = share(amount, peers);
            prop_assert!(s >= 1);
            prop_assert!(s <= amount);
            prop_assert!(u128::from(s) * u128::from(peers) >= u128::from(amount));
            // Rounded up by less than one request per peer.
            prop_assert!(u128::from(s - 1) * u128::from(peers) < u128::from(amount));
        }
    }
}
