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

/// Rows summed per `(time of, key, route)`, sorted: one upsert statement
/// may not touch a row twice (PostgreSQL refuses), and sorted rows make two
/// proxies take row locks in the same order.
pub(crate) fn merged(
    rows: &[UsageRow],
    time_of: impl Fn(i64) -> i64,
) -> Vec<(i64, i64, &str, Counts)> {
    summed(
        rows.iter()
            .map(|r| (time_of(r.minute), r.key_id, r.route.as_str(), r.counts)),
    )
}

/// Merged minute rows (from [`merged`]) summed again per hour: the
/// `usage_hour` rows of the same requests.
pub(crate) fn hourly<'r>(
    minutes: &[(i64, i64, &'r str, Counts)],
) -> Vec<(i64, i64, &'r str, Counts)> {
    summed(
        minutes
            .iter()
            .map(|&(t, key_id, route, counts)| (hour_of(t), key_id, route, counts)),
    )
}

/// `(time, key, route, counts)` summed per `(time, key, route)`, sorted.
fn summed<'r>(
    rows: impl Iterator<Item = (i64, i64, &'r str, Counts)>,
) -> Vec<(i64, i64, &'r str, Counts)> {
    let mut map: BTreeMap<(i64, i64, &str), Counts> = BTreeMap::new();
    for (t, key_id, route, counts) in rows {
        map.entry((t, key_id, route)).or_default().add(&counts);
    }
    map.into_iter()
        .map(|((t, key_id, route), counts)| (t, key_id, route, counts))
        .collect()
}

/// The upsert of `rows` into `table` (time column `column`), one statement.
pub(crate) fn upsert_stmt<'a>(
    kind: DbKind,
    table: &str,
    column: &str,
    rows: &'a [(i64, i64, &'a str, Counts)],
) -> Stmt<'a> {
    let columns = summed_columns();
    let mut stmt = Stmt::new(kind);
    stmt.push(&format!(
        "INSERT INTO {table} ({column}, key_id, route, {}) VALUES ",
        columns.join(", ")
    ));
    for (i, (t, key_id, route, c)) in rows.iter().enumerate() {
        stmt.push(if i == 0 { "(" } else { ",(" });
        stmt.int(*t).push(",").int(*key_id).push(",").text(route);
        for v in [
            c.allowed,
            c.limited,
            c.unauthorized,
            c.forbidden,
            c.upstream_errors,
            c.latency_sum_us,
        ]
        .into_iter()
        .chain(c.latency_buckets)
        {
            stmt.push(",").int(v);
        }
        stmt.push(")");
    }
    let updates = columns
        .iter()
        .map(|c| format!("{c} = {table}.{c} + excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    stmt.push(&format!(
        " ON CONFLICT ({column}, key_id, route) DO UPDATE SET {updates}"
    ));
    stmt
}

/// The insert of `batch` into `violations`, one statement.
pub(crate) fn violations_stmt(kind: DbKind, batch: &[NewViolation]) -> Stmt<'_> {
    let mut stmt = Stmt::new(kind);
    stmt.push(
        "INSERT INTO violations (at, key_id, route, method, path, client_ip, limit_name, status) VALUES ",
    );
    for (i, v) in batch.iter().enumerate() {
        stmt.push(if i == 0 { "(" } else { ",(" })
            .int(v.at)
            .push(",")
            .bind(Arg::OptInt(v.key_id))
            .push(",")
            .text(&v.route)
            .push(",")
            .text(&v.method)
            .push(",")
            .text(&v.path)
            .push(",")
            .text(&v.client_ip)
            .push(",")
            .bind(Arg::OptText(v.limit_name.as_deref()))
            .push(",")
            .int(v.status)
            .push(")");
    }
    stmt
}

impl Db {
    /// Add `rows` to `usage_minute` and `usage_hour`: per
    /// [`USAGE_BATCH_ROWS`] rows, one transaction of one `INSERT … ON
    /// CONFLICT (minute, key_id, route) DO UPDATE SET c = usage_minute.c +
    /// excluded.c` statement and its hourly twin, so several proxies writing
    /// the same rows add up. Returns the number of (merged) minute rows
    /// written. Pass at most one batch to know exactly what was written when
    /// it fails: a failed batch writes nothing.
    pub async fn upsert_usage(&self, rows: &[UsageRow]) -> Result<u64, DbError> {
        let minutes = merged(rows, |m| m);
        let mut written = 0;
        for batch in minutes.chunks(USAGE_BATCH_ROWS) {
            let hours = hourly(batch);
            let mut tx = self.pool().begin().await?;
            upsert_stmt(self.kind(), "usage_minute", "minute", batch)
                .query()
                .execute(&mut *tx)
                .await?;
            upsert_stmt(self.kind(), "usage_hour", "hour", &hours)
                .query()
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            written += batch.len() as u64;
        }
        Ok(written)
    }

    /// Insert violations, one statement per [`VIOLATION_BATCH_ROWS`].
    pub async fn insert_violations(&self, violations: &[NewViolation]) -> Result<u64, DbError> {
        let mut written = 0;
        for batch in violations.chunks(VIOLATION_BATCH_ROWS) {
            violations_stmt(self.kind(), batch)
                .query()
                .execute(self.pool())
                .await?;
            written += batch.len() as u64;
        }
        Ok(written)
    }

    /// Move `api_keys.last_used_at` forward to each `(key id, Unix ms)`, one
    /// statement per [`LAST_USED_BATCH`] keys. Never moves it back, and
    /// leaves `updated_at` alone (the proxies do not reload for it).
    pub async fn set_keys_last_used(&self, used: &[(i64, i64)]) -> Result<(), DbError> {
        // One entry per key (the latest), so the CASE is unambiguous.
        let mut latest: BTreeMap<i64, i64> = BTreeMap::new();
        for &(id, at) in used {
            let e = latest.entry(id).or_insert(at);
            *e = (*e).max(at);
        }
        let pairs: Vec<(i64, i64)> = latest.into_iter().collect();
        for batch in pairs.chunks(LAST_USED_BATCH) {
            let case = |stmt: &mut Stmt<'_>| {
                stmt.push("CASE id");
                for &(id, at) in batch {
                    stmt.push(" WHEN ").int(id).push(" THEN ").int(at);
                }
                stmt.push(" END");
            };
            let mut stmt = Stmt::new(self.kind());
            stmt.push("UPDATE api_keys SET last_used_at = ");
            case(&mut stmt);
            stmt.push(" WHERE id IN (");
            for (i, &(id, _)) in batch.iter().enumerate() {
                if i > 0 {
                    stmt.push(",");
                }
                stmt.int(id);
            }
            stmt.push(") AND (last_used_at IS NULL OR last_used_at < ");
            case(&mut stmt);
            stmt.push(")");
            stmt.query().execute(self.pool()).await?;
        }
        Ok(())
    }

    /// Totals over the filtered rows.
    pub async fn usage_totals(&self, filter: &UsageFilter) -> Result<UsageTotals, DbError> {
        let mut stmt = Stmt::new(self.kind());
        stmt.push(&format!(
            "SELECT {}, COUNT(DISTINCT CASE WHEN key_id <> 0 THEN key_id END) AS active_keys FROM (",
            sum_select(true)
        ));
        if !filter.source(&mut stmt, true, false, true, &[]) {
            return Ok(UsageTotals::default());
        }
        stmt.push(") u");
        let row = stmt.query().fetch_one(self.pool()).await?;
        Ok(UsageTotals {
            counts: counts_from_row(&row, true)?,
            active_keys: row.try_get("active_keys")?,
        })
    }

    /// The totals of each of `keys` over the filtered rows, in one statement
    /// per [`KEYS_PER_STATEMENT`] keys: for each key the counts
    /// [`Db::usage_totals`] gives with `key_id: Some(key)`. Keys without
    /// rows are left out; no keys, no rows.
    pub async fn usage_totals_of_keys(
        &self,
        filter: &UsageFilter,
        keys: &[i64],
    ) -> Result<BTreeMap<i64, Counts>, DbError> {
        let mut totals = BTreeMap::new();
        for chunk in keys.chunks(KEYS_PER_STATEMENT) {
            let mut stmt = Stmt::new(self.kind());
            stmt.push(&format!("SELECT key_id, {} FROM (", sum_select(true)));
            if !filter.source(&mut stmt, true, false, true, chunk) {
                break;
            }
            stmt.push(") u GROUP BY key_id");
            for row in stmt.query().fetch_all(self.pool()).await? {
                totals.insert(row.try_get("key_id")?, counts_from_row(&row, true)?);
            }
        }
        Ok(totals)
    }

    /// Counts per step of `step_ms` (steps aligned to the epoch, UTC),
    /// zero-filled from the step holding `from` up to `to` (exclusive). The
    /// latency histogram is not read (its buckets are 0; the latency sum is).
    /// Steps of whole hours read the hourly rollup. At most
    /// [`MAX_SERIES_POINTS`] points: a finer step is refused.
    pub async fn usage_timeseries(
        &self,
        filter: &UsageFilter,
        step_ms: i64,
    ) -> Result<Vec<SeriesPoint>, DbError> {
        if step_ms < MINUTE_MS || step_ms % MINUTE_MS != 0 {
            return Err(DbError::Conflict(format!(
                "step {step_ms} ms is not a whole number of minutes"
            )));
        }
        let first = filter.from - filter.from.rem_euclid(step_ms);
        let points = if filter.to > first {
            (filter.to - first + step_ms - 1) / step_ms
        } else {
            0
        };
        if points > MAX_SERIES_POINTS {
            return Err(DbError::Conflict(format!(
                "{points} points of {step_ms} ms: at most {MAX_SERIES_POINTS}"
            )));
        }
        let mut found: BTreeMap<i64, Counts> = BTreeMap::new();
        let mut stmt = Stmt::new(self.kind());
        // The step is a validated integer: written as a literal, so that the
        // grouping expression has no parameter in it.
        stmt.push(&format!(
            "SELECT CAST(t - (t % {step_ms}) AS BIGINT) AS step_at, {} FROM (",
            sum_select(false)
        ));
        if filter.source(&mut stmt, step_ms % HOUR_MS == 0, false, false, &[]) {
            stmt.push(") u GROUP BY 1 ORDER BY 1");
            for row in stmt.query().fetch_all(self.pool()).await? {
                found.insert(row.try_get("step_at")?, counts_from_row(&row, false)?);
            }
        }
        Ok((0..points)
            .map(|i| {
                let at = first + i * step_ms;
                SeriesPoint {
                    at,
                    counts: found.get(&at).copied().unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Counts per route over the filtered rows, busiest first.
    pub async fn usage_by_route(&self, filter: &UsageFilter) -> Result<Vec<RouteUsage>, DbError> {
        let mut stmt = Stmt::new(self.kind());
        stmt.push(&format!("SELECT route, {} FROM (", sum_select(true)));
        if !filter.source(&mut stmt, true, false, true, &[]) {
            return Ok(Vec::new());
        }
        stmt.push(&format!(
            ") u GROUP BY route ORDER BY SUM{ROW_TOTAL} DESC, route"
        ));
        let rows = stmt.query().fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                Ok(RouteUsage {
                    route: row.try_get("route")?,
                    counts: counts_from_row(row, true)?,
                })
            })
            .collect()
    }

    /// The `limit` keys with the most requests in `from..to` (ties by id),
    /// with their name and prefix. Requests without a key are left out. The
    /// latency histogram is not read (its buckets are 0; the latency sum is).
    pub async fn top_keys(&self, from: i64, to: i64, limit: i64) -> Result<Vec<KeyUsage>, DbError> {
        let filter = UsageFilter {
            from,
            to,
            ..UsageFilter::default()
        };
        let sums = columns(false)
            .iter()
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut stmt = Stmt::new(self.kind());
        stmt.push(&format!(
            "SELECT r.key_id, k.name, k.key_prefix, {sums} FROM (\
               SELECT key_id, CAST(SUM{ROW_TOTAL} AS BIGINT) AS total, {} FROM (",
            sum_select(false)
        ));
        if !filter.source(&mut stmt, true, true, false, &[]) {
            return Ok(Vec::new());
        }
        stmt.push(") u GROUP BY key_id ORDER BY total DESC, key_id LIMIT ")
            .int(limit.max(0))
            .push(") r LEFT JOIN api_keys k ON k.id = r.key_id ORDER BY r.total DESC, r.key_id");
        let rows = stmt.query().fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                Ok(KeyUsage {
                    key_id: row.try_get("key_id")?,
                    name: row.try_get("name")?,
                    key_prefix: row.try_get("key_prefix")?,
                    counts: counts_from_row(row, false)?,
                })
            })
            .collect()
    }

    /// One page of violations, newest first, and how many match in all.
    pub async fn list_violations(
        &self,
        filter: &ViolationFilter,
    ) -> Result<(Vec<Violation>, i64), DbError> {
        let mut count = Stmt::new(self.kind());
        count.push("SELECT COUNT(*) AS n FROM violations");
        filter.condition(&mut count);
        let total: i64 = count.query().fetch_one(self.pool()).await?.try_get("n")?;
        // The page first (by index), then the names of its keys.
        let mut stmt = Stmt::new(self.kind());
        stmt.push(
            "SELECT v.id, v.at, v.key_id, k.name AS key_name, v.route, v.method, v.path, \
             v.client_ip, v.limit_name, v.status FROM (\
               SELECT id, at, key_id, route, method, path, client_ip, limit_name, status \
               FROM violations",
        );
        filter.condition(&mut stmt);
        stmt.push(" ORDER BY at DESC, id DESC LIMIT ")
            .int(if filter.limit <= 0 {
                i64::MAX
            } else {
                filter.limit
            })
            .push(" OFFSET ")
            .int(filter.offset.max(0))
            .push(") v LEFT JOIN api_keys k ON k.id = v.key_id ORDER BY v.at DESC, v.id DESC");
        let rows = stmt.query().fetch_all(self.pool()).await?;
        let items = rows
            .iter()
            .map(|row| {
                Ok(Violation {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    key_id: row.try_get("key_id")?,
                    key_name: row.try_get("key_name")?,
                    route: row.try_get("route")?,
                    method: row.try_get("method")?,
                    path: row.try_get("path")?,
                    client_ip: row.try_get("client_ip")?,
                    limit_name: row.try_get("limit_name")?,
                    status: row.try_get("status")?,
                })
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        Ok((items, total))
    }

    /// Delete usage older than `before` (Unix ms) by whole hours — minute
    /// and hour rows before the hour holding `before`, so both tables keep
    /// the same hours — and violations before `before`. Deletes one hour of
    /// data per statement, so a large purge never holds a long write lock
    /// (SQLite) or a huge transaction. `usage_rows` counts minute rows.
    pub async fn purge_usage_before(&self, before: i64) -> Result<Purged, DbError> {
        self.purge(before, before).await
    }

    /// Retention with separate horizons: usage before `usage_before`, and
    /// `violations` and `violation_aggregates` before `violations_before`
    /// (Unix ms); also the ids of usage batches applied more than a day ago.
    pub async fn purge(
        &self,
        usage_before: i64,
        violations_before: i64,
    ) -> Result<Purged, DbError> {
        let hour = hour_of(usage_before);
        self.purge_windows("usage_hour", "hour", hour).await?;
        let usage_rows = self.purge_windows("usage_minute", "minute", hour).await?;
        let violations = self
            .purge_windows("violations", "at", violations_before)
            .await?;
        let aggregates = self
            .purge_windows(
                "violation_aggregates",
                "minute",
                minute_of(violations_before),
            )
            .await?;
        let batches = self
            .purge_windows(
                "usage_batches",
                "applied_at",
                crate::now_ms() - BATCH_ID_KEPT_MS,
            )
            .await?;
        Ok(Purged {
            usage_rows,
            violations,
            aggregates,
            batches,
        })
    }

    /// Refresh the query planner's statistics of the usage tables (after a
    /// large purge or bulk load).
    pub async fn analyze_usage(&self) -> Result<(), DbError> {
        for table in [
            "usage_minute",
            "usage_hour",
            "violations",
            "violation_aggregates",
        ] {
            sqlx::query(&format!("ANALYZE {table}"))
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    async fn purge_windows(&self, table: &str, column: &str, before: i64) -> Result<u64, DbError> {
        let row = sqlx::query(&format!(
            "SELECT MIN({column}) AS lo, MAX({column}) AS hi FROM {table}"
        ))
        .fetch_one(self.pool())
        .await?;
        let lo: Option<i64> = row.try_get("lo")?;
        let hi: Option<i64> = row.try_get("hi")?;
        let (Some(lo), Some(hi)) = (lo, hi) else {
            return Ok(0);
        };
        let stop = before.min(hi.saturating_add(1));
        let mut edge = lo;
        let mut deleted = 0;
        while edge < stop {
            edge = edge.saturating_add(HOUR_MS).min(stop);
            let mut stmt = Stmt::new(self.kind());
            stmt.push(&format!("DELETE FROM {table} WHERE {column} < "))
                .int(edge);
            deleted += stmt.query().execute(self.pool()).await?.rows_affected();
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_whole_hours_from_the_rollup() {
        let h = HOUR_MS;
        let m = MINUTE_MS;
        // Within one hour: minutes only.
        assert_eq!(
            split(10 * h + 5 * m, 10 * h + 50 * m, true),
            Split {
                hours: None,
                minutes: vec![(10 * h + 5 * m, 10 * h + 50 * m)]
            }
        );
        // Ragged ends: minutes, whole hours between.
        assert_eq!(
            split(10 * h + 5 * m + 30_000, 13 * h + 7 * m + 1, true),
            Split {
                hours: Some((11 * h, 13 * h)),
                minutes: vec![(10 * h + 5 * m, 11 * h), (13 * h, 13 * h + 7 * m + 1)]
            }
        );
        // Aligned: hours only.
        assert_eq!(
            split(10 * h, 12 * h, true),
            Split {
                hours: Some((10 * h, 12 * h)),
                minutes: vec![]
            }
        );
        // An hour-aligned range of less than an hour, or minutes asked for.
        assert_eq!(split(10 * h, 10 * h + m, true).hours, None);
        assert_eq!(split(10 * h, 12 * h, false).minutes, vec![(10 * h, 12 * h)]);
        assert_eq!(split(m, m, true).minutes, vec![]);
        assert!(split(m + 5, m, true).minutes.is_empty());
    }

    #[test]
    fn minutes_round_down() {
        assert_eq!(minute_of(0), 0);
        assert_eq!(minute_of(59_999), 0);
        assert_eq!(minute_of(60_000), 60_000);
        assert_eq!(minute_of(-1), -60_000);
    }

    #[test]
    fn duplicate_rows_are_merged_and_sorted() {
        let row = |minute, key_id, route: &str, allowed| UsageRow {
            minute,
            key_id,
            route: route.into(),
            counts: Counts {
                allowed,
                ..Counts::default()
            },
        };
        let rows = [
            row(60_000, 2, "b", 1),
            row(0, 1, "a", 2),
            row(60_000, 2, "b", 3),
            row(HOUR_MS + 60_000, 2, "b", 5),
        ];
        let allowed = |n| Counts {
            allowed: n,
            ..Counts::default()
        };
        assert_eq!(
            merged(&rows, |m| m),
            vec![
                (0, 1, "a", allowed(2)),
                (60_000, 2, "b", allowed(4)),
                (HOUR_MS + 60_000, 2, "b", allowed(5)),
            ]
        );
        assert_eq!(
            merged(&rows, hour_of),
            vec![
                (0, 1, "a", allowed(2)),
                (0, 2, "b", allowed(4)),
                (HOUR_MS, 2, "b", allowed(5)),
            ]
        );
        // The hourly rows of merged minutes are the rows merged per hour.
        assert_eq!(hourly(&merged(&rows, |m| m)), merged(&rows, hour_of));
    }

    /// Every analytics query is answered from an index on SQLite (the
    /// PostgreSQL plans are shown in benches/RESULTS.md).
    #[tokio::test]
    async fn analytics_queries_use_indexes() {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        let db = crate::db::testing::fresh_sqlite(dir.path()).await;
        let plan = |sql: String| {
            let db = db.clone();
            async move {
                let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .fetch_all(db.pool())
                    .await
                    .unwrap_or_else(|e| panic!("explain {sql}: {e}"));
                rows.iter()
                    .map(|r| r.try_get::<String, _>("detail").unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" | ")
            }
        };
        let sums = sum_select(true);
        let cases = [
            (
                format!("SELECT {sums} FROM usage_minute WHERE minute >= 1 AND minute < 2"),
                "INDEX sqlite_autoindex_usage_minute_1",
            ),
            (
                format!("SELECT {sums} FROM usage_minute WHERE minute >= 1 AND minute < 2 AND key_id = 3"),
                "INDEX usage_minute_key",
            ),
            (
                format!("SELECT {sums} FROM usage_minute WHERE minute >= 1 AND minute < 2 AND route = 'x'"),
                "INDEX usage_minute_route",
            ),
            (
                format!("SELECT {sums} FROM usage_hour WHERE hour >= 1 AND hour < 2"),
                "SEARCH usage_hour USING PRIMARY KEY",
            ),
            (
                format!("SELECT {sums} FROM usage_hour WHERE hour >= 1 AND hour < 2 AND key_id = 3"),
                "INDEX usage_hour_key",
            ),
            (
                format!("SELECT {sums} FROM usage_hour WHERE hour >= 1 AND hour < 2 AND route = 'x'"),
                "INDEX usage_hour_route",
            ),
            (
                "SELECT id FROM violations WHERE at >= 1 AND at < 2 ORDER BY at DESC, id DESC LIMIT 5"
                    .to_string(),
                "INDEX violations_at",
            ),
            (
                "SELECT id FROM violations WHERE at >= 1 AND at < 2 AND key_id = 4 ORDER BY at DESC, id DESC LIMIT 5"
                    .to_string(),
                "INDEX violations_key_at",
            ),
            (
                "SELECT id FROM violations WHERE at >= 1 AND at < 2 AND route = 'x' ORDER BY at DESC, id DESC LIMIT 5"
                    .to_string(),
                "INDEX violations_route_at",
            ),
        ];
        for (sql, want) in cases {
            let got = plan(sql.clone()).await;
            assert!(got.contains(want), "{sql}\nplan: {got}\nwant: {want}");
        }
        db.close().await;
    }
}
