//! Calendar quotas in a Redis decision (see [`crate::limiter::quota`]).

use std::time::Duration;

use tollgate_core::limits::Decision;

use super::LimitTimes;
use crate::limiter::quota::{bounds, calendar_states};
use crate::limiter::Bucket;

/// [`calendar_states`](crate::limiter::quota::calendar_states) for a Redis decision, and the quotas' times for
/// the over-limit cache: a refusal holds until the period ends.
pub fn redis_calendar(
    buckets: &[&Bucket],
    decision: &mut Decision,
    times: &mut [LimitTimes],
    now_us: i64,
) {
    calendar_states(buckets, decision, now_us);
    for ((b, s), t) in buckets.iter().zip(&decision.limits).zip(times.iter_mut()) {
        if b.policy.calendar.is_some() {
            let to_end = bounds(b, now_us).map_or(Duration::ZERO, |p| {
                Duration::from_micros(u64::try_from(p.end_us.saturating_sub(now_us)).unwrap_or(0))
            });
            t.reset = to_end;
            t.retry = Some(if s.violated { to_end } else { Duration::ZERO });
        }
    }
}
