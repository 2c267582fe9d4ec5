//! One proxy's share of a limit that several proxies enforce each on its
//! own: the `on_redis_error: local` fallback of N live proxies takes 1/N of
//! every rate limit (like Tyk's distributed rate limiter), so together they
//! admit about the limit instead of N × it.

use super::Limit;

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

    proptest! {
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
