//! The usage pipeline at scale, simulated (issue #19 item 6): P proxies,
//! each with its own connection pool, flush per-minute usage rows for K
//! keys × R routes into one PostgreSQL through the proxies' own write path
//! (`Db::upsert_usage`: batches of 500 rows, minute and hour upserts in one
//! transaction, rows of several proxies merged by `ON CONFLICT`), back to
//! back for D seconds, while a reader runs the dashboard's queries.
//!
//!     eval "$(scripts/services)"
//!     cargo bench --profile dev --bench usage_scale
//!
//! Environment (defaults = the shape): `TOLLGATE_BENCH_PROXIES` (10),
//! `TOLLGATE_BENCH_KEYS` (100000), `TOLLGATE_BENCH_ROUTES` (3),
//! `TOLLGATE_BENCH_SECONDS` (30). Each proxy writes one batch at a time, as
//! the flusher does. It prints the sustained rows/s, per-batch flush latency, the
//! dashboard queries' latency during the writes and the table's bytes per
//! row, then how many active keys one PostgreSQL sustains at each flush
//! interval (each active key sending on every route through every proxy in
//! every interval: the worst case). Results: benches/RESULTS.md ("Usage
//! pipeline at scale").

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_core::db::usage::{Counts, UsageFilter, UsageRow, MINUTE_MS, USAGE_BATCH_ROWS};
use tollgate_core::db::Db;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// One simulated proxy: walks its keys (every proxy sees every key, as
/// behind a load balancer) and writes a batch per 500 (key, route) rows of
/// the current minute until `stop`; returns each batch's latency.
async fn proxy(
    db: Db,
    proxy: u64,
    keys: u64,
    routes: u64,
    minute: i64,
    stop: Arc<AtomicBool>,
    rows: Arc<AtomicU64>,
) -> Vec<Duration> {
    let route_names: Vec<String> = (0..routes).map(|r| format!("route-{r}")).collect();
    let mut latencies = Vec::new();
    let mut cursor = proxy * 7_919 % keys.max(1);
    let mut batch = Vec::with_capacity(USAGE_BATCH_ROWS);
    while !stop.load(Ordering::Relaxed) {
        batch.clear();
        while batch.len() < USAGE_BATCH_ROWS {
            let key_id = 1 + (cursor % keys) as i64;
            for route in &route_names {
                let mut counts = Counts {
                    allowed: 3,
                    latency_sum_us: 4_500,
                    ..Counts::default()
                };
                counts.latency_buckets[2] = 3;
                batch.push(UsageRow {
                    minute,
                    key_id,
                    route: route.clone(),
                    counts,
                });
            }
            cursor += 1;
        }
        let started = Instant::now();
        match db.upsert_usage(&batch).await {
            Ok(n) => {
                latencies.push(started.elapsed());
                rows.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => eprintln!("proxy {proxy}: flush failed: {e}"),
        }
    }
    latencies
}

/// The dashboard meanwhile: overview totals of the last hour, top keys of
/// the last day and the last hour's series, one after the other.
async fn dashboard(db: Db, stop: Arc<AtomicBool>) -> Vec<(&'static str, Duration)> {
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let now = tollgate_core::now_ms();
        let hour = UsageFilter {
            from: now - 3_600_000,
            to: now + MINUTE_MS,
            ..UsageFilter::default()
        };
        let t = Instant::now();
        let _ = db.usage_totals(&hour).await;
        seen.push(("summary 1 h", t.elapsed()));
        let t = Instant::now();
        let _ = db.top_keys(now - 86_400_000, now + MINUTE_MS, 10).await;
        seen.push(("top keys 24 h", t.elapsed()));
        let t = Instant::now();
        let _ = db.usage_timeseries(&hour, MINUTE_MS).await;
        seen.push(("series 1 h by minute", t.elapsed()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    seen
}

async fn run() {
    let proxies = env("TOLLGATE_BENCH_PROXIES", 10);
    let keys = env("TOLLGATE_BENCH_KEYS", 100_000);
    let routes = env("TOLLGATE_BENCH_ROUTES", 3);
    let seconds = env("TOLLGATE_BENCH_SECONDS", 30);
    let Some(first) = tollgate_core::db::testing::fresh_postgres().await else {
        eprintln!("TOLLGATE_TEST_POSTGRES_URL is not set: nothing to measure");
        return;
    };
    let url = first.url().to_string();
    let minute = tollgate_core::db::usage::minute_of(tollgate_core::now_ms());
    let stop = Arc::new(AtomicBool::new(false));
    let rows = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for p in 0..proxies {
        let db = Db::connect(&url).await.expect("a proxy's pool");
        writers.spawn(proxy(
            db,
            p,
            keys,
            routes,
            minute,
            stop.clone(),
            rows.clone(),
        ));
    }
    let reader = tokio::spawn(dashboard(first.clone(), stop.clone()));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut batches = Vec::new();
    while let Some(r) = writers.join_next().await {
        batches.extend(r.expect("writer"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let queries = reader.await.expect("reader");
    let written = rows.load(Ordering::Relaxed);
    batches.sort();
    let rate = written as f64 / elapsed;

    println!(
        "usage pipeline at scale: {proxies} proxies × {keys} keys × {routes} routes, {seconds} s"
    );
    println!(
        "  written: {written} minute rows (+ their hour rows) in {elapsed:.1} s = {rate:.0} rows/s"
    );
    println!(
        "  flush of one {USAGE_BATCH_ROWS}-row batch: p50 {} · p99 {} · max {} ({} batches)",
        ms(percentile(&batches, 0.5)),
        ms(percentile(&batches, 0.99)),
        ms(batches.last().copied().unwrap_or_default()),
        batches.len()
    );
    for name in ["summary 1 h", "top keys 24 h", "series 1 h by minute"] {
        let mut d: Vec<Duration> = queries
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, d)| *d)
            .collect();
        d.sort();
        println!(
            "  dashboard during the writes, {name}: p50 {} · p99 {} · max {} ({} runs)",
            ms(percentile(&d, 0.5)),
            ms(percentile(&d, 0.99)),
            ms(d.last().copied().unwrap_or_default()),
            d.len()
        );
    }
    let (table_rows, bytes) = size(&first).await;
    if table_rows > 0 {
        println!(
            "  usage_minute + usage_hour on disk: {:.1} MB for {table_rows} minute rows = {:.0} bytes per minute row",
            bytes as f64 / 1e6,
            bytes as f64 / table_rows as f64
        );
    }
    println!(
        "  sustained active keys (each on every route through every proxy in every interval):"
    );
    for interval in [5u64, 15, 60] {
        let per_interval = rate * interval as f64;
        let active = per_interval / (proxies * routes) as f64;
        println!(
            "    flush every {interval:>2} s: {active:>9.0} active keys ({:.1} % of {keys})",
            100.0 * active / keys as f64
        );
    }
    let _ = first.purge_usage_before(i64::MAX).await;
    first.close().await;
}

/// Minute rows and the two tables' bytes (heap, indexes, TOAST).
async fn size(db: &Db) -> (i64, i64) {
    let row: Result<(i64, i64), _> = sqlx::query_as::<sqlx::Any, (i64, i64)>(
        "SELECT (SELECT count(*) FROM usage_minute), \
         pg_total_relation_size('usage_minute') + pg_total_relation_size('usage_hour')",
    )
    .fetch_one(db.pool())
    .await;
    row.unwrap_or((0, 0))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}
