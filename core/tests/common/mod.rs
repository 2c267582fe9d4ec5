//! What the database tests share: every test body runs once on a fresh
//! SQLite file and once on a fresh PostgreSQL database (the latter is
//! skipped with a notice when `TOLLGATE_TEST_POSTGRES_URL` is unset, and fails
//! instead when `CI` or `TOLLGATE_REQUIRE_SERVICES` is set).

/// `both!(name, body)`: `name::sqlite` and `name::postgres` run `body(&db)`.
macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let dir = tempfile::tempdir().expect("tempdir");
                let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
                assert_eq!(db.kind(), tollgate_core::db::DbKind::Sqlite);
                super::$body(&db).await;
                db.close().await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some(db) = tollgate_core::db::testing::fresh_postgres().await else {
                    return;
                };
                assert_eq!(db.kind(), tollgate_core::db::DbKind::Postgres);
                super::$body(&db).await;
                db.close().await;
            }
        }
    };
}
