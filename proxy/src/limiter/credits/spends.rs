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

/// When a row's credits moved (Unix ms): a spend's first spend, else its
/// creation.
pub fn moved_at_ms(a: &CreditAdjustment) -> i64 {
    a.spent_at.unwrap_or(a.created_at)
}

#[cfg(test)]
mod tests {
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
