//! /api/plans

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both;
use crate::common::*;

fn find<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()
        .expect("array")
        .iter()
        .find(|p| p["name"] == name)
}

async fn config_plans_are_listed_read_only(app: TestApp) {
    let list = json(app.get("/api/plans").await, StatusCode::OK).await;
    let free = find(&list, "free").expect("free");
    assert_eq!(free["source"], "config");
    assert_eq!(free["read_only"], true);
    assert_eq!(
        free["limits"],
        json!([{"name": "minute", "rate": 60, "per": "1m", "burst": 10}])
    );
    let pro = find(&list, "pro").expect("pro");
    assert_eq!(pro["limits"].as_array().expect("limits").len(), 2);
    assert_eq!(pro["limits"][1]["per"], "1d");
    let got = json(app.get("/api/plans/free").await, StatusCode::OK).await;
    assert_eq!(&got, free);

    let body = json!({"limits": [{"name": "m", "rate": 1, "per": "1m"}]});
    problem(
        app.patch("/api/plans/free", body).await,
        StatusCode::CONFLICT,
        "read-only",
    )
    .await;
    problem(
        app.delete("/api/plans/pro").await,
        StatusCode::CONFLICT,
        "read-only",
    )
    .await;
    let v = problem(
        app.post(
            "/api/plans",
            json!({"name": "free", "limits": [{"name": "m", "rate": 1, "per": "1m"}]}),
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert!(v["detail"].as_str().expect("detail").contains("config"));
    problem(
        app.get("/api/plans/nope").await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
}
both!(config_plans_are_listed_read_only);

async fn api_plans_crud(app: TestApp) {
    let res = app
        .post(
            "/api/plans",
            json!({"name": "partner", "limits": [{"name": "sec", "rate": 20, "per": "1s", "burst": 40}], "concurrency": 4}),
        )
        .await;
    assert_eq!(
        res.headers().get("location").expect("Location"),
        "/api/plans/partner"
    );
    let p = json(res, StatusCode::CREATED).await;
    assert_eq!(p["name"], "partner");
    assert_eq!(p["source"], "api");
    assert_eq!(p["read_only"], false);
    assert_eq!(p["concurrency"], 4);
    assert_eq!(
        p["limits"],
        json!([{"name": "sec", "rate": 20, "per": "1s", "burst": 40}])
    );
    assert!(p["created_at"].as_i64().expect("created_at") > 0);

    let list = json(app.get("/api/plans").await, StatusCode::OK).await;
    assert_eq!(find(&list, "partner").expect("listed")["source"], "api");
    assert_eq!(
        json(app.get("/api/plans/partner").await, StatusCode::OK).await,
        p
    );

    // Duplicate name.
    let dup = json!({"name": "partner", "limits": [{"name": "m", "rate": 1, "per": "1m"}]});
    problem(
        app.post("/api/plans", dup).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;

    // Edit limits, then clear concurrency.
    let e = json(
        app.patch(
            "/api/plans/partner",
            json!({"limits": [{"name": "min", "rate": 100, "per": "1m"}]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        e["limits"],
        json!([{"name": "min", "rate": 100, "per": "1m"}])
    );
    assert_eq!(e["concurrency"], 4);
    let e = json(
        app.patch("/api/plans/partner", json!({"concurrency": null}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(e["concurrency"], Value::Null);
    assert_eq!(e["limits"][0]["name"], "min");
    assert_eq!(
        json(app.get("/api/plans/partner").await, StatusCode::OK).await["limits"][0]["rate"],
        100
    );

    // Bad edits.
    invalid(
        app.patch("/api/plans/partner", json!({"name": "other"}))
            .await,
        "name",
    )
    .await;
    // At most 16 limits (a plan may have none: see yaml_plans_and_api_plans_agree).
    let seventeen: Vec<Value> = (0..17)
        .map(|i| json!({"name": format!("l{i}"), "rate": 1, "per": "1s"}))
        .collect();
    invalid(
        app.patch("/api/plans/partner", json!({"limits": seventeen}))
            .await,
        "limits",
    )
    .await;
    invalid(
        app.patch(
            "/api/plans/partner",
            json!({"limits": [{"name": "x", "rate": 1, "per": "1w"}]}),
        )
        .await,
        "limits[0].per",
    )
    .await;
    // Round 7: null is not "leave it" for limits (it cannot be cleared;
    // `[]` is no limits), and the plan keeps them.
    let v = invalid(
        app.patch("/api/plans/partner", json!({"limits": null}))
            .await,
        "limits",
    )
    .await;
    assert_eq!(v["detail"], "limits: cannot be null", "{v}");
    assert_eq!(
        json(app.get("/api/plans/partner").await, StatusCode::OK).await["limits"][0]["rate"],
        100
    );
    invalid(
        app.patch("/api/plans/partner", json!({"concurrency": 0}))
            .await,
        "concurrency",
    )
    .await;
    problem(
        app.patch("/api/plans/ghost", json!({"concurrency": 2}))
            .await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;

    // In use by a key: 409; once the key is gone: 204.
    let k = json(
        app.post("/api/keys", json!({"name": "k", "plan": "partner"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let v = problem(
        app.delete("/api/plans/partner").await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert!(v["detail"].is_string());
    assert_eq!(
        app.delete(&format!("/api/keys/{}", k["id"])).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete("/api/plans/partner").await.status(),
        StatusCode::NO_CONTENT
    );
    problem(
        app.get("/api/plans/partner").await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    problem(
        app.delete("/api/plans/partner").await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let list = json(app.get("/api/plans").await, StatusCode::OK).await;
    assert!(find(&list, "partner").is_none());
    // A key can no longer name it.
    invalid(
        app.post("/api/keys", json!({"name": "k2", "plan": "partner"}))
            .await,
        "plan",
    )
    .await;
}
both!(api_plans_crud);

async fn create_plan_validates(app: TestApp) {
    for (body, field) in [
        (
            json!({"limits": [{"name": "m", "rate": 1, "per": "1m"}]}),
            "name",
        ),
        (
            json!({"name": "", "limits": [{"name": "m", "rate": 1, "per": "1m"}]}),
            "name",
        ),
        (
            json!({"name": "a b", "limits": [{"name": "m", "rate": 1, "per": "1m"}]}),
            "name",
        ),
        (json!({"name": "p"}), "limits"),
        (
            json!({"name": "p", "limits": [{"name": "m", "rate": 1_000_000_001u64, "per": "1s"}]}),
            "limits[0].rate",
        ),
        (
            json!({"name": "p", "limits": [{"name": "m", "rate": 0, "per": "1m"}]}),
            "limits[0].rate",
        ),
        (
            json!({"name": "p", "limits": [{"name": "m", "rate": 1, "per": "1m", "burst": 0}]}),
            "limits[0].burst",
        ),
        (
            json!({"name": "p", "limits": [{"name": "m", "rate": 1, "per": "1m", "cost": 0}]}),
            "limits[0].cost",
        ),
        // Round 10 (black-box): a burst (or a cost up to it) the limiter
        // would clamp is refused, not silently cut (remaining 2^50 × 1000
        // against a limit of 1e9).
        (
            json!({"name": "p", "limits": [{"name": "m", "rate": 1_000_000_000u64, "per": "1s", "burst": i64::MAX}]}),
            "limits[0].burst",
        ),
        (
            json!({"name": "p", "limits": [{"name": "m", "rate": 1_000_000_000u64, "per": "1s", "burst": i64::MAX, "cost": i64::MAX}]}),
            "limits[0].burst",
        ),
        (
            json!({"name": "p", "limits": [{"name": "", "rate": 1, "per": "1m"}]}),
            "limits[0].name",
        ),
        (
            json!({"name": "p", "limits": [{"name": "m", "rate": 1, "per": "1m"}], "concurrency": 0}),
            "concurrency",
        ),
        (
            json!({"name": "p", "limits": [{"name": "m", "rate": 1, "per": "1m"}], "source": "config"}),
            "source",
        ),
        (
            json!({"name": "p", "limits": [{"name": "m", "rate": 1, "per": "1m"}], "created_at": 3}),
            "created_at",
        ),
    ] {
        invalid(app.post("/api/plans", body).await, field).await;
    }
    let list = json(app.get("/api/plans").await, StatusCode::OK).await;
    assert_eq!(
        list.as_array().expect("array").len(),
        2,
        "only the config plans: {list}"
    );
}
both!(create_plan_validates);

/// The admin API accepts exactly the plans the YAML config accepts: the
/// shared table of edge cases (`tollgate_core::rules::cases`), which core's
/// tests run through the YAML validation.
async fn yaml_plans_and_api_plans_agree(app: TestApp) {
    let mut wrong = Vec::new();
    for c in tollgate_core::rules::cases::plan_cases() {
        let yaml_ok =
            tollgate_core::config::parse(&tollgate_core::rules::cases::as_yaml(&c), "c.yaml")
                .is_ok();
        let res = app.post("/api/plans", c.plan.clone()).await;
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        let api_ok = status == StatusCode::CREATED;
        if !api_ok && status != StatusCode::UNPROCESSABLE_ENTITY {
            wrong.push(format!("{}: status {status}: {body}", c.what));
        }
        if api_ok != c.valid || yaml_ok != c.valid {
            wrong.push(format!(
                "{}: expected valid={}, API {status} {body}, YAML valid={yaml_ok}",
                c.what, c.valid
            ));
        }
        if api_ok {
            // Stored whole (`per` reads back normalised: 8784h is 366d).
            let name = c.plan["name"].as_str().expect("name");
            let got = json(app.get(&format!("/api/plans/{name}")).await, StatusCode::OK).await;
            let names = |v: &Value| -> Vec<Value> {
                v.as_array()
                    .expect("limits")
                    .iter()
                    .map(|l| l["name"].clone())
                    .collect()
            };
            assert_eq!(
                names(&got["limits"]),
                names(&c.plan["limits"]),
                "{}",
                c.what
            );
            assert_eq!(got["concurrency"], c.plan["concurrency"], "{}", c.what);
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
both!(yaml_plans_and_api_plans_agree);
