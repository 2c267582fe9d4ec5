//! Resetting or adjusting a quota's current period (issue #20, the admin
//! "reset / adjust quota" action): the rules the admin API and the CLI
//! share, with the same messages.
//!
//! A change is either a reset (the period's count back to 0) or a
//! `used_delta` (uses added, or given back when negative; the count never
//! goes below 0). It applies to the period current when it is made, and to
//! nothing once that period has ended. Only a quota limit of the subject
//! (its own limits or its plan's) can be changed, by name.

/// The largest `used_delta` either way: the largest quota
/// (`rules::quotas::MAX_QUOTA`, 2^50; a test keeps them equal).
pub const MAX_USED_DELTA: i64 = 1 << 50;

/// What an adjustment does to the count of its period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaChange {
    /// The count back to 0.
    Reset,
    /// Uses added (negative: given back), the count floored at 0.
    Delta(i64),
}

impl QuotaChange {
    /// The change a request asks for: exactly one of `reset: true` and a
    /// `used_delta` (not 0, at most [`MAX_USED_DELTA`] either way). The
    /// error names the field.
    pub fn from_fields(
        reset: Option<bool>,
        used_delta: Option<i64>,
    ) -> Result<Self, (&'static str, String)> {
        match (reset, used_delta) {
            (Some(_), Some(_)) => Err((
                "used_delta",
                "give either reset or used_delta, not both".into(),
            )),
            (Some(true), None) => Ok(Self::Reset),
            (Some(false), None) => Err((
                "reset",
                "must be true (to reset the current period), or give used_delta instead".into(),
            )),
            (None, Some(d)) => check_used_delta(d).map(|()| Self::Delta(d)),
            (None, None) => Err((
                "reset",
                "give reset: true or a used_delta to change the current period".into(),
            )),
        }
    }

    /// The stored kind: `reset` or `delta`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Reset => "reset",
            Self::Delta(_) => "delta",
        }
    }

    /// The stored `used_delta` (0 for a reset).
    pub fn used_delta(self) -> i64 {
        match self {
            Self::Reset => 0,
            Self::Delta(d) => d,
        }
    }

    /// From the stored kind and delta; `None` for anything else.
    pub fn parse(kind: &str, used_delta: i64) -> Option<Self> {
        match kind {
            "reset" => Some(Self::Reset),
            "delta" if used_delta != 0 => Some(Self::Delta(used_delta)),
            _ => None,
        }
    }

    /// The count after this change of `used`.
    pub fn apply(self, used: u64) -> u64 {
        match self {
            Self::Reset => 0,
            Self::Delta(d) if d >= 0 => used.saturating_add(d.unsigned_abs()),
            Self::Delta(d) => used.saturating_sub(d.unsigned_abs()),
        }
    }
}

/// Check a `used_delta`: not 0, at most [`MAX_USED_DELTA`] either way.
pub fn check_used_delta(d: i64) -> Result<(), (&'static str, String)> {
    if d == 0 {
        return Err(("used_delta", "must not be 0".into()));
    }
    if d.unsigned_abs() > MAX_USED_DELTA.unsigned_abs() {
        return Err((
            "used_delta",
            format!("must be between -{MAX_USED_DELTA} and {MAX_USED_DELTA}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_change_per_request() {
        assert_eq!(
            QuotaChange::from_fields(Some(true), None),
            Ok(QuotaChange::Reset)
        );
        assert_eq!(
            QuotaChange::from_fields(None, Some(-3)),
            Ok(QuotaChange::Delta(-3))
        );
        assert_eq!(
            QuotaChange::from_fields(None, Some(MAX_USED_DELTA)),
            Ok(QuotaChange::Delta(MAX_USED_DELTA))
        );
        for (reset, delta, field) in [
            (None, None, "reset"),
            (Some(false), None, "reset"),
            (Some(true), Some(1), "used_delta"),
            (None, Some(0), "used_delta"),
            (None, Some(MAX_USED_DELTA + 1), "used_delta"),
            (None, Some(-MAX_USED_DELTA - 1), "used_delta"),
            (None, Some(i64::MIN), "used_delta"),
            (None, Some(i64::MAX), "used_delta"),
        ] {
            let e = QuotaChange::from_fields(reset, delta).expect_err("refused");
            assert_eq!(e.0, field, "{reset:?} {delta:?}");
        }
    }

    #[test]
    fn changes_apply_floored_and_saturating() {
        assert_eq!(QuotaChange::Reset.apply(7), 0);
        assert_eq!(QuotaChange::Delta(3).apply(7), 10);
        assert_eq!(QuotaChange::Delta(-3).apply(7), 4);
        assert_eq!(QuotaChange::Delta(-30).apply(7), 0);
        assert_eq!(QuotaChange::Delta(i64::MAX).apply(u64::MAX), u64::MAX);
        assert_eq!(QuotaChange::Delta(i64::MIN).apply(5), 0);
        for c in [QuotaChange::Reset, QuotaChange::Delta(-4)] {
            assert_eq!(QuotaChange::parse(c.kind(), c.used_delta()), Some(c));
        }
        assert_eq!(QuotaChange::parse("delta", 0), None);
        assert_eq!(QuotaChange::parse("Reset", 0), None);
    }

    #[test]
    fn the_largest_delta_is_the_largest_quota() {
        assert_eq!(
            MAX_USED_DELTA.unsigned_abs(),
            crate::rules::quotas::MAX_QUOTA
        );
    }
}
