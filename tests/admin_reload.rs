//! The admin role applies a reloaded `admin:` section, through the real
//! binary (black-box round 16: it logged "config reloaded" and kept the old
//! values): `session_ttl` (new tokens live that long, older tokens issued
//! for longer are refused), `allowed_hosts` and `max_connections_per_ip`
//! at once; what needs a restart (`storage.database_url`) is named in a
//! warning; a `jwt_secret_env` naming a weak secret is refused as at start.

use crate::common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{tollgate, write_config, Ports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A child process killed when the test ends, logging to a file.
struct Admin(std::process::Child, std::path::PathBuf);

impl Drop for Admin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Admin {
    /// What it logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

async fn login(base: &str) -> (String, serde_json::Value) {
    let client = reqwest::Client::new();
    let start = Instant::now();
    loop {
        if let Ok(r) = client
            .post(format!("{base}/api/auth/login"))
            .json(&serde_json::json!({"username": "admin", "password": "admin-pass-123"}))
            .send()
            .await
        {
            if r.status() == 200 {
                let v: serde_json::Value = r.json().await.expect("json");
                let token = v["token"].as_str().expect("token").to_string();
                return (token, v);
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "admin not up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The token's lifetime (`exp` − `iat`), seconds.
fn lifetime(token: &str) -> u64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("claims");
    v["exp"].as_u64().expect("exp") - v["iat"].as_u64().expect("iat")
}

async fn status(base: &str, token: &str, host: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new()
        .get(format!("{base}/api/keys"))
        .bearer_auth(token);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    req.send().await.expect("send").status().as_u16()
}

/// Write `text` whole, then rename it over `config` (an atomic edit).
fn replace(config: &Path, text: &str) {
    let next = config.with_extension("yaml.next");
    std::fs::write(&next, text).expect("write");
    std::fs::rename(&next, config).expect("rename");
}

/// How many of `n` connections from `from`, all held open, get an answer.
async fn answered_of(admin: SocketAddr, from: &str, n: usize) -> usize {
    let from: IpAddr = from.parse().expect("ip");
    let mut held = Vec::new();
    let mut answered = 0;
    for _ in 0..n {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind(SocketAddr::new(from, 0)).expect("bind");
        let mut s = sock.connect(admin).await.expect("connect");
        s.write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let got = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        if matches!(got, Ok(Ok(k)) if k > 0 && buf.starts_with(b"HTTP/1.1")) {
            answered += 1;
        }
        held.push(s);
    }
    answered
}

#[test]
fn the_admin_role_applies_a_reloaded_admin_section() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = Ports::new();
    let config = write_config(dir.path(), &ports, &[]);
    let log = dir.path().join("admin.log");
    let out = std::fs::File::create(&log).expect("log file");
    let admin = Admin(
        tollgate()
            .arg("admin")
            .arg("--config")
            .arg(&config)
            .env("TOLLGATE_ADMIN_PASSWORD", "admin-pass-123")
            .env("TOLLGATE_WEAK_SECRET", "changeme")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(out.try_clone().expect("clone")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("spawn admin"),
        log,
    );
    let base = format!("http://127.0.0.1:{}", ports.admin);
    let addr: SocketAddr = format!("127.0.0.1:{}", ports.admin).parse().expect("addr");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (old, _) = login(&base).await;
        assert_eq!(lifetime(&old), 12 * 3600);
        assert_eq!(status(&base, &old, Some("tg.example")).await, 421);
        assert_eq!(answered_of(addr, "127.0.0.30", 4).await, 4);

        let text = std::fs::read_to_string(&config).expect("config");
        let edited = text
            .replacen(
                "admin:\n",
                "admin:\n  session_ttl: 1m\n  allowed_hosts: [tg.example]\n  max_connections_per_ip: 2\n",
                1,
            )
            .replacen("t.db", "t2.db", 1);
        assert_ne!(edited, text);
        replace(&config, &edited);
        // Applied once the file settled (1 s): the old 12 h token is refused.
        let start = Instant::now();
        while status(&base, &old, None).await != 401 {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the 12 h token outlived session_ttl: 1m"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (new, body) = login(&base).await;
        assert_eq!(lifetime(&new), 60, "{body}");
        assert_eq!(status(&base, &new, Some("tg.example")).await, 200);
        assert_eq!(answered_of(addr, "127.0.0.31", 4).await, 2);

        // A weak secret variable is refused as at start; the rest stays.
        let weak = edited.replacen(
            "jwt_secret_env: \"TOLLGATE_JWT_SECRET\"",
            "jwt_secret_env: \"TOLLGATE_WEAK_SECRET\"",
            1,
        );
        assert_ne!(weak, edited);
        replace(&config, &weak.replacen("session_ttl: 1m", "session_ttl: 2m", 1));
        // Wait for the refusal itself (bounded), not a fixed time.
        let start = Instant::now();
        while !admin
            .log()
            .contains("admin.jwt_secret_env: TOLLGATE_WEAK_SECRET")
        {
            assert!(start.elapsed() < Duration::from_secs(20), "no refusal: {}", admin.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (still, _) = login(&base).await;
        assert_eq!(lifetime(&still), 60);
        // Both counted, as the proxy counts its own.
        let m = reqwest::get(format!("{base}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        for result in ["ok", "failed"] {
            let line = format!("tollgate_admin_config_reloads_total{{result=\"{result}\"}} 1");
            assert!(m.contains(&line), "no {line:?} in:\n{m}");
        }
    });
    let log = admin.log();
    assert!(
        log.contains("storage.database_url changed"),
        "no restart warning: {log}"
    );
    assert!(
        log.contains("admin.jwt_secret_env: TOLLGATE_WEAK_SECRET"),
        "the weak secret was not refused: {log}"
    );
}

/// `tollgate dev` runs the proxy and the admin API on one file: a reload the
/// admin half refuses (a weak `jwt_secret_env`) is refused by the proxy
/// half too, so the two never serve different configs (round 16 re-check).
#[test]
fn dev_refuses_a_weak_secret_reload_in_both_halves() {
    let dev = common::Dev::start(
        &[],
        &[
            ("TOLLGATE_ADMIN_PASSWORD", "dev-pass-1234"),
            ("TOLLGATE_WEAK_SECRET", "changeme"),
        ],
    );
    let config = dev.dir.path().join("tollgate.yaml");
    let text = std::fs::read_to_string(&config).expect("config");
    let weak = text.replacen(
        "jwt_secret_env: \"TOLLGATE_JWT_SECRET\"",
        "jwt_secret_env: \"TOLLGATE_WEAK_SECRET\"",
        1,
    );
    assert_ne!(weak, text);
    let metrics = dev.admin_url("/metrics");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let read = || async {
            reqwest::get(&metrics)
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text")
        };
        let start = Instant::now();
        while !read().await.contains("tollgate_config_reloads_total") {
            assert!(start.elapsed() < Duration::from_secs(20), "no metrics");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        replace(&config, &weak);
        let (proxy, admin) = (
            "tollgate_config_reloads_total{result=\"failed\"} 1",
            "tollgate_admin_config_reloads_total{result=\"failed\"} 1",
        );
        let start = Instant::now();
        loop {
            let m = read().await;
            if m.contains(proxy) && m.contains(admin) {
                assert!(
                    !m.contains("tollgate_config_reloads_total{result=\"ok\"} 1"),
                    "{m}"
                );
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "both halves did not refuse it:\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}
