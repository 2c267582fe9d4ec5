//! Login under attack: attempts are counted before argon2 runs, argon2 runs
//! are bounded (503 + Retry-After beyond the queue), and the real admin can
//! still log in from an address that has not failed.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

const PERMITS: usize = 2;
const QUEUE: usize = 4;

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(ip.parse().expect("ip")))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// Send `n` wrong logins at once, the i-th from `addr(i)` for `user(i)`;
/// returns the statuses counted.
async fn flood(
    app: &TestApp,
    n: usize,
    addr: impl Fn(usize) -> String,
    user: impl Fn(usize) -> String,
) -> BTreeMap<u16, usize> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let client = client_from(&addr(i));
        let url = app.url("/api/auth/login");
        let body = json!({"username": user(i), "password": format!("wrong-guess-{i}")});
        tasks.push(tokio::spawn(async move {
            let res = client.post(url).json(&body).send().await.expect("request");
            let status = res.status();
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                assert!(
                    res.headers().contains_key("retry-after"),
                    "{status} without Retry-After"
                );
            }
            status.as_u16()
        }));
    }
    let mut counts = BTreeMap::new();
    for t in tasks {
        *counts.entry(t.await.expect("join")).or_insert(0) += 1;
    }
    counts
}

async fn three_hundred_concurrent_wrong_logins(postgres: bool) {
    // Without `admin.max_connections_per_ip` (listener.rs): it would close
    // most of one address's 300 connections before the login throttle.
    let mut config = test_config();
    config.admin.max_connections_per_ip = 0;
    let Some(app) = TestApp::fresh(postgres, config, PERMITS, QUEUE).await else {
        return;
    };
    // 300 at once from one address for `admin`: only the free attempts
    // reach argon2, the rest are 429 before any work.
    let counts = flood(&app, 300, |_| "127.0.0.2".into(), |_| "admin".into()).await;
    let wrong = counts.get(&401).copied().unwrap_or(0);
    let limited = counts.get(&429).copied().unwrap_or(0);
    let busy = counts.get(&503).copied().unwrap_or(0);
    assert_eq!(wrong + limited + busy, 300, "{counts:?}");
    // The free attempts, plus one per back-off period that ran out while
    // the flood lasted (1 s, 2 s, 4 s, …).
    assert!(
        wrong <= tollgate_admin_api::login_guard::FREE_ATTEMPTS as usize + 3,
        "{counts:?}"
    );
    assert!(limited >= 290, "{counts:?}");
    assert!(app.state.argon2().peak_running() <= PERMITS);

    // (From that address the right password is refused until its back-off
    // ends; how long the flood took decides whether it has, so that is
    // checked in login_guard's unit tests rather than here.)
    // The right password works from an address that has not failed.
    let res = client_from("127.0.0.3")
        .post(app.url("/api/auth/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("request");
    json(res, StatusCode::OK).await;

    // 300 at once from 300 addresses, each a new name: nothing throttles
    // them, so the argon2 gate does: at most PERMITS run, the queue holds
    // QUEUE, everything beyond is 503 at once.
    let counts = flood(
        &app,
        300,
        |i| format!("127.0.{}.{}", 1 + i / 200, 1 + i % 200),
        |i| format!("user{i}"),
    )
    .await;
    let busy = counts.get(&503).copied().unwrap_or(0);
    assert_eq!(
        counts.get(&401).copied().unwrap_or(0) + busy,
        300,
        "{counts:?}"
    );
    assert!(busy > 0, "the queue never filled: {counts:?}");
    assert!(
        app.state.argon2().peak_running() <= PERMITS,
        "{} argon2 runs at once",
        app.state.argon2().peak_running()
    );
    // Still serving the real admin afterwards.
    let res = client_from("127.0.0.4")
        .post(app.url("/api/auth/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("request");
    json(res, StatusCode::OK).await;
    // Failures that reached argon2 are in the audit log; refused ones are
    // not (no database row per throttled request).
    let (events, total) = app
        .db
        .list_audit(&tollgate_core::db::audit::AuditFilter {
            action: Some("login.failure".into()),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert!(total <= 300 + 5, "{total}");
    assert!(events.iter().all(|e| e.actor == "anonymous"));
    // The name typed is kept only when it is an admin's.
    assert!(events
        .iter()
        .filter_map(|e| e.changes.as_ref())
        .all(|c| c["username"] == "admin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_concurrent_wrong_logins_sqlite() {
    three_hundred_concurrent_wrong_logins(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_concurrent_wrong_logins_postgres() {
    three_hundred_concurrent_wrong_logins(true).await;
}
