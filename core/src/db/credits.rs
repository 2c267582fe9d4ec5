//! `credit_adjustments`: every top-up or adjustment of a credit balance, one
//! row each, never changed (issue #20 item 2; rules in [`crate::credits`]).
//! The proxies read them ([`Db::credit_adjustments_since`]) and apply each
//! exactly once to the live balance.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Db, DbError};
use crate::credits::{check_delta, SubjectKind};
use crate::now_ms;

/// One adjustment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CreditAdjustment {
    pub id: i64,
    #[serde(serialize_with = "kind_str")]
    pub subject_kind: SubjectKind,
    pub subject_id: i64,
    pub delta: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Who made it (`admin:<name>`, `cli:<user>`).
    pub actor: String,
}

fn kind_str<S: serde::Serializer>(k: &SubjectKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.as_str())
}

const COLUMNS: &str = "id, subject_kind, subject_id, delta, created_at, actor";

fn decode(row: &AnyRow) -> Result<CreditAdjustment, DbError> {
    let kind: String = row.try_get("subject_kind")?;
    Ok(CreditAdjustment {
        id: row.try_get("id")?,
        subject_kind: SubjectKind::parse(&kind)
            .ok_or_else(|| DbError::Corrupt(format!("credit_adjustments.subject_kind {kind:?}")))?,
        subject_id: row.try_get("subject_id")?,
        delta: row.try_get("delta")?,
        created_at: row.try_get("created_at")?,
        actor: row.try_get("actor")?,
    })
}

impl Db {
    /// Record an adjustment of `delta` credits (checked: not 0, within
    /// [`crate::credits::MAX_DELTA`]; an invalid one is a
    /// [`DbError::Conflict`] carrying the reason).
    pub async fn add_credits(
        &self,
        kind: SubjectKind,
        subject_id: i64,
        delta: i64,
        actor: &str,
    ) -> Result<CreditAdjustment, DbError> {
        check_delta(delta).map_err(DbError::Conflict)?;
        let sql = format!(
            "INSERT INTO credit_adjustments (subject_kind, subject_id, delta, created_at, actor) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(kind.as_str())
            .bind(subject_id)
            .bind(delta)
            .bind(now_ms())
            .bind(actor)
            .fetch_one(self.pool())
            .await?;
        decode(&row)
    }

    /// Adjustments created at or after `since_ms` (Unix ms), oldest first.
    /// `0` reads them all.
    pub async fn credit_adjustments_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<CreditAdjustment>, DbError> {
        let sql =
            format!("SELECT {COLUMNS} FROM credit_adjustments WHERE created_at >= $1 ORDER BY id");
        let rows = sqlx::query(&sql)
            .bind(since_ms)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode).collect()
    }

    /// The credits ever granted to a subject (the sum of its adjustments),
    /// `None` if it holds no credits.
    pub async fn credits_granted(
        &self,
        kind: SubjectKind,
        subject_id: i64,
    ) -> Result<Option<i64>, DbError> {
        let sum: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(delta) AS BIGINT) FROM credit_adjustments \
             WHERE subject_kind = $1 AND subject_id = $2",
        )
        .bind(kind.as_str())
        .bind(subject_id)
        .fetch_one(self.pool())
        .await?;
        Ok(sum)
    }
}
