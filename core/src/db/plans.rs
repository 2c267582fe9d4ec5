//! `plans`: plans created through the admin API. Plans defined in the YAML
//! config are not stored here (and take precedence over a stored plan of the
//! same name).

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::keys::{fingerprint_of, next_stamp, Fingerprint};
use super::{is_unique_violation, u32_column, Db, DbError};
use crate::limits::Limit;
use crate::now_ms;

/// A plan as stored in the `plans` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPlan {
    pub name: String,
    pub limits: Vec<Limit>,
    pub concurrency: Option<u32>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms; strictly increases on every change.
    pub updated_at: i64,
}

impl StoredPlan {
    /// Whether an update to `limits` and `concurrency` (`None`: left alone)
    /// changes nothing: then there is nothing to write and nothing to audit.
    pub fn changes_nothing(
        &self,
        limits: Option<&[Limit]>,
        concurrency: Option<Option<u32>>,
    ) -> bool {
        limits.is_none_or(|l| {
            l.iter().map(Limit::canonical).collect::<Vec<_>>()
                == self.limits.iter().map(Limit::canonical).collect::<Vec<_>>()
        }) && super::keeps(&concurrency, &self.concurrency)
    }
}

const COLUMNS: &str = "name, limits, concurrency, created_at, updated_at";

fn decode_plan(row: &AnyRow) -> Result<StoredPlan, DbError> {
    let name: String = row.try_get("name")?;
    let limits: String = row.try_get("limits")?;
    let concurrency: Option<i64> = row.try_get("concurrency")?;
    Ok(StoredPlan {
        limits: serde_json::from_str(&limits)
            .map_err(|e| DbError::Corrupt(format!("plans.limits of {name:?}: {e}")))?,
        concurrency: u32_column(concurrency, &format!("plans.concurrency of {name:?}"))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        name,
    })
}

fn limits_json(limits: &[Limit]) -> Result<String, DbError> {
    serde_json::to_string(limits)
        .map_err(|e| DbError::Corrupt(format!("limits cannot be serialised: {e}")))
}

/// The names of the stored plans of the database at `url`, read through
/// [`super::connect_read_only`] (nothing created, nothing migrated): what
/// `check-config` compares with the YAML's plans.
pub async fn plan_names_read_only(url: &str) -> Result<Vec<String>, DbError> {
    let Some(mut conn) = super::connect_read_only(url).await? else {
        return Ok(Vec::new());
    };
    let names = sqlx::query_scalar("SELECT name FROM plans ORDER BY name")
        .fetch_all(&mut conn)
        .await;
    // Closing is courtesy: the names (or the error) are what was asked for.
    let _ = sqlx::Connection::close(conn).await;
    Ok(names?)
}

impl Db {
    /// Every stored plan, by name.
    pub async fn list_plans(&self) -> Result<Vec<StoredPlan>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM plans ORDER BY name");
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;
        rows.iter().map(decode_plan).collect()
    }

    pub async fn get_plan(&self, name: &str) -> Result<Option<StoredPlan>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM plans WHERE name = $1");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode_plan).transpose()
    }

    /// Insert a plan; [`DbError::Conflict`] if one of that name exists.
    pub async fn create_plan(
        &self,
        name: &str,
        limits: &[Limit],
        concurrency: Option<u32>,
    ) -> Result<StoredPlan, DbError> {
        let sql = format!(
            "INSERT INTO plans (name, limits, concurrency, created_at, updated_at) \
             VALUES ($2, $3, $4, $1, {}) RETURNING {COLUMNS}",
            next_stamp("plans")
        );
        let row = sqlx::query(&sql)
            .bind(now_ms())
            .bind(name)
            .bind(limits_json(limits)?)
            .bind(concurrency.map(i64::from))
            .fetch_one(self.pool())
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    DbError::Conflict(format!("plan {name:?} already exists"))
                } else {
                    DbError::Sqlx(e)
                }
            })?;
        decode_plan(&row)
    }

    /// Replace a plan's limits and/or concurrency (`Some(None)` clears it);
    /// `None` if there is no such plan. Nothing to change returns it as is.
    pub async fn update_plan(
        &self,
        name: &str,
        limits: Option<&[Limit]>,
        concurrency: Option<Option<u32>>,
    ) -> Result<Option<StoredPlan>, DbError> {
        if limits.is_none() && concurrency.is_none() {
            return self.get_plan(name).await;
        }
        // $1 = now, $2 = name; the changed columns follow.
        let mut sets = Vec::new();
        if limits.is_some() {
            sets.push(format!("limits = ${}", sets.len() + 3));
        }
        if concurrency.is_some() {
            sets.push(format!("concurrency = ${}", sets.len() + 3));
        }
        let sql = format!(
            "UPDATE plans SET {}, updated_at = {} WHERE name = $2 RETURNING {COLUMNS}",
            sets.join(", "),
            next_stamp("plans")
        );
        let mut q = sqlx::query(&sql).bind(now_ms()).bind(name);
        if let Some(limits) = limits {
            q = q.bind(limits_json(limits)?);
        }
        if let Some(concurrency) = concurrency {
            q = q.bind(concurrency.map(i64::from));
        }
        let row = q.fetch_optional(self.pool()).await?;
        row.as_ref().map(decode_plan).transpose()
    }

    /// Delete a plan: `Ok(false)` if there is no such plan,
    /// [`DbError::Conflict`] while any key uses it.
    pub async fn delete_plan(&self, name: &str) -> Result<bool, DbError> {
        // One statement, so the check and the delete cannot be separated.
        let done = sqlx::query(
            "DELETE FROM plans WHERE name = $1 \
             AND NOT EXISTS (SELECT 1 FROM api_keys WHERE plan = $1)",
        )
        .bind(name)
        .execute(self.pool())
        .await?;
        if done.rows_affected() > 0 {
            return Ok(true);
        }
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE plan = $1")
            .bind(name)
            .fetch_one(self.pool())
            .await?;
        if users > 0 && self.get_plan(name).await?.is_some() {
            return Err(DbError::Conflict(format!(
                "plan {name:?} is used by {users} key(s); move them to another plan first"
            )));
        }
        Ok(false)
    }

    /// Changes whenever a plan is created, changed or deleted.
    pub async fn plans_fingerprint(&self) -> Result<Fingerprint, DbError> {
        fingerprint_of(self, "plans", None).await
    }
}
