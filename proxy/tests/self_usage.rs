//! `proxy.usage_path` through a real Pingora listener (issue #21 item 4):
//! the caller reads its own limits with its key, reads spend nothing
//! (the key still has its full budget afterwards), a key reads at most 5
//! times per second (429 beyond, per key), nothing reaches the upstream, with the local and the Redis limiter; a missing or bad key
//! gets the proxy's own 401/403; the path can be turned off; HEAD answers
//! like GET without a body (HEAD rides on GET, as on every route).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::raw;
use common::redis::service_url;
use common::{Store, TestProxy};
use serde_json::Value;
use tollgate_core::db::NewApiKey;

static UPSTREAM_HITS: AtomicUsize = AtomicUsize::new(0);

/// The tests of this file one at a time: they share [`UPSTREAM_HITS`].
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn counted(_target: &str) -> String {
    UPSTREAM_HITS.fetch_add(1, Ordering::SeqCst);
    "{}".to_string()
}

fn yaml(upstream: std::net::SocketAddr, limiter: &str, tag: &str, usage_path: &str) -> String {
    format!(
        r#"
proxy:
  listen: "{{listen}}"
  metrics_listen: "{{metrics}}"
  threads: 2
{usage_path}
{limiter}
plans:
  p: {{ limits: [ {{ name: m{tag}, rate: 5, per: 1m }} ] }}
upstreams:
  counted: {{ targets: ["{upstream}"] }}
routes:
  - {{ name: users, match: {{ path_prefix: /api/users }}, upstream: counted, strip_prefix: /api,
      limits: [ {{ name: r{tag}, rate: 3, per: 1m }} ] }}
"#
    )
}

fn tag() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}{}", std::process::id(), ns % 1_000_000_000)
}

async fn get(p: &TestProxy, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(p.url(path));
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// A new key on plan `p`: its record and its text.
async fn key_on_p(p: &TestProxy, name: &str) -> (tollgate_core::db::ApiKey, String) {
    p.create_key(NewApiKey {
        name: name.into(),
        plan: Some("p".into()),
        ..NewApiKey::default()
    })
    .await
}

/// Wait until the proxy knows `key` (its usage reads answer 200).
async fn until_known(p: &TestProxy, key: &str) {
    let start = Instant::now();
    while get(p, "/_tollgate/usage", Some(key)).await.0 != 200 {
        assert!(start.elapsed() < Duration::from_secs(10), "key never known");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn remaining(body: &Value, prefix: &str) -> Option<u64> {
    body["limits"].as_array()?.iter().find_map(|l| {
        l["name"]
            .as_str()
            .filter(|n| n.starts_with(prefix))
            .and_then(|_| l["remaining"].as_u64())
    })
}

async fn spends_nothing_and_never_reaches_the_upstream(limiter: &str) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let upstream = raw::start_interpreting_upstream(counted).await;
    let t = tag();
    let p = TestProxy::start(&yaml(upstream, limiter, &t, ""), Store::Sqlite)
        .await
        .expect("sqlite");
    let (k, key) = key_on_p(&p, "self").await;
    until_known(&p, &key).await;
    let hits_before = UPSTREAM_HITS.load(Ordering::SeqCst);
    // 30 reads at once: a key reads its usage 5 times per second (and 5 at
    // once); the others get 429 before any limiter read. None spends.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let start = Instant::now();
    let reads = (0..30).map(|_| {
        let (p, key) = (&p, key.clone());
        async move { get(p, "/_tollgate/usage", Some(&key)).await }
    });
    let answers = futures_util::future::join_all(reads).await;
    let took = start.elapsed().as_secs_f64();
    let mut read = 0;
    for (status, body) in &answers {
        match status {
            200 => {
                read += 1;
                assert_eq!(remaining(body, "m"), Some(5), "{body}");
                assert_eq!(remaining(body, "r"), Some(3), "{body}");
            }
            429 => assert!(
                body["type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("/too-many-usage-reads")),
                "{body}"
            ),
            _ => panic!("{status}: {body}"),
        }
    }
    let bound = 5 + (5.0 * took).ceil() as usize;
    assert!(
        (1..=bound).contains(&read),
        "{read} of 30 reads in {took:.2} s (bound {bound})"
    );
    // Another key is not held back by this one's reads.
    let (_, other) = key_on_p(&p, "other").await;
    until_known(&p, &other).await;
    // A second later the key reads again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = get(&p, "/_tollgate/usage", Some(&key)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["key"]["id"], k.id);
    assert!(body["key"].get("name").is_none(), "{body}");
    assert_eq!(body["key"]["plan"], "p");
    let route_limit = body["limits"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["route"] == "users"))
        .cloned()
        .expect("the route's limit is listed with its route");
    assert_eq!(route_limit["limit"], 3);
    assert_eq!(route_limit["window_seconds"], 60);
    assert_eq!(route_limit["reset_seconds"], 0);
    assert_eq!(
        UPSTREAM_HITS.load(Ordering::SeqCst),
        hits_before,
        "the usage path reached the upstream"
    );
    // The full budget is still there: exactly 3 admitted (the route's limit).
    let mut admitted = 0;
    for _ in 0..6 {
        if get(&p, "/api/users", Some(&key)).await.0 == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3);
    let (_, body) = get(&p, "/_tollgate/usage", Some(&key)).await;
    assert_eq!(remaining(&body, "r"), Some(0), "{body}");
    assert_eq!(remaining(&body, "m"), Some(2), "{body}");
    let reset = body["limits"][1]["reset_seconds"]
        .as_u64()
        .unwrap_or(0)
        .max(body["limits"][0]["reset_seconds"].as_u64().unwrap_or(0));
    assert!((1..=60).contains(&reset), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_usage_path_spends_nothing() {
    spends_nothing_and_never_reaches_the_upstream("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_usage_path_spends_nothing() {
    let Some(url) = service_url("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let limiter =
        format!("limiter:\n  backend: redis\n  redis_url: \"{url}\"\n  redis_timeout: 2s\n");
    spends_nothing_and_never_reaches_the_upstream(&limiter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_callers_get_the_proxys_answers_and_the_path_can_be_off() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let upstream = raw::start_interpreting_upstream(counted).await;
    let p = TestProxy::start(&yaml(upstream, "", &tag(), ""), Store::Sqlite)
        .await
        .expect("sqlite");
    let (status, body) = get(&p, "/_tollgate/usage", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["type"]
        .as_str()
        .is_some_and(|t| t.ends_with("/missing-api-key")));
    let (status, body) = get(&p, "/_tollgate/usage", Some("tg_garbage")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["type"]
        .as_str()
        .is_some_and(|t| t.ends_with("/invalid-api-key")));
    let r = reqwest::Client::new()
        .post(p.url("/_tollgate/usage"))
        .header("x-api-key", "tg_garbage")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 405);
    drop(p);

    let off = yaml(upstream, "", &tag(), "  usage_path: \"\"");
    let p = TestProxy::start(&off, Store::Sqlite).await.expect("sqlite");
    let (status, body) = get(&p, "/_tollgate/usage", Some("tg_garbage")).await;
    assert_eq!(status, 404, "{body}");
    let moved = yaml(upstream, "", &tag(), "  usage_path: /me/limits");
    drop(p);
    let p = TestProxy::start(&moved, Store::Sqlite)
        .await
        .expect("sqlite");
    assert_eq!(get(&p, "/me/limits", None).await.0, 401);
    assert_eq!(get(&p, "/_tollgate/usage", None).await.0, 404);
}

/// `HEAD` on the usage path is `GET` without the body (RFC 9110 §9.3.2):
/// the same status and header fields, no body bytes on the wire, nothing
/// spent, nothing forwarded; other methods are 405 naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_like_get_without_a_body_and_spends_nothing() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let upstream = raw::start_interpreting_upstream(counted).await;
    let p = TestProxy::start(&yaml(upstream, "", &tag(), ""), Store::Sqlite)
        .await
        .expect("sqlite");
    let (_, key) = key_on_p(&p, "head").await;
    until_known(&p, &key).await;
    let hits_before = UPSTREAM_HITS.load(Ordering::SeqCst);
    // A fresh second of usage reads (5 per second per key).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let key_header = [("x-api-key", key.as_str())];
    let got = raw::get(None, p.addr, "/_tollgate/usage", &key_header).await;
    assert_eq!(got.status, 200, "{}", got.raw);
    let head_req = format!(
        "HEAD /_tollgate/usage HTTP/1.1\r\nHost: t\r\nConnection: close\r\nx-api-key: {key}\r\n\r\n"
    );
    for _ in 0..3 {
        let raw_answer =
            raw::exchange(None, p.addr, head_req.as_bytes(), Duration::from_secs(10)).await;
        let head = raw::parse(&raw_answer);
        assert_eq!(head.status, 200, "{raw_answer}");
        let (_, after_head) = raw_answer.split_once("\r\n\r\n").expect("a whole head");
        assert!(after_head.is_empty(), "HEAD sent a body: {raw_answer}");
        for name in ["content-type", "content-length", "cache-control"] {
            assert_eq!(head.header(name), got.header(name), "{name}: {raw_answer}");
        }
    }
    // Nothing was spent: the route's 3 and the plan's 5 are all there.
    let (status, body) = get(&p, "/_tollgate/usage", Some(&key)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(remaining(&body, "m"), Some(5), "{body}");
    assert_eq!(remaining(&body, "r"), Some(3), "{body}");
    assert_eq!(
        UPSTREAM_HITS.load(Ordering::SeqCst),
        hits_before,
        "the usage path reached the upstream"
    );
    // Any other method: 405 naming GET and HEAD.
    let r = reqwest::Client::new()
        .delete(p.url("/_tollgate/usage"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        r.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, HEAD")
    );
}

/// Over HTTP/2 (h2c) too: Pingora's HTTP/1 writer drops a HEAD answer's
/// body by itself, its HTTP/2 writer does not, so the proxy ends the stream
/// after the header fields of every answer of its own to a HEAD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_over_h2_has_no_body_either() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let upstream = raw::start_interpreting_upstream(counted).await;
    let p = TestProxy::start(&yaml(upstream, "", &tag(), "  h2c: true"), Store::Sqlite)
        .await
        .expect("sqlite");
    let (_, key) = key_on_p(&p, "head-h2").await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let start = Instant::now();
    loop {
        let r = h2
            .head(p.url("/_tollgate/usage"))
            .header("x-api-key", &key)
            .send()
            .await
            .expect("head over h2c");
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        let status = r.status().as_u16();
        let body = r.bytes().await.expect("body");
        assert!(
            body.is_empty(),
            "{status}: HEAD sent {} body bytes",
            body.len()
        );
        if status == 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "key never known");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Black-box round 17 re-check: with the Redis backend down (`local`
/// policy), a credit holder's usage read showed its top-ups as `credits`
/// (this proxy's book, without the spends Redis holds). The balance is
/// unknown then: `null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_are_null_while_redis_cannot_say() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut redis) = common::redis::OwnRedis::start() else {
        return;
    };
    let up = raw::start_interpreting_upstream(counted).await;
    let limiter = format!(
        "limiter:\n  backend: redis\n  redis_url: \"{}\"\n  redis_timeout: 200ms\n  on_redis_error: local\n",
        redis.url()
    );
    let p = TestProxy::start(&yaml(up, &limiter, &tag(), ""), Store::Sqlite)
        .await
        .expect("sqlite");
    let (k, key) = key_on_p(&p, "prepaid").await;
    p.db.add_credits(tollgate_core::credits::SubjectKind::Key, k.id, 10, "test")
        .await
        .expect("top-up");
    let start = Instant::now();
    loop {
        let (s, v) = get(&p, "/_tollgate/usage", Some(&key)).await;
        if s == 200 && v["credits"] == 10 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "credits never seen: {v}"
        );
        // Within the reads a key may make (5 a second).
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Spend 2 through Redis.
    for _ in 0..2 {
        assert_eq!(get(&p, "/api/users", Some(&key)).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        get(&p, "/_tollgate/usage", Some(&key)).await.1["credits"],
        8
    );
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (s, v) = get(&p, "/_tollgate/usage", Some(&key)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["limiter"], "fallback", "{v}");
    assert!(
        v["credits"].is_null(),
        "not the top-ups as the balance: {v}"
    );
}
