//! Rebuilding the local balances from a read of every row, for a proxy
//! that could not read the database for a long time (black-box round 11:
//! a proxy stopped for longer than the fold age skipped a fold of rows it
//! had never read, and handed those credits out again). The balances become
//! what a fresh start would build, plus what this process spent and has not
//! written yet: exact whatever was applied before.

use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Duration;

use tollgate_core::credits::fold::fold_age;
use tollgate_core::db::credits::CreditAdjustment;

use super::{refill, CreditBook};

/// Test hook: the fold age in milliseconds, in place of the rule's (tests
/// of a proxy stopped past it; no test waits 15 minutes). Unset in
/// production.
pub const FOLD_AGE_ENV: &str = "TOLLGATE_TEST_FOLD_AGE_MS";

/// How old a spend row must be to be folded, for this process
/// ([`fold_age`], or [`FOLD_AGE_ENV`] in tests).
pub fn fold_age_here(key_refresh: Duration) -> Duration {
    static OVERRIDE: LazyLock<Option<Duration>> = LazyLock::new(|| {
        let ms = std::env::var(FOLD_AGE_ENV).ok()?.parse().ok()?;
        Some(Duration::from_millis(ms))
    });
    OVERRIDE.unwrap_or_else(|| fold_age(key_refresh))
}

/// Whether a gap of `gap` since the last read of the rows may have let a
/// fold replace rows this proxy never read: half the fold age (the other
/// half covers the proxies' clocks disagreeing). The background task then
/// rebuilds instead of applying what is new.
pub fn needs_rebuild(gap: Duration, key_refresh: Duration) -> bool {
    gap > fold_age_here(key_refresh) / 2
}

impl CreditBook {
    /// Set every local balance to what `rows` (every row of the table)
    /// build, as at a start, plus this process's spends of the current
    /// period not yet written. Call with the spend log's writing held
    /// ([`super::spends::SpendLog::writing`]), so no spend is in flight
    /// between the two. Spends made meanwhile are kept: each balance is set
    /// under its lock, from the spends pending then.
    pub fn rebuild_local(&self, rows: &[CreditAdjustment], wall_us: i64) {
        // A book that applies every row, this process's own too (another
        // instance name), and fold rows (not built yet).
        let fresh = CreditBook::new();
        fresh.set_refills((*self.refills()).clone());
        fresh.apply_local_at(rows, wall_us);
        let holders: HashSet<_> = {
            let mut mine = self.holders.write();
            mine.extend(fresh.holders.read().iter().copied());
            mine.clone()
        };
        for a in rows {
            if let Some(subject) = super::subject_of(a) {
                self.note_top_up(subject, a);
            }
        }
        for holder in holders {
            let refill = self.refill_of(&holder);
            let mut rebuilt = fresh
                .local
                .lock(&holder)
                .get(&holder)
                .copied()
                .unwrap_or_default();
            refill::apply_due(&mut rebuilt, refill.as_deref(), wall_us);
            let period = refill.as_deref().and_then(|r| r.period_start_us(wall_us));
            let mut map = self.local.lock(&holder);
            let b = map.entry(holder).or_default();
            rebuilt.credits = tollgate_core::credits::apply(
                rebuilt.credits,
                self.spends.pending_of(holder, period),
            );
            *b = rebuilt;
        }
        *self.applied_local.lock() = rows.iter().map(|a| a.id).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::super::spends::tests::row;
    use super::*;
    use crate::limiter::Subject;
    use tollgate_core::credits::fold::FOLDED_BY;

    /// A proxy stopped past the fold age: rows 3 and 4 (spent elsewhere)
    /// were folded with row 2 (which it had applied) into row 6 before it
    /// read them. Skipping row 6 would leave 25 credits spent twice; the
    /// rebuild gives the table's balance less its own unwritten spends.
    #[test]
    fn a_rebuild_gives_the_tables_balance_less_what_is_not_written() {
        let k = Subject::Key(1);
        let book = CreditBook::new();
        let me = book.spends.instance().to_string();
        book.apply_local(&[row(1, 100, None), row(2, -10, Some("b"))]);
        book.set_read_at(1, 2);
        // Its own spends: 5 written (row 5), then 3 not yet.
        let l = crate::limiter::LocalLimiter::new(2);
        for _ in 0..5 {
            book.spend_local(&l, &k, &[], 1);
        }
        let _ = book.spends.take();
        for _ in 0..3 {
            book.spend_local(&l, &k, &[], 1);
        }
        assert_eq!(book.local_balance(&k), 82);
        let table = [
            row(1, 100, None),
            row(5, -5, Some(&me)),
            row(6, -35, Some(FOLDED_BY)),
        ];
        // Read as usual, the fold is skipped: 25 credits too many.
        book.apply_local(&table);
        assert_eq!(book.local_balance(&k), 82);
        book.rebuild_local(&table, crate::limiter::quota::wall_now_us());
        assert_eq!(book.local_balance(&k), 100 - 5 - 35 - 3);
        // Rows read are applied once: reading them again changes nothing.
        assert_eq!(book.apply_local(&table), 0);
        assert_eq!(book.local_balance(&k), 57);
    }

    #[test]
    fn a_gap_of_half_the_fold_age_rebuilds() {
        let refresh = Duration::from_secs(1);
        assert!(!needs_rebuild(Duration::from_secs(60), refresh));
        assert!(!needs_rebuild(Duration::from_secs(450), refresh));
        assert!(needs_rebuild(Duration::from_secs(451), refresh));
        assert!(!needs_rebuild(
            Duration::from_secs(1_400),
            Duration::from_secs(1_000)
        ));
    }
}
