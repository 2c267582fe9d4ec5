//! Resetting or adjusting a quota (issue #20): which quota a name means
//! among the limits that apply, and the period a change made now applies to
//! (the counting rules of a change: [`crate::quota::adjust`]).

use crate::limits::Limit;
use crate::quota::{Calendar, PeriodBounds};

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
