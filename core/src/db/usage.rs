//! `usage_minute`, its hourly rollup `usage_hour`, and `violations`: what the
//! proxies write (batched upserts that add up across instances) and what the
//! admin API reads back (summaries, zero-filled time series, top keys, paged
//! violations), plus retention.
//!
//! Counting rules: every recorded request falls in exactly one of
//! `allowed`, `limited`, `unauthorized`, `forbidden` and `upstream_errors`
//! (admitted requests that failed upstream or answered ≥ 500 count only as
//! upstream errors), so their sum is the number of requests. `key_id` 0 is
//! "no key" (unauthenticated routes, 401s, unknown keys). Each request's
//! latency goes to `latency_sum_us` and to one of the fixed histogram buckets
//! `lat_b0..lat_b11` (bounds: [`super::LATENCY_BUCKET_BOUNDS_US`]), so percentiles
//! can be read back to the bucket.
//!
//! Each batch of rows is one `INSERT … ON CONFLICT … DO UPDATE` into
//! `usage_minute` plus one into `usage_hour` (the same rows summed per hour),
//! in one transaction. Reads over long ranges take the whole hours inside the
//! range from `usage_hour` and only the partial hours at either end from
//! `usage_minute`, so a day is ~24 rows per (key, route), not 1440.
//!
//! Statements are built with [`Stmt`] (`super::stmt`), the one builder of
//! dynamic statements.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::stmt::{Arg, Stmt};
use super::{Db, DbError, DbKind, LATENCY_BUCKETS};
pub use crate::usage::{bucket_bound_ms, latency_bucket, Counts};

pub mod export;
mod purge;
mod read;
mod write;

pub(crate) use write::{hourly, merged, upsert_stmt, violations_stmt};

/// Rows per `INSERT … ON CONFLICT` statement (21 bound values each).
pub const USAGE_BATCH_ROWS: usize = 500;
/// Violations per `INSERT` statement (8 bound values each).
pub const VIOLATION_BATCH_ROWS: usize = 1_000;
/// Keys per `last_used_at` update statement.
pub const LAST_USED_BATCH: usize = 500;
/// Milliseconds in a minute: `usage_minute.minute` is a multiple of it.
pub const MINUTE_MS: i64 = 60_000;
/// Milliseconds in an hour: `usage_hour.hour` is a multiple of it.
pub const HOUR_MS: i64 = 3_600_000;
/// How long applied usage batch ids (`usage_batch`) are remembered: a retry
/// comes within seconds; [`Db::purge`] deletes older ones.
pub const BATCH_ID_KEPT_MS: i64 = 86_400_000;
/// Keys per statement of [`Db::usage_totals_of_keys`].
pub const KEYS_PER_STATEMENT: usize = 1_000;
/// The most points [`Db::usage_timeseries`] returns.
pub const MAX_SERIES_POINTS: i64 = 10_000;

/// The start (Unix ms) of the minute holding `ms`.
pub fn minute_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(MINUTE_MS)
}

/// The start (Unix ms) of the hour holding `ms`.
pub fn hour_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(HOUR_MS)
}

/// One aggregated row, as the proxy flushes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// Unix ms at the start of the minute.
    pub minute: i64,
    /// 0: no key.
    pub key_id: i64,
    pub route: String,
    pub counts: Counts,
}

/// A refused request to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewViolation {
    /// Unix ms.
    pub at: i64,
    /// `None` when no known key was presented.
    pub key_id: Option<i64>,
    pub route: String,
    pub method: String,
    pub path: String,
    pub client_ip: String,
    /// The violated limit(s) of a 429, comma-separated.
    pub limit_name: Option<String>,
    pub status: i64,
}

/// A stored violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub id: i64,
    pub at: i64,
    pub key_id: Option<i64>,
    /// The key's name, if it (still) exists.
    pub key_name: Option<String>,
    pub route: String,
    pub method: String,
    pub path: String,
    pub client_ip: String,
    pub limit_name: Option<String>,
    pub status: i64,
}

/// Which usage rows a query reads: minutes in `from..to` (Unix ms; `from`
/// is rounded down to its minute, `to` is exclusive), optionally one key
/// (0 = no key) and/or one route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    pub from: i64,
    pub to: i64,
    pub key_id: Option<i64>,
    pub route: Option<String>,
}

/// Totals over a [`UsageFilter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub counts: Counts,
    /// Distinct keys (other than "no key") with at least one request.
    pub active_keys: i64,
}

/// One zero-filled point of a time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesPoint {
    /// Unix ms at the start of the step (steps are aligned to the epoch, UTC).
    pub at: i64,
    pub counts: Counts,
}

/// Usage of one key, ranked by [`Db::top_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsage {
    pub key_id: i64,
    /// `None` if the key has been deleted since.
    pub name: Option<String>,
    pub key_prefix: Option<String>,
    pub counts: Counts,
}

/// Usage of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteUsage {
    pub route: String,
    pub counts: Counts,
}

/// Which violations to list: `at` in `from..to`, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViolationFilter {
    pub from: i64,
    pub to: i64,
    /// `Some(0)`: violations without a (known) key.
    pub key_id: Option<i64>,
    pub route: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// What a retention run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub usage_rows: u64,
    pub violations: u64,
    /// `violation_aggregates` rows.
    pub aggregates: u64,
    /// `usage_batches` ids (not data).
    pub batches: u64,
}

/// The counter columns in table order.
const COUNTER_COLUMNS: [&str; 6] = [
    "allowed",
    "limited",
    "unauthorized",
    "forbidden",
    "upstream_errors",
    "latency_sum_us",
];

fn bucket_column(i: usize) -> String {
    format!("lat_b{i}")
}

/// Every summed column (counters then buckets).
fn summed_columns() -> Vec<String> {
    columns(true)
}

/// The counters, and the histogram buckets if `histogram`.
fn columns(histogram: bool) -> Vec<String> {
    let buckets = if histogram { LATENCY_BUCKETS } else { 0 };
    COUNTER_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .chain((0..buckets).map(bucket_column))
        .collect()
}

/// `CAST(COALESCE(SUM(c), 0) AS BIGINT) AS c, …` (PostgreSQL sums BIGINT to
/// NUMERIC, which sqlx `Any` cannot decode).
fn sum_select(histogram: bool) -> String {
    columns(histogram)
        .iter()
        .map(|c| format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT) AS {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The total-requests expression of one row.
const ROW_TOTAL: &str = "(allowed + limited + unauthorized + forbidden + upstream_errors)";

/// A row of [`sum_select`] (buckets stay 0 without `histogram`).
fn counts_from_row(row: &AnyRow, histogram: bool) -> Result<Counts, DbError> {
    let mut latency_buckets = [0i64; LATENCY_BUCKETS];
    if histogram {
        for (i, b) in latency_buckets.iter_mut().enumerate() {
            *b = row.try_get(bucket_column(i).as_str())?;
        }
    }
    Ok(Counts {
        allowed: row.try_get("allowed")?,
        limited: row.try_get("limited")?,
        unauthorized: row.try_get("unauthorized")?,
        forbidden: row.try_get("forbidden")?,
        upstream_errors: row.try_get("upstream_errors")?,
        latency_sum_us: row.try_get("latency_sum_us")?,
        latency_buckets,
    })
}

/// Where the rows of a range are read from: whole hours from `usage_hour`,
/// the partial hours at the ends from `usage_minute`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Split {
    hours: Option<(i64, i64)>,
    minutes: Vec<(i64, i64)>,
}

/// Split `from..to` (`from` rounded down to its minute); `hourly: false`
/// reads minutes only (steps finer than an hour).
fn split(from: i64, to: i64, hourly: bool) -> Split {
    let from = minute_of(from);
    if to <= from {
        return Split {
            hours: None,
            minutes: Vec::new(),
        };
    }
    let first_hour = hour_of(from + HOUR_MS - 1);
    let end_hour = hour_of(to);
    if !hourly || end_hour <= first_hour {
        return Split {
            hours: None,
            minutes: vec![(from, to)],
        };
    }
    let mut minutes = Vec::new();
    if from < first_hour {
        minutes.push((from, first_hour));
    }
    if end_hour < to {
        minutes.push((end_hour, to));
    }
    Split {
        hours: Some((first_hour, end_hour)),
        minutes,
    }
}

impl UsageFilter {
    /// `SELECT t, key_id, route, <counters> FROM …` over the filtered rows of
    /// both tables (`UNION ALL` of the parts), into `stmt`. `known_keys`
    /// leaves out "no key" (0); a non-empty `keys` reads only those keys.
    fn source<'a>(
        &'a self,
        stmt: &mut Stmt<'a>,
        hourly: bool,
        known_keys: bool,
        histogram: bool,
        keys: &[i64],
    ) -> bool {
        let parts = split(self.from, self.to, hourly);
        let columns = columns(histogram).join(", ");
        let mut first = true;
        let tables = parts
            .hours
            .iter()
            .map(|r| ("usage_hour", "hour", *r))
            .chain(parts.minutes.iter().map(|r| ("usage_minute", "minute", *r)));
        for (table, column, (lo, hi)) in tables {
            if !first {
                stmt.push(" UNION ALL ");
            }
            first = false;
            stmt.push(&format!(
                "SELECT {column} AS t, key_id, route, {columns} FROM {table} WHERE {column} >= "
            ))
            .int(lo)
            .push(&format!(" AND {column} < "))
            .int(hi);
            if let Some(k) = self.key_id {
                stmt.push(" AND key_id = ").int(k);
            }
            if let Some(r) = &self.route {
                stmt.push(" AND route = ").text(r);
            }
            if known_keys {
                stmt.push(" AND key_id <> 0");
            }
            if !keys.is_empty() {
                stmt.push(" AND key_id IN (");
                for (i, k) in keys.iter().enumerate() {
                    stmt.push(if i == 0 { "" } else { "," }).int(*k);
                }
                stmt.push(")");
            }
        }
        !first
    }
}

impl ViolationFilter {
    fn condition<'a>(&'a self, stmt: &mut Stmt<'a>) {
        stmt.push(" WHERE at >= ")
            .int(self.from)
            .push(" AND at < ")
            .int(self.to);
        match self.key_id {
            Some(0) => {
                stmt.push(" AND key_id IS NULL");
            }
            Some(k) => {
                stmt.push(" AND key_id = ").int(k);
            }
            None => {}
        }
        if let Some(r) = &self.route {
            stmt.push(" AND route = ").text(r);
        }
    }
}

#[cfg(test)]
mod tests;
