//! Calendar quotas in plans and keys' own limits: stored and read back
//! whole, refused with the field named (the rule is
//! `tollgate_core::rules::quotas`, shared with the YAML config; the shared
//! plan table has the edge cases).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both;
use crate::common::*;

async fn quotas_round_trip_in_plans_and_keys(app: TestApp) {
    let quota = json!({"name": "monthly", "quota": 100000, "period": "month", "anchor": "15", "time_zone": "Europe/Paris"});
    let bucket = json!({"name": "second", "rate": 20, "per": "1s"});
    let p = json(
        app.post(
            "/api/plans",
            json!({"name": "billing", "limits": [bucket, quota]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(p["limits"], json!([bucket, quota]));
    let got = json(app.get("/api/plans/billing").await, StatusCode::OK).await;
    assert_eq!(got["limits"], json!([bucket, quota]));

    let weekly = json!({"name": "weekly", "quota": 5, "period": "week", "cost": 2});
    let k = json(
        app.post("/api/keys", json!({"name": "k", "limits": [weekly]}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let id = k["id"].as_i64().expect("id");
    let got = json(app.get(&format!("/api/keys/{id}")).await, StatusCode::OK).await;
    assert_eq!(got["limits"], json!([weekly]));
}
both!(quotas_round_trip_in_plans_and_keys);

async fn hostile_quotas_name_their_field(app: TestApp) {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"name": "m", "quota": 5, "period": "month", "rate": 5}),
            "limits[0].rate",
        ),
        (
            json!({"name": "m", "quota": 5, "period": "month", "per": "1s"}),
            "limits[0].per",
        ),
        (
            json!({"name": "m", "quota": 5, "period": "month", "burst": 5}),
            "limits[0].burst",
        ),
        (json!({"name": "m", "quota": 5}), "limits[0].period"),
        (json!({"name": "m", "period": "month"}), "limits[0].quota"),
        (
            json!({"name": "m", "quota": 5, "period": "aeon"}),
            "limits[0].period",
        ),
        (
            json!({"name": "m", "quota": 5, "period": "month", "anchor": "99"}),
            "limits[0].anchor",
        ),
        (
            json!({"name": "m", "quota": 5, "period": "month", "time_zone": "X/\u{0}"}),
            "limits[0].time_zone",
        ),
        (
            json!({"name": "m", "quota": 5, "period": "month", "time_zone": "A".repeat(100_000)}),
            "limits[0].time_zone",
        ),
        (
            json!({"name": "m", "quota": 5, "period": "month", "cost": 6}),
            "limits[0].cost",
        ),
        (
            json!({"name": "m", "quota": 0, "period": "month"}),
            "limits[0].quota",
        ),
        // A bucket still needs rate and per.
        (json!({"name": "m", "per": "1s"}), "limits[0].rate"),
        (json!({"name": "m", "rate": 1}), "limits[0].per"),
    ];
    for (limit, field) in cases {
        for (path, body) in [
            (
                "/api/plans",
                json!({"name": "p", "limits": [limit.clone()]}),
            ),
            ("/api/keys", json!({"name": "k", "limits": [limit.clone()]})),
        ] {
            let v = problem(
                app.post(path, body).await,
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-error",
            )
            .await;
            assert_eq!(v["field"], field, "{path} {limit}: {v}");
        }
    }
    // Not a string anchor, a negative quota: refused as bodies, never a 500.
    for limit in [
        json!({"name": "m", "quota": -5, "period": "month"}),
        json!({"name": "m", "quota": 5, "period": 7}),
    ] {
        let res = app
            .post("/api/plans", json!({"name": "p", "limits": [limit]}))
            .await;
        assert!(res.status().is_client_error(), "{}", res.status());
    }
}
both!(hostile_quotas_name_their_field);
