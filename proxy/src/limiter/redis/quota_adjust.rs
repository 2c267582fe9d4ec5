//! Quota resets and adjustments in Redis (see
//! [`crate::limiter::quota_adjust`]): `lua/quota_adjust.lua`, one call per
//! row, applied by whichever proxy sends it first.

use std::sync::LazyLock;

use ::redis::Script;
use tollgate_core::db::quota_adjustments::QuotaAdjustment;

use super::script::bucket_key;
use super::{RedisLimitError, RedisLimiter};
use crate::limiter::quota::{key_ttl_ms, period_suffix};
use crate::limiter::quota_adjust::concerns;
use crate::limiter::{Bucket, Subject};

static ADJUST: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../../lua/quota_adjust.lua")));

/// The key of a quota's count in a period: the request path's key.
pub fn count_key(subject: &Subject, b: &Bucket, a: &QuotaAdjustment) -> String {
    format!("{}{}", bucket_key(subject, b), period_suffix(&a.period))
}

/// The marker of row `id` (the subject's hash tag: the count's slot).
pub fn marker_key(subject: &Subject, id: i64) -> String {
    format!("tg:{{{subject}}}:qadj:{id}")
}

impl RedisLimiter {
    /// Apply row `a` to `subject`'s count of quota `b` unless some proxy
    /// did already: `Some(count after)` if this call applied it, `None` if
    /// it was applied before. `now_us` (wall clock) sets the keys' TTL.
    /// Either way the refusals this proxy cached for the row's subjects are
    /// dropped: they may be admitted again.
    pub async fn adjust_quota(
        &self,
        subject: &Subject,
        b: &Bucket,
        a: &QuotaAdjustment,
        now_us: i64,
    ) -> Result<Option<u64>, RedisLimitError> {
        let mut inv = ADJUST.prepare_invoke();
        inv.key(count_key(subject, b, a))
            .key(marker_key(subject, a.id))
            .arg(key_ttl_ms(&a.period, now_us))
            .arg(a.change.kind())
            .arg(a.change.used_delta());
        let after = self
            .run(self.deadline(), move |mut conn| async move {
                conn.invoke_i64(&inv).await
            })
            .await?;
        self.over_limit_cache()
            .forget_where(|cached| concerns(subject, cached));
        Ok(u64::try_from(after).ok())
    }
}
