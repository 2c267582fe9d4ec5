//! The admin API's analytics queries over a million `usage_minute` rows (and
//! 200 000 violations), on SQLite and, when `TOLLGATE_TEST_POSTGRES_URL` is
//! set, PostgreSQL.
//!
//!     eval "$(scripts/services)"; cargo bench --bench usage_queries
//!
//! The data: 7 days × 1440 minutes × 50 keys × 2 routes = 1 008 000 minute
//! rows (and their hourly rollup), as the proxies write them (batched
//! upserts), then `ANALYZE`. The queries are the ones behind
//! `/api/analytics/*` (core/src/db/usage.rs), over ranges ending mid-hour.
//! `TOLLGATE_BENCH_DAYS` (default 7) scales the data.
//! Results and the command go to benches/RESULTS.md ("Analytics queries").

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tokio::runtime::Runtime;
use tollgate_core::db::usage::{
    Counts, NewViolation, UsageFilter, UsageRow, ViolationFilter, MINUTE_MS, USAGE_BATCH_ROWS,
};
use tollgate_core::db::{Db, NewApiKey};

const KEYS: i64 = 50;
const ROUTES: [&str; 2] = ["users", "orders"];
const DAY: i64 = 86_400_000;
const VIOLATIONS: i64 = 200_000;

fn days() -> i64 {
    std::env::var("TOLLGATE_BENCH_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(7)
}

/// Fill `db` with `days` of usage ending at `end` (exclusive); returns the key ids.
async fn seed(db: &Db, end: i64, days: i64) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..KEYS {
        let (k, _) = db
            .create_key(&NewApiKey {
                name: format!("bench-{i}"),
                ..NewApiKey::default()
            })
            .await
            .expect("key");
        ids.push(k.id);
    }
    let start = end - days * DAY;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(USAGE_BATCH_ROWS);
    let mut rows = 0u64;
    let mut minute = start;
    while minute < end {
        for (ki, &key_id) in ids.iter().enumerate() {
            for (ri, route) in ROUTES.iter().enumerate() {
                let n = (minute / MINUTE_MS + ki as i64 * 7 + ri as i64 * 3) % 50 + 1;
                let limited = n % 7;
                let mut c = Counts {
                    allowed: n,
                    limited,
                    upstream_errors: i64::from(n % 23 == 0),
                    ..Counts::default()
                };
                let total = c.total();
                c.latency_buckets[0] = total / 2;
                c.latency_buckets[3] = total - total / 2 - 1;
                c.latency_buckets[7] = 1;
                c.latency_sum_us = total * 1_500;
                batch.push(UsageRow {
                    minute,
                    key_id,
                    route: route.to_string(),
                    counts: c,
                });
                if batch.len() == USAGE_BATCH_ROWS {
                    rows += db.upsert_usage(&batch).await.expect("upsert");
                    batch.clear();
                }
            }
        }
        minute += MINUTE_MS;
    }
    rows += db.upsert_usage(&batch).await.expect("upsert");
    let mut violations = Vec::with_capacity(1_000);
    for i in 0..VIOLATIONS {
        violations.push(NewViolation {
            at: start + i * (days * DAY / VIOLATIONS),
            key_id: (i % 5 != 0).then(|| ids[(i % KEYS) as usize]),
            route: ROUTES[(i % 2) as usize].to_string(),
            method: "GET".into(),
            path: format!("/api/{}/{i}", ROUTES[(i % 2) as usize]),
            client_ip: "10.1.2.3".into(),
            limit_name: Some("minute".into()),
            status: 429,
        });
        if violations.len() == 1_000 {
            db.insert_violations(&violations).await.expect("violations");
            violations.clear();
        }
    }
    db.insert_violations(&violations).await.expect("violations");
    db.analyze_usage().await.expect("analyze");
    eprintln!(
        "seeded {rows} usage rows and {VIOLATIONS} violations in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    ids
}

fn range(end: i64, span: i64) -> UsageFilter {
    UsageFilter {
        from: end - span,
        to: end,
        ..UsageFilter::default()
    }
}

fn queries(c: &mut Criterion, rt: &Runtime, name: &str, db: &Db, end: i64, ids: &[i64]) {
    let days = days();
    let mut g = c.benchmark_group(format!("analytics/{name}"));
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    let key = ids[7];

    for (label, span) in [("1h", 3_600_000), ("24h", DAY), ("all", days * DAY)] {
        g.bench_function(format!("summary {label}"), |b| {
            b.iter(|| rt.block_on(async { black_box(db.usage_totals(&range(end, span)).await) }))
        });
    }
    g.bench_function("timeseries 24h step 5m", |b| {
        b.iter(|| {
            rt.block_on(async { black_box(db.usage_timeseries(&range(end, DAY), 300_000).await) })
        })
    });
    g.bench_function("timeseries 7d step 1h, one key", |b| {
        let f = UsageFilter {
            key_id: Some(key),
            ..range(end, 7 * DAY)
        };
        b.iter(|| rt.block_on(async { black_box(db.usage_timeseries(&f, 3_600_000).await) }))
    });
    g.bench_function("timeseries 24h step 5m, one route", |b| {
        let f = UsageFilter {
            route: Some("orders".into()),
            ..range(end, DAY)
        };
        b.iter(|| rt.block_on(async { black_box(db.usage_timeseries(&f, 300_000).await) }))
    });
    g.bench_function("key usage by route 7d", |b| {
        let f = UsageFilter {
            key_id: Some(key),
            ..range(end, 7 * DAY)
        };
        b.iter(|| rt.block_on(async { black_box(db.usage_by_route(&f).await) }))
    });
    g.bench_function("top keys 24h", |b| {
        b.iter(|| rt.block_on(async { black_box(db.top_keys(end - DAY, end, 10).await) }))
    });
    g.bench_function("violations 24h page 1", |b| {
        let f = ViolationFilter {
            from: end - DAY,
            to: end,
            limit: 50,
            ..ViolationFilter::default()
        };
        b.iter(|| rt.block_on(async { black_box(db.list_violations(&f).await) }))
    });
    g.bench_function("violations 7d one key page 1", |b| {
        let f = ViolationFilter {
            from: end - 7 * DAY,
            to: end,
            key_id: Some(key),
            limit: 50,
            ..ViolationFilter::default()
        };
        b.iter(|| rt.block_on(async { black_box(db.list_violations(&f).await) }))
    });
    g.finish();

    // The write path at this size: one batch of 500 rows into the table.
    let batch: Vec<UsageRow> = (0..USAGE_BATCH_ROWS as i64)
        .map(|i| UsageRow {
            minute: end - MINUTE_MS,
            key_id: ids[(i % KEYS) as usize],
            route: format!("flush-{}", i / KEYS),
            counts: Counts {
                allowed: 1,
                latency_buckets: {
                    let mut b = [0; tollgate_core::db::LATENCY_BUCKETS];
                    b[0] = 1;
                    b
                },
                ..Counts::default()
            },
        })
        .collect();
    let mut g = c.benchmark_group(format!("flush/{name}"));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("upsert 500 rows (one statement)", |b| {
        b.iter(|| rt.block_on(async { black_box(db.upsert_usage(&batch).await) }))
    });
    g.finish();
}

/// The request path's share: one `UsageRecorder::record` (in-memory
/// aggregation under a short shard lock).
fn record(c: &mut Criterion) {
    use std::sync::Arc;
    use tollgate_proxy::usage::{UsageEvent, UsageRecorder};
    let recorder = UsageRecorder::new();
    let route: Arc<str> = Arc::from("users");
    let event = |outcome: &'static str, status: u16, key: i64| UsageEvent {
        at_ms: tollgate_core::now_ms(),
        key_id: Some(key),
        route: route.clone(),
        method: "GET",
        path: "/api/users/42",
        client_ip: Some([10, 0, 0, 1].into()),
        status,
        outcome,
        violated: if status == 429 {
            vec!["minute"]
        } else {
            Vec::new()
        },
        reason: "",
        latency_us: 1_234,
    };
    let mut g = c.benchmark_group("record");
    g.bench_function("allowed, existing row", |b| {
        b.iter(|| recorder.record(black_box(event("allowed", 200, 1))))
    });
    let mut key = 0;
    g.bench_function("allowed, 10 000 keys", |b| {
        b.iter(|| {
            key = (key + 1) % 10_000;
            recorder.record(black_box(event("allowed", 200, key)))
        })
    });
    g.bench_function("limited (kept as a violation)", |b| {
        b.iter(|| recorder.record(black_box(event("limited", 429, 2))))
    });
    g.finish();
    black_box(recorder.drain());
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let days = days();
    // The data ends at the last UTC midnight.
    let end = (tollgate_core::now_ms() / DAY) * DAY;

    // Queries end mid-hour, as "the last …" ranges do: their ends are read
    // from usage_minute, the whole hours between from usage_hour.
    let query_end = end - 23 * MINUTE_MS - 30_000;

    let dir = tempfile::tempdir().expect("tempdir");
    let lite = rt.block_on(tollgate_core::db::testing::fresh_sqlite(dir.path()));
    let ids = rt.block_on(seed(&lite, end, days));
    queries(c, &rt, "sqlite", &lite, query_end, &ids);
    rt.block_on(lite.close());

    if std::env::var("TOLLGATE_TEST_POSTGRES_URL").is_ok_and(|u| !u.is_empty()) {
        if let Some(pg) = rt.block_on(tollgate_core::db::testing::fresh_postgres()) {
            let ids = rt.block_on(seed(&pg, end, days));
            queries(c, &rt, "postgres", &pg, query_end, &ids);
            // Leave an empty database behind (test databases are dropped by
            // later runs once stale), unless asked to keep it for EXPLAIN.
            if std::env::var_os("TOLLGATE_BENCH_KEEP").is_none() {
                let _ = rt.block_on(pg.purge_usage_before(i64::MAX));
            } else {
                eprintln!("kept the PostgreSQL database {}", pg.url());
            }
            rt.block_on(pg.close());
        }
    } else {
        eprintln!("TOLLGATE_TEST_POSTGRES_URL is not set: PostgreSQL skipped");
    }
}

criterion_group!(benches, record, bench);
criterion_main!(benches);
