//! Time to first byte of a streamed response, through Tollgate and direct
//! (issue #22 item 2). An upstream answers every request with a chunked
//! `text/event-stream`: the header and a first event at once, the second
//! event 50 ms later, then the end. The client (one keep-alive connection
//! per target, requests one after the other) times each request from its
//! write to the first byte of the first event, and to the second event.
//! Through a proxy that buffered the stream, the first event would come with
//! the second, ≥ 50 ms late.
//!
//! Targets: the upstream directly; Tollgate on an `auth: none` route (route,
//! per-IP limit, forward); Tollgate on a keyed route (key lookup, limit).
//! In-process Tollgate (its own Pingora runtimes, 1 worker thread, local
//! limiter, SQLite), like the proxy tests.
//!
//!     cargo bench --bench ttfb [-- REQUESTS]      (default 500 per target)
//!
//! Results and the command that produced them go to benches/RESULTS.md.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_core::config;
use tollgate_core::db::NewApiKey;
use tollgate_proxy::server::{build, Prepared, ShutdownHandle};

const SECOND_AFTER: Duration = Duration::from_millis(50);

/// The streaming upstream: keep-alive, one answer per request head.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.clear();
                    let first = "data: first\n\n";
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n",
                        first.len()
                    );
                    if s.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(SECOND_AFTER).await;
                    let second = "data: second\n\n";
                    let tail = format!("{:x}\r\n{second}\r\n0\r\n\r\n", second.len());
                    if s.write_all(tail.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// One request; (time to the first event, time to the second event).
async fn one(s: &mut TcpStream, req: &[u8]) -> (Duration, Duration) {
    let start = Instant::now();
    s.write_all(req).await.expect("write");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut first = None;
    loop {
        let n = s.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&got);
        if first.is_none() && text.contains("data: first") {
            first = Some(start.elapsed());
        }
        if text.ends_with("0\r\n\r\n") && text.contains("data: second") {
            let status = text.get(9..12).unwrap_or("");
            assert_eq!(status, "200", "{text}");
            return (first.unwrap_or_default(), start.elapsed());
        }
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn measure(name: &str, addr: SocketAddr, path: &str, key: Option<&str>, n: usize) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let key_line = key
        .map(|k| format!("x-api-key: {k}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n{key_line}\r\n").into_bytes();
    for _ in 0..20 {
        one(&mut s, &req).await;
    }
    let (mut firsts, mut seconds) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let (a, b) = one(&mut s, &req).await;
        firsts.push(a);
        seconds.push(b);
    }
    firsts.sort();
    seconds.sort();
    println!(
        "{name:<22} first event ms: p50 {:.3} p90 {:.3} p99 {:.3} max {:.3} | second event (upstream +50 ms) p50 {:.3} p99 {:.3}",
        pct(&firsts, 0.5),
        pct(&firsts, 0.9),
        pct(&firsts, 0.99),
        pct(&firsts, 1.0),
        pct(&seconds, 0.5),
        pct(&seconds, 0.99),
    );
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(500);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let up = upstream().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
        let listen = free_addr();
        let yaml = format!(
            "proxy: {{ listen: \"{listen}\", threads: 1 }}\n\
             storage: {{ database_url: \"{}\", key_refresh: 100ms }}\n\
             log: {{ level: warn, access_log: false }}\n\
             plans:\n  pro: {{ limits: [ {{ name: second, rate: 1000000, per: 1s }} ] }}\n\
             upstreams:\n  up: {{ targets: [\"{up}\"] }}\n\
             routes:\n  \
               - {{ name: open, match: {{ path_prefix: /open }}, upstream: up, auth: none, default_plan: pro }}\n  \
               - {{ name: keyed, match: {{ path_prefix: /keyed }}, upstream: up, default_plan: pro }}\n",
            db.url()
        );
        let (_, key) = db
            .create_key(&NewApiKey {
                name: "ttfb".into(),
                ..NewApiKey::default()
            })
            .await
            .expect("key");
        let cfg = config::parse(&yaml, "ttfb.yaml").expect("config");
        let prepared = Prepared::load(cfg).await.expect("prepare");
        let shutdown = ShutdownHandle::new();
        let handle = shutdown.clone();
        let thread = std::thread::spawn(move || build(prepared).run_with(handle.run_args()));
        let start = Instant::now();
        while TcpStream::connect(listen).await.is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "proxy not listening");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("{n} requests per target, one keep-alive connection each");
        measure("direct", up, "/open/events", None, n).await;
        measure("tollgate auth: none", listen, "/open/events", None, n).await;
        measure("tollgate keyed", listen, "/keyed/events", Some(&key), n).await;
        shutdown.fast();
        let _ = thread.join();
    });
}
