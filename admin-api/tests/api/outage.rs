//! The database goes away while the admin API runs: every data endpoint
//! answers 503 `database-unavailable` problem+json with `Retry-After`, within
//! the request deadline (not a hang, not a 500), and the API recovers by
//! itself when the database is back.
//!
//! PostgreSQL is reached through a TCP relay the test controls, so it can be
//! "stopped" (connections reset, new ones closed at once) or "partitioned"
//! (connections accepted and held silent: the case only the deadline ends).
//! SQLite cannot be unreachable; another process holding its write lock is
//! its outage.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;
use tollgate_admin_api::REQUEST_DEADLINE;
use tollgate_core::db::Db;

use crate::common::*;
use crate::relay::{Mode, Relay};

/// `postgres://u:p@host:port/db` → (host:port, the URL with `addr` instead).
async fn through(url: &str, addr: SocketAddr) -> (SocketAddr, String) {
    let start = url.find('@').expect("user in URL") + 1;
    let end = start + url[start..].find('/').expect("database in URL");
    let authority = &url[start..end];
    let target = tokio::net::lookup_host(authority)
        .await
        .expect("resolve")
        .next()
        .expect("an address");
    (target, format!("{}{addr}{}", &url[..start], &url[end..]))
}

/// Everything the API serves from the database, as (method, path, body).
/// `tag` makes the names of created plans unique.
fn data_endpoints(key_id: i64, tag: &str) -> Vec<(Method, String, Option<Value>)> {
    let get = |p: &str| (Method::GET, p.to_string(), None);
    vec![
        get("/api/keys"),
        get(&format!("/api/keys/{key_id}")),
        get("/api/plans"),
        get("/api/plans/partner"),
        get("/api/admins"),
        get("/api/analytics/summary"),
        get("/api/analytics/timeseries"),
        get("/api/analytics/top-keys"),
        get("/api/analytics/violations"),
        get(&format!("/api/analytics/keys/{key_id}")),
        (
            Method::POST,
            "/api/keys".into(),
            Some(json!({"name": "during the outage"})),
        ),
        (
            Method::PATCH,
            format!("/api/keys/{key_id}"),
            Some(json!({"owner": "x"})),
        ),
        (
            Method::POST,
            "/api/plans".into(),
            Some(
                json!({"name": format!("outage-{tag}"), "limits": [{"name": "s", "rate": 1, "per": "1s"}]}),
            ),
        ),
    ]
}

async fn send(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = app.req(method, path).timeout(Duration::from_secs(30));
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.expect("an answer, not a hang")
}

/// Every data endpoint (and login) answers 503 problem+json with
/// `Retry-After`, all within the deadline plus slack.
async fn all_unavailable(app: &TestApp, key_id: i64) {
    let started = Instant::now();
    let mut calls = Vec::new();
    for (method, path, body) in data_endpoints(key_id, "down") {
        let app_ref = app;
        calls.push(async move {
            let res = send(app_ref, method.clone(), &path, body).await;
            let retry = res.headers().get("retry-after").cloned();
            let status = res.status();
            let text = res.text().await.unwrap_or_default();
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{method} {path}: {text}"
            );
            let v: Value = serde_json::from_str(&text).expect("json");
            assert_eq!(
                v["type"], "https://tollgate.dev/problems/database-unavailable",
                "{method} {path}: {text}"
            );
            assert!(retry.is_some(), "{method} {path}: Retry-After");
        });
    }
    let login = async {
        problem(
            app.login("admin", ADMIN_PASSWORD).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "database-unavailable",
        )
        .await;
    };
    tokio::join!(futures_join_all(calls), login);
    let took = started.elapsed();
    assert!(
        took < REQUEST_DEADLINE + Duration::from_secs(4),
        "answers took {took:?}"
    );
    // What needs no database still answers.
    json(
        crate::common::send(app.anon(Method::GET, "/api/openapi.json")).await,
        StatusCode::OK,
    )
    .await;
}

/// Run futures concurrently (no `futures` crate in this workspace).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send>(futs: Vec<F>) {
    let mut pending: Vec<_> = futs.into_iter().map(|f| Some(Box::pin(f))).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for slot in pending.iter_mut() {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    done = false;
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// The API serves data again within `within`, without a restart.
async fn recovers(app: &TestApp, key_id: i64, within: Duration, tag: &str) {
    let started = Instant::now();
    loop {
        let res = send(app, Method::GET, "/api/keys", None).await;
        if res.status() == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < within,
            "still {} after {within:?}",
            res.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (method, path, body) in data_endpoints(key_id, tag) {
        let res = send(app, method.clone(), &path, body).await;
        assert!(
            res.status().is_success(),
            "{method} {path} after recovery: {} {}",
            res.status(),
            res.text().await.unwrap_or_default()
        );
    }
    json(app.login("admin", ADMIN_PASSWORD).await, StatusCode::OK).await;
}

async fn setup(app: &TestApp) -> i64 {
    let key = json(
        app.post("/api/keys", json!({"name": "before"})).await,
        StatusCode::CREATED,
    )
    .await;
    json(
        app.post(
            "/api/plans",
            json!({"name": "partner", "limits": [{"name": "s", "rate": 5, "per": "1s"}]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    key["id"].as_i64().expect("id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_503_and_heals() {
    if service_url("TOLLGATE_TEST_POSTGRES_URL").is_none() {
        return;
    }
    let direct = tollgate_core::db::testing::fresh_postgres()
        .await
        .expect("a fresh database");
    let url = tollgate_core::db::testing::url_of(&direct);
    direct.close().await;
    // Find the server, then put the relay in front of it.
    let (target, _) = through(&url, "127.0.0.1:1".parse().expect("addr")).await;
    let relay = Relay::start(target).await;
    let (_, relayed) = through(&url, relay.addr).await;
    let db = Db::connect(&relayed)
        .await
        .expect("connect through the relay");
    let app = TestApp::start(db, test_config(), None).await;
    let key_id = setup(&app).await;

    // Stopped: connection refused/reset on every attempt.
    relay.set(Mode::Stopped);
    all_unavailable(&app, key_id).await;
    relay.set(Mode::Up);
    recovers(&app, key_id, Duration::from_secs(15), "after-stop").await;

    // Partitioned: the pooled connections go silent mid-use and new ones
    // are never answered. Only the deadline ends these requests.
    relay.set(Mode::Silent);
    all_unavailable(&app, key_id).await;
    relay.set(Mode::Up);
    recovers(&app, key_id, Duration::from_secs(15), "after-partition").await;

    // Nothing written during the outages, everything written after.
    let keys = json(app.get("/api/keys?per_page=200").await, StatusCode::OK).await;
    let names: Vec<&str> = keys["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|k| k["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names.iter().filter(|n| **n == "during the outage").count(),
        2,
        "one per recovery check: {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_by_another_process_is_503_for_writes_and_heals() {
    let app = TestApp::sqlite().await;
    let key_id = setup(&app).await;
    let url = tollgate_core::db::testing::url_of(&app.db);
    // Another process takes the write lock and keeps it.
    let mut other = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("second connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("lock");
    sqlx::query("UPDATE api_keys SET owner = 'locker' WHERE id = $1")
        .bind(key_id)
        .execute(&mut other)
        .await
        .expect("write under the lock");

    let started = Instant::now();
    for (method, path, body) in [
        (
            Method::POST,
            "/api/keys".to_string(),
            json!({"name": "blocked"}),
        ),
        (
            Method::PATCH,
            format!("/api/keys/{key_id}"),
            json!({"owner": "blocked"}),
        ),
        (
            Method::POST,
            format!("/api/keys/{key_id}/rotate"),
            json!({}),
        ),
    ] {
        let res = send(&app, method, &path, Some(body)).await;
        assert!(res.headers().get("retry-after").is_some(), "{path}");
        problem(res, StatusCode::SERVICE_UNAVAILABLE, "database-unavailable").await;
    }
    assert!(
        started.elapsed() < (REQUEST_DEADLINE + Duration::from_secs(2)) * 3,
        "{:?}",
        started.elapsed()
    );
    // WAL: reads go on while another process writes (its change is not
    // visible until it commits).
    let k = json(
        app.get(&format!("/api/keys/{key_id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(k["owner"], Value::Null);

    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("unlock");
    other.close().await.expect("close");
    recovers(&app, key_id, Duration::from_secs(10), "after-lock").await;
    let list = json(app.get("/api/keys?name=blocked").await, StatusCode::OK).await;
    assert_eq!(list["total"], 0, "the refused writes left nothing: {list}");
}
