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

use crate::cost::Settle;

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

/// Settle a cost reservation on a quota (`routes[].cost`, see
/// [`crate::cost`]): `used` of `amount` are counted in the reservation's
/// period, `reserve` of them by this request. Returns the new count and
/// the units given back or taken.
///
/// - Return `n`: the count goes down by `n`, never below 0.
/// - Take `n`: the count goes up by `n`, but never beyond `amount +
///   reserve`: a period is charged at most one reservation more than its
///   quota (admission stops at `amount`).
///
/// `lua/settle.lua` does the same for a quota's Redis key.
pub fn settle_quota(amount: u64, used: u64, reserve: u64, s: Settle) -> (u64, u64) {
    match s {
        Settle::Keep => (used, 0),
        Settle::Return(n) => {
            let given = n.min(used);
            (used - given, given)
        }
        Settle::Take(n) => {
            let room = amount.saturating_add(reserve).saturating_sub(used);
            let taken = n.min(room);
            (used + taken, taken)
        }
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

    #[test]
    fn settling() {
        assert_eq!(settle_quota(100, 30, 10, Settle::Keep), (30, 0));
        assert_eq!(settle_quota(100, 30, 10, Settle::Return(6)), (24, 6));
        // A count reset meanwhile (an admin reset): nothing below 0.
        assert_eq!(settle_quota(100, 4, 10, Settle::Return(10)), (0, 4));
        assert_eq!(settle_quota(100, 30, 10, Settle::Take(5)), (35, 5));
        // At most one reservation beyond the quota.
        assert_eq!(settle_quota(100, 95, 10, Settle::Take(990)), (110, 15));
        assert_eq!(settle_quota(100, 110, 10, Settle::Take(1)), (110, 0));
        assert_eq!(settle_quota(100, 120, 10, Settle::Take(1)), (120, 0));
        assert_eq!(
            settle_quota(u64::MAX, u64::MAX - 1, 10, Settle::Take(5)),
            (u64::MAX, 1)
        );
    }
}
