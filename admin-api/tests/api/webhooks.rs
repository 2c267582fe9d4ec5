//! /api/webhooks and the delivery worker, on both databases: endpoints are
//! checked, a real local sink answering 500 then 200 gets exactly one
//! delivery recorded as succeeded after one failed attempt, each attempt
//! signed (checked here with ring's HMAC, not the one the worker uses), and
//! an event enqueued twice (even at once) is one event.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::common::*;

/// What the sink received: (headers, body).
type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// Serve `app` on a fresh 127.0.0.1 port; its address.
async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A real HTTP server on 127.0.0.1 answering `POST /hook` with 500 the
/// first time and 200 after; its URL and what it received.
async fn sink() -> (String, Received) {
    let got: Received = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let mut v = seen.lock().expect("sink");
                v.push((headers, body));
                if v.len() == 1 {
                    AxumStatus::INTERNAL_SERVER_ERROR
                } else {
                    AxumStatus::OK
                }
            }
        }),
    );
    let addr = serve(app).await;
    (format!("http://{addr}/hook"), got)
}

/// Standard Webhooks verification, written independently of
/// `tollgate_core::webhooks::sign`: ring's HMAC-SHA256 over
/// `id.timestamp.body`, keyed with the base64-decoded secret.
fn verify(secret: &str, headers: &HeaderMap, body: &str) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|s| b64.decode(s).ok())
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let signed = format!("{}.{}.{}", h("webhook-id"), h("webhook-timestamp"), body);
    let tag = ring::hmac::sign(&key, signed.as_bytes());
    let want = format!("v1,{}", b64.encode(tag.as_ref()));
    h("webhook-signature").split(' ').any(|s| s == want)
}

async fn endpoints_are_checked(app: TestApp) {
    for (body, field) in [
        (json!({"url": "ftp://example.com/x"}), "url"),
        (json!({"url": "https://user:pw@example.com/x"}), "url"),
        (json!({"url": "https://example.com/a b"}), "url"),
        (json!({"url": ""}), "url"),
        (
            json!({"url": format!("https://e.com/{}", "a".repeat(3000))}),
            "url",
        ),
        (
            json!({"url": "https://example.com/", "events": ["key.created"]}),
            "events",
        ),
        // Attack round 3, B12: no events is not "every event"; ports out of
        // range, zone-scoped IPv6 and link-local (metadata) addresses.
        (
            json!({"url": "https://example.com/", "events": []}),
            "events",
        ),
        (json!({"url": "http://127.0.0.1:99999/"}), "url"),
        (json!({"url": "http://127.0.0.1:0/"}), "url"),
        (json!({"url": "http://[fe80::1%25eth0]:8080/"}), "url"),
        (
            json!({"url": "http://169.254.169.254/latest/meta-data/"}),
            "url",
        ),
        (json!({"url": "http://[fe80::1]/"}), "url"),
        // Round 13: AWS's IPv6 metadata service in three spellings,
        // Alibaba's, and one carried by NAT64.
        (json!({"url": "http://[fd00:ec2::254]/"}), "url"),
        (
            json!({"url": "http://[FD00:0EC2:0:0:0:0:0:254]:80/"}),
            "url",
        ),
        (json!({"url": "https://[fd00:ec2:0::254]/latest"}), "url"),
        (json!({"url": "http://100.100.100.200/"}), "url"),
        (json!({"url": "http://[64:ff9b::100.100.100.200]/"}), "url"),
        (json!({"url": "http://2852039166/"}), "url"),
        // Round 7: the metadata service through the local-use NAT64 prefix
        // (RFC 8215, after a /96 and a /64 translator prefix) and as a
        // Teredo client (the last 32 bits, inverted).
        (
            json!({"url": "http://[64:ff9b:1::169.254.169.254]/"}),
            "url",
        ),
        (
            json!({"url": "http://[64:ff9b:1:0:a9:fea9:fe00:0]/"}),
            "url",
        ),
        (
            json!({"url": "http://[2001:0:4136:e378:8000:63bf:5601:5601]/"}),
            "url",
        ),
        (
            json!({"url": "https://example.com/", "description": "a\u{0}b"}),
            "description",
        ),
        (
            json!({"url": "https://example.com/", "secret": "mine"}),
            "secret",
        ),
    ] {
        let res = app.post("/api/webhooks", body.clone()).await;
        let v = invalid(res, field).await;
        assert!(v["detail"].is_string(), "{body}: {v}");
    }
    let created = json(
        app.post(
            "/api/webhooks",
            json!({"url": "https://hooks.example.com/t", "events": ["key.rotated"]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_i64().expect("id");
    let secret = created["secret"].as_str().expect("secret shown once");
    assert!(secret.starts_with("whsec_") && secret.len() > 30);
    let listed = json(app.get("/api/webhooks").await, StatusCode::OK).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert!(!listed.to_string().contains(secret), "{listed}");
    assert_eq!(listed[0]["events"], json!(["key.rotated"]));
    invalid(
        app.patch(&format!("/api/webhooks/{id}"), json!({"events": []}))
            .await,
        "events",
    )
    .await;
    invalid(
        app.patch(
            &format!("/api/webhooks/{id}"),
            json!({"url": "http://169.254.169.254/"}),
        )
        .await,
        "url",
    )
    .await;
    let patched = json(
        app.patch(
            &format!("/api/webhooks/{id}"),
            json!({"enabled": false, "events": ["*"]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["events"], json!(["*"]));
    // A disabled endpoint sends no test event.
    problem(
        app.post(&format!("/api/webhooks/{id}/test"), json!({}))
            .await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    // Viewers read, admins write.
    let (_, viewer) = app.admin_with_role("watcher", "viewer").await;
    let res = send(app.with(&viewer, Method::GET, "/api/webhooks")).await;
    let seen = json(res, StatusCode::OK).await;
    // The secret hint is for those who may manage endpoints.
    assert_eq!(seen[0]["secret_hint"], Value::Null, "{seen}");
    let res = send(app.with(&viewer, Method::GET, &format!("/api/webhooks/{id}"))).await;
    assert_eq!(json(res, StatusCode::OK).await["secret_hint"], Value::Null);
    let own = json(app.get("/api/webhooks").await, StatusCode::OK).await;
    assert!(own[0]["secret_hint"]
        .as_str()
        .is_some_and(|h| h.starts_with("whsec_")));
    let res = send(
        app.with(&viewer, Method::POST, "/api/webhooks")
            .json(&json!({"url": "https://example.com/"})),
    )
    .await;
    problem(res, StatusCode::FORBIDDEN, "insufficient-role").await;
    assert_eq!(
        app.delete(&format!("/api/webhooks/{id}")).await.status(),
        StatusCode::NO_CONTENT
    );
    problem(
        app.get(&format!("/api/webhooks/{id}")).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    problem(
        app.get("/api/webhooks/abc/deliveries").await,
        StatusCode::BAD_REQUEST,
        "malformed-request",
    )
    .await;
}
both!(endpoints_are_checked);

/// `null` for a field that cannot be cleared (url, events, enabled) is a
/// 422 naming it, and changes nothing; `null` clears the description
/// (round 7: `{"url": null}` answered 200 and changed nothing).
async fn null_is_refused_where_a_field_cannot_be_cleared(app: TestApp) {
    let id = app
        .create_webhook(&json!({
            "url": "https://hooks.example.com/t",
            "events": ["key.rotated"],
            "description": "billing",
        }))
        .await;
    let path = format!("/api/webhooks/{id}");
    let before = json(app.get(&path).await, StatusCode::OK).await;
    for field in ["url", "events", "enabled"] {
        let v = invalid(app.patch(&path, json!({ field: null })).await, field).await;
        assert_eq!(v["detail"], format!("{field}: cannot be null"), "{v}");
        // Together with a valid change: nothing is applied.
        invalid(
            app.patch(&path, json!({ field: null, "description": "other" }))
                .await,
            field,
        )
        .await;
    }
    assert_eq!(json(app.get(&path).await, StatusCode::OK).await, before);
    let cleared = json(
        app.patch(&path, json!({"description": null})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cleared["description"], Value::Null);
    assert_eq!(cleared["url"], before["url"]);
    // Absent fields still mean "unchanged".
    let same = json(app.patch(&path, json!({})).await, StatusCode::OK).await;
    assert_eq!(same["events"], json!(["key.rotated"]));
    assert_eq!(same["enabled"], true);
}
both!(null_is_refused_where_a_field_cannot_be_cleared);

async fn a_failed_delivery_is_retried_once_and_signed(app: TestApp) {
    let (url, got) = sink().await;
    let created = json(
        app.post(
            "/api/webhooks",
            json!({"url": url, "events": ["key.disabled"], "description": "billing"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let hook = created["id"].as_i64().expect("id");
    let secret = created["secret"].as_str().expect("secret").to_string();
    let key = json(
        app.post("/api/keys", json!({"name": "to-disable"})).await,
        StatusCode::CREATED,
    )
    .await;
    let key_id = key["id"].as_i64().expect("key id");
    let first_secret = key["key"].as_str().expect("full key").to_string();
    // Rotating is not in the endpoint's filter; disabling is.
    let rotated = app.rotate_key(key_id, 0).await;
    let new_secret = rotated["key"].as_str().expect("new key").to_string();
    json(
        app.patch(&format!("/api/keys/{key_id}"), json!({"enabled": false}))
            .await,
        StatusCode::OK,
    )
    .await;
    let log = until(&app, hook, |v| v["items"][0]["status"] == "succeeded").await;
    assert_eq!(log["total"], 1, "{log}");
    let d = &log["items"][0];
    assert_eq!(d["event_type"], "key.disabled");
    assert_eq!(d["attempts"], 2, "{log}");
    assert_eq!(d["last_status"], 200);
    let attempts = d["log"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{log}");
    // Newest first: the 200, then the 500.
    assert_eq!(attempts[0]["status_code"], 200);
    assert_eq!(attempts[0]["succeeded"], true);
    assert_eq!(attempts[1]["status_code"], 500);
    assert_eq!(attempts[1]["succeeded"], false);
    // Back-off: the retry waited at least the first back-off (5 s), with
    // a margin for clock granularity.
    let gap = attempts[0]["at"].as_i64().expect("at") - attempts[1]["at"].as_i64().expect("at");
    assert!(gap >= 4_000, "retried after {gap} ms");

    let received = got.lock().expect("sink").clone();
    assert_eq!(received.len(), 2, "exactly one retry");
    let ids: Vec<&str> = received
        .iter()
        .map(|(h, _)| h["webhook-id"].to_str().expect("id"))
        .collect();
    assert_eq!(ids[0], ids[1], "a retry carries the same webhook-id");
    assert_eq!(d["msg_id"], ids[0]);
    for (headers, body) in &received {
        assert!(verify(&secret, headers, body), "signature of {body}");
        assert!(!verify(
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            headers,
            body
        ));
        let v: Value = serde_json::from_str(body).expect("JSON body");
        assert_eq!(v["type"], "key.disabled");
        assert_eq!(v["data"]["key_id"], key_id);
        assert_eq!(v["data"]["enabled"], false);
        assert!(
            !body.contains(&first_secret) && !body.contains(&new_secret),
            "never a key secret: {body}"
        );
        let ts: i64 = headers["webhook-timestamp"]
            .to_str()
            .ok()
            .and_then(|t| t.parse().ok())
            .expect("timestamp in seconds");
        assert!((ts - tollgate_core::now_ms() / 1000).abs() < 600);
    }

    // "Send test event": to this endpoint although its filter leaves it out.
    let sent = json(
        app.post(&format!("/api/webhooks/{hook}/test"), json!({}))
            .await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert!(sent["event_id"].is_i64());
    let log = until(&app, hook, |v| {
        v["total"] == 2 && v["items"][0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(log["items"][0]["event_type"], "webhook.test");
    assert_eq!(log["items"][0]["attempts"], 1);
    let received = got.lock().expect("sink").clone();
    assert_eq!(received.len(), 3);
    assert!(verify(&secret, &received[2].0, &received[2].1));
}
both!(a_failed_delivery_is_retried_once_and_signed);

/// A host name is checked at each delivery for what it resolves to: a name
/// that resolves only to the metadata service (169.254.169.254) gets no
/// connection at all, and one that resolves to it and to the sink is sent
/// to the sink only. (The names are the resolver's test table: DNS cannot
/// be made to answer a link-local address on demand.)
async fn a_name_resolving_to_a_link_local_address_is_not_delivered_there(app: TestApp) {
    use tollgate_admin_api::webhooks::resolve::testing;
    let (url, got) = sink().await;
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/hook")
        .to_string();
    let metadata: std::net::IpAddr = "169.254.169.254".parse().expect("ip");
    // Round 13: AWS's IPv6 metadata service is refused too.
    let aws_v6: std::net::IpAddr = "fd00:ec2::254".parse().expect("ip");
    let local: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
    testing::set_host("only-metadata.webhook.test", &[metadata, aws_v6]);
    testing::set_host("metadata-and-sink.webhook.test", &[metadata, local]);
    let create = |host: &str| json!({"url": format!("http://{host}:{port}/hook"), "events": ["key.disabled"]});
    let mut ids = Vec::new();
    for host in [
        "only-metadata.webhook.test",
        "metadata-and-sink.webhook.test",
    ] {
        let id = app.create_webhook(&create(host)).await;
        app.press_test(id).await;
        ids.push(id);
    }
    let blocked = until(&app, ids[0], |v| v["items"][0]["attempts"] == 1).await;
    let attempt = &blocked["items"][0]["log"][0];
    assert_eq!(attempt["succeeded"], false, "{blocked}");
    assert!(attempt["status_code"].is_null(), "{blocked}");
    let error = attempt["error"].as_str().unwrap_or_default();
    assert!(error.contains("link-local"), "{blocked}");
    // The other one reached the sink (its first answer is a 500).
    let sent = until(&app, ids[1], |v| v["items"][0]["attempts"] == 1).await;
    assert_eq!(sent["items"][0]["log"][0]["status_code"], 500, "{sent}");
    let received = got.lock().expect("sink").clone();
    assert_eq!(
        received.len(),
        1,
        "only the second endpoint's delivery arrived"
    );
}
both!(a_name_resolving_to_a_link_local_address_is_not_delivered_there);

/// A link-local literal that reached the table past the API (an older
/// version, a restored database) is not sent to: the worker checks the URL
/// again at each delivery (round 6, F2).
async fn a_link_local_url_written_past_the_api_is_not_delivered(app: TestApp) {
    let hook = app
        .db
        .create_webhook(&tollgate_core::webhooks::endpoints::NewWebhook {
            url: "http://[::ffff:169.254.169.254]:9/latest/meta-data/".into(),
            description: None,
            events: vec!["*".into()],
            enabled: true,
        })
        .await
        .expect("row written directly");
    app.press_test(hook.id).await;
    let log = until(&app, hook.id, |v| v["items"][0]["attempts"] == 1).await;
    let attempt = &log["items"][0]["log"][0];
    assert_eq!(attempt["succeeded"], false, "{log}");
    let error = attempt["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("not delivered: the url") && error.contains("link-local"),
        "{log}"
    );
}
both!(a_link_local_url_written_past_the_api_is_not_delivered);

/// An endpoint that accepts and never answers holds at most PER_ENDPOINT
/// (4) of the worker's 16 slots, each up to the attempt timeout (10 s), not
/// the other endpoints' deliveries: with 20 deliveries due to the silent
/// one, a delivery to a healthy endpoint goes out while the silent one's are
/// still under way (round 6, F3: the worker waited for its whole batch;
/// round 7: 17 deliveries to one endpoint filled every slot).
async fn a_silent_endpoint_does_not_hold_up_the_others(app: TestApp) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_url = format!("http://{}/hook", silent.local_addr().expect("addr"));
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(sock);
        }
    });
    let create = |url: &str| json!({"url": url, "events": ["key.disabled"]});
    let slow = app.create_webhook(&create(&silent_url)).await;
    for _ in 0..20 {
        app.press_test(slow).await;
    }
    let start = Instant::now();
    while accepted.load(std::sync::atomic::Ordering::SeqCst) < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the silent endpoint was not called four times"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (url, got) = sink().await;
    let healthy = app.create_webhook(&create(&url)).await;
    app.press_test(healthy).await;
    until(&app, healthy, |v| v["items"][0]["attempts"] == 1).await;
    assert_eq!(got.lock().expect("sink").len(), 1);
    // The silent endpoint's attempts are still under way, four at most.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 4);
    let slow_log = deliveries(&app, slow).await;
    let items = slow_log["items"].as_array().expect("items");
    assert_eq!(items.len(), 20, "{slow_log}");
    assert!(
        items.iter().all(|d| d["attempts"] == 0),
        "the healthy endpoint waited for the silent one: {slow_log}"
    );
}
both!(a_silent_endpoint_does_not_hold_up_the_others);

/// A sink that holds each request until released: its URL, a notice per
/// request that arrived, and the release (one permit answers one request
/// with 200).
async fn holding_sink() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    Arc<tokio::sync::Semaphore>,
) {
    let (arrived, notices) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let gate = release.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let (arrived, gate) = (arrived.clone(), gate.clone());
            async move {
                let _ = arrived.send(());
                match gate.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return AxumStatus::SERVICE_UNAVAILABLE,
                }
                AxumStatus::OK
            }
        }),
    );
    let addr = serve(app).await;
    (format!("http://{addr}/hook"), notices, release)
}

/// An endpoint deleted while the sink holds its delivery's request: the
/// worker's attempt then finds the delivery gone and ends it quietly
/// (`Recorded::Gone`: no foreign-key error, nothing written, nothing left to
/// retry) on both databases (round 7: the worker logged a foreign-key
/// warning when it recorded the outcome). On a database of its own, with
/// no app: the worker's `deliver` is called on a delivery this test
/// claimed, so no running worker takes it first.
async fn an_endpoint_deleted_during_a_delivery_ends_it_quietly(db: tollgate_core::db::Db) {
    use tollgate_admin_api::webhooks::worker;
    use tollgate_core::webhooks::outbox::Recorded;
    let (url, mut arrived, release) = holding_sink().await;
    let hook = db
        .create_webhook(&tollgate_core::webhooks::endpoints::NewWebhook {
            url,
            description: None,
            events: vec!["*".into()],
            enabled: true,
        })
        .await
        .expect("endpoint")
        .id;
    tollgate_core::webhooks::enqueue_event(&db, "key.disabled", "7", "1", json!({}))
        .await
        .expect("enqueue");
    let mut claimed = db.claim_webhook_deliveries(16, 0).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    let client = worker::client().expect("client");
    let under_way = tokio::spawn(worker::deliver(client, db.clone(), claimed.remove(0)));
    arrived.recv().await.expect("the request reached the sink");
    assert!(db.delete_webhook(hook).await.expect("delete"));
    release.add_permits(1);
    let recorded = under_way.await.expect("delivery task");
    assert!(
        matches!(recorded, Ok(Recorded::Gone)),
        "the deleted endpoint's delivery ended with an error: {recorded:?}"
    );
    let rows = |table: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(db.pool())
                .await
                .expect("count")
        }
    };
    assert_eq!(rows("webhook_deliveries").await, 0);
    assert_eq!(rows("webhook_attempts").await, 0, "no orphan attempt");
    // The claim's 0 ms lease ran out long ago: a delivery left behind would
    // be claimed (and sent) again.
    assert!(db
        .claim_webhook_deliveries(16, 60_000)
        .await
        .expect("claim")
        .is_empty());
    assert!(arrived.try_recv().is_err(), "sent once");
}

mod an_endpoint_deleted_during_a_delivery_ends_it_quietly {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
        super::an_endpoint_deleted_during_a_delivery_ends_it_quietly(db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if let Some(db) = tollgate_core::db::testing::fresh_postgres().await {
            super::an_endpoint_deleted_during_a_delivery_ends_it_quietly(db).await;
        }
    }
}

async fn an_event_is_enqueued_once_per_period(app: TestApp) {
    let enqueue = |db: tollgate_core::db::Db, period: &'static str| async move {
        tollgate_core::webhooks::enqueue_event(
            &db,
            "quota.warning",
            "key:7:monthly",
            period,
            json!({"used": 80}),
        )
        .await
        .expect("enqueue")
    };
    assert!(enqueue(app.db.clone(), "2026-12").await.is_some());
    assert!(enqueue(app.db.clone(), "2026-12").await.is_none());
    // Eight at once (as eight proxies would): one wins.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        set.spawn(enqueue(app.db.clone(), "2027-01"));
    }
    let mut won = 0;
    while let Some(r) = set.join_next().await {
        won += usize::from(r.expect("task").is_some());
    }
    assert_eq!(won, 1);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_events")
        .fetch_one(app.db.pool())
        .await
        .expect("count");
    assert_eq!(n, 2);
}
both!(an_event_is_enqueued_once_per_period);

async fn expiring_keys_are_announced_once_per_expiry(app: TestApp) {
    let day = 86_400_000;
    let now = tollgate_core::now_ms();
    let soon = json(
        app.post(
            "/api/keys",
            json!({"name": "soon", "expires_at": now + 3 * day}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    json(
        app.post(
            "/api/keys",
            json!({"name": "later", "expires_at": now + 30 * day}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = soon["id"].as_i64().expect("id");
    let expiring = |events: Vec<(String, String)>| {
        events
            .into_iter()
            .filter(|(t, _)| t == "key.expiring")
            .map(|(_, d)| d)
            .collect::<Vec<_>>()
    };
    let within = 7 * day;
    // Whoever checks first (this call or the worker's own check) enqueues
    // it; every later check finds it done.
    tollgate_admin_api::webhooks::worker::enqueue_expiring(&app.db, within)
        .await
        .expect("check");
    assert_eq!(
        tollgate_admin_api::webhooks::worker::enqueue_expiring(&app.db, within)
            .await
            .expect("check"),
        0
    );
    let events = expiring(app.db.recent_webhook_events(50).await.expect("events"));
    assert_eq!(events, [format!("key.expiring:{id}:{}", now + 3 * day)]);
    // A new expiry is a new event.
    json(
        app.patch(
            &format!("/api/keys/{id}"),
            json!({"expires_at": now + 4 * day}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    tollgate_admin_api::webhooks::worker::enqueue_expiring(&app.db, within)
        .await
        .expect("check");
    let events = expiring(app.db.recent_webhook_events(50).await.expect("events"));
    assert_eq!(events.len(), 2, "{events:?}");
}
both!(expiring_keys_are_announced_once_per_expiry);
