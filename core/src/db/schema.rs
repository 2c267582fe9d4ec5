//! Whether a database's recorded migrations are the ones this binary embeds.
//!
//! A binary refuses a database that a newer Tollgate migrated (a migration it
//! does not know), one whose applied migration differs from its own (edited
//! after it was applied), and one whose migration failed part-way; it never
//! runs against a schema it was not built for. A database that lacks some of
//! this binary's migrations is behind: starting migrates it.

use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, Row};

use super::DbError;

/// Where a database stands against a binary's migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schema {
    /// Every migration of the binary is applied, and nothing else.
    UpToDate,
    /// Some of the binary's migrations are not applied yet (a fresh
    /// database has none).
    Behind,
}

/// One row of `_sqlx_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Applied {
    pub version: i64,
    pub checksum: Vec<u8>,
    pub success: bool,
}

/// The rows of `_sqlx_migrations`; `None` when the table does not exist.
pub(crate) async fn applied(conn: &mut AnyConnection) -> Result<Option<Vec<Applied>>, DbError> {
    // Booleans through `Any`: SQLite stores them as integers, which `Any`
    // cannot decode as `bool`.
    let rows = sqlx::query(
        "SELECT version, checksum, CASE WHEN success THEN 1 ELSE 0 END AS ok \
         FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&mut *conn)
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) if is_missing_table(&e) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    rows.iter()
        .map(|r| {
            Ok(Applied {
                version: r.try_get("version")?,
                checksum: r.try_get("checksum")?,
                success: r.try_get::<i64, _>("ok")? != 0,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map(Some)
        .map_err(|e| {
            DbError::Schema(format!(
                "the migration record (_sqlx_migrations) is not Tollgate's: {e}"
            ))
        })
}

/// Whether the first migration's tables are there (`api_keys`).
async fn has_tollgate_tables(conn: &mut AnyConnection) -> Result<bool, DbError> {
    match sqlx::query("SELECT 1 FROM api_keys LIMIT 1")
        .fetch_optional(&mut *conn)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_missing_table(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn is_missing_table(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    // PostgreSQL: undefined_table; SQLite: "no such table".
    db.code().as_deref() == Some("42P01") || db.message().contains("no such table")
}

/// Judge `applied` against `migrator`: a refusal names what is wrong and
/// what to do.
pub(crate) fn judge(migrator: &Migrator, applied: &[Applied]) -> Result<Schema, DbError> {
    let newest = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    for a in applied {
        let Some(own) = migrator.iter().find(|m| m.version == a.version) else {
            if a.version > newest {
                return Err(DbError::Schema(format!(
                    "the database was migrated by a newer Tollgate: it has migration {}, \
                     this binary knows migrations up to {newest}; run that version (or a \
                     newer one) against it, or restore the backup taken before the upgrade",
                    a.version
                )));
            }
            return Err(DbError::Schema(format!(
                "the database records migration {}, which no Tollgate has (its migration \
                 record was edited); refusing to run against an unknown schema",
                a.version
            )));
        };
        if !a.success {
            return Err(DbError::Schema(format!(
                "migration {} failed part-way in an earlier start; repair the database \
                 by hand (or restore a backup) before starting",
                a.version
            )));
        }
        if own.checksum.as_ref() != a.checksum.as_slice() {
            return Err(DbError::Schema(format!(
                "migration {} in the database is not this binary's migration {} (it was \
                 changed after it was applied); refusing to run against an unknown schema",
                a.version, a.version
            )));
        }
    }
    // Behind means a prefix of the binary's migrations: one missing below
    // an applied one was taken out of the record by hand, and migrating
    // would run it again over its own tables.
    let newest_applied = applied.iter().map(|a| a.version).max();
    if let Some(gap) = migrator.iter().find(|m| {
        newest_applied.is_some_and(|n| m.version < n)
            && !applied.iter().any(|a| a.version == m.version)
    }) {
        return Err(DbError::Schema(format!(
            "the migration record lacks migration {} though later ones are applied \
             (edited by hand); restore it from a backup",
            gap.version
        )));
    }
    let all = migrator
        .iter()
        .all(|m| applied.iter().any(|a| a.version == m.version));
    Ok(if all {
        Schema::UpToDate
    } else {
        Schema::Behind
    })
}

/// [`applied`] then [`judge`]. A database with Tollgate's tables but no
/// record of its migrations is refused: migrating would fail part-way over
/// the tables that are there.
pub(crate) async fn check(
    conn: &mut AnyConnection,
    migrator: &Migrator,
) -> Result<Schema, DbError> {
    let applied = applied(conn).await?;
    let recorded = applied.as_ref().is_some_and(|a| !a.is_empty());
    if !recorded && has_tollgate_tables(conn).await? {
        return Err(DbError::Schema(
            "the database holds Tollgate's tables but no record of its migrations \
             (_sqlx_migrations is missing or empty); restore it from a backup"
                .into(),
        ));
    }
    judge(migrator, applied.as_deref().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_of(m: &Migrator) -> Vec<Applied> {
        m.iter()
            .map(|m| Applied {
                version: m.version,
                checksum: m.checksum.to_vec(),
                success: true,
            })
            .collect()
    }

    #[test]
    fn each_way_a_schema_can_differ_is_judged() {
        for m in [
            &super::super::SQLITE_MIGRATIONS,
            &super::super::POSTGRES_MIGRATIONS,
        ] {
            let all = all_of(m);
            assert_eq!(judge(m, &all).ok(), Some(Schema::UpToDate));
            assert_eq!(judge(m, &[]).ok(), Some(Schema::Behind));
            assert_eq!(judge(m, &all[..all.len() - 1]).ok(), Some(Schema::Behind));

            let mut newer = all.clone();
            let next = newer.last().map_or(1, |a| a.version + 1);
            newer.push(Applied {
                version: next,
                checksum: vec![0],
                success: true,
            });
            let e = judge(m, &newer).expect_err("newer").to_string();
            assert!(
                e.contains("newer Tollgate") && e.contains(&next.to_string()),
                "{e}"
            );

            let mut unknown = all.clone();
            unknown.insert(
                0,
                Applied {
                    version: -1,
                    checksum: vec![0],
                    success: true,
                },
            );
            let e = judge(m, &unknown).expect_err("unknown").to_string();
            assert!(e.contains("migration -1, which no Tollgate has"), "{e}");

            let mut gap = all.clone();
            gap.remove(1);
            let e = judge(m, &gap).expect_err("gap").to_string();
            assert!(e.contains("lacks migration"), "{e}");

            let mut edited = all.clone();
            edited[0].checksum = vec![1];
            let e = judge(m, &edited).expect_err("edited").to_string();
            assert!(e.contains("changed after it was applied"), "{e}");

            let mut failed = all.clone();
            failed[1].success = false;
            let e = judge(m, &failed).expect_err("failed").to_string();
            assert!(e.contains("failed part-way"), "{e}");
        }
    }
}
