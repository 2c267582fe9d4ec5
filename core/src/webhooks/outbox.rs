//! The webhook outbox: `webhook_events` (each event once, by its dedup key),
//! `webhook_deliveries` (one per event × endpoint, claimed by the delivery
//! workers of any number of admin processes) and `webhook_attempts` (the
//! delivery log).
//!
//! Claiming: a due pending delivery is taken by setting its `locked_until`
//! lease, by a conditional `UPDATE … WHERE locked_until IS NULL OR
//! locked_until < now` that only one worker can win (on PostgreSQL one
//! statement for the batch, its condition re-checked on rows another
//! worker took meanwhile; on SQLite, one writer at a time, one per row).
//! The candidates are at most [`PER_ENDPOINT`] per endpoint counting those
//! under way, the least busy endpoints first, oldest due first among
//! equals: one endpoint that never answers cannot take every worker's
//! slots, and a backlog of slow ones does not queue the others behind it. A worker that dies mid-delivery
//! leaves a lease that expires: the delivery is tried again (receivers
//! deduplicate on `webhook-id`, as Standard Webhooks expects).

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{new_msg_id, wants, WEBHOOK_TEST};
use crate::db::{is_unique_violation, Db, DbError, DbKind};
use crate::now_ms;

/// A claimed delivery, with what sending it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub delivery_id: i64,
    /// Attempts made before this one.
    pub attempts: i64,
    pub url: String,
    pub secret: String,
    pub msg_id: String,
    pub event_type: String,
    /// The exact body to send.
    pub payload: String,
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub succeeded: bool,
}

/// What recording an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Recorded {
    /// The attempt is in the log and the delivery released.
    Logged,
    /// The delivery is gone (its endpoint was deleted meanwhile): nothing
    /// was written, and nothing is left to retry.
    Gone,
}

/// A delivery as the log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryLog {
    pub id: i64,
    pub event_type: String,
    pub msg_id: String,
    /// `pending`, `succeeded` or `failed` (attempts exhausted).
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub log: Vec<AttemptLog>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptLog {
    pub at: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub succeeded: bool,
}

/// Attempts shown per delivery in the log.
const LOG_ATTEMPTS: i64 = 20;
/// The longest error text kept per attempt.
const MAX_ERROR_LEN: usize = 500;

/// Deliveries to one endpoint under way at once (all processes): an
/// endpoint that never answers holds at most this many of the worker's
/// slots, whatever piles up for it.
pub const PER_ENDPOINT: i64 = 4;

/// The due deliveries to claim: `$1` now, `$2` at most this many, `$3` at
/// most this many per endpoint counting the ones under way.
/// The least busy endpoints first (each endpoint's load once this one is
/// taken), oldest due first among equals: a slot that frees while silent
/// endpoints hold the others goes to an endpoint with nothing under way,
/// not to their backlog.
const CANDIDATES: &str = "SELECT id FROM (\
     SELECT d.id, d.next_attempt_at, \
       row_number() OVER (PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at, d.id) AS rn, \
       (SELECT count(*) FROM webhook_deliveries l WHERE l.endpoint_id = d.endpoint_id \
          AND l.status = 'pending' AND l.locked_until >= $1) AS busy \
     FROM webhook_deliveries d WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
       AND (d.locked_until IS NULL OR d.locked_until < $1)) c \
   WHERE c.rn + c.busy <= $3 ORDER BY c.rn + c.busy, c.next_attempt_at, c.id LIMIT $2";

const CLAIMED_COLUMNS: &str = "d.id AS delivery_id, d.attempts, e.url, e.secret, \
     ev.msg_id, ev.type AS event_type, ev.payload";

fn claimed(row: &AnyRow) -> Result<Claimed, DbError> {
    Ok(Claimed {
        delivery_id: row.try_get("delivery_id")?,
        attempts: row.try_get("attempts")?,
        url: row.try_get("url")?,
        secret: row.try_get("secret")?,
        msg_id: row.try_get("msg_id")?,
        event_type: row.try_get("event_type")?,
        payload: row.try_get("payload")?,
    })
}

impl Db {
    /// Enqueue an event once per `(type, subject, period)` with a delivery
    /// to every enabled endpoint that wants it (or only to endpoint `only`,
    /// whatever its filter: the test event). `None` when the event was
    /// already enqueued. See [`super::enqueue_event`]. A lost connection is
    /// tried again on a fresh one (`db::retry`): the event's key makes a
    /// repeat of a write that did commit a no-op.
    pub async fn enqueue_webhook_event(
        &self,
        event_type: &str,
        subject: &str,
        period: &str,
        data: serde_json::Value,
        only: Option<i64>,
    ) -> Result<Option<i64>, DbError> {
        crate::db::retry::on_lost_connection("webhook event", || {
            self.enqueue_once(event_type, subject, period, &data, only)
        })
        .await
    }

    async fn enqueue_once(
        &self,
        event_type: &str,
        subject: &str,
        period: &str,
        data: &serde_json::Value,
        only: Option<i64>,
    ) -> Result<Option<i64>, DbError> {
        let now = now_ms();
        let body = serde_json::json!({
            "type": event_type,
            "timestamp": chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            "data": data,
        })
        .to_string();
        let dedup = format!("{event_type}:{subject}:{period}");
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO webhook_events (msg_id, type, dedup_key, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
        )
        .bind(new_msg_id()?)
        .bind(event_type)
        .bind(&dedup)
        .bind(&body)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await;
        let event_id: i64 = match inserted {
            Ok(Some(row)) => row.try_get("id")?,
            Ok(None) => return Ok(None),
            // Two processes racing on one key: the loser sees the winner.
            Err(e) if is_unique_violation(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let endpoints = sqlx::query("SELECT id, events FROM webhook_endpoints WHERE enabled = 1")
            .fetch_all(&mut *tx)
            .await?;
        for row in endpoints {
            let id: i64 = row.try_get("id")?;
            let events: String = row.try_get("events")?;
            let events: Vec<String> = serde_json::from_str(&events).unwrap_or_default();
            let take = match only {
                Some(o) => o == id,
                None => event_type != WEBHOOK_TEST && wants(&events, event_type),
            };
            if take {
                sqlx::query(
                    "INSERT INTO webhook_deliveries (event_id, endpoint_id, status, attempts, \
                     next_attempt_at, created_at) VALUES ($1, $2, 'pending', 0, $3, $3)",
                )
                .bind(event_id)
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(Some(event_id))
    }

    /// Claim up to `limit` due deliveries for `lease_ms` (see the module
    /// documentation); each is this worker's alone until it records an
    /// attempt or the lease runs out.
    pub async fn claim_webhook_deliveries(
        &self,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<Claimed>, DbError> {
        let now = now_ms();
        let ids: Vec<i64> = match self.kind() {
            DbKind::Postgres => {
                // The conditional UPDATE is the claim: a row another
                // process locked meanwhile fails its `locked_until` test.
                sqlx::query_scalar(&format!(
                    "UPDATE webhook_deliveries SET locked_until = $4 WHERE id IN ({CANDIDATES}) \
                     AND (locked_until IS NULL OR locked_until < $1) RETURNING id"
                ))
                .bind(now)
                .bind(limit)
                .bind(PER_ENDPOINT)
                .bind(now + lease_ms)
                .fetch_all(self.pool())
                .await?
            }
            DbKind::Sqlite => {
                let candidates: Vec<i64> = sqlx::query_scalar(CANDIDATES)
                    .bind(now)
                    .bind(limit)
                    .bind(PER_ENDPOINT)
                    .fetch_all(self.pool())
                    .await?;
                let mut won = Vec::new();
                for id in candidates {
                    let n = sqlx::query(
                        "UPDATE webhook_deliveries SET locked_until = $1 WHERE id = $2 \
                         AND status = 'pending' AND (locked_until IS NULL OR locked_until < $3)",
                    )
                    .bind(now + lease_ms)
                    .bind(id)
                    .bind(now)
                    .execute(self.pool())
                    .await?
                    .rows_affected();
                    if n == 1 {
                        won.push(id);
                    }
                }
                won
            }
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let sql = format!(
                "SELECT {CLAIMED_COLUMNS} FROM webhook_deliveries d \
                 JOIN webhook_endpoints e ON e.id = d.endpoint_id \
                 JOIN webhook_events ev ON ev.id = d.event_id WHERE d.id = $1"
            );
            if let Some(row) = sqlx::query(&sql)
                .bind(id)
                .fetch_optional(self.pool())
                .await?
            {
                out.push(claimed(&row)?);
            }
        }
        Ok(out)
    }

    /// Log an attempt of a claimed delivery and release it: succeeded, or
    /// pending again at `retry_at`, or failed for good (`retry_at` `None`).
    /// [`Recorded::Gone`] when the delivery no longer exists: its endpoint
    /// was deleted while the attempt was under way (deleting an endpoint
    /// deletes its deliveries), so there is nothing to log or retry.
    pub async fn record_webhook_attempt(
        &self,
        delivery_id: i64,
        attempt: &Attempt,
        retry_at: Option<i64>,
    ) -> Result<Recorded, DbError> {
        let now = now_ms();
        let error: Option<String> = attempt
            .error
            .as_deref()
            .map(|e| e.chars().take(MAX_ERROR_LEN).collect());
        let (status, next, finished) = match (attempt.succeeded, retry_at) {
            (true, _) => ("succeeded", now, Some(now)),
            (false, Some(at)) => ("pending", at, None),
            (false, None) => ("failed", now, Some(now)),
        };
        let mut tx = self.pool().begin().await?;
        // The delivery first: it holds the row (a concurrent endpoint
        // deletion waits for this transaction, and its cascade then takes the
        // attempt too), or finds it gone, before an attempt row refers to it
        // (which would break the foreign key).
        let updated = sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, \
             next_attempt_at = $2, locked_until = NULL, last_status = $3, last_error = $4, \
             finished_at = $5 WHERE id = $6",
        )
        .bind(status)
        .bind(next)
        .bind(attempt.status_code)
        .bind(error.as_deref())
        .bind(finished)
        .bind(delivery_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            return Ok(Recorded::Gone);
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, at, status_code, error, duration_ms, succeeded) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(delivery_id)
        .bind(now)
        .bind(attempt.status_code)
        .bind(error.as_deref())
        .bind(attempt.duration_ms)
        .bind(i64::from(attempt.succeeded))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Recorded::Logged)
    }

    /// One page of an endpoint's deliveries, newest first, each with its
    /// last attempts; and how many there are in all.
    pub async fn list_webhook_deliveries(
        &self,
        endpoint_id: i64,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<DeliveryLog>, i64), DbError> {
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1")
                .bind(endpoint_id)
                .fetch_one(self.pool())
                .await?;
        let rows = sqlx::query(
            "SELECT d.id, ev.type AS event_type, ev.msg_id, d.status, d.attempts, \
             d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.finished_at \
             FROM webhook_deliveries d JOIN webhook_events ev ON ev.id = d.event_id \
             WHERE d.endpoint_id = $1 ORDER BY d.id DESC LIMIT $2 OFFSET $3",
        )
        .bind(endpoint_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let status: String = row.try_get("status")?;
            let log = sqlx::query(
                "SELECT at, status_code, error, duration_ms, succeeded FROM webhook_attempts \
                 WHERE delivery_id = $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(id)
            .bind(LOG_ATTEMPTS)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|a| {
                Ok(AttemptLog {
                    at: a.try_get("at")?,
                    status_code: a.try_get("status_code")?,
                    error: a.try_get("error")?,
                    duration_ms: a.try_get("duration_ms")?,
                    succeeded: a.try_get::<i64, _>("succeeded")? != 0,
                })
            })
            .collect::<Result<Vec<_>, DbError>>()?;
            let next: i64 = row.try_get("next_attempt_at")?;
            out.push(DeliveryLog {
                next_attempt_at: (status == "pending").then_some(next),
                event_type: row.try_get("event_type")?,
                msg_id: row.try_get("msg_id")?,
                attempts: row.try_get("attempts")?,
                last_status: row.try_get("last_status")?,
                last_error: row.try_get("last_error")?,
                created_at: row.try_get("created_at")?,
                finished_at: row.try_get("finished_at")?,
                status,
                log,
                id,
            });
        }
        Ok((out, total))
    }

    /// The latest `limit` events, oldest first: `(type, dedup key)`.
    pub async fn recent_webhook_events(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, String)>, DbError> {
        let rows = sqlx::query(
            "SELECT type, dedup_key FROM (SELECT id, type, dedup_key FROM webhook_events \
             ORDER BY id DESC LIMIT $1) e ORDER BY id",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("type")?, r.try_get("dedup_key")?)))
            .collect()
    }

    /// Keys that expire in `now..now + within_ms`: `(id, name, expires_at)`.
    pub async fn keys_expiring(
        &self,
        now: i64,
        within_ms: i64,
    ) -> Result<Vec<(i64, String, i64)>, DbError> {
        let rows = sqlx::query(
            "SELECT id, name, expires_at FROM api_keys WHERE expires_at IS NOT NULL \
             AND expires_at > $1 AND expires_at <= $2 ORDER BY id",
        )
        .bind(now)
        .bind(now.saturating_add(within_ms))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("name")?,
                    r.try_get("expires_at")?,
                ))
            })
            .collect()
    }

    /// Delete events created before `before` (Unix ms) with their
    /// deliveries and attempts, unless a delivery is still pending.
    pub async fn purge_webhook_events(&self, before: i64) -> Result<u64, DbError> {
        let old = "SELECT id FROM webhook_events WHERE created_at < $1 AND id NOT IN \
                   (SELECT event_id FROM webhook_deliveries WHERE status = 'pending')";
        // Nothing to purge (the usual case): no write, so no write lock that
        // a concurrent SQLite transaction could fail to upgrade past.
        let any: Option<i64> = sqlx::query_scalar(&format!("{old} LIMIT 1"))
            .bind(before)
            .fetch_optional(self.pool())
            .await?;
        if any.is_none() {
            return Ok(0);
        }
        let mut tx = self.pool().begin().await?;
        sqlx::query(&format!(
            "DELETE FROM webhook_attempts WHERE delivery_id IN \
             (SELECT id FROM webhook_deliveries WHERE event_id IN ({old}))"
        ))
        .bind(before)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "DELETE FROM webhook_deliveries WHERE event_id IN ({old})"
        ))
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query(&format!("DELETE FROM webhook_events WHERE id IN ({old})"))
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}
