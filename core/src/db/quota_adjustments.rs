//! `quota_adjustments`: every reset or adjustment of a quota's current
//! period, one row each, never changed (issue #20; rules in
//! [`crate::quota::adjust`]). The proxies read the rows whose period has not
//! ended ([`Db::quota_adjustments_running`]) and apply each exactly once.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Db, DbError};
use crate::credits::SubjectKind;
use crate::now_ms;
use crate::quota::adjust::{check_used_delta, QuotaChange};
use crate::quota::PeriodBounds;

/// One reset or adjustment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaAdjustment {
    pub id: i64,
    pub subject_kind: SubjectKind,
    pub subject_id: i64,
    /// The quota limit's name.
    pub quota: String,
    /// The period it applies to.
    pub period: PeriodBounds,
    pub change: QuotaChange,
    /// Unix ms.
    pub created_at: i64,
    /// Who made it (`admin:<name>`, `cli:<user>`).
    pub actor: String,
}

/// A new adjustment: whose quota, which period, what change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQuotaAdjustment<'a> {
    pub subject_kind: SubjectKind,
    pub subject_id: i64,
    pub quota: &'a str,
    pub period: PeriodBounds,
    pub change: QuotaChange,
    pub actor: &'a str,
}

const COLUMNS: &str =
    "id, subject_kind, subject_id, quota, period_start, period_end, kind, used_delta, created_at, actor";

fn decode(row: &AnyRow) -> Result<QuotaAdjustment, DbError> {
    let kind: String = row.try_get("subject_kind")?;
    let change: String = row.try_get("kind")?;
    let used_delta: i64 = row.try_get("used_delta")?;
    Ok(QuotaAdjustment {
        id: row.try_get("id")?,
        subject_kind: SubjectKind::parse(&kind)
            .ok_or_else(|| DbError::Corrupt(format!("quota_adjustments.subject_kind {kind:?}")))?,
        subject_id: row.try_get("subject_id")?,
        quota: row.try_get("quota")?,
        period: PeriodBounds {
            start_us: row.try_get("period_start")?,
            end_us: row.try_get("period_end")?,
        },
        change: QuotaChange::parse(&change, used_delta).ok_or_else(|| {
            DbError::Corrupt(format!("quota_adjustments.kind {change:?} {used_delta}"))
        })?,
        created_at: row.try_get("created_at")?,
        actor: row.try_get("actor")?,
    })
}

impl Db {
    /// Record a reset or adjustment (a delta out of range, or an empty
    /// period, is a [`DbError::Conflict`] carrying the reason).
    pub async fn add_quota_adjustment(
        &self,
        new: &NewQuotaAdjustment<'_>,
    ) -> Result<QuotaAdjustment, DbError> {
        if let QuotaChange::Delta(d) = new.change {
            check_used_delta(d).map_err(|(_, m)| DbError::Conflict(m))?;
        }
        if new.period.end_us <= new.period.start_us {
            return Err(DbError::Conflict("the period is empty".into()));
        }
        let sql = format!(
            "INSERT INTO quota_adjustments (subject_kind, subject_id, quota, period_start, \
             period_end, kind, used_delta, created_at, actor) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(new.subject_kind.as_str())
            .bind(new.subject_id)
            .bind(new.quota)
            .bind(new.period.start_us)
            .bind(new.period.end_us)
            .bind(new.change.kind())
            .bind(new.change.used_delta())
            .bind(now_ms())
            .bind(new.actor)
            .fetch_one(self.pool())
            .await?;
        decode(&row)
    }

    /// The adjustments whose period ends after `now_us` (µs since the
    /// epoch), oldest first: those that still change a count.
    pub async fn quota_adjustments_running(
        &self,
        now_us: i64,
    ) -> Result<Vec<QuotaAdjustment>, DbError> {
        let sql =
            format!("SELECT {COLUMNS} FROM quota_adjustments WHERE period_end > $1 ORDER BY id");
        let rows = sqlx::query(&sql)
            .bind(now_us)
            .fetch_all(self.pool())
            .await?;
        Ok(super::rows::readable(&rows, "quota_adjustments", decode))
    }
}
