//! A quota reset or adjustment applied to this process's count (see
//! [`crate::limiter::quota_adjust`]).

use tollgate_core::quota::adjust::QuotaChange;
use tollgate_core::quota::PeriodBounds;

use super::{holder, owner_key, Count};
use crate::limiter::{Bucket, LocalLimiter, Subject};

impl LocalLimiter {
    /// Change `subject`'s count of quota `b` in `period` (under the quota
    /// shard's lock, as a request counts). A count of an older period is
    /// replaced (that period is over); a later period's is left alone (the
    /// change is for a period already ended here).
    pub fn adjust_quota(
        &self,
        subject: &Subject,
        b: &Bucket,
        period: PeriodBounds,
        change: QuotaChange,
        id: i64,
    ) {
        let holder = holder(subject);
        let key = owner_key(subject, b);
        let mut map = self.quotas.lock(&holder);
        let counts = map.entry(holder).or_default();
        let fresh = |used| Count {
            slot: b.slot,
            key,
            start_us: period.start_us,
            end_us: period.end_us,
            used,
            adjusted_through: id,
            dirty: true,
        };
        match counts.iter_mut().find(|c| c.slot == b.slot && c.key == key) {
            // Already in the count (read back at start after it was applied).
            Some(c) if c.start_us == period.start_us && c.adjusted_through >= id => {}
            Some(c) if c.start_us == period.start_us => {
                c.used = change.apply(c.used);
                c.adjusted_through = id;
                c.dirty = true;
            }
            Some(c) if c.start_us < period.start_us => *c = fresh(change.apply(0)),
            Some(_) => {}
            None => counts.push(fresh(change.apply(0))),
        }
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::limits::LimitScope;

    use super::super::test_support::{daily as quota, NOON, S};
    use super::*;
    use crate::limiter::Scope;

    fn daily(amount: u64, scope: LimitScope) -> Bucket {
        quota(Scope::Key, "daily", amount, scope)
    }

    fn today(b: &Bucket) -> PeriodBounds {
        crate::limiter::quota::bounds(b, NOON).expect("period")
    }

    fn admitted(l: &LocalLimiter, s: &Subject, b: &Bucket) -> usize {
        (0..100)
            .take_while(|_| l.check_quotas_at(s, &[b], S, NOON).allowed)
            .count()
    }

    #[test]
    fn a_reset_gives_the_whole_quota_back_and_a_delta_moves_the_count() {
        let l = LocalLimiter::new(4);
        let q = daily(5, LimitScope::Key);
        let k = Subject::Key(1);
        assert_eq!(admitted(&l, &k, &q), 5);
        l.adjust_quota(&k, &q, today(&q), QuotaChange::Reset, 1);
        assert_eq!(admitted(&l, &k, &q), 5);
        l.adjust_quota(&k, &q, today(&q), QuotaChange::Delta(-2), 2);
        assert_eq!(admitted(&l, &k, &q), 2);
        // Used 5 + 3 = 8: over the quota, nothing admitted; giving back 4
        // leaves 4 used, 1 left.
        l.adjust_quota(&k, &q, today(&q), QuotaChange::Delta(3), 3);
        assert_eq!(admitted(&l, &k, &q), 0);
        l.adjust_quota(&k, &q, today(&q), QuotaChange::Delta(-4), 4);
        assert_eq!(l.peek_quota(&k, &q, NOON).remaining, 1);
        // A delta on a fresh count; given back below 0 stops at 0.
        let other = Subject::Key(2);
        l.adjust_quota(&other, &q, today(&q), QuotaChange::Delta(4), 5);
        assert_eq!(l.peek_quota(&other, &q, NOON).remaining, 1);
        l.adjust_quota(&other, &q, today(&q), QuotaChange::Delta(-40), 6);
        assert_eq!(admitted(&l, &other, &q), 5);
        // A row already folded into the count (read back at start) is not
        // applied again; a later one is.
        l.adjust_quota(&other, &q, today(&q), QuotaChange::Delta(-3), 6);
        assert_eq!(l.peek_quota(&other, &q, NOON).remaining, 0);
        l.adjust_quota(&other, &q, today(&q), QuotaChange::Delta(-2), 7);
        assert_eq!(l.peek_quota(&other, &q, NOON).remaining, 2);
    }

    #[test]
    fn only_its_period_and_its_count() {
        let l = LocalLimiter::new(4);
        let q = daily(3, LimitScope::Key);
        let k = Subject::Key(1);
        assert_eq!(admitted(&l, &k, &q), 3);
        // Yesterday's reset does not touch today's count.
        let mut yesterday = today(&q);
        yesterday.start_us -= 86_400_000_000;
        yesterday.end_us -= 86_400_000_000;
        l.adjust_quota(&k, &q, yesterday, QuotaChange::Reset, 7);
        assert_eq!(admitted(&l, &k, &q), 0);
        // An identity's shared count and a member's own are apart.
        let shared = daily(3, LimitScope::Identity);
        let m = Subject::Member {
            key: 4,
            identity: 9,
        };
        assert_eq!(admitted(&l, &m, &shared), 3);
        // The key's own count: the shared one stays spent.
        l.adjust_quota(&m, &q, today(&q), QuotaChange::Reset, 8);
        assert_eq!(admitted(&l, &m, &shared), 0);
        l.adjust_quota(&m, &q, today(&q), QuotaChange::Delta(1), 9);
        assert_eq!(l.peek_quota(&m, &q, NOON).remaining, 2);
        l.adjust_quota(
            &Subject::Identity(9),
            &shared,
            today(&q),
            QuotaChange::Reset,
            10,
        );
        assert_eq!(admitted(&l, &m, &shared), 3);
        assert_eq!(l.peek_quota(&m, &q, NOON).remaining, 2);
    }
}
