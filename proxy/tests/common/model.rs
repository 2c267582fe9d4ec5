//! One runner for the "Redis script == local model" property tests: random
//! limits and request sequences, each request decided by both backends at
//! the same instant (`check_at` and `check_at_us`), field by field.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use tollgate_core::limits::{Decision, Limit};
use tollgate_proxy::limiter::redis::{RedisLimiter, RedisLimiterOptions};
use tollgate_proxy::limiter::{Bucket, LocalLimiter, Scope, Subject};

use super::redis::service_url;

/// Three limits (the first two per key, the third per route) and a request
/// sequence: (µs since the previous request, subject 0 or 1, limit mask).
#[derive(Debug, Clone)]
pub struct Case {
    pub limits: Vec<Limit>,
    pub steps: Vec<(u64, usize, u8)>,
}

/// Cases from three limit strategies and a strategy for the gaps.
pub fn cases(
    limits: (
        impl Strategy<Value = Limit>,
        impl Strategy<Value = Limit>,
        impl Strategy<Value = Limit>,
    ),
    gap: impl Strategy<Value = u64>,
) -> impl Strategy<Value = Case> {
    (
        limits,
        prop::collection::vec((gap, 0..2usize, 1..8u8), 1..40),
    )
        .prop_map(|((a, b, c), steps)| Case {
            limits: vec![a, b, c],
            steps,
        })
}

/// Subject ids no other test (or earlier run against the same Redis) uses:
/// this run's clock, then `slot` (< 100) apart from other callers.
pub fn fresh_base(slot: i64) -> i64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    let run = i64::try_from(micros % 1_000_000_000_000).expect("fits");
    let seq = i64::try_from(SEQ.fetch_add(1, Ordering::Relaxed)).expect("fits");
    // Other test files' bases use `test * 10_000` (< 900_000).
    run * 1_000_000 + 900_000 + slot * 1_000 + (seq % 100) * 10
}

/// Runs `n` cases against the Redis at `TOLLGATE_TEST_REDIS_URL` (returns
/// without running when the service is absent and not required) and the
/// local limiter, asserting equal decisions; `tally` sees every decision.
pub fn script_equals_model(
    opts: RedisLimiterOptions,
    n: u32,
    slot: i64,
    strategy: impl Strategy<Value = Case>,
    tally: impl FnMut(&Decision),
) {
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
        ..opts
    };
    let redis = rt.block_on(async {
        let l = RedisLimiter::with_options(&url, opts).expect("limiter");
        l.ping().await.expect("ping");
        l
    });
    let mut runner = TestRunner::new(ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let tally = std::cell::RefCell::new(tally);
    let result = runner.run(&strategy, |case| {
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
        let base = fresh_base(slot);
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
            (tally.borrow_mut())(&want);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
