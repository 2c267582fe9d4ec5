//! /api/keys

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::common::*;

async fn create(app: &TestApp, body: Value) -> Value {
    json(app.post("/api/keys", body).await, StatusCode::CREATED).await
}

async fn create_shows_the_key_once(app: TestApp) {
    let res = app
        .post(
            "/api/keys",
            json!({"name": "mobile app", "owner": "team-a", "metadata": {"env": "prod"}, "plan": "free"}),
        )
        .await;
    let location = location(&res);
    let created = json(res, StatusCode::CREATED).await;
    let id = created["id"].as_i64().expect("id");
    assert_eq!(location, format!("/api/keys/{id}"));
    let key = created["key"].as_str().expect("key").to_string();
    assert!(key.starts_with("tg_"));
    tollgate_core::keys::validate(&key).expect("a well-formed key");
    assert!(key.starts_with(created["key_prefix"].as_str().expect("prefix")));
    assert_eq!(created["name"], "mobile app");
    assert_eq!(created["owner"], "team-a");
    assert_eq!(created["metadata"], json!({"env": "prod"}));
    assert_eq!(created["plan"], "free");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["limits"], Value::Null);
    assert!(created.get("key_hash").is_none() && created.get("hash").is_none());

    // Never again: not in GET, not in the list.
    let res = app.get(&location).await;
    let text = res.text().await.expect("body");
    assert!(!text.contains(&key), "GET shows the key");
    let got: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(got["id"], id);
    assert!(got.get("key").is_none());
    let res = app.get("/api/keys").await;
    let text = res.text().await.expect("body");
    assert!(!text.contains(&key), "the list shows the key");
    let hash = hex_of(&tollgate_core::keys::hash(&key));
    assert!(!text.contains(&hash), "the list shows the hash");

    // Only its hash is stored, and it is what the proxy loads.
    let records = app.db.load_key_records().await.expect("records");
    let rec = records.iter().find(|r| r.key.id == id).expect("record");
    assert_eq!(rec.hash, tollgate_core::keys::hash(&key));

    // Own limits instead of a plan; expiry in the future; concurrency.
    let exp = tollgate_core::now_ms() + 3_600_000;
    let k = create(
        &app,
        json!({"name": "custom", "limits": [{"name": "sec", "rate": 5, "per": "1s", "burst": 10, "cost": 2}],
               "concurrency": 3, "expires_at": exp}),
    )
    .await;
    assert_eq!(
        k["limits"],
        json!([{"name": "sec", "rate": 5, "per": "1s", "burst": 10, "cost": 2}])
    );
    assert_eq!(k["concurrency"], 3);
    assert_eq!(k["expires_at"], exp);
    assert_eq!(k["plan"], Value::Null);
    assert_eq!(k["metadata"], json!({}));
}
both!(create_shows_the_key_once);

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn create_validates_every_field(app: TestApp) {
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": 5}), "name"),
        (json!({"name": "x".repeat(201)}), "name"),
        (json!({"name": "k", "owner": "a\u{0007}"}), "owner"),
        (json!({"name": "k", "plan": "gold"}), "plan"),
        (json!({"name": "k", "plan": ""}), "plan"),
        (json!({"name": "k", "metadata": [1, 2]}), "metadata"),
        (json!({"name": "k", "metadata": "x"}), "metadata"),
        (json!({"name": "k", "concurrency": 0}), "concurrency"),
        (json!({"name": "k", "concurrency": -1}), "concurrency"),
        (json!({"name": "k", "expires_at": 1000}), "expires_at"),
        (json!({"name": "k", "expires_at": "tomorrow"}), "expires_at"),
        // Round 13: past the year 9999.
        (json!({"name": "k", "expires_at": i64::MAX}), "expires_at"),
        (
            json!({"name": "k", "expires_at": 253_402_300_800_000_i64}),
            "expires_at",
        ),
        (json!({"name": "k", "limits": []}), "limits"),
        (json!({"name": "k", "limits": {}}), "limits"),
        (
            json!({"name": "k", "limits": [{"name": "a", "rate": 0, "per": "1s"}]}),
            "limits[0].rate",
        ),
        (
            json!({"name": "k", "limits": [{"name": "a", "rate": -5, "per": "1s"}]}),
            "limits[0].rate",
        ),
        (
            json!({"name": "k", "limits": [{"name": "a", "rate": 1.5, "per": "1s"}]}),
            "limits[0].rate",
        ),
        (
            json!({"name": "k", "limits": [{"name": "a", "rate": 1, "per": "soon"}]}),
            "limits[0].per",
        ),
        (
            json!({"name": "k", "limits": [{"name": "a", "rate": 1, "per": "0s"}]}),
            "limits[0].per",
        ),
        (
            json!({"name": "k", "limits": [{"name": "a", "rate": 1}]}),
            "limits[0].per",
        ),
        (
            json!({"name": "k", "limits": [{"name": "", "rate": 1, "per": "1s"}]}),
            "limits[0].name",
        ),
        (
            json!({"name": "k", "limits": [{"name": "a\"b", "rate": 1, "per": "1s"}]}),
            "limits[0].name",
        ),
        (
            json!({"name": "k", "limits": [{"name": "a", "rate": 1, "per": "1s", "burst": 0}]}),
            "limits[0].burst",
        ),
        (
            json!({"name": "k", "limits": [{"name": "a", "rate": 1, "per": "1s", "cost": 0}]}),
            "limits[0].cost",
        ),
        (
            json!({"name": "k", "limits": [{"name": "a", "rate": 1, "per": "1s", "burst": 2, "cost": 3}]}),
            "limits[0].cost",
        ),
        (
            json!({"name": "k", "limits": [{"name": "a", "rate": 1, "per": "1s", "window": 3}]}),
            "limits[0].window",
        ),
        (
            json!({"name": "k", "limits": [{"name": "a", "rate": 1, "per": "1s"}, {"name": "a", "rate": 2, "per": "1m"}]}),
            "limits[1].name",
        ),
        // Mass assignment.
        (json!({"name": "k", "id": 7}), "id"),
        (json!({"name": "k", "key_hash": "00"}), "key_hash"),
        (json!({"name": "k", "created_at": 1}), "created_at"),
        (json!({"name": "k", "key": "tg_x"}), "key"),
        (json!({"name": "k", "enabled": false}), "enabled"),
    ];
    for (body, field) in cases {
        let res = app.post("/api/keys", body.clone()).await;
        let status = res.status();
        let text = res.text().await.expect("body");
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["field"], field, "{body} → {text}");
        assert_eq!(v["type"], "https://tollgate.dev/problems/validation-error");
    }
    // Round 12 (black-box): `credits` is the RateLimit member of a key's
    // credits; the rule YAML plans follow (core's), with its reason.
    for path in ["/api/keys", "/api/plans"] {
        let body = json!({"name": "k", "limits": [{"name": "credits", "rate": 1, "per": "1s"}]});
        let res = app.post(path, body).await;
        let status = res.status();
        let text = res.text().await.expect("body");
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["field"], "limits[0].name", "{text}");
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("\"credits\" is reserved"), "{text}");
    }
    // One full check of the headers on a 422.
    invalid(
        app.post("/api/keys", json!({"name": "k", "plan": "gold"}))
            .await,
        "plan",
    )
    .await;
    // Malformed JSON is 400, a wrong content type 415.
    let r = send(
        app.req(Method::POST, "/api/keys")
            .header("content-type", "application/json")
            .body("{\"name\": "),
    )
    .await;
    problem(r, StatusCode::BAD_REQUEST, "malformed-request").await;
    let r = send(
        app.req(Method::POST, "/api/keys")
            .header("content-type", "text/plain")
            .body("{\"name\": \"x\"}"),
    )
    .await;
    problem(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
    // A body over 1 MiB.
    let big = json!({"name": "k", "metadata": {"x": "a".repeat(1_100_000)}});
    problem(
        app.post("/api/keys", big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
    )
    .await;
    // Nothing was created.
    let page = json(app.get("/api/keys").await, StatusCode::OK).await;
    assert_eq!(page["total"], 0);
}
both!(create_validates_every_field);

async fn plans_from_config_and_api_are_accepted(app: TestApp) {
    create(&app, json!({"name": "a", "plan": "pro"})).await;
    json(
        app.post(
            "/api/plans",
            json!({"name": "partner", "limits": [{"name": "m", "rate": 5, "per": "1m"}]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let k = create(&app, json!({"name": "b", "plan": "partner"})).await;
    assert_eq!(k["plan"], "partner");
}
both!(plans_from_config_and_api_are_accepted);

async fn list_pages_and_filters(app: TestApp) {
    for (name, plan) in [
        ("alpha one", "free"),
        ("beta", "pro"),
        ("Alpha two", "free"),
        ("gamma", "pro"),
        ("delta", "free"),
    ] {
        create(&app, json!({"name": name, "plan": plan})).await;
    }
    let all = json(app.get("/api/keys").await, StatusCode::OK).await;
    assert_eq!(all["total"], 5);
    assert_eq!(all["page"], 1);
    assert_eq!(all["per_page"], 50);
    assert_eq!(all["items"].as_array().expect("items").len(), 5);

    let mut seen = std::collections::HashSet::new();
    for page in 1..=3 {
        let p = json(
            app.get(&format!("/api/keys?page={page}&per_page=2")).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(p["total"], 5);
        assert_eq!(p["page"], page);
        assert_eq!(p["per_page"], 2);
        let items = p["items"].as_array().expect("items");
        assert_eq!(items.len(), if page == 3 { 1 } else { 2 });
        for i in items {
            assert!(
                seen.insert(i["id"].as_i64().expect("id")),
                "a key on two pages"
            );
        }
    }
    let p = json(app.get("/api/keys?page=4&per_page=2").await, StatusCode::OK).await;
    assert_eq!(p["items"].as_array().expect("items").len(), 0);
    assert_eq!(p["total"], 5);

    let p = json(app.get("/api/keys?name=alpha").await, StatusCode::OK).await;
    assert_eq!(p["total"], 2, "case-insensitive substring: {p}");
    let p = json(app.get("/api/keys?plan=pro").await, StatusCode::OK).await;
    assert_eq!(p["total"], 2);
    let names: Vec<&str> = p["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["name"].as_str().expect("name"))
        .collect();
    assert!(names.contains(&"beta") && names.contains(&"gamma"));

    // Disable one and filter by state.
    let id = all["items"][0]["id"].as_i64().expect("id");
    json(
        app.patch(&format!("/api/keys/{id}"), json!({"enabled": false}))
            .await,
        StatusCode::OK,
    )
    .await;
    let p = json(app.get("/api/keys?enabled=false").await, StatusCode::OK).await;
    assert_eq!(p["total"], 1);
    assert_eq!(p["items"][0]["id"], id);
    let p = json(app.get("/api/keys?enabled=true").await, StatusCode::OK).await;
    assert_eq!(p["total"], 4);
    let p = json(app.get("/api/keys?state=disabled").await, StatusCode::OK).await;
    assert_eq!(p["total"], 1);
    let p = json(
        app.get("/api/keys?plan=free&enabled=true&per_page=1").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(p["per_page"], 1);
    assert_eq!(p["items"].as_array().expect("items").len(), 1);

    // Bad parameters name themselves.
    for (q, field) in [
        ("per_page=201", "per_page"),
        ("per_page=0", "per_page"),
        ("per_page=x", "per_page"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("enabled=maybe", "enabled"),
        ("state=gone", "state"),
    ] {
        invalid(app.get(&format!("/api/keys?{q}")).await, field).await;
    }
    let p = json(app.get("/api/keys?per_page=200").await, StatusCode::OK).await;
    assert_eq!(p["per_page"], 200);
}
both!(list_pages_and_filters);

async fn get_and_delete(app: TestApp) {
    let k = create(&app, json!({"name": "short-lived"})).await;
    let path = format!("/api/keys/{}", k["id"]);
    let got = json(app.get(&path).await, StatusCode::OK).await;
    assert_eq!(got["name"], "short-lived");
    let res = app.delete(&path).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    problem(app.get(&path).await, StatusCode::NOT_FOUND, "not-found").await;
    problem(app.delete(&path).await, StatusCode::NOT_FOUND, "not-found").await;
    problem(
        app.get("/api/keys/123456").await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let v = problem(
        app.get("/api/keys/abc").await,
        StatusCode::BAD_REQUEST,
        "malformed-request",
    )
    .await;
    assert_eq!(v["field"], "id");
    problem(
        app.delete("/api/keys/0").await,
        StatusCode::BAD_REQUEST,
        "malformed-request",
    )
    .await;
    problem(
        app.get("/api/keys/99999999999999999999").await,
        StatusCode::BAD_REQUEST,
        "malformed-request",
    )
    .await;
    // The key is gone from what the proxy loads.
    let records = app.db.load_key_records().await.expect("records");
    assert!(records
        .iter()
        .all(|r| r.key.id != k["id"].as_i64().expect("id")));
}
both!(get_and_delete);

/// Round 13: `/api/keys/+1`, `/api/keys/01` and `/api/keys/%31` all were
/// key 1. An id in a path is canonical decimal; any other spelling is the
/// 400 `/api/keys/abc` gets, on every `{id}` route, and changes nothing.
async fn ids_in_paths_are_canonical(app: TestApp) {
    let k = create(&app, json!({"name": "one"})).await;
    let id = k["id"].as_i64().unwrap_or_default().to_string();
    let before = json(app.get(&format!("/api/keys/{id}")).await, StatusCode::OK).await;
    let first = id.chars().next().unwrap_or('1');
    let encoded = format!("%3{first}{}", &id[1..]);
    for spelling in [
        format!("+{id}"),
        format!("0{id}"),
        encoded,
        format!("{id}%20"),
    ] {
        for (method, path) in [
            (Method::GET, format!("/api/keys/{spelling}")),
            (Method::DELETE, format!("/api/keys/{spelling}")),
            (Method::POST, format!("/api/keys/{spelling}/rotate")),
            (Method::POST, format!("/api/keys/{spelling}/quotas/daily")),
            (Method::GET, format!("/api/analytics/keys/{spelling}")),
        ] {
            let res = send(app.req(method.clone(), &path).json(&json!({}))).await;
            let v = problem(res, StatusCode::BAD_REQUEST, "malformed-request").await;
            assert_eq!(v["field"], "id", "{method} {path}: {v}");
        }
    }
    let after = json(app.get(&format!("/api/keys/{id}")).await, StatusCode::OK).await;
    assert_eq!(after, before);
}
both!(ids_in_paths_are_canonical);

async fn patch_changes_and_clears_fields(app: TestApp) {
    let exp = tollgate_core::now_ms() + 86_400_000;
    let k = create(
        &app,
        json!({"name": "k", "owner": "o", "metadata": {"a": 1}, "plan": "free", "concurrency": 2, "expires_at": exp}),
    )
    .await;
    let path = format!("/api/keys/{}", k["id"]);

    let p = json(
        app.patch(&path, json!({"name": "renamed", "enabled": false}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(p["name"], "renamed");
    assert_eq!(p["enabled"], false);
    assert_eq!(p["owner"], "o", "absent fields stay");
    assert_eq!(p["plan"], "free");
    assert_eq!(p["created_at"], k["created_at"]);
    assert_eq!(p["key_prefix"], k["key_prefix"]);

    let p = json(
        app.patch(&path, json!({"plan": "pro", "limits": [{"name": "s", "rate": 3, "per": "1s"}], "metadata": {"b": 2}}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(p["plan"], "pro");
    assert_eq!(p["limits"], json!([{"name": "s", "rate": 3, "per": "1s"}]));
    assert_eq!(p["metadata"], json!({"b": 2}));

    // null clears.
    let p = json(
        app.patch(
            &path,
            json!({"owner": null, "plan": null, "limits": null, "concurrency": null, "expires_at": null, "metadata": null}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    for f in ["owner", "plan", "limits", "concurrency", "expires_at"] {
        assert_eq!(p[f], Value::Null, "{f}");
    }
    assert_eq!(p["metadata"], json!({}));
    assert_eq!(p["name"], "renamed");

    // An empty patch changes nothing.
    let same = json(app.patch(&path, json!({})).await, StatusCode::OK).await;
    assert_eq!(same["name"], "renamed");
    assert_eq!(same["enabled"], false);

    let p = json(
        app.patch(&path, json!({"enabled": true, "expires_at": exp}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(p["enabled"], true);
    assert_eq!(p["expires_at"], exp);
    // The persisted record matches.
    let got = json(app.get(&path).await, StatusCode::OK).await;
    assert_eq!(got, p);
}
both!(patch_changes_and_clears_fields);

async fn patch_refuses_bad_input(app: TestApp) {
    let k = create(&app, json!({"name": "k", "plan": "free"})).await;
    let path = format!("/api/keys/{}", k["id"]);
    for (body, field) in [
        (json!({"plan": "gold"}), "plan"),
        (json!({"name": null}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"enabled": null}), "enabled"),
        (json!({"enabled": "yes"}), "enabled"),
        (json!({"limits": []}), "limits"),
        (
            json!({"limits": [{"name": "a", "rate": 0, "per": "1s"}]}),
            "limits[0].rate",
        ),
        (json!({"metadata": 3}), "metadata"),
        (json!({"concurrency": 0}), "concurrency"),
        (json!({"expires_at": -5}), "expires_at"),
        (json!({"expires_at": i64::MAX}), "expires_at"),
        (json!({"expires_at": 253_402_300_800_000_i64}), "expires_at"),
        (json!({"id": 5}), "id"),
        (json!({"key_hash": "ab"}), "key_hash"),
        (json!({"created_at": 5}), "created_at"),
        (json!({"key_prefix": "tg_x"}), "key_prefix"),
        (json!({"last_used_at": 5}), "last_used_at"),
    ] {
        invalid(app.patch(&path, body).await, field).await;
    }
    let unchanged = json(app.get(&path).await, StatusCode::OK).await;
    assert_eq!(unchanged["plan"], "free");
    assert_eq!(unchanged["id"], k["id"]);
    problem(
        app.patch("/api/keys/424242", json!({"name": "x"})).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    problem(
        app.patch("/api/keys/x", json!({"name": "x"})).await,
        StatusCode::BAD_REQUEST,
        "malformed-request",
    )
    .await;
}
both!(patch_refuses_bad_input);

async fn rotate_issues_a_new_secret(app: TestApp) {
    let k = create(&app, json!({"name": "rot"})).await;
    let id = k["id"].as_i64().expect("id");
    let old = k["key"].as_str().expect("key").to_string();
    let path = format!("/api/keys/{id}/rotate");

    // No body: no grace period.
    let res = send(app.req(Method::POST, &path)).await;
    let r = json(res, StatusCode::OK).await;
    assert_eq!(r["id"], id);
    let new = r["key"].as_str().expect("key").to_string();
    assert_ne!(new, old);
    tollgate_core::keys::validate(&new).expect("well-formed");
    assert!(new.starts_with(r["key_prefix"].as_str().expect("prefix")));
    let rec = app
        .db
        .load_key_records()
        .await
        .expect("records")
        .into_iter()
        .find(|r| r.key.id == id)
        .expect("record");
    assert_eq!(rec.hash, tollgate_core::keys::hash(&new));
    let now = tollgate_core::now_ms();
    assert!(
        rec.previous.is_none_or(|(_, until)| until <= now),
        "without grace the old secret is not valid"
    );

    // With a grace period the previous secret stays valid until then.
    let r = json(
        app.post(&path, json!({"grace_seconds": 60})).await,
        StatusCode::OK,
    )
    .await;
    let newer = r["key"].as_str().expect("key").to_string();
    assert_ne!(newer, new);
    let rec = app
        .db
        .load_key_records()
        .await
        .expect("records")
        .into_iter()
        .find(|r| r.key.id == id)
        .expect("record");
    assert_eq!(rec.hash, tollgate_core::keys::hash(&newer));
    let (prev, until) = rec.previous.expect("previous secret during grace");
    assert_eq!(prev, tollgate_core::keys::hash(&new));
    let now = tollgate_core::now_ms();
    assert!(
        until > now + 50_000 && until <= now + 61_000,
        "{until} vs {now}"
    );

    // `{}` works too.
    json(app.post(&path, json!({})).await, StatusCode::OK).await;

    invalid(
        app.post(&path, json!({"grace_seconds": -1})).await,
        "grace_seconds",
    )
    .await;
    invalid(
        app.post(&path, json!({"grace_seconds": 2_592_001})).await,
        "grace_seconds",
    )
    .await;
    invalid(app.post(&path, json!({"grace": 5})).await, "grace").await;
    problem(
        app.post("/api/keys/777777/rotate", json!({})).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    // The rotated key is never shown again.
    let text = app
        .get(&format!("/api/keys/{id}"))
        .await
        .text()
        .await
        .expect("body");
    assert!(!text.contains(&newer));
}
both!(rotate_issues_a_new_secret);

/// Issue #21: scopes and allowed_ips are stored normalised, changed and
/// cleared by PATCH, and hostile values are 422 naming the field.
async fn scopes_and_allowed_ips(app: TestApp) {
    let k = create(
        &app,
        json!({"name": "scoped", "scopes": {"routes": ["users", "bill*", "users"], "methods": ["get", "HEAD"]},
               "allowed_ips": ["10.1.2.3/8", "2001:db8::1"]}),
    )
    .await;
    assert_eq!(
        k["scopes"],
        json!({"routes": ["users", "bill*"], "methods": ["GET", "HEAD"]})
    );
    assert_eq!(k["allowed_ips"], json!(["10.0.0.0/8", "2001:db8::1/128"]));
    let path = format!("/api/keys/{}", k["id"]);
    let up = json(
        app.patch(&path, json!({"scopes": {"methods": ["post"]}}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(up["scopes"], json!({"methods": ["POST"]}));
    assert_eq!(up["allowed_ips"], k["allowed_ips"]);
    let cleared = json(
        app.patch(&path, json!({"scopes": null, "allowed_ips": null}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (&cleared["scopes"], &cleared["allowed_ips"]),
        (&Value::Null, &Value::Null)
    );

    let huge_ips: Vec<String> = (0..257)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
        .collect();
    let many_routes: Vec<String> = (0..65).map(|i| format!("r{i}")).collect();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"allowed_ips": ["10.0.0.0/33"]}), "allowed_ips[0]"),
        (
            json!({"allowed_ips": ["nope", "10.0.0.1"]}),
            "allowed_ips[0]",
        ),
        (
            json!({"allowed_ips": ["10.0.0.1", "1.2.3.4/-1"]}),
            "allowed_ips[1]",
        ),
        (json!({"allowed_ips": []}), "allowed_ips"),
        (json!({"allowed_ips": huge_ips}), "allowed_ips"),
        (json!({"allowed_ips": "10.0.0.0/8"}), "allowed_ips"),
        (json!({"scopes": {"routes": ["**"]}}), "scopes.routes[0]"),
        (
            json!({"scopes": {"routes": ["a*b*c*d*e*f"]}}),
            "scopes.routes[0]",
        ),
        (
            json!({"scopes": {"routes": ["x".repeat(129)]}}),
            "scopes.routes[0]",
        ),
        (json!({"scopes": {"routes": [""]}}), "scopes.routes[0]"),
        (json!({"scopes": {"routes": []}}), "scopes.routes"),
        (json!({"scopes": {"routes": many_routes}}), "scopes.routes"),
        (
            json!({"scopes": {"methods": ["GE T"]}}),
            "scopes.methods[0]",
        ),
        (
            json!({"scopes": {"methods": ["GET\r\nX-Evil: 1"]}}),
            "scopes.methods[0]",
        ),
        (
            json!({"scopes": {"methods": ["G".repeat(33)]}}),
            "scopes.methods[0]",
        ),
        (json!({"scopes": {"verbs": ["GET"]}}), "scopes.verbs"),
        (json!({"scopes": "users"}), "scopes"),
    ];
    for (body, field) in &cases {
        let mut create_body = body.clone();
        create_body["name"] = json!("k");
        invalid(app.post("/api/keys", create_body).await, field).await;
        invalid(app.patch(&path, body.clone()).await, field).await;
    }
}
both!(scopes_and_allowed_ips);

/// Black-box round 10: an IPv4-mapped network in `allowed_ips` was stored as
/// sent (`::ffff:127.0.0.1/128`) and refused the key from 127.0.0.1; it is
/// the IPv4 network, as a route's `ip_deny` already read a mapped address.
async fn ipv4_mapped_allowed_ips_are_stored_as_ipv4(app: TestApp) {
    let k = create(
        &app,
        json!({"name": "m", "allowed_ips": ["::ffff:127.0.0.1/128", "::ffff:10.1.2.3/104", "127.0.0.1"]}),
    )
    .await;
    assert_eq!(k["allowed_ips"], json!(["127.0.0.1/32", "10.0.0.0/8"]));
    let path = format!("/api/keys/{}", k["id"]);
    let up = json(
        app.patch(&path, json!({"allowed_ips": ["::ffff:192.0.2.7"]}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(up["allowed_ips"], json!(["192.0.2.7/32"]));
}
both!(ipv4_mapped_allowed_ips_are_stored_as_ipv4);
