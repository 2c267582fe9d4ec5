//! The shared scenario table's credit rows (spend, exhaust, top up, an
//! identity's shared balance, refills at period boundaries) against real
//! Redis, a single node and the 3-master cluster: Redis decides exactly
//! like the local backend (`limiter::scenarios::credits`).
//!
//! Each run uses subjects of its own (see `base`), so runs against a
//! persistent Redis never see each other's balances.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tollgate_proxy::limiter::redis::{RedisLimiter, RedisLimiterOptions};
use tollgate_proxy::limiter::scenarios::credits;

mod common;

use common::redis::single_and_cluster;

fn base(test: i64) -> i64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    let run = i64::try_from(micros % 1_000_000_000_000).expect("fits");
    let seq = i64::try_from(SEQ.fetch_add(1, Ordering::Relaxed)).expect("fits");
    run * 1_000_000 + test * 10_000 + seq * 1_000
}

async fn credit_scenarios_match_local(url: &str, test: i64) {
    // A generous timeout: a loaded box must not turn decisions into errors.
    let opts = RedisLimiterOptions {
        timeout: Duration::from_secs(5),
        ..RedisLimiterOptions::default()
    };
    let limiter = Arc::new(RedisLimiter::with_options(url, opts).expect("limiter"));
    let mut runs = tokio::task::JoinSet::new();
    for s in credits::scenarios() {
        let limiter = limiter.clone();
        runs.spawn(async move {
            let b = base(test);
            let local = credits::run_local(&s, b);
            let redis = credits::run_redis(&limiter, &s, b).await?;
            credits::compare(&s, &local, &redis).map(|()| s.name)
        });
    }
    let mut passed = Vec::new();
    while let Some(r) = runs.join_next().await {
        passed.push(r.expect("scenario task").unwrap_or_else(|e| panic!("{e}")));
    }
    assert_eq!(passed.len(), credits::scenarios().len());
    eprintln!("{url}: credit scenarios identical to the local backend: {passed:?}");
}

single_and_cluster!(
    credits_single_node: 1,
    credits_cluster: 2,
    credit_scenarios_match_local
);
