//! A request that counts as `n` (the verify API's `cost`): each bucket takes
//! `n ×` its limit's own cost.
//!
//! The bucket keeps its identity (`id`, `slot`, `name`: the same tokens in
//! the local store and in Redis) and its units (cost changes neither the
//! emission interval nor the capacity); only the fingerprint differs, so the
//! Redis over-limit cache never serves a refusal made for another cost. A
//! Redis lease taken at one cost is dropped when the next request of the
//! subject has another (fewer admissions, never more; see
//! `redis::lease`).

use super::Bucket;

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tollgate_core::limits::Limit;

    use crate::limiter::{LocalLimiter, Scope, Subject};

    use super::*;

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
