//! Resetting and adjusting a quota (issue #20) through the real binary:
//! `tollgate admin` takes `POST /api/keys/{id}/quotas/{name}` and
//! `tollgate proxy` processes apply it. With two proxies on one Redis (a
//! redis-server of the test's own) and a quota of 5 a day: 5 admitted, the
//! 6th is 429 `quota-exhausted`; after a reset exactly 5 more across both
//! proxies, after `used_delta: -2` exactly 2 more. With the local backend,
//! the same on one proxy.

use crate::common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::proxy::Proxy;
use crate::common::redis::OwnRedis;
use crate::common::{free_port, tollgate};
use serde_json::{json, Value};
use tollgate_core::db::NewApiKey;

fn yaml(limiter: &str, upstream: u16) -> String {
    format!(
        r#"{limiter}plans:
  metered: {{ limits: [ {{ name: daily, quota: 5, period: day }}, {{ name: hour, rate: 100000, per: 1h }} ] }}
  probe: {{ limits: [ {{ name: p, rate: 1000000, per: 1s }} ] }}
upstreams:
  demo: {{ targets: ["127.0.0.1:{upstream}"] }}
routes:
  - name: users
    match: {{ path_prefix: /api/users }}
    upstream: demo
    strip_prefix: /api
"#
    )
}

/// `tollgate admin` on the proxies' database and plans, killed on drop.
struct Admin {
    child: Child,
    base: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Admin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Admin {
    async fn start(db_url: &str, yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let text = format!(
            "admin:\n  listen: \"127.0.0.1:{port}\"\nstorage:\n  database_url: \"{db_url}\"\nlog:\n  level: warn\n{yaml}"
        );
        let config = dir.path().join("tollgate.yaml");
        std::fs::write(&config, &text).expect("write config");
        let child = tollgate()
            .arg("admin")
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .env("TOLLGATE_ADMIN_PASSWORD", "admin-pass-123")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tollgate admin");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let start = Instant::now();
        let token = loop {
            let r = client
                .post(format!("{base}/api/auth/login"))
                .json(&json!({"username": "admin", "password": "admin-pass-123"}))
                .send()
                .await;
            if let Ok(r) = r {
                if r.status() == 200 {
                    let v: Value = r.json().await.expect("json");
                    break v["token"].as_str().expect("token").to_string();
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "admin not up:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self {
            child,
            base,
            token,
            _dir: dir,
        }
    }

    async fn adjust(&self, key: i64, body: Value) -> Value {
        let r = reqwest::Client::new()
            .post(format!("{}/api/keys/{key}/quotas/daily", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("adjust");
        assert_eq!(r.status(), 201, "adjust {body}");
        r.json().await.expect("json")
    }
}

/// (status, the body).
async fn call(client: &reqwest::Client, p: &Proxy, key: &str) -> (u16, String) {
    let r = client
        .get(p.url("/api/users"))
        .header("x-api-key", key)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// Wait until every proxy admits `key` (the proxies and Redis are up).
async fn wait_admitted(client: &reqwest::Client, proxies: &[Proxy], key: &str) {
    for p in proxies {
        let start = Instant::now();
        while call(client, p, key).await.0 != 200 {
            assert!(start.elapsed() < Duration::from_secs(30), "proxy not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Alternate proxies until one refuses: how many were admitted (at most
/// 50) and the refusal's body.
async fn admitted_until_refused(
    client: &reqwest::Client,
    proxies: &[Proxy],
    key: &str,
) -> (usize, String) {
    for i in 0..50 {
        let (s, body) = call(client, &proxies[i % proxies.len()], key).await;
        match s {
            200 => {}
            429 => return (i, body),
            other => panic!("status {other}: {body}"),
        }
    }
    (50, String::new())
}

/// After a change: each proxy in turn is asked until it admits one
/// request (the proxies apply the change within their key refresh; until a
/// proxy has sent it to Redis it may still serve its cached refusal), then
/// they alternate until one refuses. Returns how many were admitted.
async fn admitted_after_change(client: &reqwest::Client, proxies: &[Proxy], key: &str) -> usize {
    let start = Instant::now();
    let mut admitted = 0;
    for p in proxies {
        loop {
            match call(client, p, key).await {
                (200, _) => {
                    admitted += 1;
                    break;
                }
                (429, _) => {
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "the change never reached a proxy"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (s, body) => panic!("status {s}: {body}"),
            }
        }
    }
    admitted + admitted_until_refused(client, proxies, key).await.0
}

/// A fresh database with a key on the `metered` plan (its id and secret)
/// and one on `probe`.
async fn keys(dir: &tempfile::TempDir) -> (tollgate_core::db::Db, i64, String, String) {
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    let new = |name: &str, plan: &str| NewApiKey {
        name: name.into(),
        plan: Some(plan.into()),
        ..NewApiKey::default()
    };
    let (row, key) = db
        .create_key(&new("metered", "metered"))
        .await
        .expect("key");
    let (_, probe) = db.create_key(&new("probe", "probe")).await.expect("probe");
    (db, row.id, key, probe)
}

async fn scenario(limiter: &str, proxies_n: usize, redis: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, row_id, key, probe) = keys(&dir).await;
    let y = yaml(limiter, common::demo_upstream().await);
    let mut proxies = Vec::new();
    for _ in 0..proxies_n {
        proxies.push(Proxy::start(tempfile::tempdir().expect("tempdir"), db.url(), "", &y).await);
    }
    let admin = Admin::start(db.url(), &y).await;
    let client = reqwest::Client::new();
    wait_admitted(&client, &proxies, &probe).await;

    let (n, refusal) = admitted_until_refused(&client, &proxies, &key).await;
    assert_eq!(n, 5, "a quota of 5");
    assert!(refusal.contains("quota-exhausted"), "{refusal}");
    assert!(refusal.contains("daily"), "{refusal}");

    // Redis: one count for all proxies; local: each proxy its own.
    let per = |n: usize| if redis { n } else { n * proxies_n };
    // A reset: the next request is admitted on every proxy, exactly 5 more.
    let v = admin.adjust(row_id, json!({"reset": true})).await;
    assert_eq!(v["reset"], true);
    assert_eq!(admitted_after_change(&client, &proxies, &key).await, per(5));

    // Given back 2: exactly 2 more.
    let v = admin.adjust(row_id, json!({"used_delta": -2})).await;
    assert_eq!(v["used_delta"], -2);
    assert_eq!(admitted_after_change(&client, &proxies, &key).await, per(2));
    // 3 more used than there are: still refused; 5 given back: 2 left
    // (the count never goes below 0 and never counts the overdraft twice).
    admin.adjust(row_id, json!({"used_delta": 3})).await;
    admin.adjust(row_id, json!({"used_delta": -5})).await;
    assert_eq!(admitted_after_change(&client, &proxies, &key).await, per(2));
    drop(admin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_adjust_across_two_proxies_on_one_redis() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let limiter = format!(
        "limiter:\n  backend: redis\n  redis_url: \"{}\"\n  redis_timeout: 2s\n  on_redis_error: deny\n",
        redis.url()
    );
    scenario(&limiter, 2, true).await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_adjust_with_the_local_backend() {
    scenario("limiter:\n  backend: local\n", 1, false).await;
}

/// The key's `daily` count `p` last wrote to `quota_counts` (local
/// backend) and the last adjustment in it, if written.
async fn stored_count(db: &tollgate_core::db::Db, p: &Proxy) -> Option<(u64, i64)> {
    let now_us = tollgate_core::now_ms() * 1_000;
    let counter = format!(
        "{}@127.0.0.1:{}",
        tollgate_proxy::usage::heartbeat::host_name(),
        p.port
    );
    let rows = db
        .quota_counts_running(&counter, now_us)
        .await
        .expect("counts");
    rows.iter()
        .find(|c| c.bucket == "p:daily")
        .map(|c| (c.used, c.adjusted_through))
}

/// Wait until `p` wrote `want` as its count.
async fn until_stored(db: &tollgate_core::db::Db, p: &Proxy, want: (u64, i64)) {
    let start = Instant::now();
    while stored_count(db, p).await != Some(want) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "count not written: {:?}, {want:?} expected",
            stored_count(db, p).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two local proxies on one database, each counting the key's quota of 5
/// on its own: a restarted proxy goes on from its own count (not the other
/// proxy's, never from 0), and does not apply an adjustment it already
/// applied before the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_quota_survives_a_restart_without_applying_an_adjustment_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, row_id, key, probe) = keys(&dir).await;
    let y = yaml(
        "limiter:\n  backend: local\nusage:\n  flush_interval: 200ms\n",
        common::demo_upstream().await,
    );
    let start_proxy = || async {
        let d = tempfile::tempdir().expect("tempdir");
        Proxy::start(d, db.url(), "  grace_period: 2s\n", &y).await
    };
    let client = reqwest::Client::new();
    let (mut a, b) = (start_proxy().await, start_proxy().await);
    let admin = Admin::start(db.url(), &y).await;
    for p in [&a, &b] {
        wait_admitted(&client, std::slice::from_ref(p), &probe).await;
    }
    for _ in 0..3 {
        assert_eq!(call(&client, &a, &key).await.0, 200);
    }
    assert_eq!(call(&client, &b, &key).await.0, 200);
    // One use given back: each proxy folds it into its own count (A 2, B
    // 0) and writes it; B's write does not touch A's.
    let adj = admin.adjust(row_id, json!({"used_delta": -1})).await;
    let id = adj["adjustment"].as_i64().expect("adjustment id");
    until_stored(&db, &a, (2, id)).await;
    until_stored(&db, &b, (0, id)).await;
    // An ordinary restart of A (same address): it counts on from its 2
    // used, and the adjustment (still in its period) is not applied again.
    a.signal("TERM");
    assert!(a.wait_exit(Duration::from_secs(30)).await.success());
    let a = a.start_again().await;
    let (n, refusal) = admitted_until_refused(&client, std::slice::from_ref(&a), &key).await;
    assert_eq!(n, 3, "5 − 2 used before the restart");
    assert!(refusal.contains("quota-exhausted"), "{refusal}");
    // B still has its own count: 5 left.
    let (n, _) = admitted_until_refused(&client, std::slice::from_ref(&b), &key).await;
    assert_eq!(n, 5);
    drop(admin);
}

/// `proxy.instance_name` through the binary (round 5, N1): a second local
/// proxy started on the same database under the name of a live one exits
/// at once with an error naming it, before it listens; the first one goes
/// on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_proxy_under_a_live_ones_name_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, _row_id, _key, probe) = keys(&dir).await;
    let y = yaml(
        "limiter:\n  backend: local\nusage:\n  flush_interval: 200ms\n",
        common::demo_upstream().await,
    );
    let first = Proxy::start(
        tempfile::tempdir().expect("tempdir"),
        db.url(),
        "  instance_name: gw-twin\n",
        &y,
    )
    .await;
    let client = reqwest::Client::new();
    wait_admitted(&client, std::slice::from_ref(&first), &probe).await;
    // Let its heartbeat carry the name.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let second_dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let text = std::fs::read_to_string(&first.config)
        .expect("config")
        .replace(
            &format!("127.0.0.1:{}", first.port),
            &format!("127.0.0.1:{port}"),
        )
        .replace(
            &format!("127.0.0.1:{}", first.metrics),
            &format!("127.0.0.1:{}", free_port()),
        );
    let config = second_dir.path().join("tollgate.yaml");
    std::fs::write(&config, text).expect("config");
    let out = tollgate()
        .arg("proxy")
        .arg("--config")
        .arg(&config)
        .current_dir(second_dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the twin started: {err}");
    assert!(
        err.contains("refusing to start") && err.contains("gw-twin"),
        "{err}"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "the twin listened"
    );
    // The first one still serves.
    assert_eq!(call(&client, &first, &probe).await.0, 200);
}
