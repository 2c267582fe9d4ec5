//! Reading usage back for the admin API: totals, zero-filled time series,
//! per route, top keys, paged violations.

use super::*;

impl Db {
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
}
