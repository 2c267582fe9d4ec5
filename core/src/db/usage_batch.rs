//! Usage flushes that count once: a [`UsageBatch`] (usage rows, violations,
//! violation aggregates) carries an id chosen by the writer and is applied in
//! one transaction that first claims its id in `usage_batches`. A writer that
//! timed out waiting for the commit does not know whether it happened; it
//! retries the *same* batch (same id, same content), and a batch whose id is
//! already there is skipped. So usage adds up across proxies (upserts add)
//! without a retry ever counting twice.

use std::collections::BTreeMap;

use super::stmt::Stmt;
pub use super::usage::BATCH_ID_KEPT_MS;
use super::usage::{hourly, merged, upsert_stmt, violations_stmt};
use super::usage::{NewViolation, UsageRow, USAGE_BATCH_ROWS, VIOLATION_BATCH_ROWS};
use super::violation_aggregates::{self, AggregateKey, ViolationAggregate, AGGREGATE_BATCH_ROWS};
use super::{Db, DbError};

/// Longest batch id accepted.
pub const MAX_BATCH_ID: usize = 64;

/// What one flush writes, all or nothing, at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageBatch {
    /// Unique per batch (the proxy uses a random UUID); at most [`MAX_BATCH_ID`] bytes.
    pub id: String,
    pub rows: Vec<UsageRow>,
    pub violations: Vec<NewViolation>,
    pub aggregates: Vec<ViolationAggregate>,
}

impl UsageBatch {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.violations.is_empty() && self.aggregates.is_empty()
    }
}

/// Aggregates summed per key, sorted (one statement may not touch a row
/// twice, and sorted rows make writers lock in the same order).
fn merged_aggregates(rows: &[ViolationAggregate]) -> Vec<ViolationAggregate> {
    let mut map: BTreeMap<&AggregateKey, i64> = BTreeMap::new();
    for r in rows {
        *map.entry(&r.key).or_default() += r.count;
    }
    map.into_iter()
        .map(|(key, count)| ViolationAggregate {
            key: key.clone(),
            count,
        })
        .collect()
}

impl Db {
    /// Apply `batch` in one transaction unless a batch with its id was
    /// applied before. Returns `false` when it was skipped as a repeat.
    pub async fn apply_usage_batch(&self, batch: &UsageBatch) -> Result<bool, DbError> {
        if batch.id.is_empty() || batch.id.len() > MAX_BATCH_ID {
            return Err(DbError::Conflict(format!(
                "a usage batch id has 1 to {MAX_BATCH_ID} bytes"
            )));
        }
        let kind = self.kind();
        let minutes = merged(&batch.rows, |m| m);
        let hours = hourly(&minutes);
        let aggregates = merged_aggregates(&batch.aggregates);

        let mut tx = self.pool().begin().await?;
        let mut claim = Stmt::new(kind);
        claim
            .push("INSERT INTO usage_batches (id, applied_at) VALUES (")
            .text(&batch.id)
            .push(",")
            .int(crate::now_ms())
            .push(") ON CONFLICT (id) DO NOTHING");
        if claim.query().execute(&mut *tx).await?.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        for chunk in minutes.chunks(USAGE_BATCH_ROWS) {
            upsert_stmt(kind, "usage_minute", "minute", chunk)
                .query()
                .execute(&mut *tx)
                .await?;
        }
        for chunk in hours.chunks(USAGE_BATCH_ROWS) {
            upsert_stmt(kind, "usage_hour", "hour", chunk)
                .query()
                .execute(&mut *tx)
                .await?;
        }
        for chunk in batch.violations.chunks(VIOLATION_BATCH_ROWS) {
            violations_stmt(kind, chunk)
                .query()
                .execute(&mut *tx)
                .await?;
        }
        for chunk in aggregates.chunks(AGGREGATE_BATCH_ROWS) {
            violation_aggregates::upsert_stmt(kind, chunk)
                .query()
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::usage::{Counts, UsageFilter};

    #[tokio::test]
    async fn a_batch_applied_twice_counts_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::db::testing::fresh_sqlite(dir.path()).await;
        let row = UsageRow {
            minute: 60_000,
            key_id: 1,
            route: "users".into(),
            counts: Counts {
                allowed: 3,
                ..Counts::default()
            },
        };
        let agg = ViolationAggregate {
            key: AggregateKey::new(60_000, "users", 401, "missing-api-key", None),
            count: 2,
        };
        let batch = UsageBatch {
            id: "b1".into(),
            rows: vec![row.clone(), row.clone()],
            violations: Vec::new(),
            aggregates: vec![agg.clone(), agg.clone()],
        };
        assert!(db.apply_usage_batch(&batch).await.expect("first"));
        assert!(!db.apply_usage_batch(&batch).await.expect("again"));
        let other = UsageBatch {
            id: "b2".into(),
            ..batch.clone()
        };
        assert!(db.apply_usage_batch(&other).await.expect("other"));
        let totals = db
            .usage_totals(&UsageFilter {
                from: 0,
                to: 10 * 60_000,
                ..UsageFilter::default()
            })
            .await
            .expect("totals");
        assert_eq!(totals.counts.allowed, 12);
        let (_, rows, refusals) = db
            .list_violation_aggregates(&violation_aggregates::AggregateFilter {
                from: 0,
                to: 10 * 60_000,
                ..Default::default()
            })
            .await
            .expect("aggregates");
        assert_eq!((rows, refusals), (1, 8));
        let bad = UsageBatch {
            id: String::new(),
            ..batch
        };
        assert!(db.apply_usage_batch(&bad).await.is_err());
        db.close().await;
    }
}
