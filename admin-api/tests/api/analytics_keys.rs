//! /api/analytics per key: one key's usage with the limits that apply to
//! it, and the usage of several keys in one call, exact numbers on both
//! databases over the rows of `analytics_fixture.rs`.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::analytics_fixture::{fixture, get_ok, MIN, T0};
use crate::both;
use crate::common::*;

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
