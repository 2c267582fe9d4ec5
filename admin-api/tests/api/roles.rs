//! Roles: `viewer` reads, `admin` changes keys and plans, `owner` manages
//! admins. Enforced on every handler (403 `insufficient-role`) and stated per
//! operation in the OpenAPI document; the last owner stays.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::common::*;

async fn the_first_admin_is_an_owner(app: TestApp) {
    let me = json(app.get("/api/admins/me").await, StatusCode::OK).await;
    assert_eq!(me["username"], "admin");
    assert_eq!(me["role"], "owner");
    let login = json(app.login("admin", ADMIN_PASSWORD).await, StatusCode::OK).await;
    assert_eq!(login["admin"]["role"], "owner");
    // A new admin defaults to `admin`.
    let body = json(
        app.post(
            "/api/admins",
            json!({"username": "dora", "password": OTHER_PASSWORD}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(body["role"], "admin");
    invalid(
        app.post(
            "/api/admins",
            json!({"username": "eve", "password": OTHER_PASSWORD, "role": "root"}),
        )
        .await,
        "role",
    )
    .await;
}
both!(the_first_admin_is_an_owner);

async fn a_viewer_reads_but_changes_nothing(app: TestApp) {
    let key = json(
        app.post("/api/keys", json!({"name": "k"})).await,
        StatusCode::CREATED,
    )
    .await;
    let id = key["id"].as_i64().expect("id");
    let (_, viewer) = app.admin_with_role("victor", "viewer").await;
    for path in [
        "/api/keys".to_string(),
        format!("/api/keys/{id}"),
        "/api/plans".into(),
        "/api/analytics/summary".into(),
        "/api/admins/me".into(),
    ] {
        let res = send(app.with(&viewer, Method::GET, &path)).await;
        assert_eq!(res.status(), StatusCode::OK, "GET {path}");
    }
    let health = send(app.with(&viewer, Method::GET, "/api/health")).await;
    let health: Value = health.json().await.expect("json");
    assert!(
        health["database"].is_object(),
        "details for a viewer: {health}"
    );
    for (method, path, body) in [
        (Method::POST, "/api/keys".to_string(), json!({"name": "x"})),
        (
            Method::PATCH,
            format!("/api/keys/{id}"),
            json!({"enabled": false}),
        ),
        (Method::DELETE, format!("/api/keys/{id}"), Value::Null),
        (Method::POST, format!("/api/keys/{id}/rotate"), Value::Null),
        (
            Method::POST,
            "/api/plans".into(),
            json!({"name": "p", "limits": [{"name": "s", "rate": 1, "per": "1s"}]}),
        ),
        (Method::GET, "/api/admins".into(), Value::Null),
        (
            Method::POST,
            "/api/admins".into(),
            json!({"username": "x", "password": OTHER_PASSWORD}),
        ),
        (Method::GET, "/api/audit".into(), Value::Null),
    ] {
        let mut req = app.with(&viewer, method.clone(), &path);
        if !body.is_null() {
            req = req.json(&body);
        }
        let v = problem(
            req.send().await.expect("request"),
            StatusCode::FORBIDDEN,
            "insufficient-role",
        )
        .await;
        assert!(
            v["detail"]
                .as_str()
                .unwrap_or("")
                .contains("victor is viewer"),
            "{method} {path}: {v}"
        );
    }
    // Nothing changed.
    let k = json(app.get(&format!("/api/keys/{id}")).await, StatusCode::OK).await;
    assert_eq!(k["enabled"], true);
    let (_, total) = app
        .db
        .list_keys(&tollgate_core::db::KeyFilter::default())
        .await
        .expect("keys");
    assert_eq!(total, 1);
}
both!(a_viewer_reads_but_changes_nothing);

async fn an_admin_manages_keys_but_not_admins(app: TestApp) {
    let (_, admin) = app.admin_with_role("ada", "admin").await;
    let res = send(
        app.with(&admin, Method::POST, "/api/keys")
            .json(&json!({"name": "by-ada"})),
    )
    .await;
    json(res, StatusCode::CREATED).await;
    let res = send(app.with(&admin, Method::GET, "/api/audit")).await;
    json(res, StatusCode::OK).await;
    for (method, path) in [
        (Method::GET, "/api/admins"),
        (Method::GET, "/api/admins/1"),
        (Method::PATCH, "/api/admins/1"),
        (Method::DELETE, "/api/admins/1"),
    ] {
        let res = send(
            app.with(&admin, method.clone(), path)
                .json(&json!({"role": "viewer"})),
        )
        .await;
        problem(res, StatusCode::FORBIDDEN, "insufficient-role").await;
    }
}
both!(an_admin_manages_keys_but_not_admins);

async fn the_last_owner_cannot_be_removed_or_demoted(app: TestApp) {
    let me = json(app.get("/api/admins/me").await, StatusCode::OK).await;
    let owner = me["id"].as_i64().expect("id");
    problem(
        app.patch(&format!("/api/admins/{owner}"), json!({"role": "admin"}))
            .await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    problem(
        app.delete(&format!("/api/admins/{owner}")).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    // With a second owner, the first may step down; then the second is the
    // last one.
    let (second, second_token) = app.admin_with_role("olga", "owner").await;
    let res = send(
        app.with(
            &second_token,
            Method::PATCH,
            &format!("/api/admins/{owner}"),
        )
        .json(&json!({"role": "viewer"})),
    )
    .await;
    let v = json(res, StatusCode::OK).await;
    assert_eq!(v["role"], "viewer");
    // The demotion ended the old owner's sessions at once.
    problem(
        app.get("/api/admins/me").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let res = send(app.with(
        &second_token,
        Method::DELETE,
        &format!("/api/admins/{second}"),
    ))
    .await;
    problem(res, StatusCode::CONFLICT, "conflict").await;
    let owners = app
        .db
        .list_admins()
        .await
        .expect("admins")
        .into_iter()
        .filter(|a| a.role == tollgate_core::db::admins::Role::Owner)
        .count();
    assert_eq!(owners, 1);
}
both!(the_last_owner_cannot_be_removed_or_demoted);

/// Two owners demoting each other at the same moment: one stays.
async fn concurrent_demotions_leave_an_owner(app: TestApp) {
    let me = json(app.get("/api/admins/me").await, StatusCode::OK).await;
    let first = me["id"].as_i64().expect("id");
    let (second, second_token) = app.admin_with_role("olga", "owner").await;
    let a = app
        .req(Method::PATCH, &format!("/api/admins/{second}"))
        .json(&json!({"role": "viewer"}))
        .send();
    let b = app
        .with(
            &second_token,
            Method::PATCH,
            &format!("/api/admins/{first}"),
        )
        .json(&json!({"role": "viewer"}))
        .send();
    let (a, b) = tokio::join!(a, b);
    let codes = [a.expect("a").status(), b.expect("b").status()];
    assert!(codes.contains(&StatusCode::OK), "{codes:?}");
    let owners = app
        .db
        .list_admins()
        .await
        .expect("admins")
        .into_iter()
        .filter(|a| a.role == tollgate_core::db::admins::Role::Owner)
        .count();
    assert_eq!(owners, 1, "{codes:?}");
}
both!(concurrent_demotions_leave_an_owner);

async fn usernames_are_unique_regardless_of_case(app: TestApp) {
    app.admin_with_role("Alice", "viewer").await;
    for name in ["alice", "ALICE", "aLiCe"] {
        problem(
            app.post(
                "/api/admins",
                json!({"username": name, "password": OTHER_PASSWORD}),
            )
            .await,
            StatusCode::CONFLICT,
            "conflict",
        )
        .await;
    }
    // The database refuses it too (two requests racing past the check).
    assert!(matches!(
        app.db.create_admin("ALICE", "h").await,
        Err(tollgate_core::db::DbError::Conflict(_))
    ));
    // Login ignores the case of the name.
    let v = json(app.login("ALICE", OTHER_PASSWORD).await, StatusCode::OK).await;
    assert_eq!(v["admin"]["username"], "Alice");
}
both!(usernames_are_unique_regardless_of_case);

/// Every operation of the OpenAPI document states the role it needs, and
/// the API enforces exactly that: a lower role gets 403, the role itself
/// does not.
async fn openapi_roles_are_what_is_enforced(app: TestApp) {
    let doc = json(
        app.anon(Method::GET, "/api/openapi.json")
            .send()
            .await
            .expect("doc"),
        StatusCode::OK,
    )
    .await;
    let (_, viewer) = app.admin_with_role("vic", "viewer").await;
    let (_, admin) = app.admin_with_role("ada", "admin").await;
    let rank = |r: &str| match r {
        "viewer" => 0,
        "admin" => 1,
        "owner" => 2,
        other => panic!("unknown role {other}"),
    };
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("ops") {
            let security = op["security"].as_array().cloned().unwrap_or_default();
            let roles: Vec<&str> = security
                .iter()
                .filter_map(|s| s["bearer"].as_array())
                .flat_map(|r| r.iter().filter_map(Value::as_str))
                .collect();
            let public = security
                .iter()
                .any(|s| s.as_object().is_some_and(|m| m.is_empty()));
            if roles.is_empty() {
                assert!(public, "{method} {path} names no role and is not public");
                continue;
            }
            assert_eq!(roles.len(), 1, "{method} {path}: {roles:?}");
            let needed = rank(roles[0]);
            // These end the caller's session; auth tests cover them.
            if path.ends_with("/logout") || path.ends_with("/me/password") {
                continue;
            }
            let url = path.replace("{id}", "999999").replace("{name}", "nope");
            let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
            for (token, have) in [(&viewer, 0), (&admin, 1)] {
                let res = send(app.with(token, m.clone(), &url).json(&json!({}))).await;
                let status = res.status();
                if have < needed {
                    problem(res, StatusCode::FORBIDDEN, "insufficient-role").await;
                } else {
                    assert!(
                        status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                        "{method} {path} as rank {have}: {status}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 30, "{checked}");
}
both!(openapi_roles_are_what_is_enforced);
