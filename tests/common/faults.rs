//! What the fault test files (`faults*.rs`) share: a test upstream of their
//! own that counts what it serves and can be stopped (connections included)
//! and restarted on the same port, and small readers of answers, metrics and
//! usage rows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::{JoinHandle, JoinSet};
use tollgate_core::db::usage::{Counts, UsageFilter};
use tollgate_core::db::{Db, NewApiKey};

/// An HTTP/1.1 upstream answering `{"target": NAME}`; `/slow/{ms}` waits
/// first; `/health` is not counted as a hit (nor as arrived).
pub struct Upstream {
    pub name: &'static str,
    pub port: u16,
    pub hits: Arc<AtomicU64>,
    /// Requests whose head arrived (a slow one before its wait).
    pub arrived: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
}

impl Upstream {
    pub async fn start(name: &'static str, port: u16) -> Self {
        let mut u = Self {
            name,
            port,
            hits: Arc::new(AtomicU64::new(0)),
            arrived: Arc::new(AtomicU64::new(0)),
            task: None,
        };
        u.restart().await;
        u
    }

    /// (Re)bind the port and serve.
    pub async fn restart(&mut self) {
        let start = Instant::now();
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(start.elapsed() < Duration::from_secs(5), "bind: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let (name, hits, arrived) = (self.name, self.hits.clone(), self.arrived.clone());
        self.task = Some(tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut conns = JoinSet::new();
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    conns.spawn(serve_conn(stream, name, hits.clone(), arrived.clone()));
                }
                while conns.try_join_next().is_some() {}
            }
        }));
    }

    /// Stop listening and cut every open connection.
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn serve_conn(
    mut s: tokio::net::TcpStream,
    name: &'static str,
    hits: Arc<AtomicU64>,
    arrived: Arc<AtomicU64>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.len() > 65_536 {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        if path != "/health" {
            arrived.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(ms) = path.strip_prefix("/slow/") {
            let ms = ms.parse::<u64>().unwrap_or(0).min(60_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if path != "/health" {
            hits.fetch_add(1, Ordering::Relaxed);
        }
        let body = format!("{{\"target\":\"{name}\",\"path\":\"{path}\"}}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Sum of a metric's samples whose line contains every `labels` fragment.
pub fn metric_value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn get(client: &reqwest::Client, url: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = client.get(url);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    req.send().await.expect("request answered")
}

pub async fn problem_type(r: reqwest::Response) -> String {
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: serde_json::Value = r.json().await.expect("problem json");
    body["type"].as_str().unwrap_or_default().to_string()
}

/// Usage of one key (0: requests without a known key), summed over all time.
pub async fn usage_of(db: &Db, key_id: i64) -> Counts {
    let filter = UsageFilter {
        from: 0,
        to: i64::MAX,
        key_id: Some(key_id),
        route: None,
    };
    // Errors (a database being restarted) read as nothing written yet.
    db.usage_totals(&filter)
        .await
        .map(|t| t.counts)
        .unwrap_or_default()
}

/// (allowed, limited, unauthorized, forbidden, upstream errors).
pub fn outcomes(c: &Counts) -> (i64, i64, i64, i64, i64) {
    (
        c.allowed,
        c.limited,
        c.unauthorized,
        c.forbidden,
        c.upstream_errors,
    )
}

pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "{what}: not after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn sqlite() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    (dir, db)
}

pub fn named(name: &str) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        ..NewApiKey::default()
    }
}

/// A keyed route to a test upstream, usage flushed quickly.
pub fn keyed_yaml(upstream_port: u16) -> String {
    format!(
        "usage:\n  flush_interval: 200ms\nplans:\n  free: {{ limits: [ {{ name: minute, rate: 2, per: 1m }} ] }}\nupstreams:\n  u: {{ targets: [\"127.0.0.1:{upstream_port}\"], health_check: {{ path: /health, interval: 200ms }} }}\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: u\n    strip_prefix: /api\n    default_plan: free\n"
    )
}
