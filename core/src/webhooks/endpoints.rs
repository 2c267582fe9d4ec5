//! `webhook_endpoints`: where events are delivered (the rules are in
//! [`super`]; the outbox in [`super::outbox`]).

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::new_secret;
use crate::db::{Db, DbError};
use crate::now_ms;

/// A stored endpoint (with its secret: never serialised to clients as is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookEndpoint {
    pub id: i64,
    pub url: String,
    pub description: Option<String>,
    /// Event types, or `["*"]`.
    pub events: Vec<String>,
    #[serde(skip)]
    pub secret: String,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A new endpoint, its fields already checked ([`super`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewWebhook {
    pub url: String,
    pub description: Option<String>,
    pub events: Vec<String>,
    pub enabled: bool,
}

/// A change to an endpoint: `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub description: Option<Option<String>>,
    pub events: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

const COLUMNS: &str = "id, url, description, events, secret, enabled, created_at, updated_at";

fn decode(row: &AnyRow) -> Result<WebhookEndpoint, DbError> {
    let id: i64 = row.try_get("id")?;
    let events: String = row.try_get("events")?;
    Ok(WebhookEndpoint {
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        events: serde_json::from_str(&events)
            .map_err(|e| DbError::Corrupt(format!("webhook_endpoints.events of {id}: {e}")))?,
        secret: row.try_get("secret")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        id,
    })
}

fn events_json(events: &[String]) -> Result<String, DbError> {
    serde_json::to_string(events).map_err(|e| DbError::Corrupt(format!("events: {e}")))
}

impl Db {
    /// Every endpoint, oldest first.
    pub async fn list_webhooks(&self) -> Result<Vec<WebhookEndpoint>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM webhook_endpoints ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;
        rows.iter().map(decode).collect()
    }

    pub async fn get_webhook(&self, id: i64) -> Result<Option<WebhookEndpoint>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Insert an endpoint with a new secret (in the record returned: the
    /// only time a client sees it).
    pub async fn create_webhook(&self, new: &NewWebhook) -> Result<WebhookEndpoint, DbError> {
        let sql = format!(
            "INSERT INTO webhook_endpoints (url, description, events, secret, enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&new.url)
            .bind(new.description.as_deref())
            .bind(events_json(&new.events)?)
            .bind(new_secret()?)
            .bind(i64::from(new.enabled))
            .bind(now_ms())
            .fetch_one(self.pool())
            .await?;
        decode(&row)
    }

    /// Apply `patch`; `None` if there is no such endpoint. A patch that
    /// changes nothing writes nothing (and returns the endpoint as it is).
    pub async fn update_webhook(
        &self,
        id: i64,
        patch: &WebhookPatch,
    ) -> Result<Option<WebhookEndpoint>, DbError> {
        let Some(mut e) = self.get_webhook(id).await? else {
            return Ok(None);
        };
        let before = e.clone();
        if let Some(u) = &patch.url {
            e.url = u.clone();
        }
        if let Some(d) = &patch.description {
            e.description = d.clone();
        }
        if let Some(ev) = &patch.events {
            e.events = ev.clone();
        }
        if let Some(en) = patch.enabled {
            e.enabled = en;
        }
        if e == before {
            return Ok(Some(e));
        }
        let sql = format!(
            "UPDATE webhook_endpoints SET url = $1, description = $2, events = $3, enabled = $4, \
             updated_at = $5 WHERE id = $6 RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&e.url)
            .bind(e.description.as_deref())
            .bind(events_json(&e.events)?)
            .bind(i64::from(e.enabled))
            .bind(now_ms().max(e.updated_at))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Delete an endpoint and its deliveries; `false` if there was none.
    pub async fn delete_webhook(&self, id: i64) -> Result<bool, DbError> {
        let mut tx = self.pool().begin().await?;
        // Explicitly (SQLite enforces ON DELETE CASCADE only with its
        // foreign_keys pragma, which every pooled connection sets; this does
        // not depend on it).
        sqlx::query(
            "DELETE FROM webhook_attempts WHERE delivery_id IN \
             (SELECT id FROM webhook_deliveries WHERE endpoint_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }
}
