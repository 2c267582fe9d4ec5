//! Usage analytics with real traffic through the real proxy: the counts the
//! flusher writes (SQLite and PostgreSQL), two proxies adding up on one
//! database, a PostgreSQL of the test's own stopped during traffic, the
//! bounded buffer's overflow, and the flush on graceful shutdown.
//!
//! Usage rows are keyed by minute, so assertions sum over minutes (traffic
//! may straddle a minute boundary) unless a test aligns itself to a minute.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{free_port, metric_value, render, start_upstream, wait_listening, Store, TestProxy};
use tollgate_core::db::instances::{Heartbeat, Instance};
use tollgate_core::db::own_postgres::OwnPostgres;
use tollgate_core::db::usage::{Counts, NewViolation, UsageFilter, UsageRow, ViolationFilter};
use tollgate_core::db::violation_aggregates::{AggregateFilter, AggregateKey, ViolationAggregate};
use tollgate_core::db::{Db, NewApiKey};
use tollgate_core::now_ms;
use tollgate_proxy::server::{build, Prepared, ShutdownHandle};

const YAML: &str = r#"
usage:
  flush_interval: 100ms
  retention_days: 1
  violation_retention_days: 1
  buffer_rows: 1000
plans:
  big: { limits: [ { name: hour, rate: 100000, per: 1h } ] }
  tiny: { limits: [ { name: minute, rate: 3, per: 1m } ] }
upstreams:
  demo: { targets: ["{upstream}"] }
routes:
  - name: users
    match: { path_prefix: /api/users }
    upstream: demo
    strip_prefix: /api
    default_plan: big
  - name: status
    match: { path_prefix: /api/status }
    upstream: demo
    strip_prefix: /api
    default_plan: big
"#;

fn key(name: &str, plan: &str) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        plan: Some(plan.into()),
        ..NewApiKey::default()
    }
}

async fn get(client: &reqwest::Client, url: &str, key: Option<&str>) -> u16 {
    let mut req = client.get(url);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// Every usage row summed over minutes, per (key id, route), for the keys
/// `keys` (plus "no key", 0).
async fn usage_by_key_route(db: &Db, keys: &[i64]) -> BTreeMap<(i64, String), Counts> {
    let mut out: BTreeMap<(i64, String), Counts> = BTreeMap::new();
    for &k in std::iter::once(&0).chain(keys) {
        let filter = UsageFilter {
            key_id: Some(k),
            ..all_time()
        };
        for r in db.usage_by_route(&filter).await.expect("usage by route") {
            out.insert((k, r.route), r.counts);
        }
    }
    out
}

fn all_time() -> UsageFilter {
    UsageFilter {
        from: 0,
        to: i64::MAX,
        ..UsageFilter::default()
    }
}

/// (allowed, limited, unauthorized, forbidden, upstream_errors) per (key, route).
type Outcomes = BTreeMap<(i64, String), (i64, i64, i64, i64, i64)>;

fn outcomes(usage: &BTreeMap<(i64, String), Counts>) -> Outcomes {
    usage
        .iter()
        .map(|(k, c)| {
            (
                k.clone(),
                (
                    c.allowed,
                    c.limited,
                    c.unauthorized,
                    c.forbidden,
                    c.upstream_errors,
                ),
            )
        })
        .collect()
}

/// Poll until `usage_by_key_route` equals `want` (then check that it stays
/// so over a few more flushes: nothing is counted twice).
async fn expect_usage(
    db: &Db,
    keys: &[i64],
    want: &Outcomes,
    timeout: Duration,
) -> BTreeMap<(i64, String), Counts> {
    let start = Instant::now();
    loop {
        let got = usage_by_key_route(db, keys).await;
        if &outcomes(&got) == want {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let again = usage_by_key_route(db, keys).await;
            assert_eq!(&outcomes(&again), want, "usage changed after it matched");
            let mut sum = Counts::default();
            again.values().for_each(|c| sum.add(c));
            let totals = db.usage_totals(&all_time()).await.expect("totals");
            assert_eq!(totals.counts, sum, "usage of keys other than {keys:?}");
            return again;
        }
        assert!(
            start.elapsed() < timeout,
            "usage rows after {timeout:?}:\n  got  {:?}\n  want {want:?}",
            outcomes(&got)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "{what}: not after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Store::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Store::Postgres).await
            }
        }
    };
}

/// A known mix through the proxy → exactly those counts, violations, last
/// use, the heartbeat; old rows are purged by retention.
async fn known_mix_is_written_exactly(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = common::fresh_db(&store, dir.path()).await else {
        return;
    };
    let (a, key_a) = db.create_key(&key("a", "big")).await.expect("key a");
    let (b, key_b) = db.create_key(&key("b", "tiny")).await.expect("key b");
    let (c, _) = db.create_key(&key("c", "big")).await.expect("key c");
    // Rows older than usage.retention_days (1) are purged by the flusher.
    let old = now_ms() - 3 * 86_400_000;
    let old_minute = old - old.rem_euclid(60_000);
    db.upsert_usage(&[UsageRow {
        minute: old_minute,
        key_id: a.id,
        route: "users".into(),
        counts: Counts {
            allowed: 7,
            ..Counts::default()
        },
    }])
    .await
    .expect("old row");
    db.insert_violations(&[NewViolation {
        at: old,
        key_id: None,
        route: "users".into(),
        method: "GET".into(),
        path: "/old".into(),
        client_ip: "1.2.3.4".into(),
        limit_name: None,
        status: 401,
    }])
    .await
    .expect("old violation");
    db.upsert_violation_aggregates(&[ViolationAggregate {
        key: AggregateKey::new(old, "users", 403, "invalid-api-key:unknown", None),
        count: 9,
    }])
    .await
    .expect("old aggregate");
    // Proxies that crashed (no clean stop removed their rows): one a day
    // ago and more is forgotten by retention, one an hour ago is kept.
    for (id, ago) in [
        ("crashed-days-ago", 2 * 86_400_000),
        ("crashed-lately", 3_600_000),
    ] {
        let beat = Heartbeat {
            id: id.into(),
            address: "127.0.0.1:1".into(),
            version: "old".into(),
            started_at: 0,
            stats: serde_json::json!({}),
            upstream_health: Vec::new(),
            counter: None,
            beat_every: Duration::from_secs(5),
        };
        db.upsert_instance_at(&beat, now_ms() - ago)
            .await
            .expect("a crashed proxy's row");
    }

    let started = now_ms();
    let p = TestProxy::start_with_db(YAML, db.clone(), dir).await;
    let client = reqwest::Client::new();
    let users = p.url("/api/users");
    for _ in 0..5 {
        assert_eq!(get(&client, &users, Some(&key_a)).await, 200);
    }
    let mut b_statuses = Vec::new();
    for _ in 0..5 {
        b_statuses.push(get(&client, &users, Some(&key_b)).await);
    }
    assert_eq!(b_statuses, [200, 200, 200, 429, 429]);
    for _ in 0..2 {
        assert_eq!(get(&client, &users, None).await, 401);
    }
    let unknown = tollgate_core::keys::generate().expect("a key").plain;
    for _ in 0..3 {
        assert_eq!(get(&client, &users, Some(&unknown)).await, 403);
    }
    for _ in 0..2 {
        assert_eq!(
            get(&client, &p.url("/api/status/500"), Some(&key_a)).await,
            500
        );
    }
    // No route: not recorded.
    assert_eq!(get(&client, &p.url("/nowhere"), Some(&key_a)).await, 404);

    let want: Outcomes = [
        ((0, "users".to_string()), (0, 0, 2, 3, 0)),
        ((a.id, "status".to_string()), (0, 0, 0, 0, 2)),
        ((a.id, "users".to_string()), (5, 0, 0, 0, 0)),
        ((b.id, "users".to_string()), (3, 2, 0, 0, 0)),
    ]
    .into_iter()
    .collect();
    let got = expect_usage(&db, &[a.id, b.id, c.id], &want, Duration::from_secs(10)).await;
    for ((k, route), c) in &got {
        assert_eq!(
            c.latency_buckets.iter().sum::<i64>(),
            c.total(),
            "every request of ({k}, {route}) is in one latency bucket"
        );
        assert!(c.latency_sum_us > 0);
    }

    // The analytics queries over the same rows.
    let range = UsageFilter {
        from: started - 60_000,
        to: now_ms() + 60_000,
        ..UsageFilter::default()
    };
    let totals = db.usage_totals(&range).await.expect("totals");
    let t = totals.counts;
    assert_eq!(
        (
            t.total(),
            t.allowed,
            t.limited,
            t.unauthorized,
            t.forbidden,
            t.upstream_errors
        ),
        (17, 8, 2, 2, 3, 2)
    );
    assert_eq!(totals.active_keys, 2);
    let top = db
        .top_keys(range.from, range.to, 10)
        .await
        .expect("top keys");
    let ranked: Vec<(i64, i64, Option<&str>)> = top
        .iter()
        .map(|k| (k.key_id, k.counts.total(), k.name.as_deref()))
        .collect();
    assert_eq!(ranked, [(a.id, 7, Some("a")), (b.id, 5, Some("b"))]);

    // Violations: the valid key's 2 × 429 one by one (naming the limit);
    // the 2 × 401 and 3 × 403 without a valid key only as counts.
    let (violations, total) = db
        .list_violations(&ViolationFilter {
            from: started - 1000,
            to: now_ms() + 1000,
            ..ViolationFilter::default()
        })
        .await
        .expect("violations");
    assert_eq!(total, 2);
    for v in &violations {
        assert_eq!((v.route.as_str(), v.method.as_str()), ("users", "GET"));
        assert_eq!(v.path, "/api/users");
        assert_eq!(v.client_ip, "127.0.0.1");
        assert!(v.at >= started - 1000);
        assert_eq!(
            (v.status, v.key_id, v.limit_name.as_deref()),
            (429, Some(b.id), Some("minute"))
        );
    }
    assert!(
        violations.windows(2).all(|w| w[0].at >= w[1].at),
        "newest first"
    );
    let (counted, _, refusals) = db
        .list_violation_aggregates(&AggregateFilter {
            from: started - 60_000,
            to: now_ms() + 60_000,
            ..AggregateFilter::default()
        })
        .await
        .expect("aggregates");
    assert_eq!(refusals, 5);
    let mut by_reason: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for a in &counted {
        assert_eq!(a.key.route, "users");
        assert_eq!(a.key.client_net, "127.0.0.0/24");
        *by_reason
            .entry((a.key.status, a.key.reason.clone()))
            .or_default() += a.count;
    }
    assert_eq!(
        by_reason,
        BTreeMap::from([
            ((401, "missing-api-key".to_string()), 2),
            ((403, "invalid-api-key:unknown".to_string()), 3),
        ])
    );

    // Keys' last use, batched; an unused key stays unused.
    wait_for("last_used_at", Duration::from_secs(5), || async {
        let ka = db.get_key(a.id).await.ok().flatten();
        let kb = db.get_key(b.id).await.ok().flatten();
        ka.and_then(|k| k.last_used_at)
            .is_some_and(|t| t >= started)
            && kb
                .and_then(|k| k.last_used_at)
                .is_some_and(|t| t >= started)
    })
    .await;
    let kc = db.get_key(c.id).await.expect("query").expect("key c");
    assert_eq!(kc.last_used_at, None);

    // The heartbeat: this instance's figures and upstream health.
    let ours = |l: Vec<Instance>| l.into_iter().find(|i| i.version != "old");
    wait_for("heartbeat", Duration::from_secs(5), || async {
        db.list_instances()
            .await
            .ok()
            .and_then(ours)
            .is_some_and(|i| i.stats["requests"] == 17)
    })
    .await;
    let crashed = || async {
        let mut ids: Vec<String> = db
            .list_instances()
            .await
            .expect("instances")
            .into_iter()
            .filter(|i| i.version == "old")
            .map(|i| i.id)
            .collect();
        ids.sort_unstable();
        ids
    };
    wait_for(
        "crashed proxies' rows forgotten after a day",
        Duration::from_secs(5),
        || async { crashed().await == ["crashed-lately"] },
    )
    .await;
    let instances = db.list_instances().await.expect("instances");
    let inst = &ours(instances).expect("this proxy's row");
    assert_eq!(inst.address, p.addr.to_string());
    assert_eq!(inst.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(inst.stats["limited"], 2);
    assert_eq!(inst.stats["unauthorized"], 2);
    assert_eq!(inst.stats["forbidden"], 3);
    assert_eq!(inst.stats["upstream_errors"], 2);
    assert_eq!(inst.stats["allowed"], 8);
    assert!(inst.stats["requests_per_second"].is_number());
    assert_eq!(inst.upstream_health.len(), 1);
    assert_eq!(inst.upstream_health[0].upstream, "demo");
    assert!(inst.upstream_health[0].healthy);

    // Retention removed the 3-day-old row and violation, nothing else.
    let before_retention = UsageFilter {
        from: 0,
        to: started - 86_400_000,
        ..UsageFilter::default()
    };
    wait_for("retention", Duration::from_secs(5), || async {
        let old_rows = db.usage_totals(&before_retention).await.expect("totals");
        let (_, old_violations) = db
            .list_violations(&ViolationFilter {
                from: 0,
                to: started - 86_400_000,
                ..ViolationFilter::default()
            })
            .await
            .expect("violations");
        let (_, old_counted, _) = db
            .list_violation_aggregates(&AggregateFilter {
                from: 0,
                to: started - 86_400_000,
                ..AggregateFilter::default()
            })
            .await
            .expect("aggregates");
        (old_rows.counts.total(), old_violations, old_counted) == (0, 0, 0)
    })
    .await;

    let m = p.metrics_text().await;
    assert!(metric_value(&m, "tollgate_usage_rows_written_total", &[]) >= 4.0);
    assert!(m.contains("tollgate_usage_dropped_total{kind=\"requests\"}"));
    assert!(m.contains("tollgate_usage_buffered_rows"));
    assert!(m.contains("tollgate_usage_flush_errors_total"));
}
both!(known_mix_is_written_exactly);

/// Two proxies on one database writing the same (minute, key, route) rows,
/// several flushes each: the counts add up.
async fn two_proxies_add_up(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = common::fresh_db(&store, dir.path()).await else {
        return;
    };
    let (a, key_a) = db.create_key(&key("a", "big")).await.expect("key");
    let p1 = TestProxy::start_with_db(YAML, db.clone(), dir).await;
    let p2 = p1.start_sharing(YAML).await;
    let client = reqwest::Client::new();
    let (u1, u2) = (p1.url("/api/users"), p2.url("/api/users"));
    for _round in 0..4 {
        let one = async {
            for _ in 0..10 {
                assert_eq!(get(&client, &u1, Some(&key_a)).await, 200);
            }
        };
        let two = async {
            for _ in 0..10 {
                assert_eq!(get(&client, &u2, Some(&key_a)).await, 200);
            }
        };
        tokio::join!(one, two);
        assert_eq!(get(&client, &u1, None).await, 401);
        assert_eq!(get(&client, &u2, None).await, 401);
        // Let both flushers write the same rows again.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let want: Outcomes = [
        ((0, "users".to_string()), (0, 0, 8, 0, 0)),
        ((a.id, "users".to_string()), (80, 0, 0, 0, 0)),
    ]
    .into_iter()
    .collect();
    expect_usage(&db, &[a.id], &want, Duration::from_secs(10)).await;
    let minutes = db
        .usage_timeseries(
            &UsageFilter {
                from: now_ms() - 120_000,
                to: now_ms() + 60_000,
                key_id: Some(a.id),
                route: None,
            },
            60_000,
        )
        .await
        .expect("series");
    let rows = minutes.iter().filter(|p| p.counts.total() > 0).count();
    assert!(
        rows <= 2,
        "one row per minute, shared by both proxies: {rows}"
    );
    wait_for("two instances", Duration::from_secs(5), || async {
        db.list_instances().await.map(|l| l.len()).unwrap_or(0) == 2
    })
    .await;
}
both!(two_proxies_add_up);

/// Wait until at least `margin` of the current minute is left, so a short
/// burst of traffic lands in one minute.
async fn align_to_minute(margin: Duration) {
    let left = 60_000 - now_ms().rem_euclid(60_000);
    let margin_ms = i64::try_from(margin.as_millis()).unwrap_or(60_000);
    if left < margin_ms {
        tokio::time::sleep(Duration::from_millis(u64::try_from(left + 50).unwrap_or(0))).await;
    }
}

/// PostgreSQL stopped during traffic: requests are unaffected; what was held
/// is written once it is back; rows beyond `usage.buffer_rows` are dropped
/// and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_keeps_requests_fast_and_rows_bounded() {
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    let db = Db::connect(&pg.url())
        .await
        .expect("connect own PostgreSQL");
    let mut keys = Vec::new();
    for i in 1..=6 {
        keys.push(
            db.create_key(&key(&format!("k{i}"), "big"))
                .await
                .expect("key"),
        );
    }
    let ids: Vec<i64> = keys.iter().map(|(k, _)| k.id).collect();
    let yaml = YAML.replace("buffer_rows: 1000", "buffer_rows: 4");
    let dir = tempfile::tempdir().expect("tempdir");
    let p = TestProxy::start_with_db(&yaml, db.clone(), dir).await;
    let client = reqwest::Client::new();
    let users = p.url("/api/users");

    // Up: one request is written.
    assert_eq!(get(&client, &users, Some(&keys[0].1)).await, 200);
    let want: Outcomes = [((keys[0].0.id, "users".to_string()), (1, 0, 0, 0, 0))]
        .into_iter()
        .collect();
    expect_usage(&db, &ids, &want, Duration::from_secs(10)).await;

    let before = p.metrics_text().await;
    let dropped_before = metric_value(
        &before,
        "tollgate_usage_dropped_total",
        &["kind=\"requests\""],
    );
    let errors_before = metric_value(&before, "tollgate_usage_flush_errors_total", &[]);

    pg.stop();
    align_to_minute(Duration::from_secs(10)).await;
    // Down: 4 keys fill the buffer (4 rows), then 2 more keys' rows overflow.
    // Every request is answered as usual and none waits for the database
    // (whose operations time out after seconds, not milliseconds).
    let mut slowest = Duration::ZERO;
    for (i, (_, plain)) in keys.iter().enumerate() {
        for _ in 0..2 {
            let t = Instant::now();
            assert_eq!(get(&client, &users, Some(plain)).await, 200);
            slowest = slowest.max(t.elapsed());
        }
        if i == 3 {
            // Let the flusher try (and fail) with the first four rows held:
            // polled, since a busy box may take longer than any fixed pause.
            let start = Instant::now();
            while metric_value(
                &p.metrics_text().await,
                "tollgate_usage_flush_errors_total",
                &[],
            ) <= errors_before
            {
                assert!(start.elapsed() < Duration::from_secs(15), "no failed flush");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a request waited for the database: {slowest:?}"
    );
    // The next flush finds the buffer full: the two new rows are dropped.
    wait_for(
        "the overflow is counted",
        Duration::from_secs(15),
        || async {
            let m = p.metrics_text().await;
            metric_value(&m, "tollgate_usage_dropped_total", &["kind=\"requests\""])
                - dropped_before
                >= 4.0
        },
    )
    .await;
    let during = p.metrics_text().await;
    assert_eq!(
        metric_value(
            &during,
            "tollgate_usage_dropped_total",
            &["kind=\"requests\""]
        ) - dropped_before,
        4.0,
        "the requests of the two rows beyond usage.buffer_rows are dropped and counted"
    );
    wait_for(
        "a failed flush is counted",
        Duration::from_secs(15),
        || async {
            let m = p.metrics_text().await;
            metric_value(&m, "tollgate_usage_flush_errors_total", &[]) > errors_before
        },
    )
    .await;

    pg.start_server();
    let mut want = want;
    want.insert((keys[0].0.id, "users".to_string()), (3, 0, 0, 0, 0));
    for (k, _) in &keys[1..4] {
        want.insert((k.id, "users".to_string()), (2, 0, 0, 0, 0));
    }
    expect_usage(&db, &ids, &want, Duration::from_secs(30)).await;
    let after = p.metrics_text().await;
    assert_eq!(
        metric_value(
            &after,
            "tollgate_usage_dropped_total",
            &["kind=\"requests\""]
        ) - dropped_before,
        4.0
    );
    drop(p);
    db.close().await;
}

/// A graceful stop writes what is held (here: everything, the interval is
/// an hour) and removes the instance's row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_flushes_what_is_held() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    let (a, key_a) = db.create_key(&key("a", "big")).await.expect("key");
    let yaml = format!(
        "proxy:\n  listen: \"{{listen}}\"\n  threads: 1\n  grace_period: 1s\n{}",
        YAML.replace("flush_interval: 100ms", "flush_interval: 1h")
    );
    let upstream = start_upstream().await;
    let addr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let metrics = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let text = render(&yaml, addr, metrics, upstream, db.url());
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, &text).expect("write config");
    let cfg = tollgate_core::config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let prepared = Prepared::load(cfg).await.expect("prepare");
    let shutdown = ShutdownHandle::new();
    let handle = shutdown.clone();
    let thread = std::thread::spawn(move || build(prepared).run_with(handle.run_args()));
    wait_listening(addr).await;

    let client = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(
            get(&client, &format!("http://{addr}/api/users"), Some(&key_a)).await,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        usage_by_key_route(&db, &[a.id]).await.is_empty(),
        "nothing flushed yet"
    );

    shutdown.graceful();
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .expect("join")
        .expect("server thread");
    let want: Outcomes = [((a.id, "users".to_string()), (3, 0, 0, 0, 0))]
        .into_iter()
        .collect();
    assert_eq!(outcomes(&usage_by_key_route(&db, &[a.id]).await), want);
    assert!(db.list_instances().await.expect("instances").is_empty());
}
