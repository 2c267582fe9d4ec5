//! The schema and the connection: both migration sets build the same tables
//! and columns, the tables other modules write take rows of the documented
//! shape (on both databases), SQLite is set up for several processes,
//! database URLs are checked, and PostgreSQL migrations run once under
//! concurrent starts.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::Row;
use tollgate_core::db::testing::{fresh_postgres, fresh_sqlite};
use tollgate_core::db::{Db, DbError, DbKind, KeyFilter};
use tollgate_core::now_ms;

use crate::common::named;

both!(other_tables_accept_rows, other_tables_body);

/// The tables other modules write get rows of the documented shape.
async fn other_tables_body(db: &Db) {
    let mut cols = String::from("minute, key_id, route, allowed, limited, unauthorized, forbidden, upstream_errors, latency_sum_us");
    let mut vals = String::from("$1, $2, $3, 1, 2, 3, 4, 5, 600");
    for i in 0..tollgate_core::db::LATENCY_BUCKETS {
        cols.push_str(&format!(", lat_b{i}"));
        vals.push_str(&format!(", {i}"));
    }
    let sql = format!("INSERT INTO usage_minute ({cols}) VALUES ({vals})");
    for key_id in [0i64, 7] {
        sqlx::query(&sql)
            .bind(60_000i64)
            .bind(key_id)
            .bind("users")
            .execute(db.pool())
            .await
            .expect("usage row");
    }
    let dup = sqlx::query(&sql)
        .bind(60_000i64)
        .bind(7i64)
        .bind("users")
        .execute(db.pool())
        .await;
    assert!(dup.is_err(), "(minute, key_id, route) is the primary key");
    let sum: i64 = sqlx::query_scalar(
        "SELECT CAST(SUM(lat_b11 + allowed) AS BIGINT) FROM usage_minute WHERE minute = $1",
    )
    .bind(60_000i64)
    .fetch_one(db.pool())
    .await
    .expect("sum");
    assert_eq!(sum, 2 * (11 + 1));

    sqlx::query(
        "INSERT INTO violations (at, key_id, route, method, path, client_ip, limit_name, status) \
         VALUES ($1, NULL, 'users', 'GET', '/api/users', '127.0.0.1', NULL, 401)",
    )
    .bind(now_ms())
    .execute(db.pool())
    .await
    .expect("violation");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM violations WHERE key_id IS NULL")
        .fetch_one(db.pool())
        .await
        .expect("count");
    assert_eq!(n, 1);

    let admin = db.create_admin("root", "$argon2id$x").await.expect("admin");
    assert!(matches!(
        db.create_admin("root", "h").await,
        Err(DbError::Conflict(_))
    ));
    assert_eq!(db.list_admins().await.expect("admins"), vec![admin]);
}

/// Table → column names, without sqlx's bookkeeping.
type Schema = BTreeMap<String, BTreeSet<String>>;

async fn sqlite_schema(db: &Db) -> Schema {
    let rows = sqlx::query(
        "SELECT m.name AS t, p.name AS c FROM sqlite_master m, pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_sqlx%'",
    )
    .fetch_all(db.pool())
    .await
    .expect("sqlite schema");
    collect(rows)
}

async fn postgres_schema(db: &Db) -> Schema {
    let rows = sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(db.pool())
    .await
    .expect("postgres schema");
    collect(rows)
}

fn collect(rows: Vec<sqlx::any::AnyRow>) -> Schema {
    let mut schema = Schema::new();
    for r in rows {
        let t: String = r.try_get("t").expect("table");
        let c: String = r.try_get("c").expect("column");
        schema.entry(t).or_default().insert(c);
    }
    schema
}

#[tokio::test]
async fn both_migration_sets_build_the_same_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lite = fresh_sqlite(dir.path()).await;
    let lite_schema = sqlite_schema(&lite).await;
    for (table, cols) in [
        (
            "admins",
            &[
                "id",
                "username",
                "password_hash",
                "created_at",
                "role",
                "session_gen",
            ][..],
        ),
        (
            "plans",
            &["name", "limits", "concurrency", "created_at", "updated_at"][..],
        ),
        (
            "identities",
            &[
                "id",
                "external_id",
                "name",
                "metadata",
                "plan",
                "limits",
                "created_at",
                "updated_at",
            ][..],
        ),
        (
            "instances",
            &[
                "id",
                "address",
                "version",
                "started_at",
                "last_seen",
                "stats",
                "upstream_health",
                // Migration 0017: the quota-count name (round 5, N1).
                "counter",
                // Migration 0018: its own heartbeat period (round 17).
                "beat_every_ms",
            ][..],
        ),
        (
            "violations",
            &[
                "id",
                "at",
                "key_id",
                "route",
                "method",
                "path",
                "client_ip",
                "limit_name",
                "status",
            ][..],
        ),
    ] {
        let want: BTreeSet<String> = cols.iter().map(|s| s.to_string()).collect();
        assert_eq!(lite_schema.get(table), Some(&want), "{table}");
    }
    // 18 + `identity_id` (migration 0007).
    assert_eq!(lite_schema["api_keys"].len(), 19);
    assert_eq!(
        lite_schema["usage_minute"].len(),
        9 + tollgate_core::db::LATENCY_BUCKETS
    );
    let Some(pg) = fresh_postgres().await else {
        return;
    };
    let pg_schema = postgres_schema(&pg).await;
    assert_eq!(lite_schema, pg_schema);
    pg.close().await;
}

#[tokio::test]
async fn sqlite_is_set_up_for_several_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub.db");
    let url = format!("sqlite://{}", path.display());
    // Several "processes" open the missing file at once: all migrate fine.
    let opens = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { Db::connect(&url).await })
    });
    let mut dbs = Vec::new();
    for h in opens {
        dbs.push(h.await.expect("join").expect("connect"));
    }
    assert!(path.exists());
    let db = &dbs[0];
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(db.pool())
        .await
        .expect("mode");
    assert_eq!(mode.to_lowercase(), "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(db.pool())
        .await
        .expect("fk");
    assert_eq!(fk, 1);
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(db.pool())
        .await
        .expect("busy");
    assert!(busy >= 1000, "{busy}");
    // What one writes, another sees; writers from both do not fail.
    let (k, _) = dbs[1].create_key(&named("shared")).await.expect("create");
    let mut tasks = Vec::new();
    for (i, d) in dbs.iter().enumerate() {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..10 {
                d.create_key(&named(&format!("w{i}-{j}")))
                    .await
                    .expect("concurrent create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    assert_eq!(
        dbs[2].get_key(k.id).await.expect("get").map(|k| k.name),
        Some("shared".into())
    );
    assert_eq!(
        dbs[3]
            .list_keys(&KeyFilter::default())
            .await
            .expect("list")
            .1,
        41
    );
    // Reconnecting runs no migration twice.
    for d in &dbs {
        d.close().await;
    }
    let again = Db::connect(&url).await.expect("reconnect");
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(again.pool())
        .await
        .expect("migrations");
    assert!(applied >= 1);
    assert_eq!(
        again
            .list_keys(&KeyFilter::default())
            .await
            .expect("list")
            .1,
        41
    );
}

#[tokio::test]
async fn urls_are_checked() {
    for bad in ["mysql://u@h/d", "tollgate.db", "", "redis://h"] {
        assert!(
            matches!(Db::connect(bad).await, Err(DbError::UnsupportedUrl(_))),
            "{bad}"
        );
    }
    let db = Db::connect("sqlite::memory:").await.expect("memory");
    assert_eq!(db.kind(), DbKind::Sqlite);
    db.create_key(&named("m")).await.expect("create");
    assert_eq!(
        db.list_keys(&KeyFilter::default()).await.expect("list").1,
        1
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let ro = format!(
        "sqlite://{}?mode=ro",
        dir.path().join("missing.db").display()
    );
    assert!(Db::connect(&ro).await.is_err(), "an explicit mode is kept");
}

#[tokio::test]
async fn postgres_migrations_run_once_under_concurrent_starts() {
    let Some(db) = fresh_postgres().await else {
        return;
    };
    let url = tollgate_core::db::testing::url_of(&db);
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Db::connect(&url).await })
        })
        .collect();
    for h in opens {
        let d = h.await.expect("join").expect("connect");
        assert_eq!(d.kind(), DbKind::Postgres);
        d.close().await;
    }
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(db.pool())
            .await
            .expect("versions");
    let unique: BTreeSet<i64> = versions.iter().copied().collect();
    assert_eq!(unique.len(), versions.len());
    assert!(versions.contains(&1));
    db.close().await;
}
