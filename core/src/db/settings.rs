//! `settings`: a small key/value table for values the services generate once
//! and must keep across restarts (e.g. the admin API's JWT secret).

use super::{Db, DbError};

/// The settings key of the generated JWT signing secret (hex).
pub const JWT_SECRET: &str = "admin.jwt_secret";

impl Db {
    pub async fn get_setting(&self, key: &str) -> Result<Option<String>, DbError> {
        let v: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(self.pool())
            .await?;
        Ok(v)
    }

    /// Insert or replace a value.
    pub async fn put_setting(&self, key: &str, value: &str) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Store `value` unless the key already has one; returns the value that is
    /// stored afterwards (the existing one if another process won the race).
    pub async fn put_setting_if_absent(&self, key: &str, value: &str) -> Result<String, DbError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(self.pool())
        .await?;
        self.get_setting(key)
            .await?
            .ok_or_else(|| DbError::Corrupt(format!("setting {key:?} vanished right after insert")))
    }
}
