//! /api/analytics/*: over usage rows and violations written through the
//! database layer (as the proxies write them), exact numbers on both databases.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tollgate_core::db::usage::{Counts, NewViolation, UsageRow};
use tollgate_core::db::{ApiKey, NewApiKey};
use tollgate_core::limits::Limit;

use crate::both;
use crate::common::*;

/// A UTC midnight: every step (1m, 5m, 1h, 1d) is aligned to it.
const T0: i64 = 1_699_920_000_000;
const MIN: i64 = 60_000;

fn row(minute: i64, key_id: i64, route: &str, c: Counts) -> UsageRow {
    UsageRow {
        minute,
        key_id,
        route: route.into(),
        counts: c,
    }
}

/// Counts with latencies `(bucket, requests, µs each)`.
fn counts(
    (allowed, limited, unauthorized, forbidden, upstream_errors): (i64, i64, i64, i64, i64),
    latencies: &[(usize, i64, i64)],
) -> Counts {
    let mut c = Counts {
        allowed,
        limited,
        unauthorized,
        forbidden,
        upstream_errors,
        ..Counts::default()
    };
    for &(b, n, us) in latencies {
        c.latency_buckets[b] += n;
        c.latency_sum_us += n * us;
    }
    assert_eq!(c.latency_buckets.iter().sum::<i64>(), c.total());
    c
}

struct Fixture {
    k1: ApiKey,
    k2: ApiKey,
    k3: ApiKey,
}

/// k1 (plan free), k2 (own limits), k3 (no plan, no limits) and these rows:
///
/// | minute | key | route  | allowed | limited | 401 | 403 | 5xx | latency buckets          |
/// |--------|-----|--------|---------|---------|-----|-----|-----|--------------------------|
/// | +0     | k1  | users  | 10      | 2       |     |     |     | b0: 8 × 0.4 ms, b3: 4 × 3 ms |
/// | +1     | k1  | orders | 5       |         |     |     | 1   | b3: 5 × 3 ms, b7: 1 × 80 ms |
/// | +7     | k2  | users  | 3       | 7       |     |     |     | b0: 10 × 0.1 ms          |
/// | +7     | —   | users  |         |         | 4   | 1   |     | b0: 5 × 0.05 ms          |
/// | +65    | k1  | users  | 1       |         |     |     |     | b11: 1 × 2 s             |
///
/// The k2 row is written in two upserts (3+7 = 2+5 then 1+2): they add up.
async fn fixture(app: &TestApp) -> Fixture {
    let new = |name: &str| NewApiKey {
        name: name.into(),
        ..NewApiKey::default()
    };
    let (k1, _) = app
        .db
        .create_key(&NewApiKey {
            plan: Some("free".into()),
            ..new("first")
        })
        .await
        .expect("k1");
    let own = Limit {
        name: "sec".into(),
        rate: 5,
        per: std::time::Duration::from_secs(1),
        burst: Some(10),
        cost: None,
        quota: None,
        scope: Default::default(),
    };
    let (k2, _) = app
        .db
        .create_key(&NewApiKey {
            limits: Some(vec![own]),
            concurrency: Some(3),
            ..new("second")
        })
        .await
        .expect("k2");
    let (k3, _) = app.db.create_key(&new("third")).await.expect("k3");
    let rows = vec![
        row(
            T0,
            k1.id,
            "users",
            counts((10, 2, 0, 0, 0), &[(0, 8, 400), (3, 4, 3_000)]),
        ),
        row(
            T0 + MIN,
            k1.id,
            "orders",
            counts((5, 0, 0, 0, 1), &[(3, 5, 3_000), (7, 1, 80_000)]),
        ),
        row(
            T0 + 7 * MIN,
            k2.id,
            "users",
            counts((2, 5, 0, 0, 0), &[(0, 7, 100)]),
        ),
        row(
            T0 + 7 * MIN,
            0,
            "users",
            counts((0, 0, 4, 1, 0), &[(0, 5, 50)]),
        ),
        row(
            T0 + 65 * MIN,
            k1.id,
            "users",
            counts((1, 0, 0, 0, 0), &[(11, 1, 2_000_000)]),
        ),
    ];
    assert_eq!(app.db.upsert_usage(&rows).await.expect("upsert"), 5);
    let more = row(
        T0 + 7 * MIN,
        k2.id,
        "users",
        counts((1, 2, 0, 0, 0), &[(0, 3, 100)]),
    );
    assert_eq!(app.db.upsert_usage(&[more]).await.expect("upsert"), 1);
    Fixture { k1, k2, k3 }
}

async fn get_ok(app: &TestApp, path: &str) -> Value {
    json(app.get(path).await, StatusCode::OK).await
}

async fn summary_counts_rates_and_percentiles(app: TestApp) {
    let f = fixture(&app).await;
    let s = get_ok(
        &app,
        &format!("/api/analytics/summary?from={T0}&to={}", T0 + 60 * MIN),
    )
    .await;
    assert_eq!(s["from"], T0);
    assert_eq!(s["to"], T0 + 60 * MIN);
    assert_eq!(s["total"], 33);
    assert_eq!(s["allowed"], 18);
    assert_eq!(s["limited"], 9);
    assert_eq!(s["unauthorized"], 4);
    assert_eq!(s["forbidden"], 1);
    assert_eq!(s["upstream_errors"], 1);
    assert_eq!(s["block_rate"], 0.4242); // 14 / 33
    assert_eq!(s["requests_per_minute"], 0.55); // 33 / 60
    assert_eq!(s["active_keys"], 2);
    // (8×400 + 4×3000 + 5×3000 + 80000 + 10×100 + 5×50) µs / 33
    assert_eq!(s["avg_latency_ms"], 3.3773);
    // Buckets: ≤0.5 ms: 23, ≤5 ms: 9, ≤100 ms: 1 → ranks 17, 32, 33.
    assert_eq!(s["p50_latency_ms"], 0.5);
    assert_eq!(s["p95_latency_ms"], 5.0);
    assert_eq!(s["p99_latency_ms"], 100.0);
    let hist = s["latency_histogram"].as_array().expect("histogram");
    assert_eq!(hist.len(), 12);
    assert_eq!(hist[0], json!({"le_ms": 0.5, "count": 23}));
    assert_eq!(hist[3], json!({"le_ms": 5.0, "count": 9}));
    assert_eq!(hist[7], json!({"le_ms": 100.0, "count": 1}));
    assert_eq!(hist[11], json!({"le_ms": null, "count": 0}));

    // The 2 s request of minute +65: the slowest bucket.
    let s = get_ok(
        &app,
        &format!("/api/analytics/summary?from={T0}&to={}", T0 + 70 * MIN),
    )
    .await;
    assert_eq!(s["total"], 34);
    assert_eq!(s["p99_latency_ms"], 1000.0);
    assert_eq!(s["latency_histogram"][11]["count"], 1);

    // `from` counts from the start of its minute; `to` is exclusive.
    let s = get_ok(
        &app,
        &format!(
            "/api/analytics/summary?from={}&to={}",
            T0 + 30_000,
            T0 + MIN
        ),
    )
    .await;
    assert_eq!(s["total"], 12);
    assert_eq!(s["active_keys"], 1);

    // Nothing in range: zeros, no latency.
    let s = get_ok(
        &app,
        &format!("/api/analytics/summary?from={}&to={}", T0 - 60 * MIN, T0),
    )
    .await;
    assert_eq!(s["total"], 0);
    assert_eq!(s["block_rate"], 0.0);
    assert_eq!(s["active_keys"], 0);
    assert_eq!(s["avg_latency_ms"], Value::Null);
    assert_eq!(s["p95_latency_ms"], Value::Null);

    // Default: the last hour (the fixture is long ago).
    let s = get_ok(&app, "/api/analytics/summary").await;
    let (from, to) = (
        s["from"].as_i64().expect("from"),
        s["to"].as_i64().expect("to"),
    );
    assert_eq!(to - from, 60 * MIN);
    assert!((tollgate_core::now_ms() - to).abs() < 60_000);
    assert_eq!(s["total"], 0);
    let _ = f;
}
both!(summary_counts_rates_and_percentiles);

fn series(v: &Value, field: &str) -> Vec<i64> {
    v["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p[field].as_i64().expect("number"))
        .collect()
}

async fn timeseries_is_zero_filled_and_filtered(app: TestApp) {
    let f = fixture(&app).await;
    let base = format!("/api/analytics/timeseries?from={T0}&to={}", T0 + 15 * MIN);
    let v = get_ok(&app, &format!("{base}&step=5m")).await;
    assert_eq!(v["step"], "5m");
    assert_eq!(v["step_ms"], 5 * MIN);
    assert_eq!(v["key"], Value::Null);
    let at: Vec<i64> = series(&v, "at");
    assert_eq!(at, [T0, T0 + 5 * MIN, T0 + 10 * MIN]);
    assert_eq!(series(&v, "total"), [18, 15, 0]);
    assert_eq!(series(&v, "allowed"), [15, 3, 0]);
    assert_eq!(series(&v, "limited"), [2, 7, 0]);
    assert_eq!(series(&v, "unauthorized"), [0, 4, 0]);
    assert_eq!(series(&v, "forbidden"), [0, 1, 0]);
    assert_eq!(series(&v, "upstream_errors"), [1, 0, 0]);

    // Filters: one key, no key (0), one route, both.
    let v = get_ok(&app, &format!("{base}&step=5m&key={}", f.k1.id)).await;
    assert_eq!(v["key"], f.k1.id);
    assert_eq!(series(&v, "total"), [18, 0, 0]);
    let v = get_ok(&app, &format!("{base}&step=5m&key=0")).await;
    assert_eq!(series(&v, "total"), [0, 5, 0]);
    let v = get_ok(&app, &format!("{base}&step=5m&route=orders")).await;
    assert_eq!(v["route"], "orders");
    assert_eq!(series(&v, "total"), [6, 0, 0]);
    let v = get_ok(&app, &format!("{base}&step=5m&route=users&key={}", f.k2.id)).await;
    assert_eq!(series(&v, "limited"), [0, 7, 0]);
    let v = get_ok(&app, &format!("{base}&step=5m&key={}", f.k3.id)).await;
    assert_eq!(series(&v, "total"), [0, 0, 0]);

    // 1m steps from an unaligned `from`: starts at its minute, zero-filled.
    let v = get_ok(
        &app,
        &format!(
            "/api/analytics/timeseries?from={}&to={}&step=1m",
            T0 + 30_000,
            T0 + 10 * MIN
        ),
    )
    .await;
    assert_eq!(series(&v, "at")[0], T0);
    assert_eq!(series(&v, "total"), [12, 6, 0, 0, 0, 0, 0, 15, 0, 0]);

    // 1h and 1d.
    let v = get_ok(
        &app,
        &format!(
            "/api/analytics/timeseries?from={T0}&to={}&step=1h",
            T0 + 120 * MIN
        ),
    )
    .await;
    assert_eq!(series(&v, "total"), [33, 1]);
    let v = get_ok(
        &app,
        &format!(
            "/api/analytics/timeseries?from={}&to={}&step=1d",
            T0 - 1,
            T0 + 86_400_000
        ),
    )
    .await;
    assert_eq!(series(&v, "at"), [T0 - 86_400_000, T0]);
    assert_eq!(series(&v, "total"), [0, 34]);

    // Default step: the finest with at most 1440 points.
    let v = get_ok(&app, &base).await;
    assert_eq!(v["step"], "1m");
    assert_eq!(series(&v, "total").len(), 15);
    let v = get_ok(
        &app,
        &format!(
            "/api/analytics/timeseries?from={T0}&to={}",
            T0 + 7 * 86_400_000
        ),
    )
    .await;
    assert_eq!(v["step"], "1h");
    assert_eq!(series(&v, "total").len(), 168);
    let v = get_ok(&app, "/api/analytics/timeseries").await;
    assert_eq!(v["step"], "1m");
    assert!(series(&v, "total").iter().all(|n| *n == 0));
}
both!(timeseries_is_zero_filled_and_filtered);

async fn key_usage_with_its_limits(app: TestApp) {
    let f = fixture(&app).await;
    let range = format!("from={T0}&to={}", T0 + 120 * MIN);
    let v = get_ok(&app, &format!("/api/analytics/keys/{}?{range}", f.k1.id)).await;
    assert_eq!(v["key"]["id"], f.k1.id);
    assert_eq!(v["key"]["name"], "first");
    assert!(v["key"].get("key").is_none() && v["key"].get("key_hash").is_none());
    assert_eq!(v["limits_source"], "plan");
    assert_eq!(v["plan"], "free");
    assert_eq!(
        v["limits"],
        json!([{"name": "minute", "rate": 60, "per": "1m", "burst": 10}])
    );
    assert_eq!(v["total"], 19);
    assert_eq!(v["allowed"], 16);
    assert_eq!(v["limited"], 2);
    assert_eq!(v["upstream_errors"], 1);
    assert_eq!(v["block_rate"], 0.1053); // 2 / 19
                                         // 0.4 ms ×8, 3 ms ×9, 80 ms, 2 s: ranks 10 and 19.
    assert_eq!(v["p50_latency_ms"], 5.0);
    assert_eq!(v["p99_latency_ms"], 1000.0);
    let routes = v["routes"].as_array().expect("routes");
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0]["route"], "users");
    assert_eq!(routes[0]["total"], 13);
    assert_eq!(routes[1]["route"], "orders");
    assert_eq!(routes[1]["total"], 6);
    assert_eq!(routes[1]["upstream_errors"], 1);
    assert_eq!(routes[1]["p95_latency_ms"], 100.0);

    let v = get_ok(&app, &format!("/api/analytics/keys/{}?{range}", f.k2.id)).await;
    assert_eq!(v["limits_source"], "key");
    assert_eq!(v["plan"], Value::Null);
    assert_eq!(
        v["limits"],
        json!([{"name": "sec", "rate": 5, "per": "1s", "burst": 10}])
    );
    assert_eq!(v["concurrency"], 3);
    assert_eq!(
        (v["total"].as_i64(), v["limited"].as_i64()),
        (Some(10), Some(7))
    );

    let v = get_ok(&app, &format!("/api/analytics/keys/{}?{range}", f.k3.id)).await;
    assert_eq!(v["limits_source"], "route_default");
    assert_eq!(v["limits"], json!([]));
    assert_eq!(v["total"], 0);
    assert_eq!(v["routes"], json!([]));

    // A plan created through the API.
    json(
        app.post(
            "/api/plans",
            json!({"name": "partner", "limits": [{"name": "hour", "rate": 500, "per": "1h"}]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    json(
        app.patch(
            &format!("/api/keys/{}", f.k3.id),
            json!({"plan": "partner"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let v = get_ok(&app, &format!("/api/analytics/keys/{}", f.k3.id)).await;
    assert_eq!(v["limits_source"], "plan");
    assert_eq!(v["plan"], "partner");
    assert_eq!(v["limits"][0]["rate"], 500);

    problem(
        app.get("/api/analytics/keys/999999").await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let p = problem(
        app.get("/api/analytics/keys/abc").await,
        StatusCode::BAD_REQUEST,
        "malformed-request",
    )
    .await;
    assert_eq!(p["field"], "id");
    invalid(
        app.get(&format!("/api/analytics/keys/{}?from=x", f.k1.id))
            .await,
        "from",
    )
    .await;
}
both!(key_usage_with_its_limits);

async fn top_keys_rank_by_total(app: TestApp) {
    let f = fixture(&app).await;
    let range = format!("from={T0}&to={}", T0 + 120 * MIN);
    let v = get_ok(&app, &format!("/api/analytics/top-keys?{range}")).await;
    let items = v["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "requests without a key are not a key: {v}");
    assert_eq!(items[0]["key_id"], f.k1.id);
    assert_eq!(items[0]["name"], "first");
    assert_eq!(items[0]["key_prefix"], f.k1.key_prefix.as_str());
    assert_eq!(items[0]["total"], 19);
    assert_eq!(items[1]["key_id"], f.k2.id);
    assert_eq!(items[1]["total"], 10);
    assert_eq!(items[1]["limited"], 7);
    assert_eq!(items[1]["block_rate"], 0.7);

    let v = get_ok(&app, &format!("/api/analytics/top-keys?{range}&limit=1")).await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["items"][0]["key_id"], f.k1.id);

    // Within the first hour k1 has 18, k2 10; a deleted key keeps its usage.
    app.db.delete_key(f.k2.id).await.expect("delete");
    let v = get_ok(
        &app,
        &format!(
            "/api/analytics/top-keys?from={}&to={}",
            T0 + 5 * MIN,
            T0 + 60 * MIN
        ),
    )
    .await;
    assert_eq!(v["items"][0]["key_id"], f.k2.id);
    assert_eq!(v["items"][0]["name"], Value::Null);

    for bad in ["limit=0", "limit=101", "limit=x"] {
        invalid(
            app.get(&format!("/api/analytics/top-keys?{bad}")).await,
            "limit",
        )
        .await;
    }
}
both!(top_keys_rank_by_total);

async fn usage_of_several_keys_in_one_call(app: TestApp) {
    let f = fixture(&app).await;
    let range = format!("from={T0}&to={}", T0 + 120 * MIN);
    // In the order asked, each id once, zeros for a key without requests
    // and for an id no key has.
    let ids = format!("{},{},{},999999,{}", f.k2.id, f.k1.id, f.k3.id, f.k1.id);
    let v = get_ok(&app, &format!("/api/analytics/keys?{range}&ids={ids}")).await;
    assert_eq!(v["from"], T0);
    assert_eq!(v["to"], T0 + 120 * MIN);
    let items = v["items"].as_array().expect("items");
    let got: Vec<(i64, i64, i64)> = items
        .iter()
        .map(|i| {
            (
                i["key_id"].as_i64().unwrap_or(-1),
                i["total"].as_i64().unwrap_or(-1),
                i["limited"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (f.k2.id, 10, 7),
            (f.k1.id, 19, 2),
            (f.k3.id, 0, 0),
            (999_999, 0, 0)
        ],
        "{v}"
    );
    assert_eq!(items[0]["block_rate"], 0.7);
    assert_eq!(items[1]["upstream_errors"], 1);
    assert_eq!(items[2]["avg_latency_ms"], Value::Null);
    // Each item says what the key's own endpoint says for the range.
    for id in [f.k1.id, f.k2.id, f.k3.id] {
        let one = get_ok(&app, &format!("/api/analytics/keys/{id}?{range}")).await;
        let item = items
            .iter()
            .find(|i| i["key_id"] == id)
            .expect("the key's item");
        for field in [
            "total",
            "allowed",
            "limited",
            "unauthorized",
            "forbidden",
            "upstream_errors",
            "block_rate",
            "avg_latency_ms",
        ] {
            assert_eq!(item[field], one[field], "key {id}: {field}");
        }
    }
    // A repeated id is answered once and does not count toward the 100: 150
    // ids naming 100 keys are one item each; a 101st key is refused.
    let repeated: Vec<String> = (1..=150).map(|i| (1 + i % 100).to_string()).collect();
    let v = get_ok(
        &app,
        &format!("/api/analytics/keys?{range}&ids={}", repeated.join(",")),
    )
    .await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(100));
    invalid(
        app.get(&format!(
            "/api/analytics/keys?{range}&ids={},101",
            repeated.join(",")
        ))
        .await,
        "ids",
    )
    .await;
    // The range applies: k1 has 18 in the first hour.
    let v = get_ok(
        &app,
        &format!(
            "/api/analytics/keys?from={T0}&to={}&ids={}",
            T0 + 60 * MIN,
            f.k1.id
        ),
    )
    .await;
    assert_eq!(v["items"][0]["total"], 18, "{v}");
    // At most 100 ids.
    let hundred: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
    let v = get_ok(
        &app,
        &format!("/api/analytics/keys?{range}&ids={}", hundred.join(",")),
    )
    .await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(100));
    let too_many = format!("{},101", hundred.join(","));
    for bad in [
        String::new(),
        "ids=".into(),
        "ids=0".into(),
        "ids=-1".into(),
        "ids=a".into(),
        "ids=1,,2".into(),
        "ids=1,".into(),
        "ids=%201".into(),
        "ids=99999999999999999999".into(),
        "ids=1&ids=2".into(),
        format!("ids={too_many}"),
    ] {
        invalid(app.get(&format!("/api/analytics/keys?{bad}")).await, "ids").await;
    }
    invalid(app.get("/api/analytics/keys?ids=1&from=x").await, "from").await;
    // Viewers may read it; no token may not.
    problem(
        send(app.anon(Method::GET, "/api/analytics/keys?ids=1")).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}
both!(usage_of_several_keys_in_one_call);

async fn violations_are_paged_newest_first(app: TestApp) {
    let f = fixture(&app).await;
    let v = |i: i64, key_id: Option<i64>, route: &str, status: i64| NewViolation {
        at: T0 + i * 1000,
        key_id,
        route: route.into(),
        method: "GET".into(),
        path: format!("/api/{route}/{i}"),
        client_ip: "10.0.0.7".into(),
        limit_name: (status == 429).then(|| "minute".to_string()),
        status,
    };
    let all = vec![
        v(1, Some(f.k1.id), "users", 429),
        v(2, None, "users", 401),
        v(3, Some(f.k2.id), "orders", 429),
        v(4, None, "orders", 403),
        v(5, Some(f.k1.id), "users", 429),
    ];
    assert_eq!(app.db.insert_violations(&all).await.expect("insert"), 5);
    let range = format!("from={T0}&to={}", T0 + MIN);

    let page = get_ok(
        &app,
        &format!("/api/analytics/violations?{range}&per_page=2"),
    )
    .await;
    assert_eq!(page["total"], 5);
    assert_eq!(
        (page["page"].as_i64(), page["per_page"].as_i64()),
        (Some(1), Some(2))
    );
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["at"], T0 + 5000);
    assert_eq!(items[0]["key_id"], f.k1.id);
    assert_eq!(items[0]["key_name"], "first");
    assert_eq!(items[0]["limit"], "minute");
    assert_eq!(items[0]["status"], 429);
    assert_eq!(items[0]["path"], "/api/users/5");
    assert_eq!(items[0]["method"], "GET");
    assert_eq!(items[0]["client_ip"], "10.0.0.7");
    assert_eq!(items[1]["at"], T0 + 4000);
    assert_eq!(items[1]["key_id"], Value::Null);
    assert_eq!(items[1]["limit"], Value::Null);
    assert_eq!(items[1]["status"], 403);

    let page = get_ok(
        &app,
        &format!("/api/analytics/violations?{range}&per_page=2&page=3"),
    )
    .await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["at"], T0 + 1000);

    let ats = |v: &Value| -> Vec<i64> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| (i["at"].as_i64().expect("at") - T0) / 1000)
            .collect()
    };
    let by_key = get_ok(
        &app,
        &format!("/api/analytics/violations?{range}&key={}", f.k1.id),
    )
    .await;
    assert_eq!(
        (by_key["total"].as_i64(), ats(&by_key)),
        (Some(2), vec![5, 1])
    );
    let no_key = get_ok(&app, &format!("/api/analytics/violations?{range}&key=0")).await;
    assert_eq!(ats(&no_key), [4, 2]);
    let route = get_ok(
        &app,
        &format!("/api/analytics/violations?{range}&route=orders"),
    )
    .await;
    assert_eq!(ats(&route), [4, 3]);
    let both_filters = get_ok(
        &app,
        &format!(
            "/api/analytics/violations?{range}&route=orders&key={}",
            f.k2.id
        ),
    )
    .await;
    assert_eq!(ats(&both_filters), [3]);
    let narrow = get_ok(
        &app,
        &format!(
            "/api/analytics/violations?from={}&to={}",
            T0 + 2000,
            T0 + 4000
        ),
    )
    .await;
    assert_eq!(ats(&narrow), [3, 2]);

    for (query, field) in [
        ("page=0", "page"),
        ("per_page=0", "per_page"),
        ("per_page=201", "per_page"),
        ("key=-1", "key"),
        ("key=abc", "key"),
    ] {
        invalid(
            app.get(&format!("/api/analytics/violations?{query}")).await,
            field,
        )
        .await;
    }
}
both!(violations_are_paged_newest_first);

async fn bad_parameters_name_the_field(app: TestApp) {
    let day: i64 = 86_400_000;
    for (path, field) in [
        ("/api/analytics/summary?from=abc", "from"),
        ("/api/analytics/summary?to=-5", "to"),
        ("/api/analytics/summary?from=2000&to=1000", "from"),
        ("/api/analytics/summary?from=1000&to=1000", "from"),
        ("/api/analytics/timeseries?step=2m", "step"),
        ("/api/analytics/timeseries?step=", "step"),
        ("/api/analytics/timeseries?key=x", "key"),
    ] {
        // An empty typed parameter is refused, not taken as absent.
        invalid(app.get(path).await, field).await;
    }
    // Too many points for the step, or for any step.
    invalid(
        app.get(&format!(
            "/api/analytics/timeseries?from=0&to={}&step=1m",
            30 * day
        ))
        .await,
        "step",
    )
    .await;
    invalid(
        app.get(&format!(
            "/api/analytics/timeseries?from=0&to={}",
            20_000 * day
        ))
        .await,
        "from",
    )
    .await;
    invalid(
        app.get(&format!(
            "/api/analytics/timeseries?route={}",
            "r".repeat(201)
        ))
        .await,
        "route",
    )
    .await;

    // Every endpoint needs a token.
    for path in [
        "/api/analytics/summary",
        "/api/analytics/timeseries",
        "/api/analytics/keys/1",
        "/api/analytics/top-keys",
        "/api/analytics/violations",
    ] {
        problem(
            send(app.anon(Method::GET, path)).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }
}
both!(bad_parameters_name_the_field);

/// The write side of the database layer: upserts add up, last use only
/// moves forward, retention deletes what is older.
async fn writes_add_up_and_retention_purges(app: TestApp) {
    let f = fixture(&app).await;
    // Many rows in one call (more than one batch), some twice.
    let mut rows = Vec::new();
    for i in 0..1_200 {
        rows.push(row(
            T0 + 2 * 86_400_000 + (i % 600) * MIN,
            f.k3.id,
            "bulk",
            counts((1, 0, 0, 0, 0), &[(0, 1, 10)]),
        ));
    }
    assert_eq!(app.db.upsert_usage(&rows).await.expect("bulk"), 600);
    let s = get_ok(
        &app,
        &format!(
            "/api/analytics/summary?from={}&to={}",
            T0 + 2 * 86_400_000,
            T0 + 3 * 86_400_000
        ),
    )
    .await;
    assert_eq!(s["total"], 1_200);

    app.db
        .set_keys_last_used(&[(f.k1.id, 5_000), (f.k2.id, 7_000), (f.k1.id, 6_000)])
        .await
        .expect("last used");
    app.db
        .set_keys_last_used(&[(f.k1.id, 1_000)])
        .await
        .expect("last used");
    let used = |k: &ApiKey| k.last_used_at;
    let k1 = app.db.get_key(f.k1.id).await.expect("get").expect("k1");
    let k2 = app.db.get_key(f.k2.id).await.expect("get").expect("k2");
    let k3 = app.db.get_key(f.k3.id).await.expect("get").expect("k3");
    assert_eq!(
        (used(&k1), used(&k2), used(&k3)),
        (Some(6_000), Some(7_000), None)
    );
    assert_eq!(
        k1.updated_at, f.k1.updated_at,
        "not a change of the key set"
    );

    app.db
        .insert_violations(&[NewViolation {
            at: T0 + 10,
            key_id: None,
            route: "users".into(),
            method: "GET".into(),
            path: "/".into(),
            client_ip: "::1".into(),
            limit_name: None,
            status: 401,
        }])
        .await
        .expect("violation");
    // Usage goes by whole hours: before T0 + 90 min means before T0 + 60 min
    // (the 4 minute rows of hour T0, and its hour rows); violations exactly.
    let purged = app
        .db
        .purge_usage_before(T0 + 90 * MIN)
        .await
        .expect("purge");
    assert_eq!((purged.usage_rows, purged.violations), (4, 1));
    let s = get_ok(
        &app,
        &format!("/api/analytics/summary?from=0&to={}", T0 + 120 * MIN),
    )
    .await;
    assert_eq!(s["total"], 1, "only minute +65 is left");
    let v = get_ok(
        &app,
        &format!(
            "/api/analytics/timeseries?from={T0}&to={}&step=1m",
            T0 + 10 * MIN
        ),
    )
    .await;
    assert!(series(&v, "total").iter().all(|n| *n == 0));
}
both!(writes_add_up_and_retention_purges);

/// The analytics routes are in the OpenAPI document (problem+json errors,
/// a token required) and every schema they name is defined.
async fn analytics_routes_are_documented(app: TestApp) {
    let doc = json(
        send(app.anon(Method::GET, "/api/openapi.json")).await,
        StatusCode::OK,
    )
    .await;
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for path in [
        "/api/analytics/summary",
        "/api/analytics/timeseries",
        "/api/analytics/keys/{id}",
        "/api/analytics/top-keys",
        "/api/analytics/violations",
    ] {
        let op = &doc["paths"][path]["get"];
        assert_eq!(op["tags"], json!(["analytics"]), "{path}");
        let responses = op["responses"].as_object().expect("responses");
        for code in ["401", "422"] {
            assert_eq!(
                responses[code]["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{path} {code}"
            );
        }
        let ok = responses["200"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .expect("200 schema");
        let name = ok.trim_start_matches("#/components/schemas/");
        assert!(schemas.contains_key(name), "{path}: schema {name}");
        let params: Vec<&str> = op["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(
            params.contains(&"from") && params.contains(&"to"),
            "{path}: {params:?}"
        );
    }
    for name in [
        "Summary",
        "UsageStats",
        "Timeseries",
        "KeyAnalytics",
        "TopKeys",
        "ViolationPage",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
}
both!(analytics_routes_are_documented);

async fn keyless_refusals_are_listed_as_counts(app: TestApp) {
    use tollgate_core::db::violation_aggregates::{AggregateKey, ViolationAggregate};
    let f = fixture(&app).await;
    let agg =
        |at: i64, route: &str, status: u16, reason: &str, ip: [u8; 4], count| ViolationAggregate {
            key: AggregateKey::new(at, route, status, reason, Some(ip.into())),
            count,
        };
    app.db
        .upsert_violation_aggregates(&[
            agg(
                T0,
                "users",
                403,
                "invalid-api-key:unknown",
                [10, 0, 0, 7],
                900,
            ),
            agg(T0 + MIN, "users", 401, "missing-api-key", [10, 0, 1, 9], 40),
            agg(
                T0 + 2 * MIN,
                "orders",
                429,
                "too-many-auth-failures",
                [10, 0, 0, 8],
                60,
            ),
        ])
        .await
        .expect("aggregates");
    let range = format!("from={T0}&to={}", T0 + 10 * MIN);
    let page = get_ok(
        &app,
        &format!("/api/analytics/violations?{range}&per_page=2"),
    )
    .await;
    assert_eq!(page["aggregated_total"], 3);
    assert_eq!(page["aggregated_refusals"], 1_000);
    let rows = page["aggregated"].as_array().expect("aggregated");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["at"], T0 + 2 * MIN);
    assert_eq!(rows[0]["route"], "orders");
    assert_eq!(rows[0]["status"], 429);
    assert_eq!(rows[0]["reason"], "too-many-auth-failures");
    assert_eq!(rows[0]["client_net"], "10.0.0.0/24");
    assert_eq!(rows[0]["count"], 60);
    assert_eq!(rows[1]["client_net"], "10.0.1.0/24");
    // By route; a key filter (other than 0) has no counted rows.
    let users = get_ok(
        &app,
        &format!("/api/analytics/violations?{range}&route=users"),
    )
    .await;
    assert_eq!(users["aggregated_refusals"], 940);
    let by_key = get_ok(
        &app,
        &format!("/api/analytics/violations?{range}&key={}", f.k1.id),
    )
    .await;
    assert_eq!(by_key["aggregated"], json!([]));
    let keyless = get_ok(&app, &format!("/api/analytics/violations?{range}&key=0")).await;
    assert_eq!(keyless["aggregated_total"], 3);
}
both!(keyless_refusals_are_listed_as_counts);
