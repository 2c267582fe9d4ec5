//! Faults, proved against the real `tollgate` binary (`tollgate proxy` and
//! `tollgate dev` as child processes): a PostgreSQL of the test's own
//! stopped under load, junk-key floods, a panicking background task
//! (upstream faults: `faults_upstream.rs`; stops: `faults_stop.rs`; config
//! edits: `faults_config.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::faults::*;
use crate::common::free_port;
use crate::common::proxy::Proxy;
use tokio::task::JoinSet;
use tollgate_core::db::own_postgres::OwnPostgres;
use tollgate_core::db::Db;

/// PostgreSQL stopped while four clients keep sending: every request is
/// answered promptly, keys are enforced from the in-memory set (valid 200,
/// missing 401, unknown and disabled 403), and once the database is back the
/// usage of the outage is written (the rows fit `usage.buffer_rows`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_under_load_keeps_answering_and_enforcing_keys() {
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    let db = Db::connect(&pg.url())
        .await
        .expect("connect own PostgreSQL");
    let (valid, valid_plain) = db.create_key(&named("valid")).await.expect("key");
    let (disabled, disabled_plain) = db.create_key(&named("disabled")).await.expect("key");
    db.set_key_enabled(disabled.id, false)
        .await
        .expect("disable");
    let unknown = tollgate_core::keys::generate().expect("key").plain;

    let up = Upstream::start("u", free_port()).await;
    let yaml = format!(
        "usage:\n  flush_interval: 100ms\n  buffer_rows: 1000\nplans:\n  big: {{ limits: [ {{ name: hour, rate: 1000000, per: 1h }} ] }}\nupstreams:\n  u: {{ targets: [\"127.0.0.1:{}\"] }}\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: u\n    strip_prefix: /api\n    default_plan: big\n",
        up.port
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Proxy::start(dir, &pg.url(), "", &yaml).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let url = p.url("/api/x");
    assert_eq!(get(&client, &url, Some(&valid_plain)).await.status(), 200);
    wait_for("first row written", Duration::from_secs(10), || async {
        usage_of(&db, valid.id).await.allowed == 1
    })
    .await;

    pg.stop();
    let stopped = Instant::now();
    // Four clients for two seconds, each cycling through the four kinds of key.
    let keys: Vec<Option<String>> = vec![
        Some(valid_plain.clone()),
        None,
        Some(unknown.clone()),
        Some(disabled_plain.clone()),
    ];
    let mut workers = JoinSet::new();
    for w in 0..4 {
        let (client, url, keys) = (client.clone(), url.clone(), keys.clone());
        workers.spawn(async move {
            let mut seen: BTreeMap<(usize, u16), u64> = BTreeMap::new();
            let mut slowest = Duration::ZERO;
            let start = Instant::now();
            let mut i = w;
            while start.elapsed() < Duration::from_secs(2) {
                let which = i % keys.len();
                i += 1;
                let t = Instant::now();
                let mut req = client.get(&url);
                if let Some(k) = &keys[which] {
                    req = req.header("x-api-key", k);
                }
                let status = req.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
                slowest = slowest.max(t.elapsed());
                *seen.entry((which, status)).or_default() += 1;
            }
            (seen, slowest)
        });
    }
    let mut seen: BTreeMap<(usize, u16), u64> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    while let Some(r) = workers.join_next().await {
        let (s, w) = r.expect("worker");
        for (k, n) in s {
            *seen.entry(k).or_default() += n;
        }
        slowest = slowest.max(w);
    }
    println!(
        "outage of {:?}: {seen:?}, slowest {slowest:?}",
        stopped.elapsed()
    );
    let expected = [200, 401, 403, 403];
    for ((which, status), n) in &seen {
        assert_eq!(
            *status, expected[*which],
            "key kind {which}: {n} answers with {status} (0 = no answer) during the outage"
        );
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a request waited {slowest:?}"
    );
    let count = |which: usize| seen.get(&(which, expected[which])).copied().unwrap_or(0);
    assert!(count(0) > 20, "{seen:?}");
    // The key refresh notices (bounded, not after the pool's 10 s) and keeps the set.
    wait_for(
        "a failed key refresh is counted",
        Duration::from_secs(5),
        || async {
            metric_value(&p.metrics().await, "tollgate_key_refresh_errors_total", &[]) >= 1.0
        },
    )
    .await;
    assert_eq!(get(&client, &url, Some(&valid_plain)).await.status(), 200);
    assert_eq!(
        get(&client, &url, Some(&disabled_plain)).await.status(),
        403
    );

    pg.start_server();
    let want = (2 + count(0)) as i64;
    wait_for("outage usage written", Duration::from_secs(30), || async {
        usage_of(&db, valid.id).await.allowed == want
    })
    .await;
    let none = usage_of(&db, 0).await;
    assert_eq!(
        (none.unauthorized, none.forbidden),
        (count(1) as i64, (count(2) + count(3)) as i64 + 1),
        "refused requests are counted too"
    );
    let m = p.metrics().await;
    assert_eq!(metric_value(&m, "tollgate_usage_dropped_total", &[]), 0.0);
    drop(p);
    db.close().await;
}

/// A flood of junk keys (and no keys) from 50 source addresses leaves a few
/// counted rows, not a row per request; a valid key over its limit still
/// leaves one row per refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_key_floods_from_many_addresses_leave_a_bounded_number_of_rows() {
    let up = Upstream::start("u", free_port()).await;
    let (dir, db) = sqlite().await;
    let p = Proxy::start(dir, db.url(), "", &keyed_yaml(up.port)).await;
    let (_, good) = db.create_key(&named("good")).await.expect("key");
    let started = tollgate_core::now_ms();

    let mut tasks = JoinSet::new();
    for host in 1..=50u8 {
        let url = p.url("/api/x");
        tasks.spawn(async move {
            let client = reqwest::Client::builder()
                .local_address(std::net::IpAddr::from([127, 0, 0, host]))
                .build()
                .expect("client");
            let mut statuses = Vec::new();
            for i in 0..22u32 {
                let key = match i % 11 {
                    0 => None,
                    1 => Some(format!("tg_{}", "A".repeat(38))),
                    _ => Some(format!("junk-{host}-{i}")),
                };
                statuses.push(get(&client, &url, key.as_deref()).await.status().as_u16());
            }
            statuses
        });
    }
    let mut refused = 0usize;
    while let Some(r) = tasks.join_next().await {
        for status in r.expect("client task") {
            assert!([401, 403, 429].contains(&status), "{status}");
            refused += 1;
        }
    }
    assert_eq!(refused, 1_100);
    // The valid key: 2 admitted, then 3 refused over its limit.
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            get(&client, &p.url("/api/x"), Some(&good))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429]);

    let range = tollgate_core::db::violation_aggregates::AggregateFilter {
        from: started - 60_000,
        to: tollgate_core::now_ms() + 60_000,
        ..Default::default()
    };
    wait_for("every refusal counted", Duration::from_secs(20), || async {
        db.list_violation_aggregates(&range)
            .await
            .is_ok_and(|(_, _, n)| n == 1_100)
    })
    .await;
    let (rows, total, _) = db.list_violation_aggregates(&range).await.expect("rows");
    // One client network, one route, 401/403/429 by reason, in at most two
    // minutes: a handful of rows for 1,100 refusals.
    assert!(total <= 12, "{total} rows: {rows:?}");
    assert!(rows.iter().all(|r| r.key.client_net == "127.0.0.0/24"));
    wait_for(
        "the valid key's refusals",
        Duration::from_secs(10),
        || async {
            db.list_violations(&tollgate_core::db::usage::ViolationFilter {
                from: 0,
                to: i64::MAX,
                ..Default::default()
            })
            .await
            .is_ok_and(|(_, n)| n == 3)
        },
    )
    .await;
    let (violations, n) = db
        .list_violations(&tollgate_core::db::usage::ViolationFilter {
            from: 0,
            to: i64::MAX,
            ..Default::default()
        })
        .await
        .expect("violations");
    assert_eq!(n, 3, "{violations:?}");
    assert!(violations
        .iter()
        .all(|v| v.status == 429 && v.key_id.is_some()));
}

/// The test hook makes the key refresh panic at every start: it is
/// restarted (and counted) again and again, while config reloads and health
/// checks go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_background_task_stops_none_of_the_others() {
    let mut up = Upstream::start("u", free_port()).await;
    let (dir, db) = sqlite().await;
    let yaml = keyed_yaml(up.port);
    let p = Proxy::start_env(
        dir,
        db.url(),
        "",
        &yaml,
        &[("TOLLGATE_FAULT_PANIC", "key-refresh")],
    )
    .await;
    wait_for("key refresh restarted", Duration::from_secs(20), || async {
        metric_value(
            &p.metrics().await,
            "tollgate_background_restarts_total",
            &["task=\"key-refresh\""],
        ) >= 2.0
    })
    .await;
    let m = p.metrics().await;
    assert!(metric_value(&m, "tollgate_keys_last_refresh_timestamp_seconds", &[]) > 0.0);
    assert_eq!(
        metric_value(
            &m,
            "tollgate_background_restarts_total",
            &["task=\"config-reload\""]
        ),
        0.0
    );

    // Health checks still run: the stopped target is taken out.
    up.stop().await;
    wait_for("health check notices", Duration::from_secs(20), || async {
        metric_value(&p.metrics().await, "tollgate_upstream_targets_healthy", &[]) == 0.0
    })
    .await;
    up.restart().await;
    // Config reloads still apply: a new keyless route.
    let text = std::fs::read_to_string(&p.config).expect("config");
    let edited = format!(
        "{text}  - name: open\n    match: {{ path_prefix: /open }}\n    upstream: u\n    auth: none\n"
    );
    std::fs::write(&p.config, edited).expect("write");
    let client = reqwest::Client::new();
    wait_for("the reloaded route", Duration::from_secs(20), || async {
        get(&client, &p.url("/open/x"), None).await.status() == 200
    })
    .await;
    let restarts = metric_value(
        &p.metrics().await,
        "tollgate_background_restarts_total",
        &["task=\"key-refresh\""],
    );
    assert!(restarts >= 2.0, "{restarts}");
}
