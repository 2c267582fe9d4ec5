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
    // Its migration record lost: migrating again would fail part-way.
    exec(db, "DROP TABLE _sqlx_migrations", None).await;
    refused(&url, "no record of its migrations").await;
}

both!(
    newer_or_edited_schemas_are_refused_at_connect,
    newer_or_edited_schemas_are_refused
);
