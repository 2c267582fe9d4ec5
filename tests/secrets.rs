//! The full API key exists only in the answer that creates (or rotates) it:
//! a real `tollgate dev`, logging at debug level with the access log on, is
//! driven through a key's whole life (create, use through the proxy, refused
//! by its limits, put in the URL path by mistake, rotate, disable, delete) and its logs, both `/metrics`
//! endpoints and every admin listing must never contain the key, its secret
//! part or its SHA-256.
//!
//! Also the admin's secrets, black-box through the real binary: the admin
//! role refuses a weak `TOLLGATE_JWT_SECRET` (exit 2, one line naming it),
//! the SQLite files are created 0600, and `tollgate keys …` changes land in
//! the audit log (`tollgate audit list`) without the key.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::Dev;
use serde_json::{json, Value};

const PASSWORD: &str = "secrets-test-password";

struct Api {
    client: reqwest::Client,
    token: String,
}

impl Api {
    async fn call(
        &self,
        dev: &Dev,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut req = self
            .client
            .request(method, dev.admin_url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("admin request");
        let status = res.status().as_u16();
        (status, res.text().await.expect("body"))
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The forms of a key that must not leak: the key, its secret part after
/// the display prefix, and its SHA-256 (hex).
fn forms(key: &str, prefix: &str) -> Vec<String> {
    let rest = key
        .strip_prefix(prefix)
        .expect("key starts with its prefix");
    assert!(rest.len() >= 20, "{key} / {prefix}");
    vec![
        key.to_string(),
        rest.to_string(),
        hex_of(&tollgate_core::keys::hash(key)),
    ]
}

fn assert_absent(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        if let Some(at) = text.find(s.as_str()) {
            let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            panic!("{what} contains a secret: {}", &text[start..end]);
        }
    }
}

async fn proxy_get(client: &reqwest::Client, dev: &Dev, key: &str, bearer: bool) -> u16 {
    let req = client.get(dev.proxy_url("/api/products"));
    let req = if bearer {
        req.bearer_auth(key)
    } else {
        req.header("x-api-key", key)
    };
    req.send().await.expect("proxy request").status().as_u16()
}

/// Wait until the proxy answers `want` for `key` (changes reach it within 1 s).
async fn until(client: &reqwest::Client, dev: &Dev, key: &str, want: u16) {
    let start = Instant::now();
    loop {
        let got = proxy_get(client, dev, key, false).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "proxy answers {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_never_appears_in_logs_metrics_or_listings() {
    use reqwest::Method;
    let dev = Dev::start_with(
        &[("level: info", "level: debug")],
        &[
            ("TOLLGATE_ADMIN_PASSWORD", PASSWORD),
            // Everything of ours at debug (request spans with their URIs
            // included); the dependencies' own chatter at info.
            (
                "RUST_LOG",
                "debug,pingora=info,sqlx=info,hyper=info,hyper_util=info,h2=info,rustls=info",
            ),
        ],
        true,
    );
    let client = reqwest::Client::new();
    let api = Api {
        client: client.clone(),
        token: dev.login(&client, PASSWORD).await,
    };

    // Create: the only answer with the key.
    let (status, body) = api
        .call(
            &dev,
            Method::POST,
            "/api/keys",
            Some(json!({"name": "secret-test", "plan": "free"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let created: Value = serde_json::from_str(&body).expect("json");
    let id = created["id"].as_i64().expect("id");
    let key = created["key"].as_str().expect("key").to_string();
    let mut secrets = forms(&key, created["key_prefix"].as_str().expect("prefix"));

    // Allowed through the proxy (both ways of presenting it) …
    until(&client, &dev, &key, 200).await;
    assert_eq!(proxy_get(&client, &dev, &key, true).await, 200);
    // … refused by its plan (burst 10 per minute) …
    let mut limited = 0;
    for _ in 0..15 {
        if proxy_get(&client, &dev, &key, false).await == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0, "the free plan's burst must run out");
    // Round 15 (black-box): the key in the URL path by mistake, with the
    // key (refused: 429, a violation row) and without (401), literal and
    // percent-encoded: neither the access log nor the violations keep it.
    let encoded = format!("tg%5F{}", &key[3..]);
    for (path, with_key) in [
        (format!("/api/products/{key}"), true),
        (format!("/api/products/{key}"), false),
        (format!("/api/products/x/{encoded}"), true),
    ] {
        let mut req = client.get(dev.proxy_url(&path));
        if with_key {
            req = req.header("x-api-key", &key);
        }
        let status = req.send().await.expect("proxy request").status().as_u16();
        assert_eq!(status, if with_key { 429 } else { 401 }, "{path}");
    }
    // … a near miss (one character changed) is refused …
    let mut near = key.clone();
    let last = if near.ends_with('A') { 'B' } else { 'A' };
    near.pop();
    near.push(last);
    let near_status = proxy_get(&client, &dev, &near, false).await;
    assert!(near_status == 401 || near_status == 403, "{near_status}");

    // Rotate with grace: both secrets work, then disable: refused.
    let (status, body) = api
        .call(
            &dev,
            Method::POST,
            &format!("/api/keys/{id}/rotate"),
            Some(json!({"grace_seconds": 60})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let rotated: Value = serde_json::from_str(&body).expect("json");
    let new_key = rotated["key"].as_str().expect("key").to_string();
    secrets.extend(forms(
        &new_key,
        rotated["key_prefix"].as_str().expect("prefix"),
    ));
    // Another key's bucket: the new secret is the same key, so it may be 429.
    let start = Instant::now();
    loop {
        let s = proxy_get(&client, &dev, &new_key, false).await;
        if s == 200 || s == 429 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "new key: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = api
        .call(
            &dev,
            Method::PATCH,
            &format!("/api/keys/{id}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    until(&client, &dev, &new_key, 403).await;

    // Listings, records, analytics, health: no secret.
    let mut read = vec![
        "/api/keys".to_string(),
        "/api/keys?per_page=200&name=secret".to_string(),
        format!("/api/keys/{id}"),
        format!("/api/analytics/keys/{id}"),
        "/api/analytics/top-keys".to_string(),
        "/api/analytics/violations".to_string(),
        "/api/analytics/summary".to_string(),
        "/api/health".to_string(),
        "/api/plans".to_string(),
    ];
    read.push(format!("/api/analytics/timeseries?key={id}"));
    // Usage is flushed in the background: wait until the violations show up
    // so the listings are checked with the key's traffic in them.
    let start = Instant::now();
    loop {
        let (_, v) = api
            .call(&dev, Method::GET, "/api/analytics/violations", None)
            .await;
        if v.contains(&format!("\"key_id\":{id}")) && v.contains("/api/products/x/tg_[redacted]") {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            break; // checked below anyway, with whatever was written
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, v) = api
        .call(&dev, Method::GET, "/api/analytics/violations", None)
        .await;
    assert_absent("the violations", &v, &secrets);
    assert!(v.contains("/api/products/tg_[redacted]"), "{v}");
    for path in &read {
        let (status, body) = api.call(&dev, Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_absent(path, &body, &secrets);
    }

    // Both /metrics endpoints.
    let proxy_metrics = client
        .get(format!("http://127.0.0.1:{}/metrics", dev.ports.metrics))
        .send()
        .await
        .expect("proxy metrics")
        .text()
        .await
        .expect("body");
    assert!(
        proxy_metrics.contains("tollgate_"),
        "proxy metrics: {proxy_metrics}"
    );
    assert_absent("proxy /metrics", &proxy_metrics, &secrets);
    let admin_metrics = client
        .get(dev.admin_url("/metrics"))
        .send()
        .await
        .expect("admin metrics");
    assert_eq!(admin_metrics.status(), 200);
    let admin_metrics = admin_metrics.text().await.expect("body");
    assert_absent("admin /metrics", &admin_metrics, &secrets);

    // Delete it; then the logs of the whole run.
    let (status, _) = api
        .call(&dev, Method::DELETE, &format!("/api/keys/{id}"), None)
        .await;
    assert_eq!(status, 204);
    tokio::time::sleep(Duration::from_millis(500)).await; // the non-blocking writer
    let logs = dev.text();
    assert!(
        logs.contains("/api/products") && logs.contains(&format!("{id}")),
        "the access log ran and names the request (and key id): {logs}"
    );
    assert_absent("the log", &logs, &secrets);
    assert!(
        logs.contains("/api/products/tg_[redacted]"),
        "the key in the path is logged redacted: {logs}"
    );
    // The near miss is somebody's guess at a key: not logged either.
    assert_absent(
        "the log",
        &logs,
        &[
            near.clone(),
            near[created["key_prefix"].as_str().expect("prefix").len()..].to_string(),
        ],
    );
}

/// `tollgate admin` with `TOLLGATE_JWT_SECRET=<secret>`: exit status and stderr.
fn admin_with_secret(secret: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = common::Ports::new();
    let config = common::write_config(dir.path(), &ports, &[]);
    let mut child = common::tollgate()
        .arg("admin")
        .arg("--config")
        .arg(&config)
        .current_dir(dir.path())
        .env("TOLLGATE_JWT_SECRET", secret)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tollgate admin");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            use std::io::Read;
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (status.code(), err);
        }
        // Serving: it accepted the secret.
        if std::net::TcpStream::connect(("127.0.0.1", ports.admin)).is_ok() {
            let _ = child.kill();
            let _ = child.wait();
            return (None, String::new());
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "tollgate admin neither exited nor listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_admin_role_refuses_weak_jwt_secrets() {
    for weak in [
        "change-me",
        "short-but-random-9f3k",
        "change-me-change-me-change-me-change-me",
        "0123456789abcdef0123456789abcdef",
        "passwordpasswordpasswordpassword",
        // Long and "strong as a password", but not random.
        "Summer2026!Summer2026!Summer2026",
        "tollgate-jwt-key-tollgate-jwt-key!",
        "qwertyuiopasdfghjklzxcvbnm123456",
        "1q2w3e4r5t6y7u8i9o0p1q2w3e4r5t6y",
        "correcthorsebatterystaple1234567",
        // base64 of "12345678901234567890123456789012".
        "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=",
    ] {
        let (code, err) = admin_with_secret(weak);
        assert_eq!(code, Some(2), "{weak:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{weak:?}: {err}");
        assert!(lines[0].contains("TOLLGATE_JWT_SECRET"), "{err}");
        assert!(!lines[0].contains(weak), "the secret is echoed: {err}");
    }
    // A strong one starts (and is still running when we stop it).
    let (code, err) = admin_with_secret("q8Jf3kLz0PmX7vB2nR5tW9yC4hD6gS1aE0uIx7Zp");
    assert_eq!(code, None, "a strong secret was refused: {err}");
    // What `openssl rand -base64 32`, `-base64 48` and `-hex 32` print starts.
    use base64::Engine;
    let random = |n: usize| {
        let mut bytes = vec![0u8; n];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").expect("urandom"),
            &mut bytes,
        )
        .expect("read urandom");
        bytes
    };
    for secret in [
        base64::engine::general_purpose::STANDARD.encode(random(32)),
        base64::engine::general_purpose::STANDARD.encode(random(48)),
        random(32).iter().map(|b| format!("{b:02x}")).collect(),
    ] {
        let (code, err) = admin_with_secret(&secret);
        assert_eq!(code, None, "a random secret was refused: {err}");
    }
}

#[test]
fn sqlite_files_are_private_and_cli_changes_are_audited() {
    use std::os::unix::fs::PermissionsExt;
    let dev = Dev::start(&[], &[("TOLLGATE_ADMIN_PASSWORD", PASSWORD)]);
    let db = dev.dir.path().join("t.db");
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        let meta = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{p:?} is readable by others"
        );
    }
    let config = dev.dir.path().join("tollgate.yaml");
    let run = |args: &[&str]| {
        let out = common::tollgate()
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("USER", "ops-alice")
            .output()
            .expect("run tollgate");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let created = run(&["keys", "create", "--name", "cli-audited"]);
    let id = created
        .lines()
        .find_map(|l| l.strip_prefix("created key "))
        .expect("id")
        .trim()
        .to_string();
    let key = created
        .lines()
        .find_map(|l| l.strip_prefix("key:"))
        .expect("key")
        .trim()
        .to_string();
    let rotated = run(&["keys", "rotate", &id]);
    let new_key = rotated
        .lines()
        .find_map(|l| l.strip_prefix("key:"))
        .expect("key")
        .trim()
        .to_string();
    run(&["keys", "disable", &id]);
    run(&["keys", "delete", &id]);
    let json_out = run(&["audit", "list", "--target", &id, "--json"]);
    let events: Vec<Value> = serde_json::from_str(&json_out).expect("json");
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().expect("a"))
        .collect();
    assert_eq!(
        actions,
        ["key.delete", "key.disable", "key.rotate", "key.create"]
    );
    assert!(events
        .iter()
        .all(|e| e["actor"] == "cli:ops-alice" && e["actor_kind"] == "cli"));
    assert_eq!(
        events[1]["changes"]["enabled"],
        json!({"before": true, "after": false})
    );
    let text = run(&["audit", "list", "--actor", "cli:ops-alice"]);
    assert!(text.contains("key.rotate"), "{text}");
    for secret in forms(&key, &key[..12])
        .into_iter()
        .chain(forms(&new_key, &new_key[..12]))
    {
        assert!(
            !json_out.contains(&secret) && !text.contains(&secret),
            "the audit log holds a key"
        );
    }
}
