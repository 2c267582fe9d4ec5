//! `service_tokens`: the credentials of the verify API's callers. Only the
//! SHA-256 of a token is stored; the proxy loads the hashes
//! ([`Db::service_token_hashes`]) every `storage.key_refresh`.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Db, DbError};
use crate::now_ms;
use crate::service_tokens::{self, TokenHash};

/// A service token as listed (never its secret nor its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceToken {
    pub id: i64,
    pub name: String,
    /// `tgs_` + 6 characters.
    pub prefix: String,
    /// Unix ms.
    pub created_at: i64,
    /// The admin who created it (`None`: the CLI).
    pub created_by: Option<String>,
}

const COLUMNS: &str = "id, name, token_prefix, created_at, created_by";

fn decode(row: &AnyRow) -> Result<ServiceToken, DbError> {
    Ok(ServiceToken {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("token_prefix")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

impl Db {
    /// Create a token named `name` (checked by the caller); the plain token
    /// is returned this once.
    pub async fn create_service_token(
        &self,
        name: &str,
        created_by: Option<&str>,
    ) -> Result<(ServiceToken, String), DbError> {
        let token = service_tokens::generate()?;
        let sql = format!(
            "INSERT INTO service_tokens (name, token_prefix, token_hash, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(token.display_prefix())
            .bind(token.hash_hex())
            .bind(now_ms())
            .bind(created_by)
            .fetch_one(self.pool())
            .await?;
        Ok((decode(&row)?, token.plain))
    }

    /// Every token, oldest first.
    pub async fn list_service_tokens(&self) -> Result<Vec<ServiceToken>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM service_tokens ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;
        rows.iter().map(decode).collect()
    }

    /// Delete a token; `None` if there was none with that id.
    pub async fn delete_service_token(&self, id: i64) -> Result<Option<ServiceToken>, DbError> {
        let sql = format!("DELETE FROM service_tokens WHERE id = $1 RETURNING {COLUMNS}");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// The hashes the verify listener accepts.
    pub async fn service_token_hashes(&self) -> Result<Vec<TokenHash>, DbError> {
        let rows = sqlx::query("SELECT token_hash FROM service_tokens")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let hex_text: String = r.try_get("token_hash")?;
                let mut out = [0u8; 32];
                hex::decode_to_slice(&hex_text, &mut out).map_err(|e| {
                    DbError::Corrupt(format!("service_tokens.token_hash {hex_text:?}: {e}"))
                })?;
                Ok(out)
            })
            .collect()
    }
}
