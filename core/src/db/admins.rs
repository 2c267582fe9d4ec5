//! `admins`: the people who may use the admin API. Passwords are stored as
//! argon2id PHC strings, hashed by the caller (the admin API).

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Db, DbError, DbKind};
use crate::now_ms;

/// An admin as the API shows it (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admin {
    pub id: i64,
    pub username: String,
    /// Unix ms.
    pub created_at: i64,
}

fn admin_from_row(row: &sqlx::any::AnyRow) -> Result<Admin, DbError> {
    Ok(Admin {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        created_at: row.try_get("created_at")?,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl Db {
    /// Insert an admin. A taken username is [`DbError::Conflict`].
    pub async fn create_admin(
        &self,
        username: &str,
        password_hash: &str,
    ) -> Result<Admin, DbError> {
        let row = sqlx::query(
            "INSERT INTO admins (username, password_hash, created_at) VALUES ($1, $2, $3) \
             RETURNING id, username, created_at",
        )
        .bind(username)
        .bind(password_hash)
        .bind(now_ms())
        .fetch_one(self.pool())
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                DbError::Conflict(format!("an admin named {username:?} already exists"))
            } else {
                DbError::Sqlx(e)
            }
        })?;
        admin_from_row(&row)
    }

    /// Every admin, oldest first.
    pub async fn list_admins(&self) -> Result<Vec<Admin>, DbError> {
        let rows = sqlx::query("SELECT id, username, created_at FROM admins ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(admin_from_row).collect()
    }

    pub async fn get_admin(&self, id: i64) -> Result<Option<Admin>, DbError> {
        let row = sqlx::query("SELECT id, username, created_at FROM admins WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(admin_from_row).transpose()
    }

    /// The admin and its password hash, for login.
    pub async fn get_admin_by_username(
        &self,
        username: &str,
    ) -> Result<Option<(Admin, String)>, DbError> {
        let row = sqlx::query(
            "SELECT id, username, created_at, password_hash FROM admins WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => {
                let hash: String = row.try_get("password_hash")?;
                Ok(Some((admin_from_row(&row)?, hash)))
            }
            None => Ok(None),
        }
    }

    pub async fn count_admins(&self) -> Result<i64, DbError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM admins")
            .fetch_one(self.pool())
            .await?;
        Ok(n)
    }

    /// Replace an admin's password hash; `false` if there is no such admin.
    pub async fn set_admin_password(&self, id: i64, password_hash: &str) -> Result<bool, DbError> {
        let done = sqlx::query("UPDATE admins SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Delete an admin: `Ok(false)` if there is no such admin,
    /// [`DbError::Conflict`] if it is the last one (there is always one left).
    pub async fn delete_admin(&self, id: i64) -> Result<bool, DbError> {
        let mut tx = self.pool().begin().await?;
        if self.kind() == DbKind::Postgres {
            // Lock every admin row so two concurrent deletes cannot both see
            // "two admins left" and remove both. (SQLite serialises writers.)
            sqlx::query("SELECT id FROM admins ORDER BY id FOR UPDATE")
                .fetch_all(&mut *tx)
                .await?;
        }
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM admins WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            tx.rollback().await?;
            return Ok(false);
        }
        // One statement, so SQLite checks and deletes atomically too.
        let done =
            sqlx::query("DELETE FROM admins WHERE id = $1 AND (SELECT COUNT(*) FROM admins) > 1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(DbError::Conflict(
                "cannot delete the last admin: create another admin first".into(),
            ));
        }
        tx.commit().await?;
        Ok(true)
    }
}
