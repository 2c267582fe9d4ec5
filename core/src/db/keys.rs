//! `api_keys`: key records. Only the SHA-256 of a key is stored.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::stmt::{Arg, Stmt};
use super::{u32_column, Db, DbError};
use crate::keys::Scopes;
use crate::keys::{self, KeyHash};
use crate::limits::Limit;
use crate::now_ms;

/// A key as listings and the API show it (never the secret or its hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    pub owner: Option<String>,
    /// Free-form JSON object.
    pub metadata: serde_json::Value,
    pub plan: Option<String>,
    /// Own limits, used instead of the plan's when set.
    pub limits: Option<Vec<Limit>>,
    pub concurrency: Option<u32>,
    /// Allowed routes and methods (`None`: the plan's, else all).
    #[serde(default)]
    pub scopes: Option<Scopes>,
    /// Client networks the key may be used from (`None`: anywhere).
    #[serde(default)]
    pub allowed_ips: Option<Vec<String>>,
    /// The identity the key belongs to, if any.
    #[serde(default)]
    pub identity_id: Option<i64>,
    pub enabled: bool,
    /// Unix ms.
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    /// `tg_` + the first characters of the key.
    pub key_prefix: String,
}

/// What the proxy loads: a key plus the hashes it may be presented with.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub key: ApiKey,
    pub hash: KeyHash,
    /// The previous secret's hash while a rotation grace period runs.
    pub previous: Option<(KeyHash, i64)>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct NewApiKey {
    pub name: String,
    pub owner: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub plan: Option<String>,
    pub limits: Option<Vec<Limit>>,
    pub concurrency: Option<u32>,
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub scopes: Option<Scopes>,
    #[serde(default)]
    pub allowed_ips: Option<Vec<String>>,
    #[serde(default)]
    pub identity_id: Option<i64>,
}

/// A partial update; `Some(None)` clears a nullable field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub owner: Option<Option<String>>,
    pub metadata: Option<serde_json::Value>,
    pub plan: Option<Option<String>>,
    pub limits: Option<Option<Vec<Limit>>>,
    pub concurrency: Option<Option<u32>>,
    pub enabled: Option<bool>,
    pub expires_at: Option<Option<i64>>,
    pub scopes: Option<Option<Scopes>>,
    pub allowed_ips: Option<Option<Vec<String>>>,
    pub identity_id: Option<Option<i64>>,
}

impl KeyPatch {
    /// Whether applying the patch to `k` changes nothing (every field absent
    /// or equal, limits and metadata in their canonical forms): then there
    /// is nothing to write and nothing to audit.
    pub fn changes_nothing(&self, k: &ApiKey) -> bool {
        use super::{keeps, keeps_json, keeps_limits};
        keeps(&self.name, &k.name)
            && keeps(&self.owner, &k.owner)
            && keeps_json(&self.metadata, &k.metadata)
            && keeps(&self.plan, &k.plan)
            && keeps_limits(&self.limits, &k.limits)
            && keeps(&self.concurrency, &k.concurrency)
            && keeps(&self.enabled, &k.enabled)
            && keeps(&self.expires_at, &k.expires_at)
            && keeps(&self.scopes, &k.scopes)
            && keeps(&self.allowed_ips, &k.allowed_ips)
            && keeps(&self.identity_id, &k.identity_id)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyFilter {
    /// Case-insensitive substring of the name.
    pub name: Option<String>,
    pub plan: Option<String>,
    pub enabled: Option<bool>,
    /// Only the keys of this identity.
    pub identity_id: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

/// Changes whenever any key row is inserted, updated or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fingerprint {
    pub count: i64,
    pub max_updated: i64,
    pub sum_updated: i64,
    /// The highest id (tables with never-reused integer ids; else 0). A row
    /// deleted and another inserted in the same breath can leave count and
    /// stamps exactly as they were (the new stamp may equal the deleted
    /// row's, which ran ahead of the clock); the new id cannot.
    pub max_id: i64,
}

/// The columns an [`ApiKey`] is read from.
const COLUMNS: &str = "id, name, owner, metadata, plan, limits, concurrency, enabled, \
    expires_at, created_at, updated_at, last_used_at, key_prefix, scopes, allowed_ips, identity_id";

/// The next `updated_at` of a row written at `$1` (now, Unix ms): now, or one
/// more than the newest stamp in the table if that is not older. Every write
/// thus gets a stamp greater than any before it (and greater than the row's
/// own previous one), even several writes within one millisecond, which is
/// what makes [`Db::keys_fingerprint`] change on every insert and update.
pub(crate) fn next_stamp(table: &str) -> String {
    format!(
        "(SELECT CASE WHEN MAX(updated_at) IS NULL OR MAX(updated_at) < $1 THEN $1 \
         ELSE MAX(updated_at) + 1 END FROM {table})"
    )
}

/// `COUNT`, `MAX(updated_at)`, a sum of the stamps and, where given, `MAX(id)`. The sum is taken
/// modulo 2^32 per row so it cannot overflow a BIGINT (a plain sum would past
/// ~5 million rows); the cast makes PostgreSQL return BIGINT, not NUMERIC.
pub(crate) async fn fingerprint_of(
    db: &Db,
    table: &str,
    id_column: Option<&str>,
) -> Result<Fingerprint, DbError> {
    let max_id = id_column.map_or("0".to_string(), |c| format!("COALESCE(MAX({c}), 0)"));
    let sql = format!(
        "SELECT COUNT(*) AS n, CAST(COALESCE(MAX(updated_at), 0) AS BIGINT) AS mx, \
         CAST(COALESCE(SUM(updated_at % 4294967296), 0) AS BIGINT) AS sm, \
         CAST({max_id} AS BIGINT) AS mid FROM {table}"
    );
    let row = sqlx::query(&sql).fetch_one(db.pool()).await?;
    Ok(Fingerprint {
        count: row.try_get("n")?,
        max_updated: row.try_get("mx")?,
        sum_updated: row.try_get("sm")?,
        max_id: row.try_get("mid")?,
    })
}

fn decode_key(row: &AnyRow) -> Result<ApiKey, DbError> {
    let id: i64 = row.try_get("id")?;
    let metadata: String = row.try_get("metadata")?;
    let limits: Option<String> = row.try_get("limits")?;
    let concurrency: Option<i64> = row.try_get("concurrency")?;
    let scopes: Option<String> = row.try_get("scopes")?;
    let allowed_ips: Option<String> = row.try_get("allowed_ips")?;
    Ok(ApiKey {
        scopes: scopes
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| DbError::Corrupt(format!("api_keys.scopes of key {id}: {e}")))?,
        allowed_ips: allowed_ips
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| DbError::Corrupt(format!("api_keys.allowed_ips of key {id}: {e}")))?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| DbError::Corrupt(format!("api_keys.metadata of key {id}: {e}")))?,
        limits: limits
            .map(|l| serde_json::from_str(&l))
            .transpose()
            .map_err(|e| DbError::Corrupt(format!("api_keys.limits of key {id}: {e}")))?,
        concurrency: u32_column(concurrency, &format!("api_keys.concurrency of key {id}"))?,
        name: row.try_get("name")?,
        owner: row.try_get("owner")?,
        plan: row.try_get("plan")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_used_at: row.try_get("last_used_at")?,
        key_prefix: row.try_get("key_prefix")?,
        identity_id: row.try_get("identity_id")?,
        id,
    })
}

/// A stored hex SHA-256 back to bytes; anything else is [`DbError::Corrupt`].
pub(crate) fn decode_hash(hex_hash: &str, what: &str) -> Result<KeyHash, DbError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut out)
        .map_err(|e| DbError::Corrupt(format!("{what}: {e}")))?;
    Ok(out)
}

pub(crate) fn limits_json(limits: Option<&[Limit]>) -> Result<Option<String>, DbError> {
    limits
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| DbError::Corrupt(format!("limits cannot be serialised: {e}")))
}

/// A JSON column value (`None` stays NULL).
fn json_column<T: Serialize>(v: Option<&T>, what: &str) -> Result<Option<String>, DbError> {
    v.map(serde_json::to_string)
        .transpose()
        .map_err(|e| DbError::Corrupt(format!("{what} cannot be serialised: {e}")))
}

/// A `LIKE` pattern matching `s` anywhere, with `\`, `%` and `_` in `s`
/// matching themselves (used with `ESCAPE '\'`).
pub(crate) fn contains_pattern(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl KeyFilter {
    /// The `WHERE` clause, onto `stmt`.
    fn condition<'a>(&'a self, stmt: &mut Stmt<'a>) {
        if let Some(name) = &self.name {
            stmt.and_where()
                .push("LOWER(name) LIKE LOWER(")
                .bind(Arg::Owned(Some(contains_pattern(name))))
                .push(") ESCAPE '\\'");
        }
        if let Some(plan) = &self.plan {
            stmt.and_where().push("plan = ").text(plan);
        }
        if let Some(enabled) = self.enabled {
            stmt.and_where().push("enabled = ").int(i64::from(enabled));
        }
        if let Some(identity) = self.identity_id {
            stmt.and_where().push("identity_id = ").int(identity);
        }
    }
}

impl Db {
    /// Insert a new key; returns the record and the full key (shown once).
    pub async fn create_key(&self, new: &NewApiKey) -> Result<(ApiKey, String), DbError> {
        let secret = keys::generate()?;
        let metadata = new
            .metadata
            .clone()
            .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
        let sql = format!(
            "INSERT INTO api_keys (name, owner, metadata, plan, limits, concurrency, enabled, \
             expires_at, created_at, updated_at, key_prefix, key_hash, scopes, allowed_ips, \
             identity_id) \
             VALUES ($2, $3, $4, $5, $6, $7, 1, $8, $1, {}, $9, $10, $11, $12, $13) \
             RETURNING {COLUMNS}",
            next_stamp("api_keys")
        );
        let row = sqlx::query(&sql)
            .bind(now_ms())
            .bind(&new.name)
            .bind(&new.owner)
            .bind(metadata.to_string())
            .bind(&new.plan)
            .bind(limits_json(new.limits.as_deref())?)
            .bind(new.concurrency.map(i64::from))
            .bind(new.expires_at)
            .bind(secret.display_prefix())
            .bind(secret.hash_hex())
            .bind(json_column(new.scopes.as_ref(), "scopes")?)
            .bind(json_column(new.allowed_ips.as_ref(), "allowed_ips")?)
            .bind(new.identity_id)
            .fetch_one(self.pool())
            .await?;
        Ok((decode_key(&row)?, secret.plain))
    }

    pub async fn get_key(&self, id: i64) -> Result<Option<ApiKey>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode_key).transpose()
    }

    /// One page and the total number of matching keys.
    ///
    /// Ordered by id; `limit <= 0` means no limit, a negative offset is 0.
    pub async fn list_keys(&self, filter: &KeyFilter) -> Result<(Vec<ApiKey>, i64), DbError> {
        let mut count = Stmt::new(self.kind());
        count.push("SELECT COUNT(*) FROM api_keys");
        filter.condition(&mut count);
        let total: i64 = count.query().fetch_one(self.pool()).await?.try_get(0)?;
        let limit = if filter.limit <= 0 {
            i64::MAX
        } else {
            filter.limit
        };
        let mut page = Stmt::new(self.kind());
        page.push("SELECT ").push(COLUMNS).push(" FROM api_keys");
        filter.condition(&mut page);
        page.push(" ORDER BY id LIMIT ")
            .int(limit)
            .push(" OFFSET ")
            .int(filter.offset.max(0));
        let rows = page.query().fetch_all(self.pool()).await?;
        let keys = rows.iter().map(decode_key).collect::<Result<_, _>>()?;
        Ok((keys, total))
    }

    /// Apply a partial update in one statement; `None` if there is no such
    /// key. An empty patch changes nothing and returns the key as it is.
    pub async fn update_key(&self, id: i64, patch: &KeyPatch) -> Result<Option<ApiKey>, DbError> {
        let mut stmt = Stmt::new(self.kind());
        stmt.push("UPDATE api_keys SET ");
        let mut sets = 0;
        let mut set = |column: &str, arg: Arg<'static>| {
            stmt.push(if sets == 0 { "" } else { ", " })
                .push(column)
                .push(" = ")
                .bind(arg);
            sets += 1;
        };
        let owned = |v: Option<&str>| Arg::Owned(v.map(str::to_string));
        if let Some(v) = &patch.name {
            set("name", owned(Some(v)));
        }
        if let Some(v) = &patch.owner {
            set("owner", owned(v.as_deref()));
        }
        if let Some(v) = &patch.metadata {
            set("metadata", Arg::Owned(Some(v.to_string())));
        }
        if let Some(v) = &patch.plan {
            set("plan", owned(v.as_deref()));
        }
        if let Some(v) = &patch.limits {
            set("limits", Arg::Owned(limits_json(v.as_deref())?));
        }
        if let Some(v) = patch.concurrency {
            set("concurrency", Arg::OptInt(v.map(i64::from)));
        }
        if let Some(v) = patch.enabled {
            set("enabled", Arg::Int(i64::from(v)));
        }
        if let Some(v) = patch.expires_at {
            set("expires_at", Arg::OptInt(v));
        }
        if let Some(v) = &patch.scopes {
            set("scopes", Arg::Owned(json_column(v.as_ref(), "scopes")?));
        }
        if let Some(v) = &patch.allowed_ips {
            set(
                "allowed_ips",
                Arg::Owned(json_column(v.as_ref(), "allowed_ips")?),
            );
        }
        if let Some(v) = patch.identity_id {
            set("identity_id", Arg::OptInt(v));
        }
        if sets == 0 {
            return self.get_key(id).await;
        }
        stmt.push(", updated_at = ")
            .push_with(&next_stamp("api_keys"), now_ms())
            .push(" WHERE id = ")
            .int(id)
            .push(" RETURNING ")
            .push(COLUMNS);
        let row = stmt.query().fetch_optional(self.pool()).await?;
        row.as_ref().map(decode_key).transpose()
    }

    /// Enable or disable a key; `None` if there is no such key.
    pub async fn set_key_enabled(&self, id: i64, enabled: bool) -> Result<Option<ApiKey>, DbError> {
        let patch = KeyPatch {
            enabled: Some(enabled),
            ..KeyPatch::default()
        };
        self.update_key(id, &patch).await
    }

    /// New secret for the same id; the old one stays valid for `grace`.
    ///
    /// With a zero grace the old secret stops working at once (and any
    /// secret still in an earlier grace period too).
    pub async fn rotate_key(
        &self,
        id: i64,
        grace: Duration,
    ) -> Result<Option<(ApiKey, String)>, DbError> {
        let secret = keys::generate()?;
        let now = now_ms();
        let previous = if grace.is_zero() {
            "prev_key_hash = NULL, prev_valid_until = NULL"
        } else {
            // The right-hand side sees the row as it was: the old hash.
            "prev_key_hash = key_hash, prev_valid_until = $5"
        };
        let sql = format!(
            "UPDATE api_keys SET {previous}, key_hash = $3, key_prefix = $4, updated_at = {} \
             WHERE id = $2 RETURNING {COLUMNS}",
            next_stamp("api_keys")
        );
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let mut q = sqlx::query(&sql)
            .bind(now)
            .bind(id)
            .bind(secret.hash_hex())
            .bind(secret.display_prefix());
        if !grace.is_zero() {
            q = q.bind(now.saturating_add(grace_ms));
        }
        match q.fetch_optional(self.pool()).await? {
            Some(row) => Ok(Some((decode_key(&row)?, secret.plain))),
            None => Ok(None),
        }
    }

    pub async fn delete_key(&self, id: i64) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Record that keys were used at `at` (Unix ms). Only ever moves
    /// `last_used_at` forward, and does not count as a change of the key set
    /// (`updated_at` stays), so the proxy does not reload for it.
    pub async fn mark_keys_used(&self, ids: &[i64], at: i64) -> Result<(), DbError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        for &id in ids {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1 \
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every key, with hashes, for the proxy's in-memory key set. A previous
    /// secret is included only while its grace period runs.
    pub async fn load_key_records(&self) -> Result<Vec<KeyRecord>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS}, key_hash, prev_key_hash, prev_valid_until FROM api_keys ORDER BY id"
        );
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;
        let now = now_ms();
        rows.iter()
            .map(|row| {
                let key = decode_key(row)?;
                let what = format!("api_keys.key_hash of key {}", key.id);
                let hash = decode_hash(&row.try_get::<String, _>("key_hash")?, &what)?;
                let prev: Option<String> = row.try_get("prev_key_hash")?;
                let until: Option<i64> = row.try_get("prev_valid_until")?;
                let previous = match (prev, until) {
                    (Some(p), Some(u)) if u > now => {
                        let what = format!("api_keys.prev_key_hash of key {}", key.id);
                        Some((decode_hash(&p, &what)?, u))
                    }
                    _ => None,
                };
                Ok(KeyRecord {
                    key,
                    hash,
                    previous,
                })
            })
            .collect()
    }

    /// A cheap query that changes whenever the key set does: inserts and
    /// updates raise `max_updated` (stamps only grow, see `next_stamp`),
    /// deletes lower `count`. `last_used_at` updates do not count.
    pub async fn keys_fingerprint(&self) -> Result<Fingerprint, DbError> {
        fingerprint_of(self, "api_keys", Some("id")).await
    }
}
