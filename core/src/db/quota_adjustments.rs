//! `quota_adjustments`: every reset or adjustment of a quota's current
//! period, one row each, never changed (issue #20; rules in
//! [`crate::quota::adjust`]). The proxies read the rows whose period has not
//! ended ([`Db::quota_adjustments_running`]) and apply each exactly once.

use sqlx::any::AnyRow;
use sqlx::Row;

use std::collections::BTreeMap;

use super::{Db, DbError};
use crate::config::Plan;
use crate::credits::SubjectKind;
use crate::limit_scope::LimitScope;
use crate::now_ms;
use crate::quota::adjust::{
    check_used_delta, current_period, find_quota, FindQuotaError, QuotaChange,
};
use crate::quota::PeriodBounds;
use crate::rules::limits::check_name;

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
        rows.iter().map(decode).collect()
    }
}

/// Why a reset or adjustment was refused: the admin API answers each with
/// its status, the CLI prints the same message.
#[derive(Debug, thiserror::Error)]
pub enum AdjustError {
    #[error("no key with id {0}")]
    NoKey(i64),
    #[error("no identity with id {0}")]
    NoIdentity(i64),
    /// The quota's name cannot be a limit's name.
    #[error("{0}")]
    BadName(String),
    /// No such quota (404), or a token bucket (409).
    #[error(transparent)]
    Find(#[from] FindQuotaError),
    /// A key's quota that its identity's keys share: changed on the identity.
    #[error(
        "quota {quota:?} is shared by the key's identity {identity}: \
         reset or adjust it on the identity"
    )]
    Shared { quota: String, identity: i64 },
    /// An identity's quota that counts per key: changed on each key.
    #[error("quota {0:?} counts per key (scope: key): reset or adjust it on each key")]
    PerKey(String),
    /// No period contains this instant (years beyond the calendar).
    #[error("quota {0:?} has no current period")]
    NoPeriod(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl Db {
    /// Reset or adjust the current period of the quota `name` of a key or
    /// an identity (the admin API and the CLI both call this): the quota is
    /// looked up among the limits that apply (`yaml`: the config's plans),
    /// its period taken at `now_us`, and the row recorded.
    ///
    /// A key's quota shared by its identity (`scope: identity`) is changed
    /// on the identity; an identity's quota counted per key, on each key.
    #[allow(clippy::too_many_arguments)]
    pub async fn adjust_quota(
        &self,
        yaml: &BTreeMap<String, Plan>,
        subject_kind: SubjectKind,
        subject_id: i64,
        name: &str,
        change: QuotaChange,
        actor: &str,
        now_us: i64,
    ) -> Result<QuotaAdjustment, AdjustError> {
        check_name("limit", name).map_err(AdjustError::BadName)?;
        let quota = match subject_kind {
            SubjectKind::Key => {
                let key = self
                    .get_key(subject_id)
                    .await?
                    .ok_or(AdjustError::NoKey(subject_id))?;
                let limits = self.key_limits(yaml, &key).await?.limits;
                let quota = find_quota(&limits, name)?.clone();
                if let (LimitScope::Identity, Some(identity)) = (quota.scope, key.identity_id) {
                    return Err(AdjustError::Shared {
                        quota: name.to_string(),
                        identity,
                    });
                }
                quota
            }
            SubjectKind::Identity => {
                let identity = self
                    .get_identity(subject_id)
                    .await?
                    .ok_or(AdjustError::NoIdentity(subject_id))?;
                let limits = self.identity_limits(yaml, &identity).await?;
                let quota = find_quota(&limits, name)?.clone();
                if quota.scope != LimitScope::Identity {
                    return Err(AdjustError::PerKey(name.to_string()));
                }
                quota
            }
        };
        let period = current_period(&quota, now_us)
            .ok_or_else(|| AdjustError::NoPeriod(name.to_string()))?;
        Ok(self
            .add_quota_adjustment(&NewQuotaAdjustment {
                subject_kind,
                subject_id,
                quota: name,
                period,
                change,
                actor,
            })
            .await?)
    }
}
