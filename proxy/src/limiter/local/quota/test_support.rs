//! What the local quota tests share: a clock and daily quotas.

use tollgate_core::limits::{Limit, LimitScope};
use tollgate_core::quota::{Period, QuotaSpec};

use crate::limiter::{Bucket, Scope};

/// One second on the limiter's clock (ns).
pub const S: u64 = 1_000_000_000;
/// 2026-12-01T12:00:00Z in µs.
pub const NOON: i64 = 1_796_083_200_000_000 + 12 * 3_600_000_000;
pub const DAY_US: i64 = 86_400_000_000;

/// A daily quota (UTC) named `name` of `amount` uses, in `scope`.
pub fn daily(scope: Scope<'_>, name: &str, amount: u64, limit_scope: LimitScope) -> Bucket {
    let spec = QuotaSpec {
        period: Period::Day,
        anchor: None,
        time_zone: None,
    };
    let mut l = Limit::new_quota(name, amount, spec, None);
    l.scope = limit_scope;
    Bucket::new(scope, l)
}
