//! The edge's defences, black-box through the real `tollgate dev` binary with
//! its quick-start config (a keyless `/health` beside keyed `/api/*`): path
//! tricks, smuggling, spoofed headers, bad-key floods, and the admin
//! listener's `Host` and caching rules. The full variant tables run against a
//! real listener in `proxy/tests/edge_*.rs`; this file proves the shipped
//! binary has them switched on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::Dev;

/// Send `request` as raw bytes and read until the server closes.
fn exchange(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = Vec::new();
    // A read error (timeout or reset) ends the answer like a close does.
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn body(answer: &str) -> serde_json::Value {
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_default()
}

#[test]
fn the_binary_refuses_path_tricks_smuggling_and_spoofing() {
    let dev = Dev::start(&[], &[]);
    let port = dev.ports.proxy;
    let key = dev.line("demo key: ").expect("demo key");

    // A keyless route must not lead to a keyed one, however it is spelled.
    for path in [
        "/health/../api/users",
        "/health/%2e%2e/api/users",
        "/health/%2E%2e/api/users",
        "/health/..%2fapi/users",
        "/health//../api/users",
        "/health/.%2e/api/users",
        "/health;/../api/users",
        "/health/x%3f/../../api/users",
        "/health/..%5capi/users",
    ] {
        let a = exchange(
            port,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status(&a), 400, "{path}: {a}");
        assert!(
            body(&a)["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("/bad-path")),
            "{path}: {a}"
        );
    }

    // Smuggling and malformed framing: 400, and the hidden request is never served.
    for (what, req) in [
        (
            "CL+TE",
            "POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 45\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/users HTTP/1.1\r\nHost: t\r\n\r\n",
        ),
        (
            "two Content-Lengths",
            "POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\n",
        ),
        ("no Host", "GET /health HTTP/1.1\r\n\r\n"),
        ("two Hosts in one", "GET /health HTTP/1.1\r\nHost: t, evil.example\r\n\r\n"),
        ("control byte", "GET /health\x1b HTTP/1.1\r\nHost: t\r\n\r\n"),
    ] {
        let a = exchange(port, req);
        assert_eq!(status(&a), 400, "{what}: {a}");
        let answers = a.lines().filter(|l| l.starts_with("HTTP/1.1 ")).count();
        assert_eq!(answers, 1, "{what}: a second answer: {a}");
    }

    // The key and spoofed headers never reach the upstream (the demo
    // upstream echoes what it received).
    let a = exchange(
        port,
        &format!(
            "GET /api/users HTTP/1.1\r\nHost: t\r\nx-api-key: {key}\r\nX-Tollgate-Key-Id: 999\r\nX_Tollgate_Plan: enterprise\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status(&a), 200, "{a}");
    let seen = &body(&a)["request"]["headers"];
    let text = seen.to_string();
    assert!(!text.contains(&key), "the key reached the upstream: {text}");
    assert_ne!(seen["x-tollgate-key-id"], "999", "{text}");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{text}");
    for gone in ["x_tollgate_plan", "x-real-ip", "upgrade", "x-api-key"] {
        assert!(
            seen.get(gone).is_none(),
            "{gone} reached the upstream: {text}"
        );
    }

    // A bad-key flood from this address does not lock the valid key out.
    for i in 0..60 {
        let a = exchange(
            port,
            &format!("GET /api/products HTTP/1.1\r\nHost: t\r\nx-api-key: tg_bad{i}\r\nConnection: close\r\n\r\n"),
        );
        assert!(matches!(status(&a), 403 | 429), "{a}");
    }
    let a = exchange(
        port,
        &format!("GET /api/products HTTP/1.1\r\nHost: t\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status(&a), 200, "the valid key was locked out: {a}");
}

#[test]
fn the_binary_admin_listener_refuses_foreign_hosts_and_caches_no_secret() {
    let dev = Dev::start(&[], &[("TOLLGATE_ADMIN_PASSWORD", "edge-binary-password")]);
    let port = dev.ports.admin;
    for host in ["evil.example", "localhost.evil.example"] {
        let a = exchange(
            port,
            &format!("GET /api/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status(&a), 421, "{host}: {a}");
    }
    let a = exchange(
        port,
        "GET /api/health HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&a), 400, "two Hosts: {a}");
    let login = r#"{"username":"admin","password":"edge-binary-password"}"#;
    let a = exchange(
        port,
        &format!(
            "POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{login}",
            login.len()
        ),
    );
    assert_eq!(status(&a), 200, "{a}");
    assert!(
        a.to_ascii_lowercase().contains("cache-control: no-store"),
        "a token without no-store: {a}"
    );
}
