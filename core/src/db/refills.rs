//! `credit_refills`: a key's or an identity's own credit refill (rules in
//! [`crate::refill`]; plans declare theirs in the YAML config). One row per
//! subject, checked before it is written; the proxies read them all
//! ([`Db::credit_refills`]) every `storage.key_refresh`.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Db, DbError};
use crate::credits::SubjectKind;
use crate::now_ms;
use crate::refill::{Refill, RefillSpec};

/// One subject's own refill, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRefill {
    pub subject_kind: SubjectKind,
    pub subject_id: i64,
    pub spec: RefillSpec,
}

const COLUMNS: &str = "subject_kind, subject_id, amount, every, period, anchor, time_zone";

fn decode(row: &AnyRow) -> Result<StoredRefill, DbError> {
    let kind: String = row.try_get("subject_kind")?;
    let amount: i64 = row.try_get("amount")?;
    Ok(StoredRefill {
        subject_kind: SubjectKind::parse(&kind)
            .ok_or_else(|| DbError::Corrupt(format!("credit_refills.subject_kind {kind:?}")))?,
        subject_id: row.try_get("subject_id")?,
        spec: RefillSpec {
            amount: u64::try_from(amount).ok(),
            every: row.try_get("every")?,
            period: row.try_get("period")?,
            anchor: row.try_get("anchor")?,
            time_zone: row.try_get("time_zone")?,
        },
    })
}

impl Db {
    /// Set (or replace) a subject's own refill. An invalid one is a
    /// [`DbError::Conflict`] naming the field (`field: reason`).
    pub async fn set_credit_refill(
        &self,
        kind: SubjectKind,
        subject_id: i64,
        spec: &RefillSpec,
    ) -> Result<Refill, DbError> {
        let refill =
            Refill::new(spec).map_err(|(field, m)| DbError::Conflict(format!("{field}: {m}")))?;
        sqlx::query(
            "INSERT INTO credit_refills \
             (subject_kind, subject_id, amount, every, period, anchor, time_zone, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (subject_kind, subject_id) DO UPDATE SET \
             amount = excluded.amount, every = excluded.every, period = excluded.period, \
             anchor = excluded.anchor, time_zone = excluded.time_zone, \
             updated_at = excluded.updated_at",
        )
        .bind(kind.as_str())
        .bind(subject_id)
        .bind(refill.amount)
        .bind(spec.every.clone())
        .bind(spec.period.clone())
        .bind(spec.anchor.clone())
        .bind(spec.time_zone.clone())
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(refill)
    }

    /// Remove a subject's own refill; whether it had one.
    pub async fn clear_credit_refill(
        &self,
        kind: SubjectKind,
        subject_id: i64,
    ) -> Result<bool, DbError> {
        let done =
            sqlx::query("DELETE FROM credit_refills WHERE subject_kind = $1 AND subject_id = $2")
                .bind(kind.as_str())
                .bind(subject_id)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A subject's own refill, if any.
    pub async fn credit_refill(
        &self,
        kind: SubjectKind,
        subject_id: i64,
    ) -> Result<Option<StoredRefill>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM credit_refills WHERE subject_kind = $1 AND subject_id = $2"
        );
        let row = sqlx::query(&sql)
            .bind(kind.as_str())
            .bind(subject_id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Every own refill.
    pub async fn credit_refills(&self) -> Result<Vec<StoredRefill>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM credit_refills ORDER BY subject_kind, subject_id");
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;
        Ok(super::rows::readable(&rows, "credit_refills", decode))
    }
}
