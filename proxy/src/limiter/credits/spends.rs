//! Local spends made durable (finding B13). With the local backend the
//! balance lives in the proxy's memory; what its requests spend from each
//! balance (and what refunds give back) is collected here and written with
//! every usage flush as one `credit_adjustments` row per balance, marked
//! with this proxy instance ([`tollgate_core::db::Db::record_spends`]).
//!
//! Every local proxy applies every row exactly once by id, except the
//! spends it wrote itself (already in its balance): so a restarted proxy
//! (a new instance) rebuilds the balance as top-ups minus everything spent,
//! and N local proxies converge on one balance within a flush interval and
//! a `storage.key_refresh`. A proxy that crashes loses at most the spends
//! of its last `usage.flush_interval` (a graceful or fast stop flushes
//! them). The Redis backend never applies spend rows: Redis holds the
//! balance there.
//!
//! A balance with a refill is set to the refill's amount once per period,
//! so spends are kept per period: a row's `spent_at` lies in the period its
//! spends were made in, and rows of an earlier period are not applied to
//! the current one.

use std::collections::HashMap;

use parking_lot::Mutex;
use tollgate_core::credits::SubjectKind;
use tollgate_core::db::credits::{CreditAdjustment, NewSpend};

use crate::limiter::Subject;

/// Spends of one balance in one refill period, not yet written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub holder: Subject,
    /// The refill period's start (µs), `i64::MIN` without a refill.
    pub period: i64,
    /// What was spent (negative) or refunded (positive), net.
    pub delta: i64,
    /// When the first of them happened (Unix ms).
    pub first_ms: i64,
}

impl Pending {
    /// The row to write, `None` for a subject that has no balance row kind.
    pub fn to_row(&self) -> Option<NewSpend> {
        let (subject_kind, subject_id) = match self.holder {
            Subject::Key(id) => (SubjectKind::Key, id),
            Subject::Identity(id) => (SubjectKind::Identity, id),
            _ => return None,
        };
        Some(NewSpend {
            subject_kind,
            subject_id,
            delta: self.delta,
            spent_at: self.first_ms,
        })
    }
}

/// This proxy's spends not yet written, and its instance name in
/// `credit_adjustments.spent_by`.
#[derive(Debug)]
pub struct SpendLog {
    instance: String,
    pending: Mutex<HashMap<(Subject, i64), Pending>>,
    /// Held while spends are written (from [`Self::take`] to the write's
    /// end, see `usage::spends`) and while the balances are rebuilt from
    /// the database ([`super::CreditBook::rebuild_local`]): a rebuild never
    /// sees spends taken but not yet written.
    writing: tokio::sync::Mutex<()>,
}

impl Default for SpendLog {
    fn default() -> Self {
        Self::new()
    }
}

impl SpendLog {
    /// A log with a new instance name (one per process).
    pub fn new() -> Self {
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self {
            instance: format!("{}-{}", std::process::id(), &random[..12]),
            pending: Mutex::default(),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// The name this process writes its spends under.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Count `delta` (negative: spent, positive: refunded) against
    /// `holder`'s balance in the refill period starting at `period`.
    pub fn record(&self, holder: Subject, period: Option<i64>, delta: i64, now_ms: i64) {
        if delta == 0 {
            return;
        }
        let period = period.unwrap_or(i64::MIN);
        let mut pending = self.pending.lock();
        let p = pending.entry((holder, period)).or_insert(Pending {
            holder,
            period,
            delta: 0,
            first_ms: now_ms,
        });
        p.delta = p.delta.saturating_add(delta);
    }

    /// Hold off writing spends (and rebuilding balances) until dropped.
    pub async fn writing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writing.lock().await
    }

    /// What `holder` spent (net) in the refill period starting at `period`
    /// and is not written yet.
    pub fn pending_of(&self, holder: Subject, period: Option<i64>) -> i64 {
        let period = period.unwrap_or(i64::MIN);
        self.pending
            .lock()
            .get(&(holder, period))
            .map_or(0, |p| p.delta)
    }

    /// Take everything not yet written (net zero entries dropped).
    pub fn take(&self) -> Vec<Pending> {
        let mut pending = self.pending.lock();
        pending
            .drain()
            .map(|(_, p)| p)
            .filter(|p| p.delta != 0)
            .collect()
    }

    /// Put back what could not be written, to be written with the next
    /// flush (merged with what was spent meanwhile).
    pub fn restore(&self, taken: Vec<Pending>) {
        let mut pending = self.pending.lock();
        for t in taken {
            let p = pending.entry((t.holder, t.period)).or_insert(Pending {
                delta: 0,
                ..t.clone()
            });
            p.delta = p.delta.saturating_add(t.delta);
            p.first_ms = p.first_ms.min(t.first_ms);
        }
    }

    /// Whether a row holds this process's own spends (already in its
    /// balances).
    pub fn is_own(&self, a: &CreditAdjustment) -> bool {
        a.spent_by.as_deref() == Some(self.instance.as_str())
    }

    /// How many balances have spends not yet written.
    pub fn pending_len(&self) -> usize {
        self.pending.lock().len()
    }
}

impl super::CreditBook {
    /// Give `cost` credits back to the balance a request of `subject`
    /// spent from locally (a refund on the route's `refund_on`), recorded
    /// like a spend. Returns the balance after.
    pub fn refund_local(&self, subject: &Subject, cost: u64) -> i64 {
        self.refund_local_at(subject, cost, crate::limiter::quota::wall_now_us())
    }

    /// [`Self::refund_local`] at wall-clock time `wall_us`.
    pub fn refund_local_at(&self, subject: &Subject, cost: u64, wall_us: i64) -> i64 {
        let holder = self
            .holder_of(subject)
            .unwrap_or_else(|| super::holder(subject));
        let refill = self.refill_of(&holder);
        let cost = i64::try_from(cost).unwrap_or(i64::MAX);
        let mut map = self.local.lock(&holder);
        let b = map.entry(holder).or_default();
        if super::refill::apply_due(b, refill.as_deref(), wall_us) {
            // Spent in a period that is over: the refill replaced it.
            return b.credits;
        }
        let before = b.credits;
        b.credits = tollgate_core::credits::apply(before, cost);
        let period = refill.as_deref().and_then(|r| r.period_start_us(wall_us));
        self.spends
            .record(holder, period, b.credits - before, wall_us.div_euclid(1000));
        b.credits
    }
}

/// When a row's credits moved (Unix ms): a spend's first spend, else its
/// creation.
pub fn moved_at_ms(a: &CreditAdjustment) -> i64 {
    a.spent_at.unwrap_or(a.created_at)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn spends_are_netted_per_balance_and_period_and_put_back_on_failure() {
        let log = SpendLog::new();
        let (k, i) = (Subject::Key(1), Subject::Identity(2));
        log.record(k, None, -3, 100);
        log.record(k, None, -2, 200);
        log.record(k, None, 0, 50);
        log.record(i, Some(10), -1, 300);
        log.record(i, Some(20), -4, 400);
        log.record(i, Some(20), 4, 500);
        let mut taken = log.take();
        taken.sort_by_key(|p| p.first_ms);
        assert_eq!(taken.len(), 2, "{taken:?}");
        assert_eq!(
            (taken[0].holder, taken[0].delta, taken[0].first_ms),
            (k, -5, 100)
        );
        assert_eq!(
            (taken[1].holder, taken[1].period, taken[1].delta),
            (i, 10, -1)
        );
        assert_eq!(log.pending_len(), 0);
        // A failed write: put back, merged with a later spend.
        log.record(k, None, -1, 900);
        log.restore(taken);
        let mut again = log.take();
        again.sort_by_key(|p| p.first_ms);
        assert_eq!((again[0].delta, again[0].first_ms), (-6, 100));
        let row = again[0].to_row().expect("a key's row");
        assert_eq!(
            (row.subject_kind, row.subject_id, row.delta),
            (SubjectKind::Key, 1, -6)
        );
        let member = Pending {
            holder: Subject::Member {
                key: 1,
                identity: 2,
            },
            ..again[0].clone()
        };
        assert_eq!(member.to_row(), None);
    }

    /// A row of key 1: a top-up (`spent_by` `None`) or a spend.
    pub(in crate::limiter::credits) fn row(
        id: i64,
        delta: i64,
        spent_by: Option<&str>,
    ) -> CreditAdjustment {
        CreditAdjustment {
            id,
            subject_kind: SubjectKind::Key,
            subject_id: 1,
            delta,
            created_at: 0,
            actor: String::new(),
            spent_by: spent_by.map(str::to_string),
            spent_at: spent_by.map(|_| 0),
        }
    }

    #[test]
    fn a_book_applies_others_spends_not_its_own_and_refunds_are_recorded() {
        use crate::limiter::credits::{CreditBook, Spent};
        use crate::limiter::LocalLimiter;
        let book = CreditBook::new();
        let own = book.spends.instance().to_string();
        let k = Subject::Key(1);
        // A restart: the top-up, an earlier run's spends, another proxy's.
        let rows = [
            row(1, 10, None),
            row(2, -4, Some("earlier-run")),
            row(3, -1, Some("other")),
            row(4, -2, Some(&own)),
        ];
        assert_eq!(book.apply_local(&rows), 3);
        assert_eq!(book.local_balance(&k), 5);
        let l = LocalLimiter::new(2);
        assert!(matches!(
            book.spend_local(&l, &k, &[], 3),
            Spent::Decided(_, 2)
        ));
        assert_eq!(book.refund_local(&k, 3), 5);
        assert!(matches!(
            book.spend_local(&l, &k, &[], 1),
            Spent::Decided(_, 4)
        ));
        // Written: the net of what this process spent and gave back.
        let taken = book.spends.take();
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].holder, taken[0].delta), (k, -1));
        // Redis never gets spend rows.
        let pending = book.pending_redis(&rows, "redis://x");
        assert_eq!(pending.iter().map(|a| a.id).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn a_refilled_balance_counts_only_rows_of_its_current_period() {
        use crate::limiter::credits::CreditBook;
        use std::sync::Arc;
        use tollgate_core::refill::{Refill, RefillSpec};
        let book = CreditBook::new();
        let r = Refill::new(&RefillSpec {
            amount: Some(10),
            every: Some("1h".into()),
            ..Default::default()
        })
        .expect("valid");
        let k = Subject::Key(1);
        book.set_refills([(k, Arc::new(r))].into_iter().collect());
        let hour_ms = 3_600_000i64;
        let at = |id, delta, ms| CreditAdjustment {
            spent_at: Some(ms),
            created_at: ms + 1,
            ..row(id, delta, Some("other"))
        };
        // Restarted in the third hour: last hour's spend is not applied,
        // this hour's is (also when written after the hour's start).
        let rows = [at(1, -7, 2 * hour_ms - 1), at(2, -3, 2 * hour_ms + 5)];
        assert_eq!(book.apply_local_at(&rows, (2 * hour_ms + 10) * 1000), 1);
        assert_eq!(book.local_balance(&k), 7);
    }

    #[test]
    fn a_row_is_own_only_with_this_instances_name() {
        let (a, b) = (SpendLog::new(), SpendLog::new());
        assert_ne!(a.instance(), b.instance());
        let mut row = CreditAdjustment {
            id: 1,
            subject_kind: SubjectKind::Key,
            subject_id: 1,
            delta: -1,
            created_at: 5,
            actor: String::new(),
            spent_by: Some(a.instance().to_string()),
            spent_at: Some(3),
        };
        assert!(a.is_own(&row) && !b.is_own(&row));
        assert_eq!(moved_at_ms(&row), 3);
        row.spent_by = None;
        row.spent_at = None;
        assert!(!a.is_own(&row));
        assert_eq!(moved_at_ms(&row), 5);
    }
}
