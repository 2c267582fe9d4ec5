//! Quota and credit webhook events (issue #21 item 5) through the real
//! binary: two `tollgate proxy` processes on one Redis (a redis-server of
//! the test's own) and one database, `tollgate admin` delivering the
//! outbox to a real local HTTP sink, every delivery's Standard Webhooks
//! signature checked here with ring (not the HMAC crate Tollgate signs
//! with).
//!
//! - A key with a daily quota of 10 and an identity whose two keys share
//!   one (`scope: identity`), requests alternating between the proxies:
//!   the sink gets exactly one `quota.warning` and one `quota.exhausted`
//!   for the key and for the identity, for this period.
//! - A top-up of 5 credits: the verify API and the usage path show the
//!   balance (the usage path spending nothing), the 5 are spent across
//!   both proxies, the next request is refused, and the sink gets exactly
//!   one `credits.exhausted` (and one `credits.low`) for that top-up.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::proxy::Proxy;
use crate::common::redis::OwnRedis;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_core::db::identities::NewIdentity;
use tollgate_core::db::{Db, NewApiKey};
use tollgate_core::limits::{Limit, LimitScope};
use tollgate_core::quota::{Period, QuotaSpec};
use tollgate_core::webhooks::endpoints::NewWebhook;

/// One request the sink received: lower-cased headers and the body.
type Received = Arc<Mutex<Vec<(HashMap<String, String>, String)>>>;

/// A real HTTP/1.1 server on 127.0.0.1 that records every request and
/// answers 200 (one request per connection).
async fn sink() -> (String, Received) {
    let got: Received = Arc::default();
    let listener = common::listener();
    let addr = listener.local_addr().expect("addr");
    let seen = got.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, length) = loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_string();
                        let length = head
                            .lines()
                            .filter_map(|l| l.split_once(':'))
                            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (i + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let headers = head
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
                seen.lock().expect("sink").push((headers, body));
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (format!("http://{addr}/hook"), got)
}

/// Standard Webhooks verification with ring's HMAC-SHA256 over
/// `id.timestamp.body`, keyed with the base64-decoded secret.
fn signed(secret: &str, headers: &HashMap<String, String>, body: &str) -> bool {
    let h = |n: &str| headers.get(n).map(String::as_str).unwrap_or("");
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|s| b64.decode(s).ok())
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let text = format!("{}.{}.{}", h("webhook-id"), h("webhook-timestamp"), body);
    let want = format!("v1,{}", b64.encode(ring::hmac::sign(&key, text.as_bytes())));
    h("webhook-signature").split(' ').any(|s| s == want)
}

fn yaml(redis_url: &str, upstream: u16, verify_port: u16) -> String {
    format!(
        r#"limiter:
  backend: redis
  redis_url: "{redis_url}"
  redis_timeout: 2s
  on_redis_error: deny
verify:
  listen: "127.0.0.1:{verify_port}"
plans:
  p: {{ limits: [ {{ name: hour, rate: 100000, per: 1h }} ] }}
upstreams:
  demo: {{ targets: ["127.0.0.1:{upstream}"] }}
routes:
  - name: users
    match: {{ path_prefix: /api/users }}
    upstream: demo
    strip_prefix: /api
    default_plan: p
"#
    )
}

/// Kill the child on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct World {
    _redis: OwnRedis,
    db: Db,
    proxies: Vec<Proxy>,
    verify_ports: Vec<u16>,
    _admin: KillOnDrop,
    secret: String,
    got: Received,
    service_token: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl World {
    /// Redis, the database with a webhook endpoint for every event, the
    /// admin role (the delivery worker) and two proxies; `None` without
    /// redis-server (and services not required).
    async fn start() -> Option<Self> {
        let redis = OwnRedis::start()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
        let (url, got) = sink().await;
        let endpoint = db
            .create_webhook(&NewWebhook {
                url,
                description: None,
                events: vec!["*".into()],
                enabled: true,
            })
            .await
            .expect("endpoint");
        let (_, service_token) = db
            .create_service_token("events", None)
            .await
            .expect("service token");
        let upstream = common::demo_upstream().await;
        let mut proxies = Vec::new();
        let mut verify_ports = Vec::new();
        for _ in 0..2 {
            let port = common::free_port();
            let y = yaml(&redis.url(), upstream, port);
            let d = tempfile::tempdir().expect("tempdir");
            proxies.push(Proxy::start(d, db.url(), "", &y).await);
            verify_ports.push(port);
        }
        let (admin_port, proxy_port, metrics_port) = (
            common::free_port(),
            common::free_port(),
            common::free_port(),
        );
        let config = dir.path().join("admin.yaml");
        let text = format!(
            "proxy:\n  listen: \"127.0.0.1:{proxy_port}\"\n  metrics_listen: \"127.0.0.1:{metrics_port}\"\nadmin:\n  listen: \"127.0.0.1:{admin_port}\"\nstorage:\n  database_url: \"{}\"\nlog:\n  level: warn\n{}",
            db.url(),
            yaml(&redis.url(), upstream, common::free_port())
        );
        std::fs::write(&config, text).expect("admin config");
        let admin = KillOnDrop(
            common::tollgate()
                .arg("admin")
                .arg("--config")
                .arg(&config)
                .env("TOLLGATE_ADMIN_PASSWORD", "events-pass-123")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn tollgate admin"),
        );
        Some(Self {
            _redis: redis,
            db,
            proxies,
            verify_ports,
            _admin: admin,
            secret: endpoint.secret,
            got,
            service_token,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            _dir: dir,
        })
    }

    async fn get(&self, proxy: usize, path: &str, key: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.proxies[proxy].url(path))
            .header("x-api-key", key)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The usage path of `proxy` for `key`, once the proxy knows the key.
    async fn usage(&self, proxy: usize, key: &str) -> Value {
        let start = Instant::now();
        loop {
            let (status, body) = self.get(proxy, "/_tollgate/usage", key).await;
            if status == 200 {
                return body;
            }
            // 429: the key read its usage 5 times this second.
            assert!(
                matches!(status, 401 | 403 | 429),
                "before the key is known: {status} {body}"
            );
            assert!(start.elapsed() < Duration::from_secs(30), "key not loaded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn verify(&self, proxy: usize, key: &str) -> Value {
        let start = Instant::now();
        loop {
            let r = self
                .client
                .post(format!(
                    "http://127.0.0.1:{}/v1/verify",
                    self.verify_ports[proxy]
                ))
                .bearer_auth(&self.service_token)
                .json(&json!({ "key": key, "route": "users" }))
                .send()
                .await;
            if let Ok(r) = r {
                if r.status() == 200 {
                    return r.json().await.expect("verify json");
                }
            }
            // Until the listener is up and the token loaded.
            assert!(start.elapsed() < Duration::from_secs(30), "verify not up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every event delivered so far, each once by `webhook-id`, its
    /// signature checked: `(type, data)` by id.
    fn delivered(&self) -> BTreeMap<String, (String, Value)> {
        let got = self.got.lock().expect("sink").clone();
        let mut out = BTreeMap::new();
        for (headers, body) in got {
            assert!(signed(&self.secret, &headers, &body), "signature of {body}");
            let v: Value = serde_json::from_str(&body).expect("event json");
            let t = v["type"].as_str().expect("type").to_string();
            out.insert(headers["webhook-id"].clone(), (t, v["data"].clone()));
        }
        out
    }

    /// The delivered events of `event_type` about `subject_id` (of `kind`).
    fn events(&self, event_type: &str, kind: &str, subject_id: i64) -> Vec<Value> {
        self.delivered()
            .into_values()
            .filter(|(t, d)| {
                t == event_type && d["subject"] == kind && d["subject_id"] == subject_id
            })
            .map(|(_, d)| d)
            .collect()
    }

    /// Wait until every `(type, kind, id)` was delivered at least once.
    async fn until_delivered(&self, wanted: &[(&str, &str, i64)]) {
        let start = Instant::now();
        while !wanted
            .iter()
            .all(|(t, k, id)| !self.events(t, k, *id).is_empty())
        {
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "not delivered: {wanted:?}; got {:?}",
                self.delivered()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The outbox's events (each enqueued once, whichever proxy sent it).
    async fn outbox(&self) -> Vec<(String, String)> {
        self.db.recent_webhook_events(1_000).await.expect("events")
    }
}

/// A counter's value in a `/metrics` text (0 if absent).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn daily(n: u64, scope: LimitScope) -> Limit {
    let spec = QuotaSpec {
        period: Period::Day,
        anchor: None,
        time_zone: None,
    };
    let mut l = Limit::new_quota("daily", n, spec, None);
    l.scope = scope;
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_quota_of_ten_gives_one_warning_and_one_exhausted_across_two_proxies() {
    let Some(w) = World::start().await else {
        return;
    };
    let (alone, key) =
        w.db.create_key(&NewApiKey {
            name: "alone".into(),
            limits: Some(vec![daily(10, LimitScope::Key)]),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    let identity =
        w.db.create_identity(&NewIdentity {
            external_id: "cust-1".into(),
            name: "Customer".into(),
            limits: Some(vec![daily(10, LimitScope::Identity)]),
            ..NewIdentity::default()
        })
        .await
        .expect("identity");
    let mut members = Vec::new();
    for name in ["first", "second"] {
        let (_, k) =
            w.db.create_key(&NewApiKey {
                name: name.into(),
                identity_id: Some(identity.id),
                ..NewApiKey::default()
            })
            .await
            .expect("member key");
        members.push(k);
    }
    // Each proxy knows every key (the usage path spends nothing).
    for p in 0..2 {
        for k in members.iter().chain([&key]) {
            let u = w.usage(p, k).await;
            let daily = u["limits"]
                .as_array()
                .and_then(|l| l.iter().find(|l| l["name"] == "daily"))
                .cloned()
                .unwrap_or_default();
            assert_eq!(daily["remaining"], 10, "{u}");
        }
    }
    // Ten alternating requests for each: all admitted; then refused.
    for i in 0..10 {
        assert_eq!(w.get(i % 2, "/api/users", &key).await.0, 200, "key, {i}");
        let member = &members[i % 2];
        assert_eq!(
            w.get((i + 1) % 2, "/api/users", member).await.0,
            200,
            "identity, {i}"
        );
    }
    for (i, member) in members.iter().enumerate() {
        let (status, body) = w.get(i, "/api/users", &key).await;
        assert_eq!(status, 429, "{body}");
        assert!(body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("/quota-exhausted")));
        assert_eq!(w.get(i, "/api/users", member).await.0, 429);
    }
    let wanted = [
        ("quota.warning", "key", alone.id),
        ("quota.exhausted", "key", alone.id),
        ("quota.warning", "identity", identity.id),
        ("quota.exhausted", "identity", identity.id),
    ];
    w.until_delivered(&wanted).await;
    // Exactly one of each in the outbox (four quota events in all: the
    // member keys have no quota of their own) and at the sink.
    let outbox = w.outbox().await;
    let quota_events: Vec<&(String, String)> = outbox
        .iter()
        .filter(|(t, _)| t.starts_with("quota."))
        .collect();
    assert_eq!(quota_events.len(), 4, "{outbox:?}");
    for (t, kind, id) in wanted {
        let prefix = format!("{t}:{kind}:{id}:daily:");
        assert_eq!(
            outbox
                .iter()
                .filter(|(_, d)| d.starts_with(&prefix))
                .count(),
            1,
            "{prefix} in {outbox:?}"
        );
        let events = w.events(t, kind, id);
        assert_eq!(events.len(), 1, "{t} {kind} {id}: {events:?}");
        let e = &events[0];
        assert_eq!(
            (e["quota"].as_str(), e["limit"].as_u64()),
            (Some("daily"), Some(10)),
            "{e}"
        );
        assert!(e["used"].as_u64().is_some_and(|u| u >= 8), "{e}");
        let start = e["period_start"].as_str().unwrap_or_default();
        assert!(
            start.ends_with("T00:00:00Z"),
            "a UTC day starts at midnight: {e}"
        );
    }
    // Both proxies noticed; the outbox took each event once: the proxies'
    // counters add up to exactly four enqueued.
    let start = Instant::now();
    loop {
        let mut enqueued = 0;
        for p in &w.proxies {
            enqueued += metric(
                &p.metrics().await,
                "tollgate_webhook_events_total{outcome=\"enqueued\"}",
            );
        }
        assert!(enqueued <= 4, "{enqueued} enqueued");
        if enqueued == 4 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{enqueued} enqueued"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let warned = &w.events("quota.warning", "key", alone.id)[0];
    assert_eq!(warned["key_id"], alone.id);
    assert_eq!(warned["threshold_percent"], 80);
    let shared = &w.events("quota.exhausted", "identity", identity.id)[0];
    assert_eq!(shared["identity_id"], identity.id);
    assert_eq!(shared["remaining"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_credits_spent_across_two_proxies_give_one_credits_exhausted() {
    let Some(w) = World::start().await else {
        return;
    };
    let (row, key) =
        w.db.create_key(&NewApiKey {
            name: "prepaid".into(),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    // No credits: null in both answers.
    assert_eq!(w.usage(0, &key).await["credits"], Value::Null);
    assert_eq!(w.verify(0, &key).await["credits"], Value::Null);
    let out = common::tollgate()
        .arg("keys")
        .arg("--config")
        .arg(&w.proxies[0].config)
        .args(["credits", &row.id.to_string(), "--add", "5"])
        .output()
        .expect("tollgate keys credits");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each proxy sees the balance (reading it spends nothing).
    for p in 0..2 {
        let start = Instant::now();
        while w.usage(p, &key).await["credits"] != 5 {
            assert!(start.elapsed() < Duration::from_secs(30), "top-up not seen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(
        w.usage(1, &key).await["credits"],
        5,
        "still 5: nothing spent"
    );
    // The verify API spends one and answers the balance after it.
    let v = w.verify(1, &key).await;
    assert_eq!(
        (v["valid"].as_bool(), v["credits"].as_i64()),
        (Some(true), Some(4)),
        "{v}"
    );
    assert_eq!(w.usage(0, &key).await["credits"], 4);
    for i in 0..4 {
        assert_eq!(w.get(i % 2, "/api/users", &key).await.0, 200, "request {i}");
    }
    let (status, body) = w.get(0, "/api/users", &key).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["type"]
        .as_str()
        .is_some_and(|t| t.ends_with("/credits-exhausted")));
    assert_eq!(w.get(1, "/api/users", &key).await.0, 429);
    let v = w.verify(0, &key).await;
    assert_eq!(
        (v["code"].as_str(), v["credits"].as_i64()),
        (Some("credits-exhausted"), Some(0)),
        "{v}"
    );
    assert_eq!(w.usage(1, &key).await["credits"], 0);

    w.until_delivered(&[
        ("credits.exhausted", "key", row.id),
        ("credits.low", "key", row.id),
    ])
    .await;
    let outbox = w.outbox().await;
    for t in ["credits.exhausted", "credits.low"] {
        let n = outbox.iter().filter(|(ty, _)| ty == t).count();
        assert_eq!(n, 1, "{t} in {outbox:?}");
        let events = w.events(t, "key", row.id);
        assert_eq!(events.len(), 1, "{t}: {events:?}");
        assert_eq!(events[0]["balance"], 0);
        assert_eq!(events[0]["top_up"]["amount"], 5);
    }
    assert!(
        outbox.iter().all(|(t, _)| !t.starts_with("quota.")),
        "{outbox:?}"
    );
}
