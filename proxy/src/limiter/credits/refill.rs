//! Refills in the limiter (rules in `tollgate_core::refill`): applying a
//! due refill to a local balance ([`apply_due`]; which holder refills how
//! is `crate::refills`). The Redis
//! side is the credits scripts' (`lua/credits.lua`,
//! `lua/credits_adjust.lua`), given [`args`].

use tollgate_core::refill::{due, Refill};

use super::Balance;

/// Set `b` to the refill's amount if its period started after the last
/// refill (`wall_us`: the wall clock in µs). Returns whether it refilled.
pub fn apply_due(b: &mut Balance, refill: Option<&Refill>, wall_us: i64) -> bool {
    let Some(r) = refill else {
        return false;
    };
    let Some(start) = r.period_start_us(wall_us) else {
        return false;
    };
    if !due(b.refilled, start) {
        return false;
    }
    b.credits = r.amount;
    b.refilled = Some(start);
    true
}

/// The Redis scripts' refill arguments: the amount (`-1`: none) and the
/// current period's start in seconds.
pub fn args(refill: Option<&Refill>, wall_us: i64) -> (i64, i64) {
    refill
        .and_then(|r| Some((r.amount, r.period_start_secs(wall_us)?)))
        .unwrap_or((-1, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::refill::RefillSpec;

    #[test]
    fn a_refill_sets_the_balance_once_per_period() {
        let r = Refill::new(&RefillSpec {
            amount: Some(5),
            every: Some("1h".into()),
            ..Default::default()
        })
        .expect("valid");
        let hour = 3_600_000_000;
        let mut b = Balance::default();
        assert!(apply_due(&mut b, Some(&r), hour + 10));
        assert_eq!(b.credits, 5);
        b.credits = 1;
        assert!(!apply_due(&mut b, Some(&r), 2 * hour - 1));
        assert_eq!(b.credits, 1, "the same period: not again");
        assert!(!apply_due(&mut b, Some(&r), hour - 1), "a lagging clock");
        assert!(apply_due(&mut b, Some(&r), 2 * hour));
        assert_eq!(b.credits, 5, "set, not added");
        assert!(!apply_due(&mut b, None, 9 * hour));
        assert_eq!(args(Some(&r), 2 * hour + 5), (5, 7_200));
        assert_eq!(args(None, 2 * hour), (-1, 0));
    }
}
