//! Retention: usage older than `usage.retention_days`, violations and
//! violation counts older than `usage.violation_retention_days`, deleted by
//! the flusher once an hour (an hour of data per statement, see
//! [`tollgate_core::db::Db::purge`]); and the rows of proxies not seen for
//! `core::db::instances::FORGET_AFTER_MS`.

use std::time::{Duration, Instant};

use tollgate_core::config::UsageConfig;
use tollgate_core::db::Db;

use super::buffer::{bounded, FlushError};

/// How often old rows are purged.
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// When retention last ran.
#[derive(Debug, Default)]
pub struct Retention {
    last: Option<Instant>,
}

impl Retention {
    /// Purge if due; `limit` bounds each step (at least a minute for the purge).
    pub async fn run_if_due(
        &mut self,
        db: &Db,
        usage: &UsageConfig,
        limit: Duration,
    ) -> Result<(), FlushError> {
        if self.last.is_some_and(|t| t.elapsed() < RETENTION_EVERY) {
            return Ok(());
        }
        const DAY_MS: i64 = 86_400_000;
        let days = i64::from(usage.retention_days.max(1));
        let violation_days = i64::from(usage.violation_retention_days.max(1));
        let now = tollgate_core::now_ms();
        let purged = bounded(
            limit.max(Duration::from_secs(60)),
            db.purge(now - days * DAY_MS, now - violation_days * DAY_MS),
        )
        .await?;
        let instances = bounded(limit, db.forget_instances(now)).await?;
        if instances > 0 {
            tracing::info!(instances, "forgot proxies not seen for a day");
        }
        self.last = Some(Instant::now());
        if purged.usage_rows > 0 || purged.violations > 0 || purged.aggregates > 0 {
            bounded(limit, db.analyze_usage()).await?;
            tracing::info!(
                usage_rows = purged.usage_rows,
                violations = purged.violations,
                violation_counts = purged.aggregates,
                "usage retention: deleted usage older than {days} days and violations older than {violation_days} days"
            );
        }
        Ok(())
    }
}
