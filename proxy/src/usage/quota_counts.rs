//! Writing the local limiter's quota counts with every usage flush (what
//! they are: `limiter::local::quota::checkpoint`). Only with the local
//! backend: with Redis the counts live in Redis (the local limiter's are
//! the fallback's). What fails is marked to be written with the next flush.
//! Each proxy writes and reads back its own rows, under
//! [`counter_name`]: the same after a restart, apart from any other local
//! proxy on the database.

use std::time::Duration;

use tollgate_core::config::{LimiterBackend, ProxyConfig};
use tollgate_core::db::Db;

use super::buffer::{bounded, FlushError};
use crate::limiter::quota::wall_now_us;
use crate::limiter::LocalLimiter;

/// The name this proxy writes its quota counts under: `proxy.instance_name`,
/// else `<host>@<listen address>`.
pub fn counter_name(proxy: &ProxyConfig) -> String {
    proxy.counter_name(&super::heartbeat::host_name())
}

/// Write the counts `local` changed since the last flush, as `counter`.
pub async fn write_quota_counts(
    db: &Db,
    local: &LocalLimiter,
    counter: &str,
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
    match bounded(limit, db.save_quota_counts(counter, &rows, wall_now_us())).await {
        Ok(()) => Ok(()),
        Err(e) => {
            local.restore_dirty_quotas(&rows);
            Err(e)
        }
    }
}
