//! Folding old spend rows of `credit_adjustments` (the rule and why it is
//! safe: [`crate::credits::fold`]).

use sqlx::any::AnyRow;
use sqlx::Row;

use super::credits::NewSpend;
use super::{Db, DbError, DbKind};
use crate::credits::fold::{self, SpendRow, SumOutOfRange, FOLDED_BY, FOLD_ACTOR};
use crate::credits::SubjectKind;

/// What one [`Db::fold_credit_spends`] call did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FoldPass {
    /// Spend rows read (old enough, above the id given).
    pub read: usize,
    /// The highest id read: the next call goes on from there.
    pub last_id: Option<i64>,
    /// Rows deleted (and replaced by one fold row per balance).
    pub folded: usize,
    /// Balances whose rows were left as they are (sum beyond 64 bits).
    pub skipped: Vec<SumOutOfRange>,
    /// Another process was folding (PostgreSQL): nothing was done.
    pub busy: bool,
}

/// The advisory lock folding holds (PostgreSQL): one folder at a time.
const FOLD_LOCK: i64 = 0x7467_6366_6f6c_6400; // "tgcfold"

/// Ids per `DELETE … IN (…)`.
const DELETE_CHUNK: usize = 500;

fn spend_row(row: &AnyRow) -> Result<SpendRow, DbError> {
    let kind: String = row.try_get("subject_kind")?;
    let spent_at: Option<i64> = row.try_get("spent_at")?;
    let created_at: i64 = row.try_get("created_at")?;
    Ok(SpendRow {
        id: row.try_get("id")?,
        subject_kind: SubjectKind::parse(&kind)
            .ok_or_else(|| DbError::Corrupt(format!("credit_adjustments.subject_kind {kind:?}")))?,
        subject_id: row.try_get("subject_id")?,
        delta: row.try_get("delta")?,
        moved_at_ms: spent_at.unwrap_or(created_at),
    })
}

impl Db {
    /// Fold the spend rows written before `older_than_ms` (their
    /// `created_at`), reading at most `batch` of them with ids above
    /// `after`, in one transaction: each balance's rows are deleted and one
    /// fold row (per refill period side, see [`fold::fold`]) takes their
    /// place, with the same sum. Top-ups and adjustments by admins are
    /// never touched.
    pub async fn fold_credit_spends(
        &self,
        older_than_ms: i64,
        after: i64,
        batch: i64,
        period_start_us: impl Fn(SubjectKind, i64) -> Option<i64>,
    ) -> Result<FoldPass, DbError> {
        let mut tx = self.pool().begin().await?;
        if self.kind() == DbKind::Postgres {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(FOLD_LOCK)
                .fetch_one(&mut *tx)
                .await?;
            if !locked {
                tx.rollback().await?;
                return Ok(FoldPass {
                    busy: true,
                    ..FoldPass::default()
                });
            }
        }
        let rows = sqlx::query(
            "SELECT id, subject_kind, subject_id, delta, spent_at, created_at \
             FROM credit_adjustments \
             WHERE spent_by IS NOT NULL AND created_at < $1 AND id > $2 \
             ORDER BY id LIMIT $3",
        )
        .bind(older_than_ms)
        .bind(after)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let last_id = rows
            .iter()
            .filter_map(|r| r.try_get::<i64, _>("id").ok())
            .max();
        let rows = super::rows::readable(&rows, "credit_adjustments", spend_row);
        let folds = fold::fold(&rows, period_start_us);
        let mut pass = FoldPass {
            read: rows.len(),
            last_id,
            skipped: folds.skipped,
            ..FoldPass::default()
        };
        for f in &folds.folds {
            let mut deleted = 0;
            for chunk in f.ids.chunks(DELETE_CHUNK) {
                let list = chunk
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                deleted += sqlx::query(&format!(
                    "DELETE FROM credit_adjustments WHERE spent_by IS NOT NULL AND id IN ({list})"
                ))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            if deleted != f.ids.len() as u64 {
                // Someone else folded some of them meanwhile: this pass
                // writes nothing; the next one reads what is left.
                tx.rollback().await?;
                return Ok(FoldPass {
                    busy: true,
                    ..FoldPass::default()
                });
            }
            let row = NewSpend {
                subject_kind: f.subject_kind,
                subject_id: f.subject_id,
                delta: f.delta,
                spent_at: f.spent_at,
            };
            super::credits::insert_spend(&mut tx, &row, FOLD_ACTOR, FOLDED_BY).await?;
            pass.folded += f.ids.len();
        }
        tx.commit().await?;
        Ok(pass)
    }
}
