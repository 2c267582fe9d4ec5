//! The admin listener: `Host` allow-list (DNS rebinding), header and idle
//! timeouts (a silent connection too), the connection caps (total and per
//! address), `Cache-Control: no-store`, and the health
//! endpoint's public summary and cached probe.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::common::*;

fn config_with(admin_extra: &str) -> tollgate_core::config::Config {
    let yaml = test_yaml("  backend: local").replace(
        "  jwt_secret_env: \"TOLLGATE_TEST_JWT_SECRET_NEVER_SET\"\n",
        &format!("  jwt_secret_env: \"TOLLGATE_TEST_JWT_SECRET_NEVER_SET\"\n{admin_extra}"),
    );
    tollgate_core::config::parse(&yaml, "test.yaml").expect("valid config")
}

/// A fresh app on `app`'s kind of database with `admin_extra` in its
/// `admin:` section (`app` is dropped first); `None` where that database is
/// not available.
async fn restarted_with(app: TestApp, admin_extra: &str) -> Option<TestApp> {
    let postgres = app.db.kind() == tollgate_core::db::DbKind::Postgres;
    drop(app);
    TestApp::fresh(postgres, config_with(admin_extra), 1, 4).await
}

/// Send raw bytes, read until the server closes or `wait` passes.
fn raw(app: &TestApp, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(app.addr()).expect("connect");
    s.set_read_timeout(Some(wait)).expect("timeout");
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the server closes `s` within `deadline` (EOF or reset).
fn closed_within(s: &mut TcpStream, deadline: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let start = Instant::now();
    let mut buf = [0u8; 512];
    while start.elapsed() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

async fn foreign_hosts_are_refused(app: TestApp) {
    let port = app.addr().port();
    let app = std::sync::Arc::new(app);
    let a = app.clone();
    let answers = tokio::task::spawn_blocking(move || {
        let ask = |host: &str, path: &str| {
            raw(
                &a,
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
                Duration::from_secs(10),
            )
        };
        vec![
            ask("evil.example", "/api/health"),
            ask(&format!("rebind.attacker.example:{port}"), "/metrics"),
            ask("localhost.evil.example", "/"),
            ask(&format!("localhost:{port}"), "/api/health"),
            ask(&format!("127.0.0.1:{port}"), "/api/health"),
            ask(&format!("[::1]:{port}"), "/api/health"),
            raw(
                &a,
                b"GET /api/health HTTP/1.0\r\n\r\n",
                Duration::from_secs(10),
            ),
            // Smuggling a foreign name past the check: a second Host header,
            // or an absolute-form target naming another authority.
            raw(
                &a,
                format!(
                    "GET /api/health HTTP/1.1\r\nHost: localhost:{port}\r\nHost: evil.com\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
                Duration::from_secs(10),
            ),
            raw(
                &a,
                format!(
                    "GET /api/health HTTP/1.1\r\nHost: evil.com\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
                Duration::from_secs(10),
            ),
            ask("localhost", "http://evil.com/api/health"),
            ask("localhost", "http://evil.com:80/metrics"),
            ask(&format!("localhost:{port}"), &format!("http://localhost:{port}/api/health")),
        ]
    })
    .await
    .expect("join");
    for refused in &answers[..3] {
        assert!(refused.starts_with("HTTP/1.1 421"), "{refused}");
        assert!(refused.contains("host-not-allowed"), "{refused}");
        assert!(!refused.contains("database"), "{refused}");
    }
    for ok in &answers[3..6] {
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    }
    assert!(
        answers[6].starts_with("HTTP/1.0 400") || answers[6].starts_with("HTTP/1.1 400"),
        "{}",
        answers[6]
    );
    for two_hosts in &answers[7..9] {
        assert!(two_hosts.starts_with("HTTP/1.1 400"), "{two_hosts}");
        assert!(two_hosts.contains("Host"), "{two_hosts}");
    }
    for foreign_target in &answers[9..11] {
        assert!(
            foreign_target.starts_with("HTTP/1.1 421"),
            "{foreign_target}"
        );
        assert!(
            foreign_target.contains("host-not-allowed"),
            "{foreign_target}"
        );
    }
    assert!(answers[11].starts_with("HTTP/1.1 200"), "{}", answers[11]);
    // A configured name is answered.
    let Some(named) = TestApp::fresh(
        app.db.kind() == tollgate_core::db::DbKind::Postgres,
        config_with("  allowed_hosts: [\"admin.example.com\"]\n"),
        1,
        4,
    )
    .await
    else {
        return;
    };
    let res = named
        .anon(Method::GET, "/api/health")
        .header("host", "admin.example.com")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let res = named
        .anon(Method::GET, "/api/health")
        .header("host", "other.example.com")
        .send()
        .await
        .expect("request");
    problem(res, StatusCode::MISDIRECTED_REQUEST, "host-not-allowed").await;
}
both!(foreign_hosts_are_refused);

async fn silent_half_sent_and_idle_connections_are_closed(app: TestApp) {
    let Some(app) = restarted_with(app, "  header_timeout: 500ms\n  idle_timeout: 1s\n").await
    else {
        return;
    };
    let addr = app.addr();
    tokio::task::spawn_blocking(move || {
        // Silent from the start.
        let mut silent = TcpStream::connect(addr).expect("connect");
        assert!(closed_within(&mut silent, Duration::from_secs(15)), "silent connection kept");
        // Half a header, then nothing.
        let mut half = TcpStream::connect(addr).expect("connect");
        half.write_all(b"GET /api/health HTTP/1.1\r\nHo").expect("write");
        assert!(closed_within(&mut half, Duration::from_secs(15)), "half-sent header kept");
        // A header dribbled a byte at a time is cut at header_timeout even
        // though bytes keep coming.
        let mut slow = TcpStream::connect(addr).expect("connect");
        let start = Instant::now();
        let mut cut = false;
        for b in b"GET /api/health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle().take(200) {
            if slow.write_all(&[*b]).is_err() {
                cut = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            if start.elapsed() > Duration::from_secs(15) {
                break;
            }
        }
        assert!(cut || closed_within(&mut slow, Duration::from_secs(5)), "slowloris kept");
        // Keep-alive: one request served, then idle → closed.
        let mut idle = TcpStream::connect(addr).expect("connect");
        idle.write_all(format!("GET /api/health HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .expect("write");
        assert!(closed_within(&mut idle, Duration::from_secs(15)), "idle keep-alive kept");
    })
    .await
    .expect("join");
    // The listener still serves.
    let res = send(app.anon(Method::GET, "/api/health")).await;
    assert_eq!(res.status(), StatusCode::OK);
}
both!(silent_half_sent_and_idle_connections_are_closed);

/// A client from 127.0.0.2 that keeps no connection open: it never counts
/// against 127.0.0.1's connections, nor is refused with them.
fn other_address() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().expect("ip")))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// `tollgate_admin_connections_refused_total{reason}` as `/metrics` shows it
/// (asked from [`other_address`]).
async fn refused(app: &TestApp, reason: &str) -> u64 {
    let text = send(other_address().get(app.url("/metrics")))
        .await
        .text()
        .await
        .expect("metrics");
    let series = format!("tollgate_admin_connections_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Round 12: a login body trickled a byte at a time was answered, at the
/// 9 s request deadline, 503 `database-unavailable`. It is the client's
/// fault: 408 `request-timeout` with `Connection: close` once the body has
/// not arrived within `admin.header_timeout`, then the connection closes
/// (a database that does not answer stays 503: `outage.rs`).
async fn a_trickled_body_is_a_408_not_a_database_outage(app: TestApp) {
    let Some(app) = restarted_with(app, "  header_timeout: 1s\n").await else {
        return;
    };
    let before = refused(&app, "body_timeout").await;
    let addr = app.addr();
    let (answer, took, closed) = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(
            format!(
                "POST /api/auth/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .expect("write");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let start = Instant::now();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let mut closed = false;
        while start.elapsed() < Duration::from_secs(20) {
            // One byte at a time, as long as the server takes them.
            let _ = s.write_all(b" ");
            match s.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        (String::from_utf8_lossy(&out).into_owned(), start.elapsed(), closed)
    })
    .await
    .expect("join");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request-timeout"), "{answer}");
    assert!(!answer.contains("database"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(closed, "the connection stayed open: {answer}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert!(refused(&app, "body_timeout").await > before);
    // A body that arrives in pieces within the deadline is served.
    let answer = tokio::task::spawn_blocking(move || {
        let body = format!(r#"{{"username":"admin","password":"{ADMIN_PASSWORD}"}}"#);
        let (head, tail) = body.split_at(10);
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(
            format!(
                "POST /api/auth/login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{head}",
                body.len()
            )
            .as_bytes(),
        )
        .expect("write");
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(tail.as_bytes()).expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("join");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
both!(a_trickled_body_is_a_408_not_a_database_outage);

async fn connections_beyond_the_cap_are_closed(app: TestApp) {
    let Some(app) = restarted_with(app, "  max_connections: 4\n").await else {
        return;
    };
    let addr = app.addr();
    let held = tokio::task::spawn_blocking(move || {
        let held: Vec<TcpStream> = (0..4)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut extra = TcpStream::connect(addr).expect("connect");
        let _ =
            extra.write_all(format!("GET /api/health HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes());
        assert!(
            closed_within(&mut extra, Duration::from_secs(10)),
            "the 5th connection was served"
        );
        held
    })
    .await
    .expect("join");
    drop(held);
    // Slots come back once the held connections close.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = reqwest::Client::new()
            .get(app.url("/api/health"))
            .send()
            .await;
        if res.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        assert!(Instant::now() < deadline, "slots never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
both!(connections_beyond_the_cap_are_closed);

/// Round 14 (black-box): 512 silent connections locked everyone out of the
/// admin port for the 60 s idle timeout, again and again. A connection
/// whose first request header is not in within `admin.header_timeout` of
/// accept (nothing sent, or one byte) is closed then.
async fn a_silent_connection_is_closed_at_the_header_timeout(app: TestApp) {
    let Some(app) = restarted_with(app, "  header_timeout: 1s\n").await else {
        return;
    };
    let before = refused(&app, "header_timeout").await;
    let addr = app.addr();
    let took = tokio::task::spawn_blocking(move || {
        let mut silent = TcpStream::connect(addr).expect("connect");
        let start = Instant::now();
        // The idle timeout is 60 s: well past this.
        assert!(
            closed_within(&mut silent, Duration::from_secs(10)),
            "a silent connection outlived header_timeout"
        );
        let took = start.elapsed();
        // One byte that leaves HTTP/1 or HTTP/2 undecided ("P" of the h2
        // preface), then nothing: the same deadline.
        let mut one_byte = TcpStream::connect(addr).expect("connect");
        one_byte.write_all(b"P").expect("write");
        assert!(
            closed_within(&mut one_byte, Duration::from_secs(10)),
            "a one-byte connection outlived header_timeout"
        );
        took
    })
    .await
    .expect("join");
    assert!(took >= Duration::from_millis(800), "closed after {took:?}");
    assert!(refused(&app, "header_timeout").await > before);
    // A prompt request is still served.
    let res = send(app.anon(Method::GET, "/api/health")).await;
    assert_eq!(res.status(), StatusCode::OK);
}
both!(a_silent_connection_is_closed_at_the_header_timeout);

/// Round 14 (black-box): one address may hold `admin.max_connections_per_ip`
/// (default 32) admin connections; more are closed at accept, and another
/// address is still served.
async fn one_address_cannot_take_every_connection(app: TestApp) {
    // Long header timeout: the held connections stay while we look.
    let Some(app) = restarted_with(app, "  header_timeout: 60s\n").await else {
        return;
    };
    let before = refused(&app, "per_ip_cap").await;
    let addr = app.addr();
    let (held, refused_now) = tokio::task::spawn_blocking(move || {
        let mut conns: Vec<TcpStream> = (0..40)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        // Accepted in order: the 33rd and later are closed at once.
        let over = conns.split_off(32);
        let refused_now = over
            .into_iter()
            .filter_map(|mut s| closed_within(&mut s, Duration::from_secs(10)).then_some(()))
            .count();
        (conns, refused_now)
    })
    .await
    .expect("join");
    assert_eq!(
        refused_now, 8,
        "connections over the per-address cap were kept"
    );
    // Another loopback address is served meanwhile.
    let res = send(other_address().get(app.url("/api/health"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    // The held ones are still open (not the ones closed).
    let mut held = held;
    let first = held.first_mut().expect("held");
    first.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 1];
    assert!(
        matches!(first.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a connection under the cap was closed"
    );
    drop(held);
    // The address's slots come back once its connections close.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = reqwest::Client::new()
            .get(app.url("/api/health"))
            .send()
            .await;
        if res.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the address's slots never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused(&app, "per_ip_cap").await >= before + 8);
}
both!(one_address_cannot_take_every_connection);

async fn answers_with_secrets_are_not_cached(app: TestApp) {
    let res = app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    let res = app.post("/api/keys", json!({"name": "k"})).await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    let id = res.json::<Value>().await.expect("json")["id"]
        .as_i64()
        .expect("id");
    let res = app.post(&format!("/api/keys/{id}/rotate"), json!({})).await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    let res = app.get("/api/keys").await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    let res = app.anon(Method::GET, "/api/nope").send().await.expect("r");
    assert_eq!(res.headers()["cache-control"], "no-store");
}
both!(answers_with_secrets_are_not_cached);

async fn health_without_a_token_is_only_a_status(app: TestApp) {
    let res = app
        .anon(Method::GET, "/api/health")
        .send()
        .await
        .expect("r");
    let v = json(res, StatusCode::OK).await;
    let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["status"], "{v}");
    assert!(
        ["ok", "degraded"].contains(&v["status"].as_str().unwrap_or("")),
        "{v}"
    );
    // With a token: the details.
    let v = json(app.get("/api/health").await, StatusCode::OK).await;
    assert!(
        v["database"]["status"].is_string() && v["upstreams"].is_array(),
        "{v}"
    );
    // A bad token is refused, not downgraded.
    let res = app
        .anon(Method::GET, "/api/health")
        .bearer_auth("not.a.token")
        .send()
        .await
        .expect("r");
    problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
}
both!(health_without_a_token_is_only_a_status);

async fn health_probes_are_cached_and_shared(app: TestApp) {
    let before = app.state.health_cache().probes();
    let mut calls = Vec::new();
    // 30 at once: under `admin.max_connections_per_ip` (32), as each may
    // take a connection of its own.
    for _ in 0..30 {
        let req = app.anon(Method::GET, "/api/health");
        calls.push(tokio::spawn(async move {
            req.send().await.expect("r").status()
        }));
    }
    for c in calls {
        assert_eq!(c.await.expect("join"), StatusCode::OK);
    }
    let start = Instant::now();
    for _ in 0..20 {
        let _ = app.get("/api/health").await;
    }
    let elapsed = start.elapsed().as_secs() + 2;
    let probes = app.state.health_cache().probes() - before;
    assert!(
        probes <= elapsed + 1,
        "{probes} probes in about {elapsed} s"
    );
}
both!(health_probes_are_cached_and_shared);

/// With the Redis limiter, the probe keeps one Redis connection across
/// probes (single node and cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reuses_its_redis_connection() {
    for var in ["TOLLGATE_TEST_REDIS_URL", "TOLLGATE_TEST_REDIS_CLUSTER_URL"] {
        let Some(url) = service_url(var) else {
            return;
        };
        let yaml = test_yaml(&format!("  backend: redis\n  redis_url: \"{url}\""));
        let config = tollgate_core::config::parse(&yaml, "test.yaml").expect("config");
        let Some(app) = TestApp::fresh(false, config, 1, 4).await else {
            return;
        };
        for _ in 0..3 {
            tokio::time::sleep(
                tollgate_admin_api::health::PROBE_CACHE + Duration::from_millis(100),
            )
            .await;
            let v = json(app.get("/api/health").await, StatusCode::OK).await;
            assert_eq!(v["redis"]["status"], "up", "{var}: {v}");
        }
        assert!(app.state.health_cache().probes() >= 3);
        assert_eq!(app.state.health_cache().redis_connects(), 1, "{var}");
    }
}
