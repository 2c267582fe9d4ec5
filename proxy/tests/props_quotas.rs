//! The Redis script decides quotas exactly like the local limiter: random
//! calendar quotas (day, week, month; anchors; time zones) beside token
//! buckets, random request sequences spanning up to days (so periods end
//! and new ones start), both backends at the same instants (`check_at_us`
//! and `check_at`, whose explicit instant is also the quotas' wall clock).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use tollgate_core::limits::Limit;
use tollgate_core::quota::{Period, QuotaSpec};
use tollgate_proxy::limiter::redis::{RedisLimiter, RedisLimiterOptions};
use tollgate_proxy::limiter::{Bucket, LocalLimiter, Scope, Subject};

mod common;

use common::redis::service_url;

fn fresh_base() -> i64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    let run = i64::try_from(micros % 1_000_000_000_000).expect("fits");
    let seq = i64::try_from(SEQ.fetch_add(1, Ordering::Relaxed)).expect("fits");
    // Other test files' bases use `test * 10_000` (< 990_000) and 990_000+.
    run * 1_000_000 + 980_000 + (seq % 1_000) * 10
}

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

#[derive(Debug, Clone)]
struct Case {
    limits: Vec<Limit>,
    /// (µs since the previous request, subject, limit mask)
    steps: Vec<(u64, usize, u8)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (quota("q"), bucket("b"), quota("r")),
        prop::collection::vec(
            (
                prop_oneof![3 => Just(0u64), 2 => 0..=600_000_000u64, 2 => 0..=43_200_000_000u64],
                0..2usize,
                1..8u8,
            ),
            1..40,
        ),
    )
        .prop_map(|((a, b, c), steps)| Case {
            limits: vec![a, b, c],
            steps,
        })
}

#[test]
fn redis_equals_local_with_quotas() {
    let Some(url) = service_url("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let opts = RedisLimiterOptions {
        timeout: Duration::from_secs(5),
        lease_ttl: Duration::ZERO,
        ..RedisLimiterOptions::default()
    };
    let redis = rt.block_on(async {
        let l = RedisLimiter::with_options(&url, opts).expect("limiter");
        l.ping().await.expect("ping");
        l
    });
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let counts = std::cell::Cell::new((0u32, 0u32));
    let result = runner.run(&case(), |case| {
        let pool: Vec<Bucket> = case
            .limits
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let scope = if i < 2 { Scope::Key } else { Scope::Route("r") };
                Bucket::new(scope, l.clone())
            })
            .collect();
        let local = LocalLimiter::new(4);
        let base = fresh_base();
        let subjects = [Subject::Key(base), Subject::Key(base + 1)];
        let mut now_us = u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_micros(),
        )
        .expect("fits");
        for (i, &(gap, who, mask)) in case.steps.iter().enumerate() {
            now_us += gap;
            let buckets: Vec<&Bucket> = (0..3)
                .filter(|b| mask & (1 << b) != 0)
                .map(|b| &pool[b])
                .collect();
            let want = local.check_at(&subjects[who], &buckets, now_us * 1_000);
            let got = rt
                .block_on(redis.check_at_us(&subjects[who], &buckets, now_us))
                .map_err(|e| TestCaseError::fail(format!("redis: {e}")))?;
            prop_assert_eq!(&got, &want, "step {}", i);
            let (mut a, mut q) = counts.get();
            if want.allowed {
                a += 1;
            } else if want.violated_names().iter().any(|n| *n == "q" || *n == "r") {
                q += 1;
            }
            counts.set((a, q));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (admitted, refused_by_quota) = counts.get();
    eprintln!("quotas: redis == local over 64 cases: {admitted} admitted, {refused_by_quota} refused by a quota");
    assert!(
        admitted > 50 && refused_by_quota > 50,
        "{admitted} / {refused_by_quota}"
    );
}
