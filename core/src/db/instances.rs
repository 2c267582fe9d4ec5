//! `instances`: one row per running proxy, refreshed by its heartbeat. The
//! admin API's health endpoint reads them: an instance is up while its
//! `last_seen` is recent, and each reports the health of the upstream targets
//! it balances over.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Db, DbError};
use crate::now_ms;

/// The health of one upstream target as one proxy instance last saw it.
///
/// Fields added after the first release carry `#[serde(default)]`: rows
/// written by older proxies still read (the column is JSON, no migration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetHealth {
    /// The upstream's name in the config.
    pub upstream: String,
    /// The target as written in the config (`127.0.0.1:3001`, `https://host`).
    pub target: String,
    pub healthy: bool,
    /// Unix ms of the check; `None` if the target has not been checked yet.
    #[serde(default)]
    pub checked_at: Option<i64>,
    /// Why the last check failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
    /// Median time, in ms, from a request's arrival at the proxy to this
    /// target's response header, over the proxied requests of the last few
    /// minutes; `None` without recent traffic.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// How many requests `latency_ms` is taken over.
    #[serde(default)]
    pub latency_samples: u32,
    /// Round trip of the last health check, in ms, when it succeeded.
    #[serde(default)]
    pub check_latency_ms: Option<f64>,
    /// Unix ms since which the health checks have seen the target healthy
    /// without interruption; `None` while it is down, before its first
    /// check, or without health checks.
    #[serde(default)]
    pub up_since: Option<i64>,
}

/// What a proxy instance sends on each heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Stable for the life of the process (e.g. `hostname-pid-random`).
    pub id: String,
    /// Where the proxy listens (`127.0.0.1:8080`).
    pub address: String,
    pub version: String,
    /// Unix ms the process started.
    pub started_at: i64,
    /// The instance's own figures (free-form JSON object, e.g. request counts).
    pub stats: serde_json::Value,
    pub upstream_health: Vec<TargetHealth>,
    /// The name its local quota counts are written under
    /// (`quota_counts.instance`), if it writes any.
    #[serde(default)]
    pub counter: Option<String>,
    /// This proxy's heartbeat period (`usage.flush_interval`): its row is
    /// judged live by it ([`LIVE_BEATS`]), not by the period of the proxy
    /// counting.
    #[serde(default = "default_beat_every")]
    pub beat_every: Duration,
}

/// The period a row written without one is judged by (the default
/// `usage.flush_interval`; the column's default in migration 0018).
pub const DEFAULT_BEAT_EVERY: Duration = Duration::from_secs(5);

fn default_beat_every() -> Duration {
    DEFAULT_BEAT_EVERY
}

/// A stored instance row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub address: String,
    pub version: String,
    pub started_at: i64,
    /// Unix ms of the last heartbeat.
    pub last_seen: i64,
    /// The proxy's heartbeat period, by which [`is_live`] judges the row.
    pub beat_every_ms: i64,
    pub stats: serde_json::Value,
    pub upstream_health: Vec<TargetHealth>,
}

/// One row as read. Its figures (`stats`, `upstream_health`) are what a
/// proxy reported, written by the proxies' database role: a report that does
/// not parse is read as none (and warned about), so one bad row never hides
/// the others from health and monitoring (round 18 re-check).
fn instance_from_row(row: &sqlx::any::AnyRow) -> Result<Instance, DbError> {
    let id: String = row.try_get("id")?;
    let stats: Option<String> = row.try_get("stats")?;
    let health: Option<String> = row.try_get("upstream_health")?;
    let stats = match stats.as_deref() {
        None | Some("") => serde_json::Value::Object(Default::default()),
        Some(s) => serde_json::from_str::<serde_json::Value>(s)
            .ok()
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| {
                tracing::warn!(instance = %id, "instances.stats is not a JSON object: read as none");
                serde_json::Value::Object(Default::default())
            }),
    };
    let upstream_health = match health.as_deref() {
        None | Some("") => Vec::new(),
        Some(s) => serde_json::from_str(s).unwrap_or_else(|e| {
            tracing::warn!(instance = %id, error = %e, "instances.upstream_health does not parse: read as none");
            Vec::new()
        }),
    };
    Ok(Instance {
        address: row.try_get("address")?,
        version: row.try_get("version")?,
        started_at: row.try_get("started_at")?,
        last_seen: row.try_get("last_seen")?,
        beat_every_ms: row.try_get("beat_every_ms")?,
        id,
        stats,
        upstream_health,
    })
}

/// How many of its own heartbeat periods a proxy counts as live after its
/// last beat: three, so one late or failed beat (a slow database, a busy
/// proxy) does not drop it. Each row is judged by the period it was written
/// with (`instances.beat_every_ms`), never by the period of the proxy
/// counting: a proxy at `flush_interval: 1s` counting one at `20s` would
/// otherwise see it dead between its beats (round 17). The duplicate-name
/// start-up check does not judge a row's age (it waits for one new beat), so
/// this is the one age rule.
pub const LIVE_BEATS: i64 = 3;

/// How long the row of a proxy that stopped beating without a clean stop
/// (killed, crashed, its host lost) is kept: listed as down meanwhile, then
/// forgotten by retention ([`Db::forget_instances`]), so restarts after
/// crashes, each a new instance id, do not pile up rows (round 18).
pub const FORGET_AFTER_MS: i64 = 86_400_000;

/// Whether a row last seen at `last_seen` (Unix ms) with heartbeat period
/// `beat_every_ms` is live at `now`: the rule [`Db::count_live_instances`]
/// applies in SQL.
pub fn is_live(last_seen: i64, beat_every_ms: i64, now: i64) -> bool {
    last_seen.saturating_add(beat_every_ms.saturating_mul(LIVE_BEATS)) >= now
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Db {
    /// How many instances are live at `now` (Unix ms), each judged by its
    /// own heartbeat period ([`is_live`], [`LIVE_BEATS`]): the live proxies,
    /// this one included once it has beaten.
    pub async fn count_live_instances(&self, now: i64) -> Result<u64, DbError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM instances WHERE last_seen + $2 * beat_every_ms >= $1",
        )
        .bind(now)
        .bind(LIVE_BEATS)
        .fetch_one(self.pool())
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Record a heartbeat now (insert or refresh the instance's row).
    pub async fn upsert_instance(&self, hb: &Heartbeat) -> Result<(), DbError> {
        self.upsert_instance_at(hb, now_ms()).await
    }

    /// Record a heartbeat with an explicit `last_seen` (Unix ms).
    pub async fn upsert_instance_at(&self, hb: &Heartbeat, last_seen: i64) -> Result<(), DbError> {
        let stats = serde_json::to_string(&hb.stats)
            .map_err(|e| DbError::Corrupt(format!("instance stats: {e}")))?;
        let health = serde_json::to_string(&hb.upstream_health)
            .map_err(|e| DbError::Corrupt(format!("instance upstream health: {e}")))?;
        sqlx::query(
            "INSERT INTO instances (id, address, version, started_at, last_seen, stats, upstream_health, counter, beat_every_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version, \
             started_at = excluded.started_at, last_seen = excluded.last_seen, \
             stats = excluded.stats, upstream_health = excluded.upstream_health, \
             counter = excluded.counter, beat_every_ms = excluded.beat_every_ms",
        )
        .bind(&hb.id)
        .bind(&hb.address)
        .bind(&hb.version)
        .bind(hb.started_at)
        .bind(last_seen)
        .bind(stats)
        .bind(health)
        .bind(hb.counter.as_deref())
        .bind(millis(hb.beat_every).max(1))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Claim `name` for `instance` unless someone holds it (atomic: of two
    /// claims at once exactly one gets it); the holder afterwards and its
    /// `beat_at` (Unix ms).
    pub async fn claim_name(
        &self,
        name: &str,
        instance: &str,
        now: i64,
    ) -> Result<(String, i64), DbError> {
        sqlx::query(
            "INSERT INTO instance_names (name, instance, beat_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(instance)
        .bind(now)
        .execute(self.pool())
        .await?;
        self.name_holder(name)
            .await?
            .ok_or_else(|| DbError::Corrupt(format!("instance name {name:?} vanished")))
    }

    /// When `instance` last beat (Unix ms) and the heartbeat period it
    /// announced (ms); `None`: no row.
    pub async fn last_beat_of(&self, instance: &str) -> Result<Option<(i64, i64)>, DbError> {
        let row = sqlx::query("SELECT last_seen, beat_every_ms FROM instances WHERE id = $1")
            .bind(instance)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| Ok((r.try_get("last_seen")?, r.try_get("beat_every_ms")?)))
            .transpose()
    }

    /// Who holds `name`, and its `beat_at`.
    pub async fn name_holder(&self, name: &str) -> Result<Option<(String, i64)>, DbError> {
        let row = sqlx::query("SELECT instance, beat_at FROM instance_names WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| Ok((r.try_get("instance")?, r.try_get("beat_at")?)))
            .transpose()
    }

    /// Take `name` over from a holder that stopped beating: only if it is
    /// still `(holder, beat_at)` (compare-and-swap). Whether it was taken.
    pub async fn take_over_name(
        &self,
        name: &str,
        instance: &str,
        now: i64,
        holder: (&str, i64),
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE instance_names SET instance = $2, beat_at = $3 \
             WHERE name = $1 AND instance = $4 AND beat_at = $5",
        )
        .bind(name)
        .bind(instance)
        .bind(now)
        .bind(holder.0)
        .bind(holder.1)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Refresh `instance`'s hold on `name`; `false` if another holds it.
    pub async fn beat_name(&self, name: &str, instance: &str, now: i64) -> Result<bool, DbError> {
        let done =
            sqlx::query("UPDATE instance_names SET beat_at = $3 WHERE name = $1 AND instance = $2")
                .bind(name)
                .bind(instance)
                .bind(now)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Give `name` up (a clean stop), if `instance` holds it.
    pub async fn release_name(&self, name: &str, instance: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM instance_names WHERE name = $1 AND instance = $2")
            .bind(name)
            .bind(instance)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Every known instance, most recently seen first.
    pub async fn list_instances(&self) -> Result<Vec<Instance>, DbError> {
        let rows = sqlx::query(
            "SELECT id, address, version, started_at, last_seen, beat_every_ms, stats, \
             upstream_health FROM instances ORDER BY last_seen DESC, id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(instance_from_row).collect()
    }

    /// Remove an instance's row (a proxy shutting down cleanly).
    pub async fn delete_instance(&self, id: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Retention's rule at `now`: forget the rows of proxies not seen for
    /// [`FORGET_AFTER_MS`], and rows that claim a heartbeat more than that
    /// ahead (a clock far off, a row written by hand), which would otherwise
    /// never age; returns how many.
    pub async fn forget_instances(&self, now: i64) -> Result<u64, DbError> {
        let done = sqlx::query("DELETE FROM instances WHERE last_seen < $1 OR last_seen > $2")
            .bind(now.saturating_sub(FORGET_AFTER_MS))
            .bind(now.saturating_add(FORGET_AFTER_MS))
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Forget instances not seen since `before` (Unix ms); returns how many.
    pub async fn prune_instances(&self, before: i64) -> Result<u64, DbError> {
        let done = sqlx::query("DELETE FROM instances WHERE last_seen < $1")
            .bind(before)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_live_for_three_of_its_own_periods() {
        assert!(is_live(1_000, 1_000, 4_000));
        assert!(!is_live(1_000, 1_000, 4_001));
        assert!(is_live(1_000, 20_000, 61_000));
        assert!(!is_live(1_000, 20_000, 61_001));
        assert!(is_live(i64::MAX, i64::MAX, i64::MAX));
    }

    #[test]
    fn reports_of_older_proxies_still_read() {
        let old =
            r#"[{"upstream":"demo","target":"127.0.0.1:3001","healthy":true,"checked_at":5}]"#;
        let parsed: Vec<TargetHealth> = serde_json::from_str(old).expect("old row");
        assert_eq!(parsed[0].checked_at, Some(5));
        assert_eq!(parsed[0].latency_ms, None);
        assert_eq!(parsed[0].latency_samples, 0);
        assert_eq!(parsed[0].check_latency_ms, None);
        assert_eq!(parsed[0].up_since, None);

        let new = TargetHealth {
            upstream: "demo".into(),
            target: "127.0.0.1:3001".into(),
            healthy: true,
            checked_at: Some(7),
            error: None,
            latency_ms: Some(1.25),
            latency_samples: 3,
            check_latency_ms: Some(0.5),
            up_since: Some(2),
        };
        let text = serde_json::to_string(&new).expect("serialise");
        let back: TargetHealth = serde_json::from_str(&text).expect("round trip");
        assert_eq!(back, new);
    }
}
