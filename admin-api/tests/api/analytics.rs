//! /api/analytics/*: over usage rows and violations written through the
//! database layer (as the proxies write them), exact numbers on both
//! databases — the summary, the time series, the top keys, bad parameters
//! named, the routes documented, and the write side (upserts add up,
//! retention purges). Per-key usage is `analytics_keys.rs`, violations
//! `analytics_violations.rs`; the rows they all read are
//! `analytics_fixture.rs`.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tollgate_core::db::usage::NewViolation;
use tollgate_core::db::ApiKey;

use crate::analytics_fixture::{counts, fixture, get_ok, row, series, MIN, T0};
use crate::both;
use crate::common::*;

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
