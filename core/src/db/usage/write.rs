//! Writing usage: the proxies' batched upserts into `usage_minute` and
//! `usage_hour` (rows merged and sorted first), violation rows, and keys'
//! last use.

use super::*;

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
}
