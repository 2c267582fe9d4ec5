//! `usage_minute` and `violations`: what the proxies write (batched upserts
//! that add up across instances) and what the admin API reads back
//! (summaries, zero-filled time series, top keys, paged violations), plus
//! retention.
//!
//! Counting rules: every recorded request falls in exactly one of
//! `allowed`, `limited`, `unauthorized`, `forbidden` and `upstream_errors`
//! (admitted requests that failed upstream or answered ≥ 500 count only as
//! upstream errors), so their sum is the number of requests. `key_id` 0 is
//! "no key" (unauthenticated routes, 401s, unknown keys). Each request's
//! latency goes to `latency_sum_us` and to one of the fixed histogram buckets
//! `lat_b0..lat_b11` (bounds: [`LATENCY_BUCKET_BOUNDS_US`]), so percentiles
//! can be read back to the bucket.
//!
//! Every statement is written with `$N` placeholders built here (sqlx `Any`'s
//! `QueryBuilder` emits `?`, which PostgreSQL refuses), and each batch is one
//! statement.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};

use super::{Db, DbError, LATENCY_BUCKETS, LATENCY_BUCKET_BOUNDS_US};

/// Rows per `INSERT … ON CONFLICT` statement (21 bound values each).
pub const USAGE_BATCH_ROWS: usize = 500;
/// Violations per `INSERT` statement (8 bound values each).
pub const VIOLATION_BATCH_ROWS: usize = 1_000;
/// Keys per `last_used_at` update statement.
pub const LAST_USED_BATCH: usize = 500;
/// Milliseconds in a minute: `usage_minute.minute` is a multiple of it.
pub const MINUTE_MS: i64 = 60_000;
/// The most points [`Db::usage_timeseries`] returns.
pub const MAX_SERIES_POINTS: i64 = 10_000;

/// The start (Unix ms) of the minute holding `ms`.
pub fn minute_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(MINUTE_MS)
}

/// The histogram bucket (`lat_b<i>`) a latency falls in.
pub fn latency_bucket(latency_us: u64) -> usize {
    LATENCY_BUCKET_BOUNDS_US.partition_point(|&bound| bound < latency_us)
}

/// What is counted per (minute, key, route).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub allowed: i64,
    pub limited: i64,
    pub unauthorized: i64,
    pub forbidden: i64,
    pub upstream_errors: i64,
    pub latency_sum_us: i64,
    /// Requests per latency bucket (`lat_b0..lat_b11`).
    pub latency_buckets: [i64; LATENCY_BUCKETS],
}

impl Counts {
    /// Every request counted (the five outcome columns are disjoint).
    pub fn total(&self) -> i64 {
        self.allowed + self.limited + self.unauthorized + self.forbidden + self.upstream_errors
    }

    /// Requests the gateway refused (429, 401, 403).
    pub fn refused(&self) -> i64 {
        self.limited + self.unauthorized + self.forbidden
    }

    pub fn add(&mut self, other: &Counts) {
        self.allowed += other.allowed;
        self.limited += other.limited;
        self.unauthorized += other.unauthorized;
        self.forbidden += other.forbidden;
        self.upstream_errors += other.upstream_errors;
        self.latency_sum_us += other.latency_sum_us;
        for (a, b) in self.latency_buckets.iter_mut().zip(other.latency_buckets) {
            *a += b;
        }
    }

    /// Mean latency in milliseconds, `None` without requests.
    pub fn avg_latency_ms(&self) -> Option<f64> {
        let n: i64 = self.latency_buckets.iter().sum();
        (n > 0).then(|| self.latency_sum_us as f64 / n as f64 / 1000.0)
    }

    /// The histogram bucket holding quantile `q` (0 < q ≤ 1): the first
    /// bucket whose cumulative count reaches `ceil(q × n)`. `None` without
    /// requests.
    pub fn percentile_bucket(&self, q: f64) -> Option<usize> {
        let n: i64 = self.latency_buckets.iter().sum();
        if n <= 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as i64).max(1);
        let mut seen = 0;
        for (i, c) in self.latency_buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(i);
            }
        }
        Some(LATENCY_BUCKETS - 1)
    }

    /// Quantile `q` in milliseconds, to the bucket: the upper bound of the
    /// bucket holding it; for the open-ended last bucket its lower bound
    /// (the slowest bound, 1000 ms). `None` without requests.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        self.percentile_bucket(q).map(bucket_bound_ms)
    }
}

/// The upper bound in ms of bucket `i`; the lower bound for the last, open one.
pub fn bucket_bound_ms(i: usize) -> f64 {
    let last = LATENCY_BUCKET_BOUNDS_US[LATENCY_BUCKET_BOUNDS_US.len() - 1];
    LATENCY_BUCKET_BOUNDS_US.get(i).copied().unwrap_or(last) as f64 / 1000.0
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
    COUNTER_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .chain((0..LATENCY_BUCKETS).map(bucket_column))
        .collect()
}

/// `CAST(COALESCE(SUM(c), 0) AS BIGINT) AS c, …` (PostgreSQL sums BIGINT to
/// NUMERIC, which sqlx `Any` cannot decode).
fn sum_select() -> String {
    summed_columns()
        .iter()
        .map(|c| format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT) AS {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The total-requests expression of one row.
const ROW_TOTAL: &str = "(allowed + limited + unauthorized + forbidden + upstream_errors)";

fn counts_from_row(row: &AnyRow) -> Result<Counts, DbError> {
    let mut latency_buckets = [0i64; LATENCY_BUCKETS];
    for (i, b) in latency_buckets.iter_mut().enumerate() {
        *b = row.try_get(bucket_column(i).as_str())?;
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

/// One bound value of a dynamically built statement.
enum Arg {
    Int(i64),
    OptInt(Option<i64>),
    Text(String),
    OptText(Option<String>),
}

fn bind_all<'q>(
    mut q: Query<'q, Any, AnyArguments<'q>>,
    args: Vec<Arg>,
) -> Query<'q, Any, AnyArguments<'q>> {
    for a in args {
        q = match a {
            Arg::Int(v) => q.bind(v),
            Arg::OptInt(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
            Arg::OptText(v) => q.bind(v),
        };
    }
    q
}

impl UsageFilter {
    /// `WHERE …` over `usage_minute` and its arguments, numbered from `$first`.
    fn condition(&self, first: usize) -> (String, Vec<Arg>) {
        let mut args = vec![Arg::Int(minute_of(self.from)), Arg::Int(self.to)];
        let mut sql = format!("minute >= ${} AND minute < ${}", first, first + 1);
        if let Some(k) = self.key_id {
            args.push(Arg::Int(k));
            let _ = write!(sql, " AND key_id = ${}", first + args.len() - 1);
        }
        if let Some(r) = &self.route {
            args.push(Arg::Text(r.clone()));
            let _ = write!(sql, " AND route = ${}", first + args.len() - 1);
        }
        (format!(" WHERE {sql}"), args)
    }
}

impl ViolationFilter {
    fn condition(&self) -> (String, Vec<Arg>) {
        let mut args = vec![Arg::Int(self.from), Arg::Int(self.to)];
        let mut sql = String::from("at >= $1 AND at < $2");
        match self.key_id {
            Some(0) => sql.push_str(" AND key_id IS NULL"),
            Some(k) => {
                args.push(Arg::Int(k));
                let _ = write!(sql, " AND key_id = ${}", args.len());
            }
            None => {}
        }
        if let Some(r) = &self.route {
            args.push(Arg::Text(r.clone()));
            let _ = write!(sql, " AND route = ${}", args.len());
        }
        (format!(" WHERE {sql}"), args)
    }
}

/// Merge rows with the same (minute, key, route): one upsert statement may
/// not touch a row twice (PostgreSQL refuses), and sorted rows make two
/// proxies take row locks in the same order.
fn merged(rows: &[UsageRow]) -> Vec<UsageRow> {
    let mut map: BTreeMap<(i64, i64, &str), Counts> = BTreeMap::new();
    for r in rows {
        map.entry((r.minute, r.key_id, r.route.as_str()))
            .or_default()
            .add(&r.counts);
    }
    map.into_iter()
        .map(|((minute, key_id, route), counts)| UsageRow {
            minute,
            key_id,
            route: route.to_string(),
            counts,
        })
        .collect()
}

impl Db {
    /// Add `rows` to `usage_minute`: one `INSERT … ON CONFLICT (minute,
    /// key_id, route) DO UPDATE SET c = usage_minute.c + excluded.c`
    /// statement per [`USAGE_BATCH_ROWS`] rows, so several proxies writing
    /// the same row add up. Returns the number of rows written. Pass at most
    /// one batch to know exactly what was written when it fails.
    pub async fn upsert_usage(&self, rows: &[UsageRow]) -> Result<u64, DbError> {
        let rows = merged(rows);
        let columns = summed_columns();
        let per_row = 3 + columns.len();
        let updates = columns
            .iter()
            .map(|c| format!("{c} = usage_minute.{c} + excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut written = 0;
        for batch in rows.chunks(USAGE_BATCH_ROWS) {
            let mut sql = format!(
                "INSERT INTO usage_minute (minute, key_id, route, {}) VALUES ",
                columns.join(", ")
            );
            for (i, _) in batch.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for j in 0..per_row {
                    if j > 0 {
                        sql.push(',');
                    }
                    let _ = write!(sql, "${}", i * per_row + j + 1);
                }
                sql.push(')');
            }
            let _ = write!(
                sql,
                " ON CONFLICT (minute, key_id, route) DO UPDATE SET {updates}"
            );
            let mut q = sqlx::query(&sql).persistent(false);
            for r in batch {
                let c = &r.counts;
                q = q
                    .bind(r.minute)
                    .bind(r.key_id)
                    .bind(r.route.as_str())
                    .bind(c.allowed)
                    .bind(c.limited)
                    .bind(c.unauthorized)
                    .bind(c.forbidden)
                    .bind(c.upstream_errors)
                    .bind(c.latency_sum_us);
                for b in c.latency_buckets {
                    q = q.bind(b);
                }
            }
            q.execute(self.pool()).await?;
            written += batch.len() as u64;
        }
        Ok(written)
    }

    /// Insert violations, one statement per [`VIOLATION_BATCH_ROWS`].
    pub async fn insert_violations(&self, violations: &[NewViolation]) -> Result<u64, DbError> {
        let mut written = 0;
        for batch in violations.chunks(VIOLATION_BATCH_ROWS) {
            let mut sql = String::from(
                "INSERT INTO violations (at, key_id, route, method, path, client_ip, limit_name, status) VALUES ",
            );
            for i in 0..batch.len() {
                if i > 0 {
                    sql.push(',');
                }
                let n = i * 8;
                let _ = write!(
                    sql,
                    "(${},${},${},${},${},${},${},${})",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5,
                    n + 6,
                    n + 7,
                    n + 8
                );
            }
            let mut q = sqlx::query(&sql).persistent(false);
            for v in batch {
                q = q
                    .bind(v.at)
                    .bind(v.key_id)
                    .bind(v.route.as_str())
                    .bind(v.method.as_str())
                    .bind(v.path.as_str())
                    .bind(v.client_ip.as_str())
                    .bind(v.limit_name.as_deref())
                    .bind(v.status);
            }
            q.execute(self.pool()).await?;
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
            let mut case = String::from("CASE id");
            let mut ids = Vec::with_capacity(batch.len());
            for i in 0..batch.len() {
                let _ = write!(case, " WHEN ${} THEN ${}", 2 * i + 1, 2 * i + 2);
                ids.push(format!("${}", 2 * i + 1));
            }
            case.push_str(" END");
            let sql = format!(
                "UPDATE api_keys SET last_used_at = {case} WHERE id IN ({}) \
                 AND (last_used_at IS NULL OR last_used_at < {case})",
                ids.join(",")
            );
            let mut q = sqlx::query(&sql).persistent(false);
            for &(id, at) in batch {
                q = q.bind(id).bind(at);
            }
            q.execute(self.pool()).await?;
        }
        Ok(())
    }

    /// Totals over the filtered rows.
    pub async fn usage_totals(&self, filter: &UsageFilter) -> Result<UsageTotals, DbError> {
        let (cond, args) = filter.condition(1);
        let sql = format!(
            "SELECT {}, COUNT(DISTINCT CASE WHEN key_id <> 0 THEN key_id END) AS active_keys \
             FROM usage_minute{cond}",
            sum_select()
        );
        let row = bind_all(sqlx::query(&sql), args)
            .fetch_one(self.pool())
            .await?;
        Ok(UsageTotals {
            counts: counts_from_row(&row)?,
            active_keys: row.try_get("active_keys")?,
        })
    }

    /// Counts per step of `step_ms` (steps aligned to the epoch, UTC),
    /// zero-filled from the step holding `from` up to `to` (exclusive).
    /// At most [`MAX_SERIES_POINTS`] points: a finer step is an error.
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
        let (cond, mut args) = filter.condition(1);
        args.push(Arg::Int(step_ms));
        let sql = format!(
            "SELECT CAST(minute - (minute % ${}) AS BIGINT) AS step_at, {} \
             FROM usage_minute{cond} GROUP BY 1 ORDER BY 1",
            args.len(),
            sum_select()
        );
        let rows = bind_all(sqlx::query(&sql), args)
            .fetch_all(self.pool())
            .await?;
        let mut found: BTreeMap<i64, Counts> = BTreeMap::new();
        for row in &rows {
            found.insert(row.try_get("step_at")?, counts_from_row(row)?);
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
        let (cond, args) = filter.condition(1);
        let sql = format!(
            "SELECT route, {} FROM usage_minute{cond} GROUP BY route \
             ORDER BY SUM{ROW_TOTAL} DESC, route",
            sum_select()
        );
        let rows = bind_all(sqlx::query(&sql), args)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(RouteUsage {
                    route: row.try_get("route")?,
                    counts: counts_from_row(row)?,
                })
            })
            .collect()
    }

    /// The `limit` keys with the most requests in `from..to` (ties by id),
    /// with their name and prefix. Requests without a key are left out.
    pub async fn top_keys(&self, from: i64, to: i64, limit: i64) -> Result<Vec<KeyUsage>, DbError> {
        let sums = summed_columns()
            .iter()
            .map(|c| format!("t.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT t.key_id, k.name, k.key_prefix, {sums} FROM (\
               SELECT key_id, CAST(SUM{ROW_TOTAL} AS BIGINT) AS total, {} FROM usage_minute \
               WHERE minute >= $1 AND minute < $2 AND key_id <> 0 \
               GROUP BY key_id ORDER BY total DESC, key_id LIMIT $3\
             ) t LEFT JOIN api_keys k ON k.id = t.key_id ORDER BY t.total DESC, t.key_id",
            sum_select()
        );
        let rows = sqlx::query(&sql)
            .bind(minute_of(from))
            .bind(to)
            .bind(limit.max(0))
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(KeyUsage {
                    key_id: row.try_get("key_id")?,
                    name: row.try_get("name")?,
                    key_prefix: row.try_get("key_prefix")?,
                    counts: counts_from_row(row)?,
                })
            })
            .collect()
    }

    /// One page of violations, newest first, and how many match in all.
    pub async fn list_violations(
        &self,
        filter: &ViolationFilter,
    ) -> Result<(Vec<Violation>, i64), DbError> {
        let (cond, args) = filter.condition();
        let total: i64 = bind_all(
            sqlx::query(&format!("SELECT COUNT(*) AS n FROM violations{cond}")),
            args,
        )
        .fetch_one(self.pool())
        .await?
        .try_get("n")?;
        let (cond, mut args) = filter.condition();
        let n = args.len();
        args.push(Arg::Int(if filter.limit <= 0 { i64::MAX } else { filter.limit }));
        args.push(Arg::Int(filter.offset.max(0)));
        let sql = format!(
            "SELECT id, at, key_id, route, method, path, client_ip, limit_name, status \
             FROM violations{cond} ORDER BY at DESC, id DESC LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let rows = bind_all(sqlx::query(&sql), args)
            .fetch_all(self.pool())
            .await?;
        let items = rows
            .iter()
            .map(|row| {
                Ok(Violation {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    key_id: row.try_get("key_id")?,
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

    /// Delete usage rows of minutes before `before` and violations before it
    /// (Unix ms). Deletes one hour of data per statement, so a large purge
    /// never holds a long write lock (SQLite) or a huge transaction.
    pub async fn purge_usage_before(&self, before: i64) -> Result<Purged, DbError> {
        Ok(Purged {
            usage_rows: self
                .purge_windows("usage_minute", "minute", before)
                .await?,
            violations: self.purge_windows("violations", "at", before).await?,
        })
    }

    async fn purge_windows(&self, table: &str, column: &str, before: i64) -> Result<u64, DbError> {
        const WINDOW_MS: i64 = 3_600_000;
        let oldest: Option<i64> =
            sqlx::query(&format!("SELECT MIN({column}) AS m FROM {table}"))
                .fetch_one(self.pool())
                .await?
                .try_get("m")?;
        let Some(mut edge) = oldest else {
            return Ok(0);
        };
        let delete = format!("DELETE FROM {table} WHERE {column} < $1");
        let mut deleted = 0;
        while edge < before {
            edge = edge.saturating_add(WINDOW_MS).min(before);
            deleted += sqlx::query(&delete)
                .bind(edge)
                .execute(self.pool())
                .await?
                .rows_affected();
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_buckets(buckets: &[(usize, i64)]) -> Counts {
        let mut c = Counts::default();
        for &(i, n) in buckets {
            c.latency_buckets[i] = n;
            c.allowed += n;
        }
        c
    }

    #[test]
    fn latencies_fall_in_inclusive_buckets() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(500), 0);
        assert_eq!(latency_bucket(501), 1);
        assert_eq!(latency_bucket(1_000), 1);
        assert_eq!(latency_bucket(1_000_000), 10);
        assert_eq!(latency_bucket(1_000_001), 11);
        assert_eq!(latency_bucket(u64::MAX), 11);
    }

    #[test]
    fn percentiles_are_read_to_the_bucket() {
        assert_eq!(Counts::default().percentile_ms(0.5), None);
        // 50 fast (≤ 0.5 ms), 45 at ≤ 5 ms, 4 at ≤ 100 ms, 1 slower than 1 s.
        let c = with_buckets(&[(0, 50), (3, 45), (7, 4), (11, 1)]);
        assert_eq!(c.percentile_ms(0.5), Some(0.5));
        assert_eq!(c.percentile_ms(0.51), Some(5.0));
        assert_eq!(c.percentile_ms(0.95), Some(5.0));
        assert_eq!(c.percentile_ms(0.96), Some(100.0));
        assert_eq!(c.percentile_ms(0.99), Some(100.0));
        assert_eq!(c.percentile_ms(1.0), Some(1000.0));
        assert_eq!(c.percentile_bucket(1.0), Some(11));
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
        let m = merged(&[row(60_000, 2, "b", 1), row(0, 1, "a", 2), row(60_000, 2, "b", 3)]);
        assert_eq!(m, vec![row(0, 1, "a", 2), row(60_000, 2, "b", 4)]);
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
        let sums = sum_select();
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
