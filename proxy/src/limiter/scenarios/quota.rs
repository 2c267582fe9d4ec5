//! The shared scenario table's quota rows (see [`super::scenarios`]):
//! calendar quotas alone, with buckets (all-or-nothing both ways), with a
//! cost, per subject. Every quota is anchored on today (in its time zone),
//! so its period began at today's midnight and ends a month or more later:
//! the local and the Redis run fall in the same period.
//!
//! Test support only: not used by the proxy itself.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use tollgate_core::limits::Limit;
use tollgate_core::quota::{Period, QuotaSpec};

use super::{request as step, Scenario, SubjectSpec, HOUR};
use crate::limiter::{Bucket, Scope};

/// A monthly quota anchored on today's day of month in `tz`.
pub fn monthly_from_today(name: &str, amount: u64, tz: &str, cost: Option<u64>) -> Limit {
    let day = TimeZone::get(tz)
        .map(|z| Timestamp::now().to_zoned(z).day())
        .unwrap_or(1);
    Limit::new_quota(
        name,
        amount,
        QuotaSpec {
            period: Period::Month,
            anchor: Some(day.to_string()),
            time_zone: Some(tz.into()),
        },
        cost,
    )
}

pub fn scenarios() -> Vec<Scenario> {
    use SubjectSpec::{Ip, Key};
    let k0 = Key(0);
    vec![
        Scenario {
            name: "quota admits its amount, then refuses",
            buckets: vec![Bucket::new(
                Scope::Key,
                monthly_from_today("monthly", 3, "UTC", None),
            )],
            steps: vec![
                step(k0, &[0], true),
                step(k0, &[0], true),
                step(k0, &[0], true),
                step(k0, &[0], false),
                step(k0, &[0], false),
            ],
        },
        Scenario {
            name: "quota and buckets are all-or-nothing",
            buckets: vec![
                Bucket::new(
                    Scope::Key,
                    monthly_from_today("monthly", 3, "Europe/Paris", None),
                ),
                Bucket::new(
                    Scope::Route("users"),
                    Limit::new("small", 1, HOUR, Some(1), None),
                ),
                Bucket::new(Scope::Key, Limit::new("big", 100, HOUR, None, None)),
            ],
            steps: vec![
                step(k0, &[2, 0], true),
                step(k0, &[1, 0], true),
                // The bucket refuses: the quota keeps its last use.
                step(k0, &[1, 0], false),
                step(k0, &[1, 0], false),
                step(k0, &[2, 0], true),
                // The quota refuses: "big" keeps its tokens (98 left).
                step(k0, &[2, 0], false),
                step(k0, &[2, 0], false),
                step(k0, &[2], true),
            ],
        },
        Scenario {
            name: "quota counts the cost",
            buckets: vec![Bucket::new(
                Scope::Key,
                monthly_from_today("tokens", 10, "America/New_York", Some(4)),
            )],
            steps: vec![
                step(k0, &[0], true),
                step(k0, &[0], true),
                step(k0, &[0], false),
            ],
        },
        Scenario {
            name: "quotas per subject",
            buckets: vec![Bucket::new(
                Scope::Key,
                monthly_from_today("monthly", 1, "UTC", None),
            )],
            steps: vec![
                step(Key(0), &[0], true),
                step(Key(0), &[0], false),
                step(Key(1), &[0], true),
                step(Ip(1), &[0], true),
                step(Ip(1), &[0], false),
                step(Key(1), &[0], false),
            ],
        },
    ]
}
