//! Settling a cost reservation on this process's quota counts
//! (`routes[].cost`; the rule is `tollgate_core::quota::settle_quota`).

use tollgate_core::cost::Settle;
use tollgate_core::quota::settle_quota;

use super::{holder, owner_key};
use crate::limiter::quota::settle_period;
use crate::limiter::{Bucket, LocalLimiter, Subject};

impl LocalLimiter {
    /// Settle `subject`'s reservation on the quotas `quotas` (each reserved
    /// `ns.cost` units at `admitted_us`, wall clock µs), under the quota
    /// shard's lock as a request counts. Only the admission's period is
    /// settled, and only while it lasts (`wall_us`): a new period is not
    /// charged for an old request. Returns, per quota, the units taken
    /// (> 0) or given back (< 0).
    pub(in crate::limiter::local) fn settle_quotas(
        &self,
        subject: &Subject,
        quotas: &[&Bucket],
        s: Settle,
        admitted_us: i64,
        wall_us: i64,
    ) -> Vec<i64> {
        let holder = holder(subject);
        let mut map = self.quotas.lock(&holder);
        let mut out = vec![0; quotas.len()];
        let Some(counts) = map.get_mut(&holder) else {
            // Nothing counted (the period rolled over and was swept, or the
            // admission was refused): nothing to give back; a take charges
            // no ended period and no unknown one.
            return out;
        };
        for (b, applied) in quotas.iter().zip(out.iter_mut()) {
            let Some(period) = settle_period(b, admitted_us, wall_us) else {
                continue;
            };
            let key = owner_key(subject, b);
            let Some(c) = counts
                .iter_mut()
                .find(|c| c.slot == b.slot && c.key == key && c.start_us == period.start_us)
            else {
                continue;
            };
            let (used, n) = settle_quota(b.policy.quota, c.used, b.limit.cost(), s);
            c.used = used;
            c.dirty |= n > 0;
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            *applied = if matches!(s, Settle::Return(_)) {
                -n
            } else {
                n
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::limits::LimitScope;

    use super::super::test_support::{daily as quota, DAY_US, NOON, S};
    use super::*;
    use crate::limiter::cost::reserving;
    use crate::limiter::Scope;

    fn daily(amount: u64, scope: LimitScope) -> Bucket {
        quota(Scope::Key, "daily", amount, scope)
    }

    fn remaining(l: &LocalLimiter, s: &Subject, b: &Bucket, wall: i64) -> u64 {
        l.peek_quota(s, b, wall).remaining
    }

    #[test]
    fn a_reservation_is_settled_in_its_period_within_one_reservation() {
        let q = daily(30, LimitScope::Key);
        let r = reserving(&q, 10);
        let l = LocalLimiter::new(2);
        let k = Subject::Key(1);
        assert!(l.check_at_wall(&k, &[&r], S, NOON).allowed);
        assert_eq!(remaining(&l, &k, &q, NOON), 20);
        // Actual cost 4: 6 back.
        assert_eq!(
            l.settle_quotas(&k, &[&r], Settle::Return(6), NOON, NOON + 1),
            vec![-6]
        );
        assert_eq!(remaining(&l, &k, &q, NOON), 26);
        // Two more reservations fit (24 used); the third does not.
        assert!(l.check_at_wall(&k, &[&r], S, NOON).allowed);
        assert!(l.check_at_wall(&k, &[&r], S, NOON).allowed);
        assert!(!l.check_at_wall(&k, &[&r], S, NOON).allowed);
        // Actual cost 1000: only up to 30 + 10 used.
        assert_eq!(
            l.settle_quotas(&k, &[&r], Settle::Take(990), NOON, NOON),
            vec![16]
        );
        assert_eq!(remaining(&l, &k, &q, NOON), 0);
        // A refund of another reservation: out of debt, still empty.
        assert_eq!(
            l.settle_quotas(&k, &[&r], Settle::Return(10), NOON, NOON),
            vec![-10]
        );
        assert_eq!(remaining(&l, &k, &q, NOON), 0);
    }

    #[test]
    fn an_ended_period_is_not_settled_and_a_new_one_is_not_charged() {
        let q = daily(30, LimitScope::Key);
        let r = reserving(&q, 10);
        let l = LocalLimiter::new(2);
        let k = Subject::Key(1);
        assert!(l.check_at_wall(&k, &[&r], S, NOON).allowed);
        let tomorrow = NOON + DAY_US;
        assert!(l.check_at_wall(&k, &[&r], S, tomorrow).allowed);
        // Yesterday's request answered today: neither day changes.
        for s in [Settle::Return(10), Settle::Take(10)] {
            assert_eq!(l.settle_quotas(&k, &[&r], s, NOON, tomorrow), vec![0]);
        }
        assert_eq!(remaining(&l, &k, &q, tomorrow), 20);
        // Never counted: nothing to settle, nothing created.
        let other = Subject::Key(2);
        assert_eq!(
            l.settle_quotas(&other, &[&r], Settle::Take(5), NOON, NOON),
            vec![0]
        );
        assert_eq!(remaining(&l, &other, &q, NOON), 30);
    }

    #[test]
    fn a_members_shared_and_own_quotas_are_settled_where_they_count() {
        let shared = daily(50, LimitScope::Identity);
        let own = quota(Scope::Key, "own", 20, LimitScope::Key);
        let (rs, ro) = (reserving(&shared, 10), reserving(&own, 10));
        let l = LocalLimiter::new(2);
        let a = Subject::Member {
            key: 1,
            identity: 9,
        };
        let b = Subject::Member {
            key: 2,
            identity: 9,
        };
        assert!(l.check_at_wall(&a, &[&rs, &ro], S, NOON).allowed);
        assert!(l.check_at_wall(&b, &[&rs, &ro], S, NOON).allowed);
        assert_eq!(
            l.settle_quotas(&a, &[&rs, &ro], Settle::Return(7), NOON, NOON),
            vec![-7, -7]
        );
        // The identity's count gave 7 back; b's own quota did not.
        assert_eq!(remaining(&l, &b, &shared, NOON), 37);
        assert_eq!(remaining(&l, &a, &own, NOON), 17);
        assert_eq!(remaining(&l, &b, &own, NOON), 10);
    }
}
