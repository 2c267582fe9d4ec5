//! Fresh databases for tests: this crate's and the other crates' (always
//! compiled, it is tiny; nothing here is meant for production code).
//!
//! PostgreSQL tests need `TOLLGATE_TEST_POSTGRES_URL`, a role allowed to create
//! databases (`eval "$(scripts/services)"` provides one). Without it
//! [`fresh_postgres`] prints a notice and returns `None` so the test can
//! return early — unless `CI` or `TOLLGATE_REQUIRE_SERVICES` is set: then a
//! missing server fails the test instead of letting it pass unrun.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Connection;

use super::Db;

/// The variable naming the PostgreSQL server tests may create databases on.
pub const POSTGRES_URL_VAR: &str = "TOLLGATE_TEST_POSTGRES_URL";

/// Test databases older than this are dropped by later test runs. Every test
/// of the suite ends well within it; a database still in use is not dropped
/// (PostgreSQL refuses while someone is connected). A day of runs on a dev
/// machine left 1,500 databases (13 GB) with six hours here.
const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// Whether a missing test service must fail the test (`CI` or
/// `TOLLGATE_REQUIRE_SERVICES` set) rather than skip it.
pub fn services_required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("TOLLGATE_REQUIRE_SERVICES").is_some()
}

/// A new, migrated SQLite database file in `dir` (a new file on every call).
///
/// # Panics
/// If the database cannot be created.
pub async fn fresh_sqlite(dir: &Path) -> Db {
    let url = format!("sqlite://{}/tollgate-{}.db", dir.display(), random_hex());
    match Db::connect(&url).await {
        Ok(db) => db,
        Err(e) => panic!("cannot create the test database {url}: {e}"),
    }
}

/// A new, migrated PostgreSQL database (`tg_test_<time>_<random>`) on the
/// server of `TOLLGATE_TEST_POSTGRES_URL`; `None`, with a notice, when the
/// variable is unset and services are not required.
///
/// # Panics
/// If the variable is unset while services are required, or the server
/// refuses to create or open the database.
pub async fn fresh_postgres() -> Option<Db> {
    let Some(base) = std::env::var(POSTGRES_URL_VAR)
        .ok()
        .filter(|u| !u.is_empty())
    else {
        if services_required() {
            panic!(
                "{POSTGRES_URL_VAR} is not set but CI/TOLLGATE_REQUIRE_SERVICES is: \
                 run `eval \"$(scripts/services)\"` first"
            );
        }
        eprintln!(
            "notice: {POSTGRES_URL_VAR} is not set; skipping the PostgreSQL part of this test"
        );
        return None;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = format!("tg_test_{now}_{}", random_hex());
    let mut admin = match sqlx::PgConnection::connect(&base).await {
        Ok(c) => c,
        Err(e) => panic!("cannot connect to {POSTGRES_URL_VAR}: {e}"),
    };
    drop_stale(&mut admin, now).await;
    if let Err(e) = sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
    {
        panic!("cannot create the test database {name}: {e}");
    }
    let _ = admin.close().await;
    let url = with_database(&base, &name);
    match Db::connect(&url).await {
        Ok(db) => Some(db),
        Err(e) => panic!("cannot open the test database {name}: {e}"),
    }
}

/// The URL a test database was opened with (to hand to a config file).
pub fn url_of(db: &Db) -> String {
    db.url().to_string()
}

/// Best effort: drop test databases earlier runs left behind.
async fn drop_stale(admin: &mut sqlx::PgConnection, now: u64) {
    let Ok(names) = sqlx::query_scalar::<_, String>(
        "SELECT datname FROM pg_database WHERE datname LIKE 'tg\\_test\\_%'",
    )
    .fetch_all(&mut *admin)
    .await
    else {
        return;
    };
    for name in names {
        let created = name
            .strip_prefix("tg_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        let stale = created.is_some_and(|c| now.saturating_sub(c) > STALE_AFTER.as_secs());
        let safe = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if stale && safe {
            // Fails harmlessly if someone is still connected.
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                .execute(&mut *admin)
                .await;
        }
    }
}

/// `postgres://u:p@h:5432/db?x=y` with `db` replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => hex::encode(b),
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("{nanos:x}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/tollgate", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
