//! The Redis script decides quotas exactly like the local limiter: random
//! calendar quotas (day, week, month; anchors; time zones) beside token
//! buckets, random request sequences spanning up to days (so periods end
//! and new ones start), both backends at the same instants (`check_at_us`
//! and `check_at`, whose explicit instant is also the quotas' wall clock).

use std::time::Duration;

use proptest::prelude::*;
use tollgate_core::limits::Limit;
use tollgate_core::quota::{Period, QuotaSpec};
use tollgate_proxy::limiter::redis::RedisLimiterOptions;

mod common;

use common::redis::service_url;

fn quota(name: &'static str) -> impl Strategy<Value = Limit> {
    let zone = prop::sample::select(vec!["UTC", "Europe/Paris", "America/New_York"]);
    (
        prop_oneof![
            Just((Period::Day, None)),
            (0..7usize).prop_map(|d| (
                Period::Week,
                Some(["mon", "tue", "wed", "thu", "fri", "sat", "sun"][d].to_string())
            )),
            (1..=31u8).prop_map(|d| (Period::Month, Some(d.to_string()))),
        ],
        zone,
        1..=8u64,
        prop_oneof![3 => Just(None), 1 => (1..=3u64).prop_map(Some)],
    )
        .prop_map(move |((period, anchor), tz, amount, cost)| {
            let cost = cost.filter(|&c| c <= amount);
            Limit::new_quota(
                name,
                amount,
                QuotaSpec {
                    period,
                    anchor,
                    time_zone: Some(tz.to_string()),
                },
                cost,
            )
        })
}

fn bucket(name: &'static str) -> impl Strategy<Value = Limit> {
    (60..=7_200u64, 1..=10u64, 1..=6u64).prop_map(move |(interval_s, rate, burst)| {
        Limit::new(
            name,
            rate,
            Duration::from_secs(interval_s * rate),
            Some(burst),
            None,
        )
    })
}

#[test]
fn redis_equals_local_with_quotas() {
    let (mut admitted, mut refused_by_quota) = (0u32, 0u32);
    let strategy = common::model::cases(
        (quota("q"), bucket("b"), quota("r")),
        prop_oneof![3 => Just(0u64), 2 => 0..=600_000_000u64, 2 => 0..=43_200_000_000u64],
    );
    let opts = RedisLimiterOptions {
        lease_ttl: Duration::ZERO,
        ..RedisLimiterOptions::default()
    };
    common::model::script_equals_model(opts, 64, 2, strategy, |d| {
        if d.allowed {
            admitted += 1;
        } else if d.violated_names().iter().any(|n| *n == "q" || *n == "r") {
            refused_by_quota += 1;
        }
    });
    if service_url("TOLLGATE_TEST_REDIS_URL").is_none() {
        return;
    }
    eprintln!("quotas: redis == local over 64 cases: {admitted} admitted, {refused_by_quota} refused by a quota");
    assert!(
        admitted > 50 && refused_by_quota > 50,
        "{admitted} / {refused_by_quota}"
    );
}
