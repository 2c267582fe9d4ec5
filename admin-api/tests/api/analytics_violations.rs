//! /api/analytics/violations: refusals listed newest first and paged, and
//! keyless refusals (401 and 403 without a key) listed as counts, exact on
//! both databases.

use serde_json::{json, Value};
use tollgate_core::db::usage::NewViolation;

use crate::analytics_fixture::{fixture, get_ok, MIN, T0};
use crate::both;
use crate::common::*;

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
