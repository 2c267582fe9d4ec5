//! Applying quota resets and adjustments to every backend (see
//! [`crate::limiter::quota_adjust`]).

use std::collections::HashMap;

use tollgate_core::config::LimiterConfig;
use tollgate_core::credits::SubjectKind;
use tollgate_core::db::quota_adjustments::QuotaAdjustment;

use super::Limiters;
use crate::limiter::quota::wall_now_us;
use crate::limiter::quota_adjust::{target, Target};

fn target_of(a: &QuotaAdjustment, identities: &HashMap<i64, i64>) -> Target {
    let key_identity = match a.subject_kind {
        SubjectKind::Key => identities.get(&a.subject_id).copied(),
        SubjectKind::Identity => None,
    };
    target(a, key_identity)
}

impl Limiters {
    /// Apply the rows of running periods read from the database: to this
    /// proxy's local counts always (each once; the local backend and the
    /// `local` fallback), and to Redis when it is the backend (one script
    /// call per row; one that fails is sent again with the next read).
    /// Every row sent drops this proxy's cached Redis refusals of its
    /// subjects (`RedisLimiter::adjust_quota`).
    ///
    /// `identities` maps a key to its identity: a key of an identity
    /// counts its own quotas under the identity's hash tag.
    pub async fn apply_quota_adjustments(
        &self,
        cfg: &LimiterConfig,
        rows: &[QuotaAdjustment],
        identities: &HashMap<i64, i64>,
    ) {
        let now_us = wall_now_us();
        for a in rows.iter().filter(|a| a.period.end_us > now_us) {
            if self.quota_adjustments.first_local(a.id) {
                let t = target_of(a, identities);
                self.local
                    .adjust_quota(&t.subject, &t.bucket, a.period, a.change, a.id);
            }
        }
        let Some(redis) = self.redis_for(cfg) else {
            return;
        };
        let instance = redis.target().to_string();
        for a in self.quota_adjustments.pending_redis(rows, &instance) {
            if a.period.end_us <= now_us {
                continue;
            }
            let t = target_of(a, identities);
            match redis.adjust_quota(&t.subject, &t.bucket, a, now_us).await {
                Ok(after) => {
                    self.quota_adjustments.applied_in_redis(a.id, &instance);
                    tracing::info!(
                        adjustment = a.id,
                        quota = %a.quota,
                        applied_here = after.is_some(),
                        "quota adjustment sent to Redis"
                    );
                }
                Err(e) => tracing::debug!("quota adjustment {} not applied yet: {e}", a.id),
            }
        }
    }
}
