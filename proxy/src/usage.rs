//! Usage analytics, off the request path: the `logging` phase hands every
//! routed request to [`UsageRecorder::record`] (in-memory aggregation, never
//! blocks on the database); [`UsageFlusher`], a background service with its
//! own runtime and database pool, writes batched upserts every
//! `usage.flush_interval`, heartbeats this instance's row and deletes data
//! older than `usage.retention_days`.
//!
//! What is counted per (minute, key — 0 for none —, route): the outcome
//! columns are disjoint (see [`tollgate_core::db::usage`]): `limited` (429),
//! `unauthorized` (401), `forbidden` (403), `upstream_errors` (outcome
//! `upstream_error`/`unavailable`, or any answer ≥ 500), else `allowed`
//! (including shadow-limited requests, which are forwarded). Refused requests
//! (429/401/403) are also kept, up to [`MAX_HELD_VIOLATIONS`], for the
//! `violations` table.
//!
//! Bounds: the recorder holds at most `usage.buffer_rows` distinct rows
//! between flushes, and the flusher at most `usage.buffer_rows` rows that
//! could not be written yet (database down). What does not fit is dropped and
//! counted in `tollgate_usage_dropped_total`: `kind="requests"` counts the
//! requests whose usage was lost, `kind="violations"` the violations.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tollgate_core::db::instances::{Heartbeat, TargetHealth};
use tollgate_core::db::usage::{latency_bucket, minute_of, Counts, NewViolation, UsageRow};
use tollgate_core::db::usage::{USAGE_BATCH_ROWS, VIOLATION_BATCH_ROWS};
use tollgate_core::db::Db;

use crate::metrics::{self, outcome};
use crate::state::State;

/// One finished request, as the proxy saw it.
#[derive(Debug, Clone)]
pub struct UsageEvent {
    /// Unix ms when the request started.
    pub at_ms: i64,
    pub key_id: Option<i64>,
    pub route: Arc<str>,
    pub method: String,
    pub path: String,
    pub client_ip: Option<IpAddr>,
    pub status: u16,
    /// A `metrics::outcome` value.
    pub outcome: &'static str,
    /// The limits that refused the request, if it was limited.
    pub violated: Vec<String>,
    pub latency_us: u64,
}

/// Refused requests held in memory for the `violations` table (in the
/// recorder between flushes, and again in the flusher while the database is
/// unreachable). The newest are kept.
pub const MAX_HELD_VIOLATIONS: usize = 10_000;
/// Distinct rows the recorder holds until [`UsageRecorder::set_max_rows`].
pub const DEFAULT_MAX_ROWS: usize = 100_000;
/// Shards of the recorder; a row lives in the shard its (key, route) hashes to.
const SHARDS: usize = 16;
/// Stored paths are cut to this many bytes (at a character boundary).
const MAX_PATH: usize = 512;
const MAX_METHOD: usize = 16;
const MAX_LIMIT_NAME: usize = 256;

/// Which outcome column a request counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Allowed,
    Limited,
    Unauthorized,
    Forbidden,
    UpstreamError,
}

fn classify(outcome: &str, status: u16) -> Class {
    match outcome {
        outcome::LIMITED => Class::Limited,
        outcome::UNAUTHORIZED => Class::Unauthorized,
        outcome::FORBIDDEN => Class::Forbidden,
        outcome::UPSTREAM_ERROR | outcome::UNAVAILABLE => Class::UpstreamError,
        _ if status >= 500 => Class::UpstreamError,
        _ => Class::Allowed,
    }
}

fn count(c: &mut Counts, class: Class, latency_us: u64) {
    match class {
        Class::Allowed => c.allowed += 1,
        Class::Limited => c.limited += 1,
        Class::Unauthorized => c.unauthorized += 1,
        Class::Forbidden => c.forbidden += 1,
        Class::UpstreamError => c.upstream_errors += 1,
    }
    c.latency_sum_us = c
        .latency_sum_us
        .saturating_add(i64::try_from(latency_us).unwrap_or(i64::MAX));
    c.latency_buckets[latency_bucket(latency_us)] += 1;
}

fn truncated(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// A row's identity: (minute, key id or 0, route).
pub type RowKey = (i64, i64, Arc<str>);

#[derive(Debug, Default)]
struct Shard {
    rows: HashMap<RowKey, Counts, ahash::RandomState>,
    violations: VecDeque<NewViolation>,
    last_used: HashMap<i64, i64, ahash::RandomState>,
}

/// Everything taken out of the recorder at once.
#[derive(Debug, Default)]
pub struct Drained {
    pub rows: Vec<(RowKey, Counts)>,
    pub violations: Vec<NewViolation>,
    /// Key id → latest use (Unix ms).
    pub last_used: HashMap<i64, i64>,
}

/// This instance's own figures since start (for its heartbeat).
#[derive(Debug, Default)]
struct Totals {
    requests: AtomicU64,
    allowed: AtomicU64,
    limited: AtomicU64,
    unauthorized: AtomicU64,
    forbidden: AtomicU64,
    upstream_errors: AtomicU64,
}

/// A snapshot of [`UsageRecorder::totals`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TotalsSnapshot {
    pub requests: u64,
    pub allowed: u64,
    pub limited: u64,
    pub unauthorized: u64,
    pub forbidden: u64,
    pub upstream_errors: u64,
}

/// Aggregates events in memory: mutex-protected shards, a row living in the
/// shard its (key, route) hashes to, so the request path takes one short
/// lock that other requests rarely want at the same time (the flusher takes
/// each shard's contents with a swap).
#[derive(Debug)]
pub struct UsageRecorder {
    shards: Vec<Mutex<Shard>>,
    hasher: ahash::RandomState,
    max_rows: AtomicUsize,
    held_rows: AtomicUsize,
    held_violations: AtomicUsize,
    totals: Totals,
}

impl Default for UsageRecorder {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: ahash::RandomState::new(),
            max_rows: AtomicUsize::new(DEFAULT_MAX_ROWS),
            held_rows: AtomicUsize::new(0),
            held_violations: AtomicUsize::new(0),
            totals: Totals::default(),
        }
    }
}

impl UsageRecorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// How many distinct (minute, key, route) rows may be held between
    /// flushes (`usage.buffer_rows`); new rows beyond it are dropped and counted.
    pub fn set_max_rows(&self, max: usize) {
        self.max_rows.store(max.max(1), Ordering::Relaxed);
    }

    /// Rows held now (not yet taken by the flusher).
    pub fn held_rows(&self) -> usize {
        self.held_rows.load(Ordering::Relaxed)
    }

    /// Record one finished request. Never blocks on I/O: one short lock of
    /// this thread's shard.
    pub fn record(&self, event: UsageEvent) {
        let UsageEvent {
            at_ms,
            key_id,
            route,
            method,
            path,
            client_ip,
            status,
            outcome,
            violated,
            latency_us,
        } = event;
        let class = classify(outcome, status);
        self.count_total(class);
        let violation = match class {
            Class::Limited | Class::Unauthorized | Class::Forbidden => Some(NewViolation {
                at: at_ms,
                key_id,
                route: route.to_string(),
                method: truncated(method, MAX_METHOD),
                path: truncated(path, MAX_PATH),
                client_ip: client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                limit_name: (!violated.is_empty())
                    .then(|| truncated(violated.join(","), MAX_LIMIT_NAME)),
                status: i64::from(match (status, class) {
                    (0, Class::Limited) => 429,
                    (0, Class::Unauthorized) => 401,
                    (0, Class::Forbidden) => 403,
                    (s, _) => s,
                }),
            }),
            _ => None,
        };
        let row_id = key_id.unwrap_or(0);
        let shard_index = (self.hasher.hash_one((row_id, &*route)) as usize) % SHARDS;
        let row_key = (minute_of(at_ms), row_id, route);
        let mut dropped_request = false;
        let mut dropped_violation = false;
        {
            let mut shard = self.shards[shard_index].lock();
            match shard.rows.get_mut(&row_key) {
                Some(c) => count(c, class, latency_us),
                None => {
                    let max = self.max_rows.load(Ordering::Relaxed);
                    if self.held_rows.fetch_add(1, Ordering::Relaxed) >= max {
                        self.held_rows.fetch_sub(1, Ordering::Relaxed);
                        dropped_request = true;
                    } else {
                        let mut c = Counts::default();
                        count(&mut c, class, latency_us);
                        shard.rows.insert(row_key, c);
                    }
                }
            }
            if let Some(id) = key_id {
                let at = shard.last_used.entry(id).or_insert(at_ms);
                *at = (*at).max(at_ms);
            }
            if let Some(v) = violation {
                if self.held_violations.fetch_add(1, Ordering::Relaxed) >= MAX_HELD_VIOLATIONS {
                    self.held_violations.fetch_sub(1, Ordering::Relaxed);
                    dropped_violation = true;
                    // Keep the newest: make room in this shard if it holds any.
                    if shard.violations.pop_front().is_some() {
                        shard.violations.push_back(v);
                    }
                } else {
                    shard.violations.push_back(v);
                }
            }
        }
        if dropped_request {
            metrics::USAGE_DROPPED
                .with_label_values(&["requests"])
                .inc();
        }
        if dropped_violation {
            metrics::USAGE_DROPPED
                .with_label_values(&["violations"])
                .inc();
        }
    }

    fn count_total(&self, class: Class) {
        let t = &self.totals;
        t.requests.fetch_add(1, Ordering::Relaxed);
        let c = match class {
            Class::Allowed => &t.allowed,
            Class::Limited => &t.limited,
            Class::Unauthorized => &t.unauthorized,
            Class::Forbidden => &t.forbidden,
            Class::UpstreamError => &t.upstream_errors,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Take everything held (each shard is swapped out under its lock).
    pub fn drain(&self) -> Drained {
        let mut out = Drained::default();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *shard.lock());
            self.held_rows
                .fetch_sub(taken.rows.len(), Ordering::Relaxed);
            self.held_violations
                .fetch_sub(taken.violations.len(), Ordering::Relaxed);
            out.rows.extend(taken.rows);
            out.violations.extend(taken.violations);
            for (id, at) in taken.last_used {
                let e = out.last_used.entry(id).or_insert(at);
                *e = (*e).max(at);
            }
        }
        out.violations.sort_by_key(|v| v.at);
        out
    }

    /// This instance's request counts since start.
    pub fn totals(&self) -> TotalsSnapshot {
        let t = &self.totals;
        TotalsSnapshot {
            requests: t.requests.load(Ordering::Relaxed),
            allowed: t.allowed.load(Ordering::Relaxed),
            limited: t.limited.load(Ordering::Relaxed),
            unauthorized: t.unauthorized.load(Ordering::Relaxed),
            forbidden: t.forbidden.load(Ordering::Relaxed),
            upstream_errors: t.upstream_errors.load(Ordering::Relaxed),
        }
    }
}

// ---------------------------------------------------------------------------
// Flusher

/// How long one database step (connect, one batch…) may take before the tick
/// gives up and keeps what it holds for the next one.
const DB_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the round trip that opens each tick may take: an unreachable
/// database is noticed this fast (the pool would otherwise wait for a
/// connection for its whole acquire timeout), without cutting short a slow
/// but working write.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// How often old rows are purged.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// What the flusher holds until it is written: rows merged by identity
/// (sorted, so concurrent proxies lock rows in the same order), violations
/// oldest first, and keys' last use.
#[derive(Debug, Default)]
pub struct Pending {
    rows: BTreeMap<RowKey, Counts>,
    violations: VecDeque<NewViolation>,
    last_used: HashMap<i64, i64>,
}

impl Pending {
    /// Merge what the recorder held, within `max_rows` rows and
    /// [`MAX_HELD_VIOLATIONS`] violations; returns the requests whose rows
    /// were dropped and the violations dropped.
    pub fn absorb(&mut self, drained: Drained, max_rows: usize) -> (u64, u64) {
        let mut dropped_requests = 0;
        for (key, counts) in drained.rows {
            if let Some(c) = self.rows.get_mut(&key) {
                c.add(&counts);
            } else if self.rows.len() < max_rows {
                self.rows.insert(key, counts);
            } else {
                dropped_requests += u64::try_from(counts.total()).unwrap_or(0);
            }
        }
        let mut dropped_violations = 0;
        for v in drained.violations {
            if self.violations.len() >= MAX_HELD_VIOLATIONS {
                self.violations.pop_front();
                dropped_violations += 1;
            }
            self.violations.push_back(v);
        }
        for (id, at) in drained.last_used {
            let e = self.last_used.entry(id).or_insert(at);
            *e = (*e).max(at);
        }
        (dropped_requests, dropped_violations)
    }

    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.violations.is_empty() && self.last_used.is_empty()
    }
}

/// Why a flush stopped early.
#[derive(Debug, thiserror::Error)]
enum FlushError {
    #[error("{0}")]
    Db(#[from] tollgate_core::db::DbError),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

async fn bounded<T, E>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, FlushError>
where
    FlushError: From<E>,
{
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(FlushError::from),
        Err(_) => Err(FlushError::Timeout(limit)),
    }
}

/// Write what `pending` holds, batch by batch; each batch written is removed,
/// so a failure keeps exactly what was not written. Returns rows written.
async fn write_pending(db: &Db, pending: &mut Pending, limit: Duration) -> Result<u64, FlushError> {
    let mut written = 0u64;
    while !pending.rows.is_empty() {
        let keys: Vec<RowKey> = pending
            .rows
            .keys()
            .take(USAGE_BATCH_ROWS)
            .cloned()
            .collect();
        let batch: Vec<UsageRow> = keys
            .iter()
            .filter_map(|k| {
                pending.rows.get(k).map(|c| UsageRow {
                    minute: k.0,
                    key_id: k.1,
                    route: k.2.to_string(),
                    counts: *c,
                })
            })
            .collect();
        bounded(limit, db.upsert_usage(&batch)).await?;
        for k in &keys {
            pending.rows.remove(k);
        }
        written += batch.len() as u64;
        metrics::USAGE_ROWS_WRITTEN.inc_by(batch.len() as u64);
        metrics::USAGE_BUFFERED_ROWS.set(pending.rows.len() as i64);
    }
    while !pending.violations.is_empty() {
        let n = pending.violations.len().min(VIOLATION_BATCH_ROWS);
        let batch: Vec<NewViolation> = pending.violations.range(..n).cloned().collect();
        bounded(limit, db.insert_violations(&batch)).await?;
        pending.violations.drain(..n);
    }
    if !pending.last_used.is_empty() {
        let used: Vec<(i64, i64)> = pending.last_used.iter().map(|(k, v)| (*k, *v)).collect();
        bounded(limit, db.set_keys_last_used(&used)).await?;
        pending.last_used.clear();
    }
    Ok(written)
}

/// A process-stable instance id: `host-pid-random`.
fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "proxy".to_string());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..8])
}

/// The background service that writes usage, violations, keys' last use and
/// this instance's heartbeat, and purges old data.
pub struct UsageFlusher {
    recorder: Arc<UsageRecorder>,
    state: Arc<State>,
    database_url: String,
    address: String,
    id: String,
    started_at: i64,
    /// Set before a fast stop: no grace period to keep flushing through.
    fast_stop: Arc<AtomicBool>,
}

impl UsageFlusher {
    /// `address` is where this proxy listens (reported in its heartbeat).
    pub fn new(
        recorder: Arc<UsageRecorder>,
        state: Arc<State>,
        database_url: String,
        address: String,
    ) -> Self {
        Self {
            recorder,
            state,
            database_url,
            address,
            id: instance_id(),
            started_at: tollgate_core::now_ms(),
            fast_stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set it, then stop the flusher, for a fast stop: it writes what it
    /// holds once and leaves instead of flushing through the grace period.
    pub fn fast_stop_flag(&self) -> Arc<AtomicBool> {
        self.fast_stop.clone()
    }

    /// This instance's id in the `instances` table.
    pub fn instance_id(&self) -> &str {
        &self.id
    }

    fn heartbeat(&self, rate: f64, pending: &Pending) -> Heartbeat {
        let t = self.recorder.totals();
        let cfg = self.state.config.load();
        let mut upstream_health = Vec::new();
        let mut names: Vec<&String> = cfg.upstreams.keys().collect();
        names.sort();
        for name in names {
            let Some(pool) = cfg.upstreams.get(name) else {
                continue;
            };
            for h in pool.health() {
                upstream_health.push(TargetHealth {
                    upstream: name.clone(),
                    target: h.target,
                    healthy: h.healthy,
                    checked_at: h.checked_at,
                    error: h.error,
                    latency_ms: h.latency_ms,
                    latency_samples: h.latency_samples,
                    check_latency_ms: h.check_latency_ms,
                    up_since: h.up_since,
                });
            }
        }
        Heartbeat {
            id: self.id.clone(),
            address: self.address.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.started_at,
            stats: serde_json::json!({
                "requests": t.requests,
                "allowed": t.allowed,
                "limited": t.limited,
                "unauthorized": t.unauthorized,
                "forbidden": t.forbidden,
                "upstream_errors": t.upstream_errors,
                "requests_per_second": (rate * 100.0).round() / 100.0,
                "usage_rows_buffered": pending.rows() + self.recorder.held_rows(),
            }),
            upstream_health,
        }
    }

    /// One tick: take what the recorder holds, write it (keeping what fails
    /// within the bounds), heartbeat, purge when due.
    async fn tick(&self, run: &mut Run, limit: Duration) {
        let usage = self.state.config.load().config.usage.clone();
        self.recorder.set_max_rows(usage.buffer_rows);
        let (requests, violations) = run
            .pending
            .absorb(self.recorder.drain(), usage.buffer_rows.max(1));
        if requests > 0 {
            metrics::USAGE_DROPPED
                .with_label_values(&["requests"])
                .inc_by(requests);
        }
        if violations > 0 {
            metrics::USAGE_DROPPED
                .with_label_values(&["violations"])
                .inc_by(violations);
        }
        metrics::USAGE_BUFFERED_ROWS.set(run.pending.rows() as i64);

        let result = self.write(run, limit, usage.retention_days).await;
        match result {
            Ok(()) => {
                if run.failing {
                    tracing::info!("usage flush: the database is reachable again");
                }
                run.failing = false;
            }
            Err(e) => {
                metrics::USAGE_FLUSH_ERRORS.inc();
                if !run.failing {
                    tracing::warn!(
                        held_rows = run.pending.rows(),
                        "usage flush failed, keeping what is held for the next attempt: {e}"
                    );
                }
                run.failing = true;
            }
        }
        metrics::USAGE_BUFFERED_ROWS.set(run.pending.rows() as i64);
    }

    async fn write(
        &self,
        run: &mut Run,
        limit: Duration,
        retention_days: u32,
    ) -> Result<(), FlushError> {
        if run.db.is_none() {
            run.db = Some(bounded(limit, Db::connect(&self.database_url)).await?);
        }
        let Some(db) = run.db.clone() else {
            return Ok(());
        };
        bounded(PING_TIMEOUT.min(limit), db.ping()).await?;
        write_pending(&db, &mut run.pending, limit).await?;

        let now = Instant::now();
        let requests = self.recorder.totals().requests;
        let secs = now.duration_since(run.rate_at).as_secs_f64();
        let rate = if secs > 0.0 {
            requests.saturating_sub(run.rate_requests) as f64 / secs
        } else {
            0.0
        };
        run.rate_at = now;
        run.rate_requests = requests;
        let hb = self.heartbeat(rate, &run.pending);
        bounded(limit, db.upsert_instance(&hb)).await?;

        if run.purged_at.is_none_or(|t| t.elapsed() >= RETENTION_EVERY) {
            let days = i64::from(retention_days.max(1));
            let before = tollgate_core::now_ms() - days * 86_400_000;
            let purged = bounded(
                limit.max(Duration::from_secs(60)),
                db.purge_usage_before(before),
            )
            .await?;
            run.purged_at = Some(Instant::now());
            if purged.usage_rows > 0 || purged.violations > 0 {
                bounded(limit, db.analyze_usage()).await?;
                tracing::info!(
                    usage_rows = purged.usage_rows,
                    violations = purged.violations,
                    "usage retention: deleted data older than {days} days"
                );
            }
        }
        Ok(())
    }
}

/// The flusher's state across ticks.
struct Run {
    db: Option<Db>,
    pending: Pending,
    failing: bool,
    purged_at: Option<Instant>,
    rate_at: Instant,
    rate_requests: u64,
}

#[async_trait]
impl BackgroundService for UsageFlusher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut run = Run {
            db: None,
            pending: Pending::default(),
            failing: false,
            purged_at: None,
            rate_at: Instant::now(),
            rate_requests: 0,
        };
        loop {
            let every = self.state.config.load().config.usage.flush_interval;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => break,
            }
            self.tick(&mut run, DB_TIMEOUT).await;
        }

        // Graceful shutdown: requests in flight finish during the grace
        // period (after which Pingora drops this runtime), so keep flushing
        // what they add for most of it, then once more and leave.
        let cfg = self.state.config.load_full();
        let grace = if self.fast_stop.load(Ordering::Acquire) {
            Duration::ZERO
        } else {
            cfg.config.proxy.grace_period
        };
        let every = cfg
            .config
            .usage
            .flush_interval
            .min(Duration::from_millis(500));
        let until = Instant::now() + grace.saturating_sub(Duration::from_secs(1));
        let short = Duration::from_secs(3);
        self.tick(&mut run, short).await;
        while Instant::now() + every < until {
            tokio::time::sleep(every).await;
            if self.recorder.held_rows() > 0 || !run.pending.is_empty() {
                self.tick(&mut run, short).await;
            }
        }
        self.tick(&mut run, short).await;
        if let Some(db) = &run.db {
            if let Err(e) = bounded(short, db.delete_instance(&self.id)).await {
                tracing::debug!("could not remove this instance's row: {e}");
            }
        }
        if !run.pending.is_empty() {
            tracing::warn!(
                rows = run.pending.rows(),
                "usage flush at shutdown failed: unwritten usage is lost"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        key: Option<i64>,
        route: &str,
        outcome: &'static str,
        status: u16,
        latency_us: u64,
    ) -> UsageEvent {
        UsageEvent {
            at_ms: 120_500,
            key_id: key,
            route: route.into(),
            method: "GET".into(),
            path: "/api/users".into(),
            client_ip: Some([127, 0, 0, 1].into()),
            status,
            outcome,
            violated: if outcome == outcome::LIMITED {
                vec!["minute".into(), "route".into()]
            } else {
                vec![]
            },
            latency_us,
        }
    }

    #[test]
    fn outcomes_are_counted_once_each() {
        let r = UsageRecorder::default();
        r.record(event(Some(1), "users", outcome::ALLOWED, 200, 400));
        r.record(event(Some(1), "users", outcome::ALLOWED, 404, 2_000));
        r.record(event(Some(1), "users", outcome::SHADOW_LIMITED, 200, 100));
        r.record(event(Some(1), "users", outcome::LIMITED, 429, 50));
        r.record(event(Some(1), "users", outcome::UPSTREAM_ERROR, 500, 3_000));
        r.record(event(Some(1), "users", outcome::ALLOWED, 503, 3_000));
        r.record(event(None, "users", outcome::UNAUTHORIZED, 401, 10));
        r.record(event(None, "users", outcome::FORBIDDEN, 403, 2_000_000));
        let d = r.drain();
        assert_eq!(r.held_rows(), 0);
        let rows: HashMap<_, _> = d.rows.into_iter().collect();
        assert_eq!(rows.len(), 2);
        let k1 = rows[&(120_000, 1, Arc::from("users"))];
        assert_eq!((k1.allowed, k1.limited, k1.upstream_errors), (3, 1, 2));
        assert_eq!(k1.total(), 6);
        assert_eq!(k1.latency_sum_us, 400 + 2_000 + 100 + 50 + 6_000);
        assert_eq!(k1.latency_buckets[0], 3);
        assert_eq!(k1.latency_buckets[2], 1);
        assert_eq!(k1.latency_buckets[3], 2);
        let none = rows[&(120_000, 0, Arc::from("users"))];
        assert_eq!((none.unauthorized, none.forbidden), (1, 1));
        assert_eq!(none.latency_buckets[11], 1);

        assert_eq!(d.violations.len(), 3);
        let limited = d.violations.iter().find(|v| v.status == 429);
        assert_eq!(
            limited.and_then(|v| v.limit_name.clone()).as_deref(),
            Some("minute,route")
        );
        assert!(d.violations.iter().all(|v| v.client_ip == "127.0.0.1"));
        assert_eq!(d.last_used, HashMap::from([(1, 120_500)]));
        let t = r.totals();
        assert_eq!((t.requests, t.allowed, t.upstream_errors), (8, 3, 2));
    }

    #[test]
    fn rows_beyond_the_bound_are_dropped() {
        let r = UsageRecorder::default();
        r.set_max_rows(2);
        for key in 1..=4 {
            r.record(event(Some(key), "users", outcome::ALLOWED, 200, 1));
        }
        // Existing rows still count.
        r.record(event(Some(1), "users", outcome::ALLOWED, 200, 1));
        assert_eq!(r.held_rows(), 2);
        let d = r.drain();
        let total: i64 = d.rows.iter().map(|(_, c)| c.total()).sum();
        assert_eq!((d.rows.len(), total), (2, 3));

        let mut p = Pending::default();
        let again = || {
            let r = UsageRecorder::default();
            for key in 1..=3 {
                r.record(event(Some(key), "users", outcome::ALLOWED, 200, 1));
            }
            r.drain()
        };
        assert_eq!(p.absorb(again(), 2), (1, 0));
        assert_eq!(p.absorb(again(), 2), (1, 0));
        assert_eq!(p.rows(), 2);
        assert!(p.rows.values().all(|c| c.allowed == 2));
    }

    #[test]
    fn long_paths_are_cut_at_a_character_boundary() {
        let s = truncated("é".repeat(400), MAX_PATH);
        assert!(s.len() <= MAX_PATH && s.chars().all(|c| c == 'é'));
    }
}
