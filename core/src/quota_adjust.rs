//! Resetting or adjusting a quota's current period (issue #20): what the
//! admin API and the CLI both call ([`Db::adjust_quota`]): the quota looked
//! up among the limits that apply ([`crate::effective_limits`],
//! [`crate::rules::quota_adjust`]), its period taken, the row recorded
//! ([`crate::db::quota_adjustments`]). Above `db` and `rules`: nothing in
//! core depends on it.

use std::collections::BTreeMap;

use crate::config::Plan;
use crate::credits::SubjectKind;
use crate::db::quota_adjustments::{NewQuotaAdjustment, QuotaAdjustment};
use crate::db::{Db, DbError};
use crate::limit_scope::LimitScope;
use crate::quota::adjust::QuotaChange;
use crate::rules::limits::check_name;
use crate::rules::quota_adjust::{current_period, find_quota, FindQuotaError};

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
