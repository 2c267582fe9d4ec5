//! `identities`: a customer or tenant owning any number of keys
//! (`api_keys.identity_id`), with its own plan, limits and metadata.
//! Validation is `rules::identities`; these functions store what they get.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::keys::{contains_pattern, fingerprint_of, limits_json, next_stamp, Fingerprint};
use super::stmt::{Arg, Stmt};
use super::{Db, DbError};
use crate::limits::Limit;
use crate::now_ms;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub id: i64,
    /// The caller's own id (unique, header-safe: `rules::identities`).
    pub external_id: String,
    pub name: String,
    /// A small JSON object.
    pub metadata: serde_json::Value,
    pub plan: Option<String>,
    /// Used instead of any plan's, unless a key has its own.
    pub limits: Option<Vec<Limit>>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct NewIdentity {
    pub external_id: String,
    pub name: String,
    pub metadata: Option<serde_json::Value>,
    pub plan: Option<String>,
    pub limits: Option<Vec<Limit>>,
}

/// A partial update; `Some(None)` clears a nullable field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentityPatch {
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub plan: Option<Option<String>>,
    pub limits: Option<Option<Vec<Limit>>>,
}

impl IdentityPatch {
    /// Whether applying the patch to `i` changes nothing (every field absent
    /// or equal): then there is nothing to write and nothing to audit.
    pub fn changes_nothing(&self, i: &Identity) -> bool {
        use super::{keeps, keeps_json, keeps_limits};
        keeps(&self.external_id, &i.external_id)
            && keeps(&self.name, &i.name)
            && keeps_json(&self.metadata, &i.metadata)
            && keeps(&self.plan, &i.plan)
            && keeps_limits(&self.limits, &i.limits)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentityFilter {
    /// Case-insensitive substring of the external id or the name.
    pub search: Option<String>,
    /// `limit <= 0`: no limit.
    pub limit: i64,
    pub offset: i64,
}

const COLUMNS: &str = "id, external_id, name, metadata, plan, limits, created_at, updated_at";

fn decode(row: &AnyRow) -> Result<Identity, DbError> {
    let id: i64 = row.try_get("id")?;
    let metadata: String = row.try_get("metadata")?;
    let limits: Option<String> = row.try_get("limits")?;
    Ok(Identity {
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| DbError::Corrupt(format!("identities.metadata of {id}: {e}")))?,
        limits: limits
            .map(|l| serde_json::from_str(&l))
            .transpose()
            .map_err(|e| DbError::Corrupt(format!("identities.limits of {id}: {e}")))?,
        external_id: row.try_get("external_id")?,
        name: row.try_get("name")?,
        plan: row.try_get("plan")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        id,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn taken(external_id: &str) -> DbError {
    DbError::Conflict(format!(
        "an identity with external_id {external_id:?} already exists"
    ))
}

impl Db {
    /// A taken `external_id` is [`DbError::Conflict`].
    pub async fn create_identity(&self, new: &NewIdentity) -> Result<Identity, DbError> {
        let metadata = new
            .metadata
            .clone()
            .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
        let sql = format!(
            "INSERT INTO identities (external_id, name, metadata, plan, limits, created_at, \
             updated_at) VALUES ($2, $3, $4, $5, $6, $1, {}) RETURNING {COLUMNS}",
            next_stamp("identities")
        );
        let row = sqlx::query(&sql)
            .bind(now_ms())
            .bind(&new.external_id)
            .bind(&new.name)
            .bind(metadata.to_string())
            .bind(&new.plan)
            .bind(limits_json(new.limits.as_deref())?)
            .fetch_one(self.pool())
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    taken(&new.external_id)
                } else {
                    e.into()
                }
            })?;
        decode(&row)
    }

    pub async fn get_identity(&self, id: i64) -> Result<Option<Identity>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM identities WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode).transpose()
    }

    pub async fn get_identity_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<Identity>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM identities WHERE external_id = $1");
        let row = sqlx::query(&sql)
            .bind(external_id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// One page, ordered by id, and the total number matching.
    pub async fn list_identities(
        &self,
        filter: &IdentityFilter,
    ) -> Result<(Vec<Identity>, i64), DbError> {
        let pattern = filter.search.as_deref().map(contains_pattern);
        let condition = |stmt: &mut Stmt<'_>| {
            if let Some(p) = &pattern {
                stmt.and_where()
                    .push("(LOWER(external_id) LIKE LOWER(")
                    .bind(Arg::Owned(Some(p.clone())))
                    .push(") ESCAPE '\\' OR LOWER(name) LIKE LOWER(")
                    .bind(Arg::Owned(Some(p.clone())))
                    .push(") ESCAPE '\\')");
            }
        };
        let mut count = Stmt::new(self.kind());
        count.push("SELECT COUNT(*) FROM identities");
        condition(&mut count);
        let total: i64 = count.query().fetch_one(self.pool()).await?.try_get(0)?;
        let limit = if filter.limit <= 0 {
            i64::MAX
        } else {
            filter.limit
        };
        let mut page = Stmt::new(self.kind());
        page.push("SELECT ").push(COLUMNS).push(" FROM identities");
        condition(&mut page);
        page.push(" ORDER BY id LIMIT ")
            .int(limit)
            .push(" OFFSET ")
            .int(filter.offset.max(0));
        let rows = page.query().fetch_all(self.pool()).await?;
        let found = rows.iter().map(decode).collect::<Result<_, _>>()?;
        Ok((found, total))
    }

    /// Apply a partial update; `None` if there is no such identity. A taken
    /// `external_id` is [`DbError::Conflict`].
    pub async fn update_identity(
        &self,
        id: i64,
        patch: &IdentityPatch,
    ) -> Result<Option<Identity>, DbError> {
        let mut stmt = Stmt::new(self.kind());
        stmt.push("UPDATE identities SET ");
        let mut sets = 0;
        let mut set = |column: &str, arg: Arg<'static>| {
            stmt.push(if sets == 0 { "" } else { ", " })
                .push(column)
                .push(" = ")
                .bind(arg);
            sets += 1;
        };
        if let Some(v) = &patch.external_id {
            set("external_id", Arg::Owned(Some(v.clone())));
        }
        if let Some(v) = &patch.name {
            set("name", Arg::Owned(Some(v.clone())));
        }
        if let Some(v) = &patch.metadata {
            set("metadata", Arg::Owned(Some(v.to_string())));
        }
        if let Some(v) = &patch.plan {
            set("plan", Arg::Owned(v.clone()));
        }
        if let Some(v) = &patch.limits {
            set("limits", Arg::Owned(limits_json(v.as_deref())?));
        }
        if sets == 0 {
            return self.get_identity(id).await;
        }
        stmt.push(", updated_at = ")
            .push_with(&next_stamp("identities"), now_ms())
            .push(" WHERE id = ")
            .int(id)
            .push(" RETURNING ")
            .push(COLUMNS);
        let row = stmt
            .query()
            .fetch_optional(self.pool())
            .await
            .map_err(|e| match (&patch.external_id, is_unique_violation(&e)) {
                (Some(x), true) => taken(x),
                _ => e.into(),
            })?;
        row.as_ref().map(decode).transpose()
    }

    /// Delete an identity; its keys stay, detached (`identity_id` NULL).
    pub async fn delete_identity(&self, id: i64) -> Result<bool, DbError> {
        let mut tx = self.pool().begin().await?;
        // Detach explicitly (the foreign key would too) so the keys' stamps
        // move and every proxy reloads them.
        let sql = format!(
            "UPDATE api_keys SET identity_id = NULL, updated_at = {} WHERE identity_id = $2",
            next_stamp("api_keys")
        );
        sqlx::query(&sql)
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM identities WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every identity, for the proxy's key set.
    pub async fn load_identities(&self) -> Result<Vec<Identity>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM identities ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;
        rows.iter().map(decode).collect()
    }

    /// Changes whenever an identity is inserted, updated or deleted.
    pub async fn identities_fingerprint(&self) -> Result<Fingerprint, DbError> {
        fingerprint_of(self, "identities", Some("id")).await
    }
}
