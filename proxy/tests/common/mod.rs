//! Test harness: a real Pingora proxy (in-process, its own runtimes and
//! listeners) in front of the real demo upstream, over a fresh database.
#![allow(dead_code)]

pub mod edge;
pub mod model;
pub mod ports;
pub mod raw;
pub mod redis;
pub mod streams;
pub mod tls;

#[allow(unused_imports)]
pub use ports::{closed_port, free_port, listener};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tollgate_core::config;
use tollgate_core::db::{ApiKey, Db, NewApiKey};
use tollgate_proxy::server::{build, Prepared, ShutdownHandle};

/// Start the demo upstream on a random port.
pub async fn start_upstream() -> SocketAddr {
    let listener = listener();
    let addr = listener.local_addr().expect("upstream addr");
    tokio::spawn(tollgate_proxy::demo::serve(listener));
    addr
}

/// A key named `name`, without plan or limits of its own.
pub fn named(name: &str) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        ..NewApiKey::default()
    }
}

pub enum Store {
    Sqlite,
    Postgres,
}

pub struct TestProxy {
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    pub db: Db,
    pub config_path: PathBuf,
    shutdown: ShutdownHandle,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// Open a fresh database of the given kind, or `None` to skip a Postgres
/// test where no server is configured (never in CI: there it fails).
pub async fn fresh_db(store: &Store, dir: &std::path::Path) -> Option<Db> {
    match store {
        Store::Sqlite => Some(tollgate_core::db::testing::fresh_sqlite(dir).await),
        Store::Postgres => tollgate_core::db::testing::fresh_postgres().await,
    }
}

impl TestProxy {
    /// `yaml` may use `{listen}`, `{metrics}`, `{upstream}` and `{db}`
    /// placeholders; `proxy:`/`storage:` sections are added if missing.
    pub async fn start(yaml: &str, store: Store) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = fresh_db(&store, dir.path()).await?;
        Some(Self::start_with_db(yaml, db, dir).await)
    }

    pub async fn start_with_db(yaml: &str, db: Db, dir: tempfile::TempDir) -> Self {
        let upstream = start_upstream().await;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let text = render(yaml, addr, metrics, upstream, &db_url(&db));
        let config_path = dir.path().join("tollgate.yaml");
        std::fs::write(&config_path, &text).expect("write config");
        let cfg = config::load(&config_path)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{text}"));
        let prepared = Prepared::load(cfg).await.expect("prepare proxy");
        let shutdown = ShutdownHandle::new();
        let handle = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let built = build(prepared);
            built.run_with(handle.run_args());
        });
        wait_listening(addr).await;
        Self {
            addr,
            metrics,
            db,
            config_path,
            shutdown,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// A second proxy on the same database (e.g. sharing one Redis).
    pub async fn start_sharing(&self, yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_with_db(yaml, self.db.clone(), dir).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    pub async fn create_key(&self, new: NewApiKey) -> (ApiKey, String) {
        let created = self.db.create_key(&new).await.expect("create key");
        created
    }

    /// A proxy for `yaml` over a fresh SQLite database, and the plain text
    /// of a key named `name` it already knows.
    pub async fn sqlite_with_key(yaml: &str, name: &str) -> (Self, String) {
        let p = Self::start(yaml, Store::Sqlite).await.expect("sqlite");
        let (_, key) = p.key(named(name)).await;
        (p, key)
    }

    /// Create a key named `name` and wait (up to `timeout`) until the
    /// running proxy answers it `200` on `/api/users`.
    pub async fn serving_key(&self, name: &str, timeout: Duration) -> String {
        let (_, key) = self.create_key(named(name)).await;
        self.wait_status(&key, "/api/users", |s| s == 200, timeout)
            .await;
        key
    }

    /// Create a key and wait until the running proxy knows it.
    pub async fn key(&self, new: NewApiKey) -> (ApiKey, String) {
        let (k, plain) = self.create_key(new).await;
        self.wait_status(&plain, "/api/users", |s| s != 403, Duration::from_secs(3))
            .await;
        (k, plain)
    }

    /// `GET path` with `x-api-key: key`.
    pub async fn get_with_key(&self, path: &str, key: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(self.url(path))
            .header("x-api-key", key)
            .send()
            .await
            .expect("request")
    }

    /// Poll with `key` until `ok(status)` or the timeout; returns the time it took.
    pub async fn wait_status(
        &self,
        key: &str,
        path: &str,
        ok: impl Fn(u16) -> bool,
        timeout: Duration,
    ) -> Duration {
        let start = Instant::now();
        let client = reqwest::Client::new();
        loop {
            let status = client
                .get(self.url(path))
                .header("x-api-key", key)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if ok(status) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "status {status} still after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.shutdown.fast();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn db_url(db: &Db) -> String {
    db.url().to_string()
}

pub fn render(
    yaml: &str,
    addr: SocketAddr,
    metrics: SocketAddr,
    upstream: SocketAddr,
    db: &str,
) -> String {
    let mut text = yaml
        .replace("{listen}", &addr.to_string())
        .replace("{metrics}", &metrics.to_string())
        .replace("{upstream}", &upstream.to_string())
        .replace("{db}", db);
    if !text.contains("proxy:") {
        text = format!(
            "proxy:\n  listen: \"{addr}\"\n  metrics_listen: \"{metrics}\"\n  threads: 2\n{text}"
        );
    }
    // In-process servers run work-stealing: Pingora 0.9.1 keeps a no-steal
    // runtime's handles per thread id, and a test's server may start on the
    // thread id of a stopped one's (`config::ServerTuning`). The binary
    // tests run the default.
    if !text.contains("work_stealing") {
        text = text.replacen("proxy:\n", "proxy:\n  work_stealing: true\n", 1);
    }
    if !text.contains("storage:") {
        text = format!("storage:\n  database_url: \"{db}\"\n  key_refresh: 100ms\n{text}");
    }
    if !text.contains("log:") {
        text = format!("log:\n  level: warn\n  access_log: false\n{text}");
    }
    text
}

pub async fn wait_listening(addr: SocketAddr) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "proxy did not listen on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sum of a counter's samples whose line contains every `labels` fragment.
pub fn metric_value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
