//! A database migrated by a newer binary, whose applied migration was
//! edited, or whose migration record is gone, is refused at connect and by
//! `check-config`'s read-only look, on both databases (black-box round 18,
//! finding 1, and its re-check); nothing is run against it.

use tollgate_core::db::testing::url_of;
use tollgate_core::db::{plans, Db, DbError};

async fn exec(db: &Db, sql: &str, checksum: Option<Vec<u8>>) {
    let mut q = sqlx::query(sql);
    if let Some(c) = checksum {
        q = q.bind(c);
    }
    q.execute(db.pool()).await.expect(sql);
}

async fn refused(url: &str, want: &str) {
    match Db::connect(url).await {
        Err(DbError::Schema(why)) => assert!(why.contains(want), "{why}"),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a schema that is not this binary's was accepted ({want})"),
    }
    match plans::plan_names_read_only(url).await {
        Err(DbError::Schema(why)) => assert!(why.contains(want), "{why}"),
        other => panic!("check-config's look was not refused: {other:?}"),
    }
}

async fn newer_or_edited_schemas_are_refused(db: &Db) {
    let url = url_of(db);
    let newest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(db.pool())
        .await
        .expect("newest");
    // A migration this binary does not know: a newer Tollgate ran here.
    exec(
        db,
        &format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES ({}, 'from the future', TRUE, $1, 1)",
            newest + 1
        ),
        Some(vec![0]),
    )
    .await;
    refused(&url, "newer Tollgate").await;
    exec(
        db,
        &format!(
            "DELETE FROM _sqlx_migrations WHERE version = {}",
            newest + 1
        ),
        None,
    )
    .await;
    Db::connect(&url)
        .await
        .expect("this binary's own schema")
        .close()
        .await;
    // An applied migration that is not this binary's.
    exec(
        db,
        &format!("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = {newest}"),
        Some(vec![1, 2, 3]),
    )
    .await;
    refused(&url, "changed after it was applied").await;
    // Its migration record cut or lost: migrating again would fail part-way.
    exec(
        db,
        &format!("DELETE FROM _sqlx_migrations WHERE version = {newest} OR version = 1"),
        None,
    )
    .await;
    refused(&url, "lacks migration 1 though later ones are applied").await;
    exec(db, "DELETE FROM _sqlx_migrations", None).await;
    refused(&url, "no record of its migrations").await;
    exec(db, "DROP TABLE _sqlx_migrations", None).await;
    refused(&url, "no record of its migrations").await;
}

both!(
    newer_or_edited_schemas_are_refused_at_connect,
    newer_or_edited_schemas_are_refused
);

/// Round 18 second re-check: SQLite stores any type in any column; a
/// migration record whose version is text is refused as not Tollgate's
/// (check-config said ok while every start failed to decode it).
#[tokio::test]
async fn a_migration_record_of_another_shape_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    let url = url_of(&db);
    exec(
        &db,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ('abc', 'odd', TRUE, X'00', 1)",
        None,
    )
    .await;
    db.close().await;
    refused(
        &url,
        "the migration record (_sqlx_migrations) is not Tollgate's",
    )
    .await;
}
