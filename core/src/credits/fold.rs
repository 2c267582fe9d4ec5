//! Folding spend rows (black-box round 4, C5). A local proxy writes one
//! `credit_adjustments` row per balance per usage flush, and every proxy
//! reads all of them when it starts: left alone, a busy balance adds a row a
//! second and a start reads millions. Old spend rows are therefore folded:
//! deleted and replaced, in one transaction, by one row per balance (two for
//! a balance with a refill: the spends of its current period, and those of
//! the periods a refill has since replaced).
//!
//! Why a proxy may skip a fold row it did not read at start, and must apply
//! one it did: a fold row holds rows at least [`fold_age`] old. A proxy that
//! was running when they were written applied each of them by id (its
//! background pass reads every row within `storage.key_refresh`), so a fold
//! row adds nothing it does not already have; a proxy that starts afterwards
//! reads the fold row instead of the rows it replaced. The start-up read is
//! one query, so it sees either the rows or their fold, never both.

use std::collections::BTreeMap;
use std::time::Duration;

use super::SubjectKind;

/// `credit_adjustments.spent_by` of a fold row. Instance names are
/// letters, digits and `-`, so no proxy writes this one.
pub const FOLDED_BY: &str = "*folded";

/// `credit_adjustments.actor` of a fold row.
pub const FOLD_ACTOR: &str = "tollgate:fold";

/// Spend rows younger than this are never folded, whatever
/// `storage.key_refresh` is.
pub const MIN_FOLD_AGE: Duration = Duration::from_secs(15 * 60);

/// How old a spend row must be to be folded: three background passes of
/// every proxy (`storage.key_refresh`), and at least [`MIN_FOLD_AGE`] (three
/// times the window the proxies read again, 300 s).
pub fn fold_age(key_refresh: Duration) -> Duration {
    key_refresh.saturating_mul(3).max(MIN_FOLD_AGE)
}

/// Whether a row is a fold row (by its `spent_by`).
pub fn is_fold(spent_by: Option<&str>) -> bool {
    spent_by == Some(FOLDED_BY)
}

/// Whether credits that moved at `moved_at_ms` (Unix ms) lie before a
/// refill period starting at `period_start_us` (µs): a refill has set the
/// balance since, so they no longer count towards it. The one rule for
/// applying rows and for folding them.
pub fn before_period(moved_at_ms: i64, period_start_us: i64) -> bool {
    moved_at_ms.saturating_mul(1000) < period_start_us
}

/// One spend row as folding sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendRow {
    pub id: i64,
    pub subject_kind: SubjectKind,
    pub subject_id: i64,
    pub delta: i64,
    /// When its credits moved (`spent_at`, else `created_at`), Unix ms.
    pub moved_at_ms: i64,
}

/// The row that replaces several spend rows of one balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fold {
    pub subject_kind: SubjectKind,
    pub subject_id: i64,
    /// The sum of the rows' deltas.
    pub delta: i64,
    /// In the same refill period as every row it replaces: the earliest
    /// `moved_at` of a current period's rows, the latest of earlier ones.
    pub spent_at: i64,
    /// The ids of the rows it replaces (at least two).
    pub ids: Vec<i64>,
}

/// The sum of a balance's rows would not fit a row (never with real
/// balances, which stay within 64 bits): they are left as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the spends of {kind} {id} sum beyond 64 bits: not folded", kind = .0.as_str(), id = .1)]
pub struct SumOutOfRange(pub SubjectKind, pub i64);

/// What [`fold`] makes of a set of rows.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Folds {
    pub folds: Vec<Fold>,
    /// Groups left as they are: their sum does not fit a row.
    pub skipped: Vec<SumOutOfRange>,
}

/// Group `rows` into folds: per balance, and for a balance with a refill
/// (`period_start_us` of the holder gives its current period's start, µs)
/// apart for the current period and the earlier ones. A group of one row is
/// left as it is (folding it would gain nothing), as is one whose sum does
/// not fit 64 bits.
pub fn fold(rows: &[SpendRow], period_start_us: impl Fn(SubjectKind, i64) -> Option<i64>) -> Folds {
    // (kind, id, before the current period) → (sum, spent_at, ids).
    type Group = (i128, i64, Vec<i64>);
    let mut groups: BTreeMap<(&str, i64, bool), Group> = BTreeMap::new();
    for r in rows {
        let earlier = period_start_us(r.subject_kind, r.subject_id)
            .is_some_and(|start| before_period(r.moved_at_ms, start));
        let g = groups
            .entry((r.subject_kind.as_str(), r.subject_id, earlier))
            .or_insert((0, r.moved_at_ms, Vec::new()));
        g.0 += i128::from(r.delta);
        g.1 = if earlier {
            g.1.max(r.moved_at_ms)
        } else {
            g.1.min(r.moved_at_ms)
        };
        g.2.push(r.id);
    }
    let mut out = Folds::default();
    for ((kind, id, _), (sum, spent_at, ids)) in groups {
        if ids.len() < 2 {
            continue;
        }
        let subject_kind = SubjectKind::parse(kind).unwrap_or(SubjectKind::Key);
        match i64::try_from(sum) {
            Ok(delta) => out.folds.push(Fold {
                subject_kind,
                subject_id: id,
                delta,
                spent_at,
                ids,
            }),
            Err(_) => out.skipped.push(SumOutOfRange(subject_kind, id)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, kind: SubjectKind, subject: i64, delta: i64, at: i64) -> SpendRow {
        SpendRow {
            id,
            subject_kind: kind,
            subject_id: subject,
            delta,
            moved_at_ms: at,
        }
    }

    #[test]
    fn a_balances_rows_fold_into_one_and_single_rows_stay() {
        use SubjectKind::{Identity, Key};
        let rows = [
            row(1, Key, 7, -3, 500),
            row(2, Key, 7, -4, 300),
            row(3, Identity, 7, -1, 100),
            row(4, Key, 7, 2, 900),
            row(5, Key, 8, -9, 100),
        ];
        let folds = fold(&rows, |_, _| None).folds;
        assert_eq!(
            folds,
            vec![Fold {
                subject_kind: Key,
                subject_id: 7,
                delta: -5,
                spent_at: 300,
                ids: vec![1, 2, 4],
            }]
        );
    }

    #[test]
    fn a_refilled_balance_keeps_its_current_period_apart() {
        use SubjectKind::Key;
        // Key 7's current refill period starts at 1 000 ms; key 8 has none.
        let start = |_: SubjectKind, id: i64| (id == 7).then_some(1_000_000);
        let rows = [
            row(1, Key, 7, -3, 200),
            row(2, Key, 7, -4, 999),
            row(3, Key, 7, -5, 1_000),
            row(4, Key, 7, -6, 1_500),
            row(5, Key, 8, -1, 200),
            row(6, Key, 8, -1, 1_500),
        ];
        let folds = fold(&rows, start).folds;
        let of = |id: i64, earlier: bool| {
            folds
                .iter()
                .find(|f| f.subject_id == id && before_period(f.spent_at, 1_000_000) == earlier)
                .cloned()
        };
        let old = of(7, true).expect("earlier periods");
        assert_eq!((old.delta, old.spent_at, old.ids), (-7, 999, vec![1, 2]));
        let now = of(7, false).expect("current period");
        assert_eq!((now.delta, now.spent_at, now.ids), (-11, 1_000, vec![3, 4]));
        // Without a refill every row counts: one fold, from its first spend.
        let k8 = folds.iter().find(|f| f.subject_id == 8).expect("key 8");
        assert_eq!((k8.delta, k8.spent_at), (-2, 200));
        assert_eq!(folds.len(), 3);
    }

    #[test]
    fn a_sum_beyond_64_bits_is_left_unfolded() {
        use SubjectKind::Key;
        let rows = [
            row(1, Key, 7, i64::MIN, 1),
            row(2, Key, 7, -1, 2),
            row(3, Key, 8, -1, 1),
            row(4, Key, 8, -1, 2),
        ];
        let f = fold(&rows, |_, _| None);
        assert_eq!(f.skipped, vec![SumOutOfRange(Key, 7)]);
        assert_eq!(f.folds.len(), 1);
        assert_eq!((f.folds[0].subject_id, f.folds[0].delta), (8, -2));
        // The opposite signs cancel: in range.
        let rows = [row(1, Key, 7, i64::MIN, 1), row(2, Key, 7, 1, 2)];
        assert_eq!(fold(&rows, |_, _| None).folds[0].delta, i64::MIN + 1);
    }

    #[test]
    fn rows_are_folded_only_when_every_proxy_has_read_them() {
        assert_eq!(fold_age(Duration::from_secs(10)), MIN_FOLD_AGE);
        assert_eq!(
            fold_age(Duration::from_secs(600)),
            Duration::from_secs(1_800)
        );
        assert_eq!(fold_age(Duration::MAX), Duration::MAX);
        assert!(is_fold(Some(FOLDED_BY)));
        assert!(!is_fold(Some("1234-abcdef012345")) && !is_fold(None));
        assert!(before_period(999, 1_000_000) && !before_period(1_000, 1_000_000));
    }
}
