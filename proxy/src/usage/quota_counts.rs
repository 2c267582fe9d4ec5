//! Writing the local limiter's quota counts with every usage flush (what
//! they are: `limiter::local::quota::checkpoint`). Only with the local
//! backend: with Redis the counts live in Redis (the local limiter's are
//! the fallback's). What fails is marked to be written with the next flush.

use std::time::Duration;

use tollgate_core::config::LimiterBackend;
use tollgate_core::db::Db;

use super::buffer::{bounded, FlushError};
use crate::limiter::quota::wall_now_us;
use crate::limiter::LocalLimiter;

/// Write the counts `local` changed since the last flush.
pub async fn write_quota_counts(
    db: &Db,
    local: &LocalLimiter,
    backend: LimiterBackend,
    limit: Duration,
) -> Result<(), FlushError> {
    if backend != LimiterBackend::Local {
        return Ok(());
    }
    let rows = local.take_dirty_quotas();
    if rows.is_empty() {
        return Ok(());
    }
    match bounded(limit, db.save_quota_counts(&rows, wall_now_us())).await {
        Ok(()) => Ok(()),
        Err(e) => {
            local.restore_dirty_quotas(&rows);
            Err(e)
        }
    }
}
