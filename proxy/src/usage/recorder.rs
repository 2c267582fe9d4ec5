//! The request path's side of usage: [`UsageRecorder::record`] aggregates
//! every routed request in memory (sharded, bounded, never blocks on I/O)
//! until the flusher takes it with [`UsageRecorder::drain`].
//!
//! What is counted per (minute, key — 0 for none —, route): the outcome
//! columns are disjoint (see [`tollgate_core::db::usage`]): `limited` (429,
//! and the proxy's own 503 `limiter-unavailable`, outcome `unavailable`:
//! refused by the limiter layer, never forwarded, so never the upstream's
//! error; not listed as a violation, no limit was exceeded), `unauthorized`
//! (401), `forbidden` (403), `upstream_errors` (outcome `upstream_error`, or
//! any other answer ≥ 500), else `allowed` (including shadow-limited
//! requests, which are forwarded).
//!
//! Refused requests: a valid key over its limits is kept as one `violations`
//! row (up to [`MAX_HELD_VIOLATIONS`] held); every refusal without a valid key
//! (401, 403, throttled 429s — [`violation_aggregates::is_aggregated`]) only
//! adds to a count per (minute, route, status, reason, client /24 or /64),
//! up to [`MAX_HELD_AGGREGATES`] distinct counts, so that junk-key floods
//! cost a bounded number of rows.
//!
//! Bounds: at most `usage.buffer_rows` distinct usage rows between flushes.
//! What does not fit is dropped and counted in `tollgate_usage_dropped_total`:
//! `kind="requests"` counts the requests whose usage was lost,
//! `kind="violations"` the refusals.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tollgate_core::db::usage::{latency_bucket, minute_of, Counts, NewViolation};
use tollgate_core::db::violation_aggregates::{self, AggregateKey};
use tollgate_core::keys::redact_keys;

use crate::metrics::{self, outcome};

/// One finished request, as the proxy saw it. The text is borrowed from
/// the request: only a refusal kept as a violation copies it.
#[derive(Debug, Clone)]
pub struct UsageEvent<'a> {
    /// Unix ms when the request started.
    pub at_ms: i64,
    pub key_id: Option<i64>,
    pub route: Arc<str>,
    pub method: &'a str,
    pub path: &'a str,
    pub client_ip: Option<IpAddr>,
    pub status: u16,
    /// A `metrics::outcome` value.
    pub outcome: &'static str,
    /// The limits that refused the request, if it was limited.
    pub violated: Vec<&'a str>,
    /// Why the proxy refused it (the answer's problem type, e.g.
    /// `invalid-api-key:unknown`); empty when it did not answer itself.
    pub reason: &'a str,
    pub latency_us: u64,
}

/// Refused requests held in memory for the `violations` table (in the
/// recorder between flushes, and again in the flusher while the database is
/// unreachable). The newest are kept.
pub const MAX_HELD_VIOLATIONS: usize = 10_000;
/// Distinct violation counts held in memory (same places as above).
pub const MAX_HELD_AGGREGATES: usize = 10_000;
/// Refusals of one valid key on one route listed one by one per minute;
/// beyond this they are counted like keyless refusals, so that a cheap key
/// hammering its limit costs a bounded number of rows.
pub const LISTED_PER_KEY_MINUTE: u32 = 60;
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
        // Round 17: the limiter could not decide (Redis down, `deny`, or a
        // credit holder): the proxy refused it itself, the upstream never
        // saw it.
        outcome::UNAVAILABLE => Class::Limited,
        outcome::UPSTREAM_ERROR => Class::UpstreamError,
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

fn row_key_of(at_ms: i64, key: i64, route: &Arc<str>) -> RowKey {
    (minute_of(at_ms), key, route.clone())
}

#[derive(Debug, Default)]
struct Shard {
    rows: HashMap<RowKey, Counts, ahash::RandomState>,
    violations: VecDeque<NewViolation>,
    aggregates: HashMap<AggregateKey, i64, ahash::RandomState>,
    last_used: HashMap<i64, i64, ahash::RandomState>,
    /// Violations listed this minute per (minute, key, route); kept across
    /// drains, old minutes dropped at each drain.
    listed: HashMap<RowKey, u32, ahash::RandomState>,
}

/// Everything taken out of the recorder at once.
#[derive(Debug, Default)]
pub struct Drained {
    pub rows: Vec<(RowKey, Counts)>,
    pub violations: Vec<NewViolation>,
    pub aggregates: Vec<(AggregateKey, i64)>,
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
    held_aggregates: AtomicUsize,
    totals: Totals,
    /// Requests whose context has not reported yet ([`super::open`]).
    pub(super) open: AtomicUsize,
}

impl Default for UsageRecorder {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: ahash::RandomState::new(),
            max_rows: AtomicUsize::new(DEFAULT_MAX_ROWS),
            held_rows: AtomicUsize::new(0),
            held_violations: AtomicUsize::new(0),
            held_aggregates: AtomicUsize::new(0),
            totals: Totals::default(),
            open: AtomicUsize::new(0),
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
    pub fn record(&self, event: UsageEvent<'_>) {
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
            reason,
            latency_us,
        } = event;
        let class = classify(outcome, status);
        self.count_total(class);
        let refused_status = match (status, class) {
            (0, Class::Limited) => 429,
            (0, Class::Unauthorized) => 401,
            (0, Class::Forbidden) => 403,
            (s, _) => s,
        };
        // A refusal kept as a violation; not `unavailable`: no limit was
        // exceeded, the limiter was down (usage still counts it as limited).
        let refused = matches!(
            class,
            Class::Limited | Class::Unauthorized | Class::Forbidden
        ) && outcome != outcome::UNAVAILABLE;
        let reason_text = if reason.is_empty() { outcome } else { reason };
        let (violation, mut aggregate) = if !refused {
            (None, None)
        } else if violation_aggregates::is_aggregated(refused_status, key_id) {
            let key = AggregateKey::new(at_ms, &route, refused_status, reason_text, client_ip);
            (None, Some(key))
        } else {
            let v = NewViolation {
                at: at_ms,
                key_id,
                route: route.to_string(),
                method: truncated(method.to_string(), MAX_METHOD),
                path: truncated(redact_keys(path).into_owned(), MAX_PATH),
                client_ip: client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                limit_name: (!violated.is_empty())
                    .then(|| truncated(violated.join(","), MAX_LIMIT_NAME)),
                status: i64::from(refused_status),
            };
            (Some(v), None)
        };
        let row_id = key_id.unwrap_or(0);
        let shard_index = (self.hasher.hash_one((row_id, &*route)) as usize) % SHARDS;
        let row_key = (minute_of(at_ms), row_id, route.clone());
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
            // A key's refusals past its per-minute quota of listed rows are
            // counted instead.
            let violation = violation.and_then(|v| {
                let listed = shard
                    .listed
                    .entry(row_key_of(at_ms, row_id, &route))
                    .or_insert(0);
                if *listed >= LISTED_PER_KEY_MINUTE {
                    aggregate = Some(AggregateKey::new(
                        at_ms,
                        &route,
                        refused_status,
                        reason_text,
                        client_ip,
                    ));
                    None
                } else {
                    *listed += 1;
                    Some(v)
                }
            });
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
            if let Some(key) = aggregate {
                match shard.aggregates.get_mut(&key) {
                    Some(n) => *n += 1,
                    None => {
                        if self.held_aggregates.fetch_add(1, Ordering::Relaxed)
                            >= MAX_HELD_AGGREGATES
                        {
                            self.held_aggregates.fetch_sub(1, Ordering::Relaxed);
                            dropped_violation = true;
                        } else {
                            shard.aggregates.insert(key, 1);
                        }
                    }
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
        let this_minute = minute_of(tollgate_core::now_ms());
        for shard in &self.shards {
            let taken = {
                let mut guard = shard.lock();
                let mut listed = std::mem::take(&mut guard.listed);
                listed.retain(|k, _| k.0 >= this_minute);
                let taken = std::mem::take(&mut *guard);
                guard.listed = listed;
                taken
            };
            self.held_rows
                .fetch_sub(taken.rows.len(), Ordering::Relaxed);
            self.held_violations
                .fetch_sub(taken.violations.len(), Ordering::Relaxed);
            self.held_aggregates
                .fetch_sub(taken.aggregates.len(), Ordering::Relaxed);
            out.rows.extend(taken.rows);
            out.violations.extend(taken.violations);
            out.aggregates.extend(taken.aggregates);
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
#[cfg(test)]
mod tests;
