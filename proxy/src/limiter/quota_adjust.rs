//! Quota resets and adjustments (`quota_adjustments`, issue #20) in the
//! limiters: which count a row changes, and which rows this proxy applied.
//!
//! - A row names a key or an identity, a quota by name and the period it
//!   applies to. Its count is the one a request counts in: an identity's
//!   row changes the identity's shared count of `p:<name>`
//!   (`tg:{i7}:p:monthly:q-…` in Redis); a key's row changes the key's own
//!   count (`tg:{k42}:p:daily:q-…`, or `tg:{i7}:k42:p:daily:q-…` for a key
//!   of identity 7). Route quotas (`r:<route>:<name>`) are not adjusted.
//! - **Local**: each process applies each row once to its own count
//!   ([`LocalLimiter::adjust_quota`](super::LocalLimiter::adjust_quota));
//!   always, so the `local` fallback counts it too.
//! - **Redis**: one script call per row and proxy (`lua/quota_adjust.lua`):
//!   `SET … NX` of a marker named by the row's id, and only if that set, the
//!   reset or the delta, in the same atomic step. Whichever proxy sends it
//!   first applies it; the others' calls change nothing.
//! - Every proxy drops its cached Redis refusals of the row's subjects once
//!   it has sent the row (see `OverLimitCache::forget_where`).

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;
use tollgate_core::credits::SubjectKind;
use tollgate_core::db::quota_adjustments::QuotaAdjustment;
use tollgate_core::limits::{Limit, LimitScope};
use tollgate_core::quota::{Period, QuotaSpec};

use super::identity::subject_for;
use super::{Bucket, Scope, Subject};

/// The subject and the quota bucket an adjustment changes.
#[derive(Debug, Clone)]
pub struct Target {
    pub subject: Subject,
    /// `p:<name>`, identity-scoped for an identity's row. Only its name,
    /// slot and scope matter (the period is the row's).
    pub bucket: Bucket,
}

/// Where `a` applies; `key_identity` is the identity of the key a key's
/// row names (its count lives under the identity's hash tag).
pub fn target(a: &QuotaAdjustment, key_identity: Option<i64>) -> Target {
    let (subject, scope) = match a.subject_kind {
        SubjectKind::Identity => (Subject::Identity(a.subject_id), LimitScope::Identity),
        SubjectKind::Key => (subject_for(a.subject_id, key_identity), LimitScope::Key),
    };
    let spec = QuotaSpec {
        period: Period::Day,
        anchor: None,
        time_zone: None,
    };
    let mut limit = Limit::new_quota(a.quota.clone(), 1, spec, None);
    limit.scope = scope;
    Target {
        subject,
        bucket: Bucket::new(Scope::Key, limit),
    }
}

/// Whether a cached refusal of `cached` may be one `target`'s row changes:
/// every subject of the identity for an identity's row, the key alone or as
/// a member for a key's.
pub fn concerns(target: &Subject, cached: &Subject) -> bool {
    match (*target, *cached) {
        (Subject::Identity(i), Subject::Identity(j) | Subject::Member { identity: j, .. }) => {
            i == j
        }
        (
            Subject::Key(k) | Subject::Member { key: k, .. },
            Subject::Key(j) | Subject::Member { key: j, .. },
        ) => k == j,
        _ => false,
    }
}

/// The rows one proxy applied: locally by id, in Redis by id and instance.
#[derive(Debug, Default)]
pub struct QuotaAdjustBook {
    applied_local: Mutex<HashSet<i64>>,
    applied_redis: Mutex<HashMap<i64, String>>,
}

impl QuotaAdjustBook {
    /// Mark `id` applied locally; whether it was new.
    pub fn first_local(&self, id: i64) -> bool {
        self.applied_local.lock().insert(id)
    }

    /// The rows not yet sent to the Redis at `target`.
    pub fn pending_redis<'a>(
        &self,
        rows: &'a [QuotaAdjustment],
        target: &str,
    ) -> Vec<&'a QuotaAdjustment> {
        let applied = self.applied_redis.lock();
        rows.iter()
            .filter(|a| applied.get(&a.id).is_none_or(|t| t != target))
            .collect()
    }

    /// Remember that the Redis at `target` has row `id` applied.
    pub fn applied_in_redis(&self, id: i64, target: &str) {
        self.applied_redis.lock().insert(id, target.to_string());
    }

    /// Forget the rows no longer read (their period ended): memory stays
    /// bounded by the rows of running periods.
    pub fn forget_others(&self, still_read: &HashSet<i64>) {
        self.applied_local
            .lock()
            .retain(|id| still_read.contains(id));
        self.applied_redis
            .lock()
            .retain(|id, _| still_read.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::redis::bucket_key;
    use tollgate_core::quota::adjust::QuotaChange;
    use tollgate_core::quota::PeriodBounds;

    fn row(kind: SubjectKind, id: i64) -> QuotaAdjustment {
        QuotaAdjustment {
            id: 1,
            subject_kind: kind,
            subject_id: id,
            quota: "daily".into(),
            period: PeriodBounds {
                start_us: 0,
                end_us: 1,
            },
            change: QuotaChange::Reset,
            created_at: 0,
            actor: String::new(),
        }
    }

    /// The count a row changes is the one requests count in (the same
    /// Redis key as `redis::script::bucket_key` gives a request's quota).
    #[test]
    fn a_row_targets_the_requests_count() {
        let t = target(&row(SubjectKind::Key, 42), None);
        assert_eq!(bucket_key(&t.subject, &t.bucket), "tg:{k42}:p:daily");
        let t = target(&row(SubjectKind::Key, 42), Some(7));
        assert_eq!(bucket_key(&t.subject, &t.bucket), "tg:{i7}:k42:p:daily");
        let t = target(&row(SubjectKind::Identity, 7), None);
        assert_eq!(bucket_key(&t.subject, &t.bucket), "tg:{i7}:p:daily");
        let member = Subject::Member {
            key: 42,
            identity: 7,
        };
        let shared = target(&row(SubjectKind::Identity, 7), None).bucket;
        assert_eq!(bucket_key(&member, &shared), "tg:{i7}:p:daily");
        // The same slot as the request path's bucket of that name.
        let spec = QuotaSpec {
            period: Period::Month,
            anchor: None,
            time_zone: None,
        };
        let request = Bucket::new(Scope::Key, Limit::new_quota("daily", 5, spec, None));
        assert_eq!(request.slot, t.bucket.slot);
    }

    /// The admin API reads the counts and balances at core's keys: the
    /// same as the limiter's.
    #[test]
    fn cores_keys_are_the_limiters() {
        use crate::limiter::quota::period_suffix;
        use crate::limiter::redis::credits::balance_key;
        use tollgate_core::quota::redis_keys::{key_balance_key, quota_count_key, Holder};
        let p = PeriodBounds {
            start_us: 1_796_083_200_000_000,
            end_us: 1_796_169_600_000_000,
        };
        let full = |s: &Subject, b: &Bucket| format!("{}{}", bucket_key(s, b), period_suffix(&p));
        let own = target(&row(SubjectKind::Key, 42), None).bucket;
        let shared = target(&row(SubjectKind::Identity, 7), None).bucket;
        let m = Subject::Member {
            key: 42,
            identity: 7,
        };
        for (holder, subject, bucket) in [
            (Holder::of_key(42, None, false), Subject::Key(42), &own),
            (Holder::of_key(42, None, true), Subject::Key(42), &shared),
            (Holder::of_key(42, Some(7), false), m, &own),
            (Holder::of_key(42, Some(7), true), m, &shared),
            (Holder::Identity(7), Subject::Identity(7), &shared),
        ] {
            assert_eq!(
                quota_count_key(holder, "daily", p.start_us),
                full(&subject, bucket),
                "{holder:?}"
            );
        }
        assert_eq!(key_balance_key(42, None), balance_key(&Subject::Key(42)));
        assert_eq!(key_balance_key(42, Some(7)), balance_key(&m));
    }

    #[test]
    fn refusals_concerned() {
        let m = Subject::Member {
            key: 42,
            identity: 7,
        };
        assert!(concerns(&Subject::Identity(7), &m));
        assert!(concerns(&Subject::Identity(7), &Subject::Identity(7)));
        assert!(!concerns(&Subject::Identity(7), &Subject::Key(7)));
        assert!(concerns(&Subject::Key(42), &m));
        assert!(concerns(&m, &Subject::Key(42)));
        assert!(!concerns(&Subject::Key(42), &Subject::Key(43)));
        assert!(!concerns(&Subject::Key(7), &Subject::Identity(7)));
    }

    #[test]
    fn the_book_remembers_while_the_row_is_read() {
        let book = QuotaAdjustBook::default();
        assert!(book.first_local(1));
        assert!(!book.first_local(1));
        let rows = [row(SubjectKind::Key, 1)];
        assert_eq!(book.pending_redis(&rows, "a").len(), 1);
        book.applied_in_redis(1, "a");
        assert!(book.pending_redis(&rows, "a").is_empty());
        assert_eq!(book.pending_redis(&rows, "b").len(), 1, "another Redis");
        book.forget_others(&HashSet::new());
        assert!(book.first_local(1));
        assert_eq!(book.pending_redis(&rows, "a").len(), 1);
    }
}
