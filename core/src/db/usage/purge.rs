//! Retention: usage and violations deleted by whole hours, and the
//! planner's statistics refreshed.

use super::*;

impl Db {
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
