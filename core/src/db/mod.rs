//! The database layer: one [`Db`] over SQLite or PostgreSQL (sqlx `Any`), with
//! the migrations of `migrations/sqlite` and `migrations/postgres` embedded and
//! run at connect. Every timestamp is an `i64` of Unix milliseconds and every
//! query uses `$N` placeholders, so one set of queries serves both databases.
//!
//! The submodules hold the queries of one table each; `testing` opens fresh
//! databases for tests (this crate's and the other crates') and
//! `own_postgres` runs a throw-away PostgreSQL server: both only with the
//! `testing` feature, which the crates' dev-dependencies turn on.
//!
//! Conventions both schemas follow (a test checks they have the same tables
//! and columns): integers are `BIGINT` (SQLite: `INTEGER`), booleans are the
//! integers 0/1 (sqlx `Any` cannot decode a SQLite integer as `bool`), JSON is
//! `TEXT`.

pub mod admins;
pub mod audit;
pub mod credit_folds;
pub mod credits;
pub mod file_mode;
pub mod identities;
pub mod instances;
pub mod keys;
#[cfg(any(test, feature = "testing"))]
pub mod own_postgres;
pub mod pg_tls;
pub mod plans;
pub mod quota_adjustments;
pub mod quota_counts;
pub mod refills;
pub mod retry;
mod rows;
mod schema;
pub mod service_tokens;
pub mod settings;
mod stmt;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod usage;
pub mod usage_batch;
pub mod violation_aggregates;

use std::sync::{Arc, Once};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection};

use crate::limits::Limit;

pub use identities::{Identity, IdentityFilter, IdentityPatch, NewIdentity};
pub use keys::{ApiKey, Fingerprint, KeyFilter, KeyPatch, KeyRecord, NewApiKey};
pub use plans::StoredPlan;

pub use crate::usage::{LATENCY_BUCKETS, LATENCY_BUCKET_BOUNDS_US};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// How long a SQLite connection waits for another process's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL {0:?}: expected sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database's migrations are not this binary's: a newer binary's,
    /// edited, or failed part-way (`schema`). Nothing was run.
    #[error("{0}")]
    Schema(String),
    #[error("{0}")]
    Random(#[from] crate::keys::RandomError),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Conflict(String),
    /// PostgreSQL's TLS settings (`sslrootcert`, …) are unusable or the
    /// server failed them; never holds the URL.
    #[error("{0}")]
    Tls(String),
    /// A value that would take stored data out of its range (422 naming
    /// `field` on HTTP): nothing was stored.
    #[error("{field}: {message}")]
    OutOfRange {
        field: &'static str,
        message: String,
    },
}

/// A connection pool plus which database it talks to.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    kind: DbKind,
    /// The URL as given to [`Db::connect`] (may hold a password: never logged).
    url: Arc<str>,
    /// The TLS relay of a pinned `sslrootcert` (`pg_tls`), alive as long as
    /// the pool.
    _relay: Option<Arc<pg_tls::Relay>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl DbKind {
    /// Which database a URL names, or [`DbError::UnsupportedUrl`].
    pub fn of_url(url: &str) -> Result<Self, DbError> {
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Ok(DbKind::Sqlite),
            "postgres" | "postgresql" if url.contains("://") => Ok(DbKind::Postgres),
            _ => Err(DbError::UnsupportedUrl(redact(url))),
        }
    }
}

/// The URL without a password, for error messages (config validation too).
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &userinfo[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// `mode=rwc` (create the file if missing) unless the URL picks a mode.
fn sqlite_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let memory = base.ends_with(":memory:");
    let has_mode = query.is_some_and(|q| q.split('&').any(|p| p.starts_with("mode=")));
    if memory || has_mode {
        url.to_string()
    } else if query.is_some() {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// The URL with `mode=ro` in place of any mode it names: opening it never
/// creates a file nor writes to one.
fn sqlite_read_only_url(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("mode="))
        .collect();
    params.push("mode=ro");
    format!("{base}?{}", params.join("&"))
}

/// One connection to the database at `url` that changes nothing: no SQLite
/// file is created, no migration runs (for `check-config`, which looks
/// without touching). An in-memory SQLite URL is `None`: nothing is stored
/// there. A schema that is not this binary's is [`DbError::Schema`], as at
/// [`Db::connect`].
pub async fn connect_read_only(url: &str) -> Result<Option<AnyConnection>, DbError> {
    install_drivers();
    let url = match DbKind::of_url(url)? {
        DbKind::Sqlite if is_sqlite_memory(url) => return Ok(None),
        DbKind::Sqlite => sqlite_read_only_url(url),
        DbKind::Postgres => {
            let (options, relay) = postgres_options(url).await?;
            // The relay's accept loop may stop: this connection is carried on.
            let mut conn = match options.connect().await {
                Ok(conn) => conn,
                Err(e) => return Err(relay_error(relay.as_ref(), e)),
            };
            schema::check(&mut conn, &POSTGRES_MIGRATIONS).await?;
            return Ok(Some(conn));
        }
    };
    let options: AnyConnectOptions = url.parse()?;
    let mut conn = options.connect().await?;
    schema::check(&mut conn, &SQLITE_MIGRATIONS).await?;
    Ok(Some(conn))
}

/// The options sqlx connects with, and the relay a pinned `sslrootcert`
/// needs (see [`pg_tls`]).
async fn postgres_options(
    url: &str,
) -> Result<(AnyConnectOptions, Option<pg_tls::Relay>), DbError> {
    match pg_tls::trust_of(url).map_err(DbError::Tls)? {
        pg_tls::Trust::Driver => Ok((url.parse()?, None)),
        pg_tls::Trust::System => Ok((
            pg_tls::driver_options(url, None).map_err(DbError::Tls)?,
            None,
        )),
        pg_tls::Trust::Pinned(pin) => {
            let relay = pg_tls::Relay::start(pin).await.map_err(sqlx::Error::Io)?;
            let options =
                pg_tls::driver_options(url, Some(relay.socket_dir())).map_err(DbError::Tls)?;
            Ok((options, Some(relay)))
        }
    }
}

/// A failed connection through the relay is reported with the relay's reason
/// (the certificate was not trusted, …): sqlx only saw the relay hang up.
fn relay_error(relay: Option<&pg_tls::Relay>, e: sqlx::Error) -> DbError {
    match relay.and_then(pg_tls::Relay::last_error) {
        Some(reason) => DbError::Tls(reason),
        None => DbError::Sqlx(e),
    }
}

fn is_sqlite_memory(url: &str) -> bool {
    url.split('?')
        .next()
        .is_some_and(|b| b.ends_with(":memory:"))
        || url.contains("mode=memory")
}

/// Per-connection SQLite settings. WAL itself is persistent in the file and set
/// once, at connect (changing it needs a lock `busy_timeout` does not wait for).
async fn sqlite_pragmas(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    let busy = format!("PRAGMA busy_timeout = {}", SQLITE_BUSY_TIMEOUT.as_millis());
    sqlx::query(&busy).execute(&mut *conn).await?;
    sqlx::query("PRAGMA foreign_keys = ON")
        .execute(&mut *conn)
        .await?;
    // Safe with WAL (a power loss may lose the last commits, never corrupts).
    sqlx::query("PRAGMA synchronous = NORMAL")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Switch a SQLite file to WAL, retrying while another process holds a lock.
async fn sqlite_enable_wal(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    let mut attempt = 0;
    loop {
        match sqlx::query_scalar::<_, String>("PRAGMA journal_mode = WAL")
            .fetch_one(&mut *conn)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 50 && is_busy(&e) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// SQLITE_BUSY / SQLITE_LOCKED (with extended codes).
fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|n| n & 0xff == 5 || n & 0xff == 6),
        _ => false,
    }
}

fn install_drivers() {
    static DRIVERS: Once = Once::new();
    DRIVERS.call_once(sqlx::any::install_default_drivers);
}

impl Db {
    /// Connect (creating a SQLite file if missing) and run pending migrations.
    ///
    /// `sqlite://path` (or `sqlite::memory:`) and `postgres://…` /
    /// `postgresql://…`; anything else is [`DbError::UnsupportedUrl`].
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        install_drivers();
        let kind = DbKind::of_url(url)?;
        let db = match kind {
            DbKind::Sqlite => Self::connect_sqlite(url).await?,
            DbKind::Postgres => Self::connect_postgres(url).await?,
        };
        Ok(db)
    }

    async fn connect_sqlite(url: &str) -> Result<Self, DbError> {
        let full = sqlite_url(url);
        let options: AnyConnectOptions = full.parse()?;
        let memory = is_sqlite_memory(&full);
        if !memory {
            // Owner-only files: they hold the JWT secret and key hashes.
            file_mode::restrict(&full).map_err(sqlx::Error::Io)?;
            // Set up on one connection first: WAL, then the migrations, so
            // that the pool's connections never race each other for them.
            let mut conn = options.connect().await?;
            sqlite_pragmas(&mut conn).await?;
            sqlite_enable_wal(&mut conn).await?;
            schema::check(&mut conn, &SQLITE_MIGRATIONS).await?;
            migrate_sqlite(&mut conn).await?;
            conn.close().await?;
        }
        let mut pool_options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _meta| Box::pin(async move { sqlite_pragmas(conn).await }));
        pool_options = if memory {
            // Every connection to `:memory:` is a database of its own: keep
            // exactly one, forever.
            pool_options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            pool_options.max_connections(8)
        };
        let pool = pool_options.connect_with(options).await?;
        if memory {
            SQLITE_MIGRATIONS.run(&pool).await?;
        }
        Ok(Self {
            pool,
            kind: DbKind::Sqlite,
            url: Arc::from(url),
            _relay: None,
        })
    }

    async fn connect_postgres(url: &str) -> Result<Self, DbError> {
        let (options, relay) = postgres_options(url).await?;
        let pool = AnyPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| relay_error(relay.as_ref(), e))?;
        // sqlx takes an advisory lock, so concurrent starts migrate once. A
        // database that is up to date is left alone, so that a role without
        // CREATE rights (the proxies' role, deploy/postgres/roles.sql) can
        // connect; with migrations pending such a role fails here. A schema
        // that is not this binary's is refused before anything runs.
        let mut conn = pool.acquire().await?;
        let state = schema::check(&mut conn, &POSTGRES_MIGRATIONS).await;
        drop(conn);
        if state? == schema::Schema::Behind {
            POSTGRES_MIGRATIONS.run(&pool).await?;
        }
        Ok(Self {
            pool,
            kind: DbKind::Postgres,
            url: Arc::from(url),
            _relay: relay.map(Arc::new),
        })
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The URL this database was opened with (may contain a password).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Close every connection. On SQLite, first fold the write-ahead log
    /// into the database file, so that a copy of the file alone (a backup, a
    /// benchmark's fixture) holds everything written.
    pub async fn close(&self) {
        if self.url.starts_with("sqlite:") {
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(self.pool())
                .await
            {
                tracing::debug!("WAL checkpoint before close: {e}");
            }
        }
        self.pool.close().await
    }

    /// A trivial round trip, for health checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(self.pool()).await?;
        Ok(())
    }
}

/// SQLite has no migration lock: when two processes start on a fresh file at
/// once, the loser's migration fails on the tables the winner created. Running
/// again then sees the winner's work recorded and has nothing left to do.
async fn migrate_sqlite(conn: &mut AnyConnection) -> Result<(), DbError> {
    let mut attempt = 0;
    loop {
        match SQLITE_MIGRATIONS.run_direct(conn).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 3 => {
                attempt += 1;
                tracing::debug!("SQLite migration attempt {attempt} failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `e` is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A `u32` column stored as BIGINT.
/// Whether a patch field leaves `current` as it is: absent (`None`), or the
/// value it already has.
pub(crate) fn keeps<T: PartialEq>(patch: &Option<T>, current: &T) -> bool {
    patch.as_ref().is_none_or(|v| v == current)
}

/// [`keeps`] for limits, compared in their canonical form
/// ([`Limit::canonical`]): `burst` equal to the rate or `cost: 1` spelled
/// out or left out is the same.
pub(crate) fn keeps_limits(
    patch: &Option<Option<Vec<Limit>>>,
    current: &Option<Vec<Limit>>,
) -> bool {
    let canonical = |ls: &Option<Vec<Limit>>| {
        ls.as_ref()
            .map(|ls| ls.iter().map(Limit::canonical).collect::<Vec<_>>())
    };
    patch
        .as_ref()
        .is_none_or(|v| canonical(v) == canonical(current))
}

/// [`keeps`] for JSON metadata, compared with integral numbers as integers:
/// `1` and `1.0` are the same.
pub(crate) fn keeps_json(patch: &Option<serde_json::Value>, current: &serde_json::Value) -> bool {
    patch
        .as_ref()
        .is_none_or(|v| canonical_json(v) == canonical_json(current))
}

fn canonical_json(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => match n.as_f64() {
            // Below 2^53 every integer is exact as a float.
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 =>
            {
                #[allow(clippy::cast_possible_truncation)]
                Value::from(f as i64)
            }
            _ => v.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(canonical_json).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), canonical_json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

pub(crate) fn u32_column(value: Option<i64>, what: &str) -> Result<Option<u32>, DbError> {
    value
        .map(|v| u32::try_from(v).map_err(|_| DbError::Corrupt(format!("{what} {v} out of range"))))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_classified() {
        assert_eq!(DbKind::of_url("sqlite://x.db").ok(), Some(DbKind::Sqlite));
        assert_eq!(DbKind::of_url("sqlite::memory:").ok(), Some(DbKind::Sqlite));
        assert_eq!(
            DbKind::of_url("postgres://u@h/d").ok(),
            Some(DbKind::Postgres)
        );
        assert_eq!(
            DbKind::of_url("postgresql://u@h/d").ok(),
            Some(DbKind::Postgres)
        );
        assert_eq!(
            DbKind::of_url("PostgreSQL://u@h/d").ok(),
            Some(DbKind::Postgres)
        );
        for bad in ["mysql://u@h/d", "x.db", "", "postgres:foo", "http://h"] {
            assert!(
                matches!(DbKind::of_url(bad), Err(DbError::UnsupportedUrl(_))),
                "{bad}"
            );
        }
        let err = DbKind::of_url("mysql://user:secret@h/d")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| !e.contains("secret")));
    }

    #[test]
    fn sqlite_urls_create_missing_files() {
        assert_eq!(sqlite_url("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(
            sqlite_url("sqlite://a.db?cache=shared"),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
        assert_eq!(sqlite_url("sqlite://a.db?mode=ro"), "sqlite://a.db?mode=ro");
        assert_eq!(sqlite_url("sqlite::memory:"), "sqlite::memory:");
        assert!(is_sqlite_memory("sqlite::memory:"));
        assert!(!is_sqlite_memory("sqlite://a.db?mode=rwc"));
        assert_eq!(
            sqlite_read_only_url("sqlite://a.db"),
            "sqlite://a.db?mode=ro"
        );
        assert_eq!(
            sqlite_read_only_url("sqlite://a.db?mode=rwc&cache=shared"),
            "sqlite://a.db?cache=shared&mode=ro"
        );
    }

    #[tokio::test]
    async fn unsupported_urls_are_refused() {
        assert!(matches!(
            Db::connect("mysql://localhost/x").await,
            Err(DbError::UnsupportedUrl(_))
        ));
    }

    #[tokio::test]
    async fn in_memory_sqlite_works() -> Result<(), DbError> {
        let db = Db::connect("sqlite::memory:").await?;
        db.ping().await?;
        assert_eq!(db.count_admins().await?, 0);
        db.create_admin("a", "h").await?;
        assert_eq!(db.count_admins().await?, 1);
        Ok(())
    }
}
