//! Identities through the real binary: keys of one identity share a
//! `scope: identity` limit, locally and with two `tollgate proxy` processes
//! on one Redis; whichever key sends the limit's next request is refused.
//! A key without an identity keeps the same limit as its own bucket. The
//! upstream gets `X-Tollgate-Identity` with the identity's external id
//! (never a client's forged one).

use crate::common;

use std::time::{Duration, Instant};

use crate::common::proxy::Proxy;
use crate::common::redis::OwnRedis;
use tollgate_core::db::{Db, NewApiKey, NewIdentity};

/// The shared limit: so slow to refill (5 per hour) that a slow machine
/// cannot see a token come back during the test.
const SHARED: u32 = 5;

fn yaml(limiter: &str, upstream: u16) -> String {
    format!(
        r#"{limiter}plans:
  team:
    limits:
      - {{ name: second, rate: 1000, per: 1s }}
      - {{ name: shared, rate: {SHARED}, per: 1h, scope: identity }}
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

struct Keys {
    /// Two keys of identity `cus_acme`.
    a1: String,
    a2: String,
    /// A key on the same plan without an identity.
    alone: String,
    /// A key of its own ample plan, to wait for the proxies (and Redis) with.
    probe: String,
}

async fn keys(db: &Db) -> Keys {
    let acme = db
        .create_identity(&NewIdentity {
            external_id: "cus_acme".into(),
            name: "Acme".into(),
            ..NewIdentity::default()
        })
        .await
        .expect("identity");
    let key = |name: &str, plan: Option<&str>, identity: Option<i64>| NewApiKey {
        name: name.into(),
        plan: plan.map(str::to_string),
        identity_id: identity,
        ..NewApiKey::default()
    };
    let mut made = Vec::new();
    for k in [
        key("a1", Some("team"), Some(acme.id)),
        key("a2", Some("team"), Some(acme.id)),
        key("alone", Some("team"), None),
        key("probe", Some("probe"), None),
    ] {
        made.push(db.create_key(&k).await.expect("key").1);
    }
    let mut it = made.into_iter();
    let mut next = || it.next().expect("four keys");
    Keys {
        a1: next(),
        a2: next(),
        alone: next(),
        probe: next(),
    }
}

async fn send(client: &reqwest::Client, p: &Proxy, key: &str) -> (u16, serde_json::Value) {
    let r = client
        .get(p.url("/api/users"))
        .header("x-api-key", key)
        .header("X-Tollgate-Identity", "forged")
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// Wait until the proxy answers the probe key (its limiter included).
async fn ready(client: &reqwest::Client, p: &Proxy, probe: &str) {
    let start = Instant::now();
    loop {
        if send(client, p, probe).await.0 == 200 {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "proxy not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn identity_header(body: &serde_json::Value) -> Vec<String> {
    let headers = &body["request"]["headers"];
    let mut out = Vec::new();
    if let Some(m) = headers.as_object() {
        for (k, v) in m {
            if k.eq_ignore_ascii_case("x-tollgate-identity") {
                match v {
                    serde_json::Value::Array(vs) => {
                        out.extend(vs.iter().filter_map(|v| v.as_str().map(str::to_string)))
                    }
                    serde_json::Value::String(s) => out.push(s.clone()),
                    _ => {}
                }
            }
        }
    }
    out
}

/// The shared limit across `proxies` (one or two): the identity's keys
/// alternate, and get [`SHARED`] in all; then each is refused on either
/// proxy. The key without an identity gets its own [`SHARED`].
async fn shared_limit(proxies: &[Proxy], k: &Keys) {
    let client = reqwest::Client::new();
    for p in proxies {
        ready(&client, p, &k.probe).await;
    }
    let proxy = |i: usize| &proxies[i % proxies.len()];
    for i in 0..SHARED as usize {
        let key = if i % 2 == 0 { &k.a1 } else { &k.a2 };
        let (status, body) = send(&client, proxy(i), key).await;
        assert_eq!(status, 200, "request {i} of the identity");
        assert_eq!(
            identity_header(&body),
            vec!["cus_acme".to_string()],
            "{body}"
        );
    }
    // The limit's next request is refused, whichever key sends it, wherever.
    for (i, key) in [&k.a2, &k.a1, &k.a2, &k.a1].into_iter().enumerate() {
        let (status, body) = send(&client, proxy(i), key).await;
        assert_eq!(status, 429, "over the shared limit, attempt {i}: {body}");
    }
    // No identity: the same limit is the key's own.
    for i in 0..SHARED as usize {
        let (status, body) = send(&client, proxy(i + 1), &k.alone).await;
        assert_eq!(status, 200, "request {i} of the key alone");
        assert!(
            identity_header(&body).is_empty(),
            "forged header passed: {body}"
        );
    }
    assert_eq!(send(&client, proxy(0), &k.alone).await.0, 429);
}

#[tokio::test]
async fn two_keys_share_one_identity_limit_across_two_proxies_on_one_redis() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    let k = keys(&db).await;
    let limiter = format!(
        "limiter:\n  backend: redis\n  redis_url: \"{}\"\n  redis_timeout: 2s\n  on_redis_error: deny\n",
        redis.url()
    );
    let y = yaml(&limiter, common::demo_upstream().await);
    let mut proxies = Vec::new();
    for _ in 0..2 {
        let d = tempfile::tempdir().expect("tempdir");
        proxies.push(Proxy::start(d, db.url(), "", &y).await);
    }
    shared_limit(&proxies, &k).await;
    drop(proxies);
    drop(redis);
}

#[tokio::test]
async fn two_keys_share_one_identity_limit_locally() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    let k = keys(&db).await;
    let y = yaml("", common::demo_upstream().await);
    let d = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(d, db.url(), "", &y).await;
    shared_limit(std::slice::from_ref(&proxy), &k).await;
}
