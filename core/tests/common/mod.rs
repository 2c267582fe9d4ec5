//! What the database tests share: `both!`, which runs a test body once on a
//! fresh SQLite file and once on a fresh PostgreSQL database (the latter is
//! skipped with a notice when `TOLLGATE_TEST_POSTGRES_URL` is unset, and fails
//! instead when `CI` or `TOLLGATE_REQUIRE_SERVICES` is set),
//! the small helpers that make limits and keys, and the property tests'
//! proptest config.

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

use std::time::Duration;

use proptest::test_runner::Config as ProptestConfig;
use tollgate_core::db::{ApiKey, Db, NewApiKey};
use tollgate_core::limits::Limit;

pub fn limit(name: &str, rate: u64, per_s: u64) -> Limit {
    Limit::new(name, rate, Duration::from_secs(per_s), Some(rate * 2), None)
}

pub fn named(name: &str) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        ..NewApiKey::default()
    }
}

pub async fn create(db: &Db, new: NewApiKey) -> (ApiKey, String) {
    db.create_key(&new).await.expect("create key")
}

/// `cases` cases, no regression files written next to the sources (failing
/// cases worth keeping become plain tests).
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
