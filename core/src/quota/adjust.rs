//! Resetting or adjusting a quota's current period (issue #20, the admin
//! "reset / adjust quota" action): the rules the admin API and the CLI
//! share, with the same messages.
//!
//! A change is either a reset (the period's count back to 0) or a
//! `used_delta` (uses added, or given back when negative; the count never
//! goes below 0). It applies to the period current when it is made, and to
//! nothing once that period has ended. Only a quota limit of the subject
//! (its own limits or its plan's) can be changed, by name.

use crate::limits::Limit;
use crate::rules::quotas::MAX_QUOTA;

use super::{Calendar, PeriodBounds};

/// The largest `used_delta` either way: the largest quota.
pub const MAX_USED_DELTA: i64 = MAX_QUOTA as i64;

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

/// Why a quota cannot be adjusted by that name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindQuotaError {
    /// No limit of that name applies.
    #[error("no quota named {0:?} applies")]
    Missing(String),
    /// The limit is a token bucket.
    #[error("limit {0:?} is a token bucket, not a quota: only a quota has a period to reset")]
    NotAQuota(String),
}

/// The quota named `name` among `limits`.
pub fn find_quota<'a>(limits: &'a [Limit], name: &str) -> Result<&'a Limit, FindQuotaError> {
    let limit = limits
        .iter()
        .find(|l| l.name == name)
        .ok_or_else(|| FindQuotaError::Missing(name.to_string()))?;
    if !limit.is_quota() {
        return Err(FindQuotaError::NotAQuota(name.to_string()));
    }
    Ok(limit)
}

/// The period of `quota` at `now_us` (µs since the epoch): the one an
/// adjustment made now applies to. `None` for a bucket or an instant no
/// calendar covers.
pub fn current_period(quota: &Limit, now_us: i64) -> Option<PeriodBounds> {
    Calendar::compile(quota.quota.as_ref()?).bounds(now_us)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::{Period, QuotaSpec};
    use std::time::Duration;

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
    fn only_a_quota_is_found() {
        let spec = QuotaSpec {
            period: Period::Day,
            anchor: None,
            time_zone: None,
        };
        let limits = [
            Limit::new("second", 5, Duration::from_secs(1), None, None),
            Limit::new_quota("daily", 5, spec, None),
        ];
        assert_eq!(find_quota(&limits, "daily").map(|l| l.rate), Ok(5));
        assert_eq!(
            find_quota(&limits, "second"),
            Err(FindQuotaError::NotAQuota("second".into()))
        );
        assert_eq!(
            find_quota(&limits, "weekly"),
            Err(FindQuotaError::Missing("weekly".into()))
        );
        // 2026-12-01T12:00:00Z: the day's period.
        let noon = 1_796_083_200_000_000 + 12 * 3_600_000_000;
        let p = current_period(&limits[1], noon).expect("a period");
        assert_eq!(
            (p.start_us, p.end_us),
            (
                1_796_083_200_000_000,
                1_796_083_200_000_000 + 86_400_000_000
            )
        );
        assert_eq!(current_period(&limits[0], noon), None);
    }
}
