//! `admins`: the people who may use the admin API. Passwords are stored as
//! argon2id PHC strings, hashed by the caller (the admin API).
//!
//! Every admin has a [`Role`]; the first admin is always an owner and the
//! last owner can be neither removed nor demoted. Usernames are unique
//! regardless of case. `session_gen` is bumped to end every session of an
//! admin at once (password change); revoked single tokens (logout) are kept in
//! `revoked_tokens` until they would have expired anyway.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Db, DbError, DbKind};
use crate::now_ms;

/// What an admin may do. Ordered: a higher role may do everything a lower
/// one may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only: analytics, the key list, monitoring.
    Viewer,
    /// Keys and plans, plus everything a viewer may.
    Admin,
    /// Admins and settings, plus everything an admin may.
    Owner,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Admin, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// Whether this role may do what `required` may.
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "admin" => Ok(Role::Admin),
            "owner" => Ok(Role::Owner),
            other => Err(format!(
                "unknown role {other:?}: expected owner, admin or viewer"
            )),
        }
    }
}

/// An admin as the API shows it (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admin {
    pub id: i64,
    pub username: String,
    pub role: Role,
    /// Unix ms.
    pub created_at: i64,
    /// The session generation: tokens issued under an older one are void.
    pub session_gen: i64,
}

const COLUMNS: &str = "id, username, role, created_at, session_gen";

fn admin_from_row(row: &sqlx::any::AnyRow) -> Result<Admin, DbError> {
    let role: String = row.try_get("role")?;
    Ok(Admin {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        role: role.parse().map_err(DbError::Corrupt)?,
        created_at: row.try_get("created_at")?,
        session_gen: row.try_get("session_gen")?,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Why a role change or a removal was refused.
pub const LAST_OWNER: &str =
    "cannot remove or demote the last owner: make another admin an owner first";

impl Db {
    /// Insert an admin with role `admin`, or `owner` if it is the first one.
    /// A taken username (in any case) is [`DbError::Conflict`].
    pub async fn create_admin(
        &self,
        username: &str,
        password_hash: &str,
    ) -> Result<Admin, DbError> {
        self.create_admin_with_role(username, password_hash, Role::Admin)
            .await
    }

    /// Insert an admin with `role`; the first admin is an owner whatever
    /// `role` says. A taken username (in any case) is [`DbError::Conflict`].
    pub async fn create_admin_with_role(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<Admin, DbError> {
        let sql = format!(
            "INSERT INTO admins (username, password_hash, created_at, role) \
             SELECT $1, $2, $3, CASE WHEN EXISTS (SELECT 1 FROM admins) THEN $4 ELSE 'owner' END \
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(username)
            .bind(password_hash)
            .bind(now_ms())
            .bind(role.as_str())
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
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM admins ORDER BY id"))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(admin_from_row).collect()
    }

    pub async fn get_admin(&self, id: i64) -> Result<Option<Admin>, DbError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM admins WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(admin_from_row).transpose()
    }

    /// The admin (username matched regardless of case) and its password
    /// hash, for login.
    pub async fn get_admin_by_username(
        &self,
        username: &str,
    ) -> Result<Option<(Admin, String)>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, password_hash FROM admins WHERE lower(username) = lower($1)"
        ))
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

    /// The password hash of admin `id`.
    pub async fn get_admin_password_hash(&self, id: i64) -> Result<Option<String>, DbError> {
        let v: Option<String> =
            sqlx::query_scalar("SELECT password_hash FROM admins WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        Ok(v)
    }

    pub async fn count_admins(&self) -> Result<i64, DbError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM admins")
            .fetch_one(self.pool())
            .await?;
        Ok(n)
    }

    /// Replace an admin's password hash (sessions stay valid); `false` if
    /// there is no such admin.
    pub async fn set_admin_password(&self, id: i64, password_hash: &str) -> Result<bool, DbError> {
        let done = sqlx::query("UPDATE admins SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Replace an admin's password hash and end all its sessions (bump the
    /// session generation). Returns the admin as it is now.
    pub async fn change_admin_password(
        &self,
        id: i64,
        password_hash: &str,
    ) -> Result<Option<Admin>, DbError> {
        let row = sqlx::query(&format!(
            "UPDATE admins SET password_hash = $1, session_gen = session_gen + 1 WHERE id = $2 \
             RETURNING {COLUMNS}"
        ))
        .bind(password_hash)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(admin_from_row).transpose()
    }

    /// Lock every admin row (PostgreSQL) so that two concurrent changes
    /// cannot both see "two owners left" and remove both. SQLite serialises
    /// writers, and the guarded statements below are single statements.
    async fn lock_admins(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(), DbError> {
        if self.kind() == DbKind::Postgres {
            sqlx::query("SELECT id FROM admins ORDER BY id FOR UPDATE")
                .fetch_all(&mut **tx)
                .await?;
        } else {
            // SQLite: take the write lock before the first read (a write
            // statement does, even when it matches nothing), waiting out
            // other writers with the busy timeout. Reading first and then
            // writing fails at once with SQLITE_BUSY_SNAPSHOT (517) if
            // another connection wrote in between (schemathesis seed 7178:
            // DELETE /api/admins/1 answered 503).
            sqlx::query("UPDATE admins SET id = id WHERE 0")
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Change an admin's role (and end its sessions, so the new role applies
    /// at once). `Ok(None)`: no such admin; [`DbError::Conflict`] when it
    /// would demote the last owner. Returns the admin before and after.
    pub async fn set_admin_role(
        &self,
        id: i64,
        role: Role,
    ) -> Result<Option<(Admin, Admin)>, DbError> {
        let mut tx = self.pool().begin().await?;
        self.lock_admins(&mut tx).await?;
        let before = sqlx::query(&format!("SELECT {COLUMNS} FROM admins WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(before) = before.as_ref().map(admin_from_row).transpose()? else {
            tx.rollback().await?;
            return Ok(None);
        };
        if before.role == role {
            tx.rollback().await?;
            return Ok(Some((before.clone(), before)));
        }
        // One statement: it only demotes an owner while another owner exists.
        let row = sqlx::query(&format!(
            "UPDATE admins SET role = $1, session_gen = session_gen + 1 WHERE id = $2 \
             AND (role <> 'owner' OR (SELECT COUNT(*) FROM admins WHERE role = 'owner') > 1) \
             RETURNING {COLUMNS}"
        ))
        .bind(role.as_str())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(after) = row.as_ref().map(admin_from_row).transpose()? else {
            tx.rollback().await?;
            return Err(DbError::Conflict(LAST_OWNER.into()));
        };
        tx.commit().await?;
        Ok(Some((before, after)))
    }

    /// Delete an admin: `Ok(None)` if there is no such admin,
    /// [`DbError::Conflict`] if it is the last owner (there is always one
    /// left). Returns the deleted admin.
    pub async fn delete_admin(&self, id: i64) -> Result<Option<Admin>, DbError> {
        let mut tx = self.pool().begin().await?;
        self.lock_admins(&mut tx).await?;
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM admins WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(admin) = row.as_ref().map(admin_from_row).transpose()? else {
            tx.rollback().await?;
            return Ok(None);
        };
        // One statement, so SQLite checks and deletes atomically too.
        let done = sqlx::query(
            "DELETE FROM admins WHERE id = $1 \
             AND (role <> 'owner' OR (SELECT COUNT(*) FROM admins WHERE role = 'owner') > 1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(DbError::Conflict(LAST_OWNER.into()));
        }
        tx.commit().await?;
        Ok(Some(admin))
    }

    /// Revoke one token (logout) until `expires_at` (Unix ms), and forget
    /// revocations that have expired.
    pub async fn revoke_token(
        &self,
        jti: &str,
        admin_id: i64,
        expires_at: i64,
    ) -> Result<(), DbError> {
        sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < $1")
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, admin_id, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(admin_id)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The admin a token names, unless the token `jti` was revoked: `None`
    /// when the admin is gone or the token revoked. One round trip.
    pub async fn session_admin(&self, id: i64, jti: &str) -> Result<Option<Admin>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM admins WHERE id = $1 \
             AND NOT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = $2)"
        ))
        .bind(id)
        .bind(jti)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(admin_from_row).transpose()
    }
}
