//! Calendar quotas: a limit that counts uses within a calendar period (a
//! day, a week, a month or a year in an IANA time zone, starting on an
//! anchor day) instead of refilling continuously like a token bucket.
//!
//! - [`QuotaSpec`] is what a limit declares besides its amount (`quota`,
//!   stored as the limit's `rate`): `period`, `anchor`, `time_zone`.
//! - [`Calendar`] is a spec checked and compiled once (the time zone looked
//!   up in the bundled tz database); [`Calendar::bounds`] gives the period
//!   containing an instant, in µs since the Unix epoch.
//! - [`check_quota`] is the counting rule both limiter backends share.

pub mod adjust;
pub mod period;
pub mod redis_keys;

use serde::{Deserialize, Serialize};

pub use period::{Anchor, Calendar, Period, PeriodBounds};

/// The calendar part of a quota limit: `period`, `anchor`, `time_zone`.
/// The amount is the limit's `rate`; its `per` is the period's longest
/// length ([`Period::nominal`]), not used by the counting.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    pub period: Period,
    /// Day of month `1..=31` (month), weekday (`monday`…, week), `MM-DD`
    /// (year); none for a day. Default: the 1st / Monday / `01-01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
    /// IANA time zone name; default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// The outcome of checking one quota for one request, nothing taken yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaCheck {
    pub allowed: bool,
    /// The used count to store if the whole request is admitted.
    pub new_used: u64,
    /// Uses left after this request (admitted) or now (refused).
    pub remaining: u64,
}

/// Count one request costing `cost` against a quota of `amount` of which
/// `used` is used in the current period: admitted if it fits.
pub fn check_quota(amount: u64, used: u64, cost: u64) -> QuotaCheck {
    match used.checked_add(cost) {
        Some(needed) if needed <= amount => QuotaCheck {
            allowed: true,
            new_used: needed,
            remaining: amount - needed,
        },
        _ => QuotaCheck {
            allowed: false,
            new_used: used,
            remaining: amount.saturating_sub(used),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting() {
        assert_eq!(
            check_quota(3, 0, 1),
            QuotaCheck {
                allowed: true,
                new_used: 1,
                remaining: 2
            }
        );
        assert_eq!(check_quota(3, 2, 1).remaining, 0);
        let c = check_quota(3, 3, 1);
        assert!(!c.allowed);
        assert_eq!((c.new_used, c.remaining), (3, 0));
        assert!(!check_quota(3, 1, 3).allowed);
        assert!(!check_quota(u64::MAX, u64::MAX, 1).allowed);
        // Used above the amount (the amount was lowered): refused, 0 left.
        assert_eq!(check_quota(3, 9, 1).remaining, 0);
    }
}
