//! Calendar quotas in the limiters (see `tollgate_core::quota`): what the
//! local and the Redis backend share.
//!
//! - A quota counts uses in its current period; a request is admitted only
//!   if every limit (buckets and quotas) has room, in the same atomic step,
//!   and then every one is charged its cost.
//! - The period comes from the wall clock of the deciding proxy (local
//!   backend: this process; Redis: the proxy sending the script). Proxies
//!   whose clocks differ by `d` may count a request at a boundary in the
//!   neighbouring period for at most `d`.
//! - In Redis a quota's key names its period's start (`…:q-<start s>`), so
//!   a new period starts at 0 by itself; the key expires [`KEY_MARGIN`]
//!   after the period ends.
//! - Token leases never hold quota units: the script counts a quota on
//!   every call, so a request with a quota makes exactly one script call
//!   (its buckets' leases go back and are granted anew in that same call).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tollgate_core::limits::{Decision, Limit, LimitState};
use tollgate_core::quota::PeriodBounds;

use super::Bucket;

/// How long a quota's Redis key outlives its period.
pub const KEY_MARGIN: Duration = Duration::from_secs(3_600);

/// The wall clock in µs since the Unix epoch.
pub fn wall_now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A bucket's fingerprint with a quota's calendar in it: a changed anchor,
/// period or time zone is a changed limit (a cached refusal of the old
/// calendar is not served). Buckets keep theirs.
pub fn fingerprint(base: u64, limit: &Limit) -> u64 {
    match &limit.quota {
        None => base,
        Some(q) => super::stable_hash(&format!("{base}\u{0}{q:?}")),
    }
}

/// Whether any of the request's limits is a quota.
pub fn any_quota(buckets: &[&Bucket]) -> bool {
    buckets.iter().any(|b| b.policy.calendar.is_some())
}

/// The period of a quota bucket at `now_us`; `None` for a bucket, or an
/// instant no calendar covers (years beyond 9998: refused).
pub fn bounds(b: &Bucket, now_us: i64) -> Option<PeriodBounds> {
    b.policy.calendar.as_ref()?.bounds(now_us)
}

/// The period in which a cost reservation taken at `admitted_us` is
/// settled at `now_us`: the admission's, while it lasts. `None` once it has
/// ended (a new period starts from 0 and is not charged for an old
/// request), or for a bucket.
pub fn settle_period(b: &Bucket, admitted_us: i64, now_us: i64) -> Option<PeriodBounds> {
    bounds(b, admitted_us).filter(|p| p.end_us > now_us)
}

/// The Redis key suffix naming a period: its start in whole seconds.
pub fn period_suffix(bounds: &PeriodBounds) -> String {
    format!(":q-{}", bounds.start_us.div_euclid(1_000_000))
}

/// The Redis TTL of a quota key in ms: until the period's end plus the margin.
pub fn key_ttl_ms(bounds: &PeriodBounds, now_us: i64) -> u64 {
    let left_us = u64::try_from(bounds.end_us.saturating_sub(now_us)).unwrap_or(0);
    (left_us / 1_000)
        .saturating_add(KEY_MARGIN.as_millis() as u64)
        .max(1)
}

/// A quota's reported state: its period's length as the window, the time
/// to the period's end as the reset and (when it refused) the Retry-After.
pub fn state(
    b: &Bucket,
    bounds: Option<PeriodBounds>,
    remaining: u64,
    violated: bool,
    now_us: i64,
) -> LimitState {
    let (window_secs, to_end) = bounds.map_or((b.policy.window_secs, 0), |p| {
        (p.len_secs(), p.secs_to_end(now_us))
    });
    LimitState {
        name: b.policy.name.clone(),
        quota: b.policy.quota,
        window_secs,
        remaining,
        reset_secs: to_end,
        violated,
        retry_after_secs: match violated {
            false => 0,
            // More than the quota holds (a route's reservation): no period
            // admits it.
            true if b.limit.never_fits() => tollgate_core::limits::NEVER,
            true => to_end.max(1),
        },
    }
}

/// Put the calendar into a decision's quota states (the Redis backend
/// decides them without knowing the calendar).
pub fn calendar_states(buckets: &[&Bucket], decision: &mut Decision, now_us: i64) {
    for (b, s) in buckets.iter().zip(decision.limits.iter_mut()) {
        if b.policy.calendar.is_some() {
            *s = state(b, bounds(b, now_us), s.remaining, s.violated, now_us);
        }
    }
}

/// Whether a refusal is a quota's (problem type `quota-exhausted`): some
/// quota refused it. A refusal by buckets only stays `quota-exceeded`.
pub fn refused_by_quota(buckets: &[&Bucket], decision: &Decision) -> bool {
    !decision.allowed
        && buckets
            .iter()
            .zip(&decision.limits)
            .any(|(b, s)| s.violated && b.policy.calendar.is_some())
}

/// The names of the quotas that refused, for the problem's detail.
pub fn refusing_quotas<'a>(buckets: &[&Bucket], decision: &'a Decision) -> Vec<&'a str> {
    buckets
        .iter()
        .zip(&decision.limits)
        .filter(|(b, s)| s.violated && b.policy.calendar.is_some())
        .map(|(_, s)| &*s.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::Scope;
    use tollgate_core::quota::{Period, QuotaSpec};

    #[test]
    fn a_changed_calendar_is_a_changed_limit() {
        let q = |anchor: &str, tz: &str| {
            let spec = QuotaSpec {
                period: Period::Month,
                anchor: Some(anchor.into()),
                time_zone: Some(tz.into()),
            };
            Bucket::new(Scope::Key, Limit::new_quota("m", 5, spec, None))
        };
        let a = q("1", "UTC");
        assert_eq!(a.fingerprint, q("1", "UTC").fingerprint);
        assert_ne!(a.fingerprint, q("2", "UTC").fingerprint);
        assert_ne!(a.fingerprint, q("1", "Europe/Paris").fingerprint);
        // The same name: the same id (its Redis key), whatever the calendar.
        assert_eq!(a.id, q("2", "UTC").id);
    }
}
