//! What the analytics test files (`analytics.rs`, `analytics_keys.rs`,
//! `analytics_violations.rs`) read: three keys and usage rows of known
//! counts and latencies from a fixed UTC midnight, written through the
//! database layer as the proxies write them.

use reqwest::StatusCode;
use serde_json::Value;
use tollgate_core::db::usage::{Counts, UsageRow};
use tollgate_core::db::{ApiKey, NewApiKey};
use tollgate_core::limits::Limit;

use crate::common::*;

/// A UTC midnight: every step (1m, 5m, 1h, 1d) is aligned to it.
pub const T0: i64 = 1_699_920_000_000;

pub const MIN: i64 = 60_000;

pub fn row(minute: i64, key_id: i64, route: &str, c: Counts) -> UsageRow {
    UsageRow {
        minute,
        key_id,
        route: route.into(),
        counts: c,
    }
}

/// Counts with latencies `(bucket, requests, µs each)`.
pub fn counts(
    (allowed, limited, unauthorized, forbidden, upstream_errors): (i64, i64, i64, i64, i64),
    latencies: &[(usize, i64, i64)],
) -> Counts {
    let mut c = Counts {
        allowed,
        limited,
        unauthorized,
        forbidden,
        upstream_errors,
        ..Counts::default()
    };
    for &(b, n, us) in latencies {
        c.latency_buckets[b] += n;
        c.latency_sum_us += n * us;
    }
    assert_eq!(c.latency_buckets.iter().sum::<i64>(), c.total());
    c
}

pub struct Fixture {
    pub k1: ApiKey,
    pub k2: ApiKey,
    pub k3: ApiKey,
}

/// k1 (plan free), k2 (own limits), k3 (no plan, no limits) and these rows:
///
/// | minute | key | route  | allowed | limited | 401 | 403 | 5xx | latency buckets          |
/// |--------|-----|--------|---------|---------|-----|-----|-----|--------------------------|
/// | +0     | k1  | users  | 10      | 2       |     |     |     | b0: 8 × 0.4 ms, b3: 4 × 3 ms |
/// | +1     | k1  | orders | 5       |         |     |     | 1   | b3: 5 × 3 ms, b7: 1 × 80 ms |
/// | +7     | k2  | users  | 3       | 7       |     |     |     | b0: 10 × 0.1 ms          |
/// | +7     | —   | users  |         |         | 4   | 1   |     | b0: 5 × 0.05 ms          |
/// | +65    | k1  | users  | 1       |         |     |     |     | b11: 1 × 2 s             |
///
/// The k2 row is written in two upserts (3+7 = 2+5 then 1+2): they add up.
pub async fn fixture(app: &TestApp) -> Fixture {
    let new = |name: &str| NewApiKey {
        name: name.into(),
        ..NewApiKey::default()
    };
    let (k1, _) = app
        .db
        .create_key(&NewApiKey {
            plan: Some("free".into()),
            ..new("first")
        })
        .await
        .expect("k1");
    let own = Limit {
        name: "sec".into(),
        rate: 5,
        per: std::time::Duration::from_secs(1),
        burst: Some(10),
        cost: None,
        quota: None,
        scope: Default::default(),
    };
    let (k2, _) = app
        .db
        .create_key(&NewApiKey {
            limits: Some(vec![own]),
            concurrency: Some(3),
            ..new("second")
        })
        .await
        .expect("k2");
    let (k3, _) = app.db.create_key(&new("third")).await.expect("k3");
    let rows = vec![
        row(
            T0,
            k1.id,
            "users",
            counts((10, 2, 0, 0, 0), &[(0, 8, 400), (3, 4, 3_000)]),
        ),
        row(
            T0 + MIN,
            k1.id,
            "orders",
            counts((5, 0, 0, 0, 1), &[(3, 5, 3_000), (7, 1, 80_000)]),
        ),
        row(
            T0 + 7 * MIN,
            k2.id,
            "users",
            counts((2, 5, 0, 0, 0), &[(0, 7, 100)]),
        ),
        row(
            T0 + 7 * MIN,
            0,
            "users",
            counts((0, 0, 4, 1, 0), &[(0, 5, 50)]),
        ),
        row(
            T0 + 65 * MIN,
            k1.id,
            "users",
            counts((1, 0, 0, 0, 0), &[(11, 1, 2_000_000)]),
        ),
    ];
    assert_eq!(app.db.upsert_usage(&rows).await.expect("upsert"), 5);
    let more = row(
        T0 + 7 * MIN,
        k2.id,
        "users",
        counts((1, 2, 0, 0, 0), &[(0, 3, 100)]),
    );
    assert_eq!(app.db.upsert_usage(&[more]).await.expect("upsert"), 1);
    Fixture { k1, k2, k3 }
}

pub async fn get_ok(app: &TestApp, path: &str) -> Value {
    json(app.get(path).await, StatusCode::OK).await
}

pub fn series(v: &Value, field: &str) -> Vec<i64> {
    v["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p[field].as_i64().expect("number"))
        .collect()
}
