//! /api/identities, `identity_id` on keys, and one identity's usage.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both;
use crate::common::*;

async fn create(app: &TestApp, body: Value) -> Value {
    json(app.post("/api/identities", body).await, StatusCode::CREATED).await
}

async fn identities_crud_and_keys(app: TestApp) {
    let acme = create(
        &app,
        json!({
            "external_id": "cus_acme",
            "name": "Acme",
            "metadata": {"tier": "gold"},
            "plan": "pro",
            "limits": [{"name": "monthly", "rate": 1000, "per": "1d", "scope": "identity"}],
        }),
    )
    .await;
    let id = acme["id"].as_i64().expect("id");
    assert_eq!(acme["external_id"], "cus_acme");
    assert_eq!(acme["limits"][0]["scope"], "identity");
    assert_eq!(
        json(
            app.get(&format!("/api/identities/{id}")).await,
            StatusCode::OK
        )
        .await,
        acme
    );
    create(&app, json!({"external_id": "org:beta", "name": "Beta"})).await;
    let page = json(
        app.get("/api/identities?search=ACME&per_page=1").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (page["total"].as_i64(), page["items"][0]["id"].as_i64()),
        (Some(1), Some(id))
    );
    let all = json(
        app.get("/api/identities?per_page=1&page=2").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(all["total"], 2);
    assert_eq!(all["items"][0]["external_id"], "org:beta");

    // Keys join on create or by PATCH, and leave with null.
    let k1 = json(
        app.post("/api/keys", json!({"name": "k1", "identity_id": id}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(k1["identity_id"], id);
    let k2 = json(
        app.post("/api/keys", json!({"name": "k2"})).await,
        StatusCode::CREATED,
    )
    .await;
    let k2_id = k2["id"].as_i64().expect("id");
    let k2 = json(
        app.patch(&format!("/api/keys/{k2_id}"), json!({"identity_id": id}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(k2["identity_id"], id);
    let keys = json(
        app.get(&format!("/api/identities/{id}/keys")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(keys["total"], 2);
    // The keys list's filters hold within the identity, checked the same way.
    let named = json(
        app.get(&format!("/api/identities/{id}/keys?name=k2")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(named["total"], 1, "{named}");
    assert_eq!(
        app.get(&format!("/api/identities/{id}/keys?plan=%C2%84"))
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let filtered = json(
        app.get(&format!("/api/keys?identity_id={id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(filtered["total"], 2);
    let k2 = json(
        app.patch(&format!("/api/keys/{k2_id}"), json!({"identity_id": null}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(k2["identity_id"], Value::Null);

    // Usage per identity (no traffic: zeros, its keys listed only with requests).
    let usage = json(
        app.get(&format!("/api/analytics/identities/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(usage["external_id"], "cus_acme");
    assert_eq!(usage["usage"]["total"], 0);
    assert_eq!(usage["keys"], json!([]));

    // Patch, then delete: its keys stay, detached.
    let up = json(
        app.patch(
            &format!("/api/identities/{id}"),
            json!({"name": "Acme Inc", "plan": null, "limits": null}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (up["name"].as_str(), &up["plan"]),
        (Some("Acme Inc"), &Value::Null)
    );
    let r = app.delete(&format!("/api/identities/{id}")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let k1 = json(
        app.get(&format!("/api/keys/{}", k1["id"])).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(k1["identity_id"], Value::Null);
    problem(
        app.get(&format!("/api/identities/{id}")).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    // Every change is in the audit log.
    let audit = json(app.get("/api/audit?action=identity.").await, StatusCode::OK).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in ["identity.create", "identity.update", "identity.delete"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
}
both!(identities_crud_and_keys);

async fn hostile_identity_inputs_are_4xx(app: TestApp) {
    let ok = create(&app, json!({"external_id": "cus_1", "name": "One"})).await;
    let id = ok["id"].as_i64().expect("id");
    for (body, field) in [
        (json!({"external_id": "", "name": "x"}), "external_id"),
        (json!({"external_id": "a b", "name": "x"}), "external_id"),
        (
            json!({"external_id": "a\r\nX-Evil: 1", "name": "x"}),
            "external_id",
        ),
        (json!({"external_id": "é", "name": "x"}), "external_id"),
        (
            json!({"external_id": "x".repeat(129), "name": "x"}),
            "external_id",
        ),
        (json!({"external_id": "ok", "name": " "}), "name"),
        // Checked as sent (the schema's maxLength), then stored trimmed.
        (
            json!({"external_id": "ok", "name": format!(" {}", "é".repeat(200))}),
            "name",
        ),
        (json!({"external_id": "ok", "name": "a\u{0}b"}), "name"),
        (
            json!({"external_id": "ok", "name": "x", "metadata": [1]}),
            "metadata",
        ),
        (
            json!({"external_id": "ok", "name": "x", "metadata": {"x": "y".repeat(5000)}}),
            "metadata",
        ),
        (
            json!({"external_id": "ok", "name": "x", "plan": "gold"}),
            "plan",
        ),
        (
            json!({"external_id": "ok", "name": "x", "limits": []}),
            "limits",
        ),
    ] {
        invalid(app.post("/api/identities", body.clone()).await, field).await;
    }
    // Huge metadata far past the bound is refused too (the body limit). Just
    // over the 1 MiB limit: what the server has not read yet fits in the
    // socket buffers, so its early 413 is never lost to a reset.
    let huge = json!({"external_id": "ok", "name": "x", "metadata": {"x": "y".repeat(1_100_000)}});
    let r = app.post("/api/identities", huge).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    // A bad scope, an unknown field.
    let r = app
        .post(
            "/api/identities",
            json!({"external_id": "ok", "name": "x",
                   "limits": [{"name": "m", "rate": 1, "per": "1m", "scope": "galaxy"}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .post(
            "/api/identities",
            json!({"external_id": "ok", "name": "x", "nope": 1}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // A taken external id: 409, on create and on patch.
    let other = create(&app, json!({"external_id": "cus_2", "name": "Two"})).await;
    problem(
        app.post(
            "/api/identities",
            json!({"external_id": "cus_1", "name": "Dup"}),
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    problem(
        app.patch(
            &format!("/api/identities/{}", other["id"]),
            json!({"external_id": "cus_1"}),
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    invalid(
        app.patch(
            &format!("/api/identities/{id}"),
            json!({"external_id": null}),
        )
        .await,
        "external_id",
    )
    .await;
    invalid(
        app.patch(&format!("/api/identities/{id}"), json!({"name": null}))
            .await,
        "name",
    )
    .await;
    invalid(
        app.patch(
            &format!("/api/identities/{id}"),
            json!({"name": format!("{} ", "x".repeat(200))}),
        )
        .await,
        "name",
    )
    .await;
    let renamed = json(
        app.patch(
            &format!("/api/identities/{id}"),
            json!({"name": "  Acme  "}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(renamed["name"], "Acme");
    // Unknown identity ids: 422 on keys, 404 on the resource, 400 for junk ids.
    invalid(
        app.post("/api/keys", json!({"name": "k", "identity_id": 999_999}))
            .await,
        "identity_id",
    )
    .await;
    invalid(
        app.post("/api/keys", json!({"name": "k", "identity_id": -1}))
            .await,
        "identity_id",
    )
    .await;
    let k = json(
        app.post("/api/keys", json!({"name": "k"})).await,
        StatusCode::CREATED,
    )
    .await;
    invalid(
        app.patch(
            &format!("/api/keys/{}", k["id"]),
            json!({"identity_id": 999_999}),
        )
        .await,
        "identity_id",
    )
    .await;
    let r = app
        .patch(
            &format!("/api/keys/{}", k["id"]),
            json!({"identity_id": "1"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    for path in [
        "/api/identities/999999",
        "/api/identities/999999/keys",
        "/api/analytics/identities/999999",
    ] {
        problem(app.get(path).await, StatusCode::NOT_FOUND, "not-found").await;
    }
    for path in [
        "/api/identities/abc",
        "/api/identities/0",
        "/api/identities/-1/keys",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    let r = app.get("/api/identities?search=%00").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.get("/api/identities?per_page=100000").await;
    assert!(r.status().is_client_error());
}
both!(hostile_identity_inputs_are_4xx);
