//! The verify API (`verify.listen`, `POST /v1/verify`, issue #21 item 3)
//! through a real Pingora listener in the proxy process: a verify/proxy mix
//! spends one budget exactly (limit 10: 5 proxied + 5 verified, the 11th
//! refused either way) with the local and the Redis limiter; usage is
//! recorded; service tokens (401 without a current one, revocation within
//! the key refresh); scope, IP, disabled-key refusals; `cost`; hostile
//! requests are 4xx, never a 500 or a hang.

mod common;

use std::time::{Duration, Instant};

use common::redis::service_url;
use common::{free_port, Store, TestProxy};
use serde_json::{json, Value};
use tollgate_core::db::usage::UsageFilter;
use tollgate_core::db::{KeyPatch, NewApiKey};
use tollgate_core::rules::access::Scopes;

fn tag() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}{}", std::process::id(), ns % 1_000_000_000)
}

fn yaml(verify_port: u16, limiter: &str, tag: &str) -> String {
    format!(
        r#"
verify:
  listen: "127.0.0.1:{verify_port}"
usage:
  flush_interval: 100ms
{limiter}
plans:
  ten: {{ limits: [ {{ name: t{tag}, rate: 10, per: 1h }} ] }}
  roomy: {{ limits: [ {{ name: w{tag}, rate: 1000, per: 1h }} ] }}
upstreams:
  up: {{ targets: ["{{upstream}}"] }}
routes:
  - {{ name: users, match: {{ path_prefix: /api/users }}, upstream: up, strip_prefix: /api }}
  - {{ name: admin, match: {{ path_prefix: /api/admin, methods: [GET] }}, upstream: up,
      ip_allow: [10.0.0.0/8] }}
  - {{ name: open, match: {{ path_prefix: /open }}, upstream: up, auth: none }}
"#
    )
}

struct Verify {
    url: String,
    token: String,
    client: reqwest::Client,
}

impl Verify {
    /// A service token, and the verify listener once it accepts it.
    async fn start(p: &TestProxy, port: u16) -> Self {
        let (_, token) =
            p.db.create_service_token("tests", None)
                .await
                .expect("token");
        let v = Self {
            url: format!("http://127.0.0.1:{port}/v1/verify"),
            token,
            client: reqwest::Client::new(),
        };
        let start = Instant::now();
        loop {
            let status = v
                .raw(&v.token, "application/json", b"{\"key\":\"x\"}".to_vec())
                .await
                .0;
            if status == 200 {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "verify never accepted the token ({status})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn raw(&self, token: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .client
            .post(&self.url)
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await;
        match r {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, r.json::<Value>().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    async fn check(&self, body: Value) -> Value {
        let (status, v) = self
            .raw(
                &self.token,
                "application/json",
                body.to_string().into_bytes(),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }
}

async fn proxied(p: &TestProxy, key: &str) -> u16 {
    p.get_with_key("/api/users", key).await.status().as_u16()
}

async fn mix_shares_one_budget(limiter: &str) {
    let port = free_port();
    let t = tag();
    let p = TestProxy::start(&yaml(port, limiter, &t), Store::Sqlite)
        .await
        .expect("sqlite");
    let v = Verify::start(&p, port).await;
    let (k, key) = p
        .create_key(NewApiKey {
            name: "mix".into(),
            plan: Some("ten".into()),
            ..NewApiKey::default()
        })
        .await;
    // Known to the verify API (which spends nothing on an unknown key).
    let start = Instant::now();
    let mut first = loop {
        let r = v.check(json!({"key": key, "route": "users"})).await;
        if r["code"] != "key-invalid" {
            break r;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "key never known");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // 1 verified; then 4 verified and 5 proxied, interleaved: 10 in all.
    let mut verified = 1;
    let mut through = 0;
    for i in 0..9 {
        if i % 2 == 0 {
            assert_eq!(proxied(&p, &key).await, 200, "proxied #{i}");
            through += 1;
        } else {
            first = v.check(json!({"key": key, "route": "users"})).await;
            assert_eq!(first["valid"], true, "{first}");
            verified += 1;
        }
    }
    assert_eq!((verified, through), (5, 5));
    assert_eq!(first["code"], "valid");
    assert_eq!(first["key_id"], k.id);
    assert_eq!(first["plan"], "ten");
    assert_eq!(first["identity"], Value::Null);
    assert_eq!(first["credits"], Value::Null);
    let limit = &first["limits"][0];
    assert_eq!(
        (limit["limit"].as_u64(), limit["remaining"].as_u64()),
        (Some(10), Some(1)),
        "{first}"
    );
    // 10 spent (the last by the proxy): the 11th is refused either way.
    let refused = v.check(json!({"key": key, "route": "users"})).await;
    assert_eq!(
        (refused["valid"].clone(), refused["code"].clone()),
        (json!(false), json!("rate-limited")),
        "{refused}"
    );
    assert_eq!(refused["limits"][0]["remaining"], 0);
    assert!(
        refused["retry_after"].as_u64().is_some_and(|r| r >= 1),
        "{refused}"
    );
    assert_eq!(proxied(&p, &key).await, 429);
    // Without a route: the key's plan limits, the same bucket.
    let r = v.check(json!({"key": key})).await;
    assert_eq!(r["code"], "rate-limited", "{r}");

    // Usage: the verified requests count on their route like proxied ones.
    let filter = UsageFilter {
        from: 0,
        to: i64::MAX / 2,
        key_id: Some(k.id),
        route: Some("users".into()),
    };
    let start = Instant::now();
    loop {
        let c = p.db.usage_totals(&filter).await.expect("usage").counts;
        if (c.allowed, c.limited) == (10, 2) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15) && c.allowed <= 10 && c.limited <= 2,
            "usage {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = p.metrics_text().await;
    assert!(metrics.contains("tollgate_requests_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_verify_and_proxy_share_one_budget() {
    mix_shares_one_budget("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_verify_and_proxy_share_one_budget() {
    let Some(url) = service_url("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let limiter =
        format!("limiter:\n  backend: redis\n  redis_url: \"{url}\"\n  redis_timeout: 2s\n");
    mix_shares_one_budget(&limiter).await;
}

/// A credit holder's verified requests spend its credits like proxied ones
/// (one balance): 3 credits, 2 verified + 1 proxied, then the 4th is
/// refused with `credits-exhausted` either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_spends_the_same_credits_as_the_proxy() {
    let port = free_port();
    let t = tag();
    let p = TestProxy::start(&yaml(port, "", &t), Store::Sqlite)
        .await
        .expect("sqlite");
    let v = Verify::start(&p, port).await;
    let (k, key) = p
        .create_key(NewApiKey {
            name: "prepaid".into(),
            plan: Some("ten".into()),
            ..NewApiKey::default()
        })
        .await;
    p.db.add_credits(tollgate_core::credits::SubjectKind::Key, k.id, 3, "test")
        .await
        .expect("credits");
    // Once the proxy has applied the top-up, a verify reports the balance.
    let start = Instant::now();
    let first = loop {
        let r = v.check(json!({"key": key, "route": "users"})).await;
        if r["credits"] != Value::Null {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "credits never applied: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (first["code"].clone(), first["credits"].clone()),
        (json!("valid"), json!(2)),
        "{first}"
    );
    assert_eq!(proxied(&p, &key).await, 200);
    let last = v.check(json!({"key": key, "route": "users"})).await;
    assert_eq!(
        (last["code"].clone(), last["credits"].clone()),
        (json!("valid"), json!(0)),
        "{last}"
    );
    let refused = v.check(json!({"key": key, "route": "users"})).await;
    assert_eq!(
        (
            refused["valid"].clone(),
            refused["code"].clone(),
            refused["credits"].clone()
        ),
        (json!(false), json!("credits-exhausted"), json!(0)),
        "{refused}"
    );
    assert_eq!(proxied(&p, &key).await, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_scope_ip_disabled_and_cost() {
    let port = free_port();
    let t = tag();
    let p = TestProxy::start(&yaml(port, "", &t), Store::Sqlite)
        .await
        .expect("sqlite");
    let v = Verify::start(&p, port).await;
    let (_, plain) = p
        .create_key(NewApiKey {
            name: "scoped".into(),
            plan: Some("roomy".into()),
            scopes: Some(Scopes {
                routes: Some(vec!["admin".into()]),
                methods: Some(vec!["GET".into()]),
            }),
            allowed_ips: Some(vec!["10.1.0.0/16".into()]),
            ..NewApiKey::default()
        })
        .await;
    let start = Instant::now();
    while v.check(json!({"key": plain})).await["code"] == "key-invalid" {
        assert!(start.elapsed() < Duration::from_secs(10), "key never known");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ok = json!({"key": plain, "route": "admin", "method": "GET", "ip": "10.1.2.3"});
    let r = v.check(ok.clone()).await;
    assert_eq!(
        (r["valid"].clone(), r["code"].clone()),
        (json!(true), json!("valid")),
        "{r}"
    );
    for (body, code) in [
        (
            json!({"key": plain, "route": "users", "method": "GET", "ip": "10.1.2.3"}),
            "scope-denied",
        ),
        (
            json!({"key": plain, "route": "admin", "method": "DELETE", "ip": "10.1.2.3"}),
            "method-not-allowed",
        ),
        (
            json!({"key": plain, "route": "admin", "ip": "10.1.2.3"}),
            "scope-denied",
        ),
        (
            json!({"key": plain, "route": "admin", "method": "GET", "ip": "10.2.0.1"}),
            "ip-not-allowed",
        ),
        (
            json!({"key": plain, "route": "admin", "method": "GET", "ip": "192.0.2.1"}),
            "ip-not-allowed",
        ),
        (
            json!({"key": plain, "route": "admin", "method": "GET"}),
            "ip-not-allowed",
        ),
        (
            json!({"key": plain, "method": "GET", "ip": "10.1.2.3"}),
            "scope-denied",
        ),
        (
            json!({"key": "tg_notakey", "route": "admin"}),
            "key-invalid",
        ),
        (json!({"key": "", "route": "admin"}), "key-invalid"),
        (json!({"key": "x".repeat(5000)}), "key-invalid"),
        (json!({"key": format!("{plain}\u{0}")}), "key-invalid"),
    ] {
        let r = v.check(body.clone()).await;
        assert_eq!(
            (r["valid"].clone(), r["code"].clone()),
            (json!(false), json!(code)),
            "{body} → {r}"
        );
    }
    // cost: one request counts 5 times against the same bucket.
    let before = v.check(ok.clone()).await["limits"][0]["remaining"]
        .as_u64()
        .expect("remaining");
    let mut priced = ok.clone();
    priced["cost"] = json!(5);
    let after = v.check(priced).await["limits"][0]["remaining"]
        .as_u64()
        .expect("remaining");
    assert_eq!(before - after, 5);

    // A disabled key: key-disabled, within the key refresh.
    let (k2, open_key) = p
        .create_key(NewApiKey {
            name: "soon disabled".into(),
            plan: Some("roomy".into()),
            ..NewApiKey::default()
        })
        .await;
    let start = Instant::now();
    while v.check(json!({"key": open_key})).await["code"] != "valid" {
        assert!(start.elapsed() < Duration::from_secs(10), "key never known");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.db.update_key(
        k2.id,
        &KeyPatch {
            enabled: Some(false),
            ..KeyPatch::default()
        },
    )
    .await
    .expect("disable");
    let start = Instant::now();
    loop {
        let r = v.check(json!({"key": open_key, "route": "users"})).await;
        if r["code"] == "key-disabled" {
            assert_eq!(r["valid"], false);
            assert_eq!(r["key_id"], Value::Null);
            break;
        }
        assert_eq!(r["code"], "valid", "{r}");
        assert!(start.elapsed() < Duration::from_secs(10), "never disabled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_hostile_requests() {
    let port = free_port();
    let t = tag();
    let p = TestProxy::start(&yaml(port, "", &t), Store::Sqlite)
        .await
        .expect("sqlite");
    let v = Verify::start(&p, port).await;
    let body = br#"{"key":"tg_x"}"#.to_vec();
    // Service tokens: none, wrong, an API key, garbage.
    let other = tollgate_core::service_tokens::generate()
        .expect("random")
        .plain;
    for token in ["", "tgs_", other.as_str(), "tg_abc", "\u{7f}"] {
        let (s, problem) = v.raw(token, "application/json", body.clone()).await;
        assert!(s == 401 || s == 0, "{token:?}: {s}");
        if s == 401 {
            assert_eq!(
                problem["type"],
                "https://tollgate.dev/problems/invalid-service-token"
            );
        }
    }
    let r = reqwest::Client::new()
        .post(&v.url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_some());

    // Path, method, media type, size.
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://127.0.0.1:{port}/v1/other"))
        .bearer_auth(&v.token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
    let r = client
        .get(&v.url)
        .bearer_auth(&v.token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 405);
    assert_eq!(v.raw(&v.token, "text/plain", body.clone()).await.0, 415);
    let huge = format!(r#"{{"key":"{}"}}"#, "a".repeat(1 << 20));
    assert_eq!(
        v.raw(&v.token, "application/json", huge.into_bytes())
            .await
            .0,
        413
    );
    // A streamed (chunked) body over the cap, with no declared length.
    let mut req = format!(
        "POST /v1/verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        v.token
    );
    for _ in 0..64 {
        req.push_str(&format!("400\r\n{}\r\n", " ".repeat(1024)));
    }
    req.push_str("0\r\n\r\n");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let r = common::raw::send(None, addr, req.as_bytes()).await;
    assert_eq!(r.status, 413, "{}", r.raw);

    // Wrong types, unknown fields, nonsense: 400 problem+json, never 500.
    for bad in [
        "",
        "null",
        "[]",
        "{}",
        r#"{"key":1}"#,
        r#"{"key":"k","cost":0}"#,
        r#"{"key":"k","cost":-1}"#,
        r#"{"key":"k","cost":"1"}"#,
        r#"{"key":"k","cost":99999999999999999999999}"#,
        r#"{"key":"k","ip":"999.1.1.1"}"#,
        r#"{"key":"k","method":"G E T"}"#,
        r#"{"key":"k","route":"nope"}"#,
        r#"{"key":"k","route":"open"}"#,
        r#"{"key":"k","route":""}"#,
        r#"{"key":"k","admin":true}"#,
        r#"{"key":"k","key":"j"}"#,
        "{\"key\":\"k\"",
    ] {
        let (s, problem) = v
            .raw(&v.token, "application/json", bad.as_bytes().to_vec())
            .await;
        assert_eq!(s, 400, "{bad:?} → {problem}");
        assert!(problem["type"].as_str().is_some(), "{bad:?} → {problem}");
    }
    let (s, _) = v
        .raw(&v.token, "application/json", vec![0xff, 0xfe, b'{'])
        .await;
    assert_eq!(s, 400);

    // Revocation: a deleted token is refused within the key refresh.
    let listed = p.db.list_service_tokens().await.expect("list");
    assert_eq!(listed.len(), 1);
    p.db.delete_service_token(listed[0].id)
        .await
        .expect("delete");
    let start = Instant::now();
    loop {
        let (s, _) = v.raw(&v.token, "application/json", body.clone()).await;
        if s == 401 {
            break;
        }
        assert_eq!(s, 200);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "token still accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Refused verify calls are stored under the calling service's address,
/// not the body's `ip` (black-box round 3, B15: varying `ip` wrote one
/// `violation_aggregates` row per call): 60 bad keys from 60 claimed
/// networks are one aggregate row, and the body's `ip` still decides IP
/// rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_stored_under_the_caller_not_the_claimed_ip() {
    let port = free_port();
    let p = TestProxy::start(&yaml(port, "", &tag()), Store::Sqlite)
        .await
        .expect("proxy");
    let v = Verify::start(&p, port).await;
    let before = p.db.count_violation_aggregates().await.expect("count");
    for i in 0..60 {
        let r = v
            .check(json!({"key": "tg_not_a_key", "ip": format!("198.51.{i}.7")}))
            .await;
        assert_eq!(r["valid"], false, "{r}");
    }
    let start = Instant::now();
    let rows = loop {
        let rows = p.db.count_violation_aggregates().await.expect("count") - before;
        if rows > 0 {
            break rows;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "nothing flushed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Let a second flush land too, then count again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = rows.max(p.db.count_violation_aggregates().await.expect("count") - before);
    assert!(
        rows <= 2,
        "{rows} aggregate rows for 60 refusals from one caller"
    );

    // The claimed address still decides the route's IP rule.
    let (_, key) = p
        .create_key(NewApiKey {
            name: "ips".into(),
            ..NewApiKey::default()
        })
        .await;
    let start = Instant::now();
    loop {
        let r = v
            .check(json!({"key": key, "route": "admin", "method": "GET", "ip": "10.1.2.3"}))
            .await;
        if r["valid"] == true {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = v
        .check(json!({"key": key, "route": "admin", "method": "GET", "ip": "192.0.2.1"}))
        .await;
    assert_eq!(r["code"], "ip-not-allowed", "{r}");
}

/// Black-box round 10: verify charged a `cost` route's buckets 1 token while
/// the proxy charges the route's `cost.reserve`; and a reservation above a
/// plan's burst was answered `Retry-After: 18446744074` (proxy) and
/// `"retry_after":18446744074` (verify) instead of "never".
fn cost_yaml(verify_port: u16, tag: &str) -> String {
    format!(
        r#"
verify:
  listen: "127.0.0.1:{verify_port}"
plans:
  roomy: {{ limits: [ {{ name: w{tag}, rate: 1000, per: 1h }} ] }}
  small: {{ limits: [ {{ name: s{tag}, rate: 20, per: 1h }} ] }}
upstreams:
  up: {{ targets: ["{{upstream}}"] }}
routes:
  - {{ name: orders, match: {{ path_prefix: /api/orders }}, upstream: up, strip_prefix: /api,
      cost: {{ reserve: 5, from_response_header: X-Cost }},
      limits: [ {{ name: o{tag}, rate: 20, per: 1h }} ] }}
  - {{ name: pricey, match: {{ path_prefix: /api/products }}, upstream: up, strip_prefix: /api,
      cost: {{ reserve: 1000, from_response_header: X-Cost }} }}
"#
    )
}

/// The remaining tokens of the limit named `name` in a verify answer.
fn remaining(answer: &Value, name: &str) -> Option<u64> {
    answer["limits"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == name)?["remaining"]
        .as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_takes_a_cost_routes_reservation_like_the_proxy() {
    let port = free_port();
    let t = tag();
    let p = TestProxy::start(&cost_yaml(port, &t), Store::Sqlite)
        .await
        .expect("sqlite");
    let v = Verify::start(&p, port).await;
    let (_, key) = p
        .create_key(NewApiKey {
            name: "costed".into(),
            plan: Some("roomy".into()),
            ..NewApiKey::default()
        })
        .await;
    let start = Instant::now();
    while v.check(json!({"key": key})).await["code"] == "key-invalid" {
        assert!(start.elapsed() < Duration::from_secs(10), "key never known");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // (The loop's valid answer took 1 of the plan's 1000.)
    let (route, plan) = (format!("o{t}"), format!("w{t}"));
    // Proxied: 5 of the route's 20 (no X-Cost in the answer: it stands).
    let r = p.get_with_key("/api/orders", &key).await;
    assert_eq!(r.status(), 200);
    // Verified: the same 5, then cost 2 × 5 = 10: the route's 20 are spent.
    let one = v.check(json!({"key": key, "route": "orders"})).await;
    assert_eq!(one["code"], "valid", "{one}");
    assert_eq!(remaining(&one, &route), Some(10), "{one}");
    let two = v
        .check(json!({"key": key, "route": "orders", "cost": 2}))
        .await;
    assert_eq!(two["code"], "valid", "{two}");
    assert_eq!(
        (remaining(&two, &route), remaining(&two, &plan)),
        (Some(0), Some(979)),
        "{two}"
    );
    // Refused either way, the plan's bucket untouched by the refusals.
    let refused = v.check(json!({"key": key, "route": "orders"})).await;
    assert_eq!(refused["code"], "rate-limited", "{refused}");
    assert!(refused["retry_after"].as_u64().is_some_and(|s| s >= 1));
    assert_eq!(p.get_with_key("/api/orders", &key).await.status(), 429);
    let plain = v.check(json!({"key": key})).await;
    assert_eq!(remaining(&plain, &plan), Some(978), "{plain}");

    // A reservation of 1000 fits the roomy plan's 1000 but never the small
    // plan's 20: refused for ever, with no Retry-After, both ways.
    let (_, small) = p
        .create_key(NewApiKey {
            name: "small".into(),
            plan: Some("small".into()),
            ..NewApiKey::default()
        })
        .await;
    let start = Instant::now();
    while v.check(json!({"key": small})).await["code"] == "key-invalid" {
        assert!(start.elapsed() < Duration::from_secs(10), "key never known");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = p.get_with_key("/api/products", &small).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers().get("retry-after"), None, "{:?}", r.headers());
    let ratelimit = r
        .headers()
        .get("ratelimit")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(ratelimit, format!("\"s{t}\";r=19;t=180"));
    let body: Value = r.json().await.expect("problem");
    assert_eq!(body["reason"], "cost-over-burst", "{body}");
    let never = v.check(json!({"key": small, "route": "pricey"})).await;
    assert_eq!(
        (
            never["valid"].clone(),
            never["code"].clone(),
            never["retry_after"].clone()
        ),
        (json!(false), json!("rate-limited"), Value::Null),
        "{never}"
    );
    assert_eq!(
        never.as_object().map(|o| o.contains_key("retry_after")),
        Some(true)
    );
    // The roomy plan holds 1000: with 977 left, a wait (23 × 3.6 s) admits it.
    let later = v.check(json!({"key": key, "route": "pricey"})).await;
    assert_eq!(later["code"], "rate-limited", "{later}");
    assert!(
        later["retry_after"]
            .as_u64()
            .is_some_and(|s| (1..=83).contains(&s)),
        "{later}"
    );
}
