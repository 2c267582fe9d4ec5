//! /api/openapi.json, fallbacks, bootstrap.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tollgate_admin_api::{bootstrap, bootstrap_with_db};

use crate::both;
use crate::common::*;

/// Every route the admin API serves, as (method, OpenAPI path).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/auth/login"),
    ("post", "/api/auth/logout"),
    ("get", "/api/admins"),
    ("post", "/api/admins"),
    ("get", "/api/admins/me"),
    ("post", "/api/admins/me/password"),
    ("get", "/api/admins/{id}"),
    ("patch", "/api/admins/{id}"),
    ("delete", "/api/admins/{id}"),
    ("get", "/api/audit"),
    ("get", "/api/keys"),
    ("post", "/api/keys"),
    ("get", "/api/keys/{id}"),
    ("patch", "/api/keys/{id}"),
    ("delete", "/api/keys/{id}"),
    ("post", "/api/keys/{id}/rotate"),
    ("get", "/api/identities"),
    ("post", "/api/identities"),
    ("get", "/api/identities/{id}"),
    ("patch", "/api/identities/{id}"),
    ("delete", "/api/identities/{id}"),
    ("get", "/api/identities/{id}/keys"),
    ("get", "/api/analytics/identities/{id}"),
    ("post", "/api/keys/{id}/credits"),
    ("post", "/api/identities/{id}/credits"),
    ("put", "/api/keys/{id}/credits/refill"),
    ("delete", "/api/keys/{id}/credits/refill"),
    ("put", "/api/identities/{id}/credits/refill"),
    ("delete", "/api/identities/{id}/credits/refill"),
    ("post", "/api/keys/{id}/quotas/{name}"),
    ("post", "/api/identities/{id}/quotas/{name}"),
    ("get", "/api/keys/{id}/quotas"),
    ("get", "/api/identities/{id}/quotas"),
    ("get", "/api/plans"),
    ("post", "/api/plans"),
    ("get", "/api/plans/{name}"),
    ("patch", "/api/plans/{name}"),
    ("delete", "/api/plans/{name}"),
    ("get", "/api/service-tokens"),
    ("post", "/api/service-tokens"),
    ("delete", "/api/service-tokens/{id}"),
    ("get", "/api/analytics/summary"),
    ("get", "/api/analytics/timeseries"),
    ("get", "/api/analytics/keys"),
    ("get", "/api/analytics/keys/{id}"),
    ("get", "/api/analytics/top-keys"),
    ("get", "/api/analytics/violations"),
    ("get", "/api/usage/export"),
    ("get", "/api/webhooks"),
    ("post", "/api/webhooks"),
    ("get", "/api/webhooks/{id}"),
    ("patch", "/api/webhooks/{id}"),
    ("delete", "/api/webhooks/{id}"),
    ("get", "/api/webhooks/{id}/deliveries"),
    ("post", "/api/webhooks/{id}/test"),
    ("get", "/api/health"),
    ("get", "/api/openapi.json"),
];

const PUBLIC: &[&str] = &["/api/auth/login", "/api/health", "/api/openapi.json"];

async fn openapi_document_covers_every_route(app: TestApp) {
    let doc = json(
        send(app.anon(Method::GET, "/api/openapi.json")).await,
        StatusCode::OK,
    )
    .await;
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1."), "{version}");
    assert!(doc["info"]["title"].is_string());

    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            documented.insert((method.clone(), path.clone()));
            // Every operation documents its errors as problem+json.
            let responses = op["responses"].as_object().expect("responses");
            for (code, r) in responses {
                if code.starts_with('4') || (code.starts_with('5') && path != "/api/health") {
                    let schema = &r["content"]["application/problem+json"]["schema"];
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/Problem",
                        "{method} {path} {code} is not problem+json"
                    );
                }
            }
            if path == "/api/health" {
                // A summary without a token, the details with one.
                assert_eq!(
                    op["security"],
                    json!([{}, {"bearer": ["viewer"]}]),
                    "{method} {path}"
                );
            } else if PUBLIC.contains(&path.as_str()) {
                assert_eq!(
                    op["security"],
                    json!([{}]),
                    "{method} {path} needs no token"
                );
            } else {
                assert!(
                    responses.contains_key("401"),
                    "{method} {path} documents 401"
                );
                // More than one Authorization header.
                assert!(
                    responses.contains_key("400"),
                    "{method} {path} documents 400"
                );
            }
            if op.get("requestBody").is_some() {
                assert!(
                    responses.contains_key("415"),
                    "{method} {path} documents 415 (a body that is not plain JSON)"
                );
            }
        }
    }
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);
    assert_eq!(doc["security"], json!([{"bearer": ["viewer"]}]));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    // Every referenced schema is defined.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "Problem",
        "KeyView",
        "KeyWithSecret",
        "KeyPage",
        "CreateKey",
        "PatchKeyRequest",
        "LimitBody",
        "PlanView",
        "CreatePlan",
        "PatchPlan",
        "AdminView",
        "CreateAdmin",
        "LoginRequest",
        "LoginResponse",
        "HealthReport",
        "RotateKey",
        "ServiceTokenView",
        "ServiceTokenWithSecret",
        "CreateServiceToken",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    // PATCH fields that cannot be cleared are not nullable (null is a 422
    // naming them, round 7); the ones null clears are.
    let property = |schema: &str, field: &str| {
        let p = &schemas[schema]["properties"][field];
        assert!(p.is_object(), "{schema}.{field} is documented");
        let text = p.to_string();
        text.contains("\"null\"") || text.contains("\"nullable\":true")
    };
    for (schema, field) in [
        ("PatchWebhook", "url"),
        ("PatchWebhook", "events"),
        ("PatchWebhook", "enabled"),
        ("PatchPlan", "limits"),
        ("PatchKeyRequest", "name"),
        ("PatchKeyRequest", "enabled"),
        ("PatchIdentity", "external_id"),
        ("PatchIdentity", "name"),
    ] {
        assert!(!property(schema, field), "{schema}.{field} is not nullable");
    }
    for (schema, field) in [
        ("PatchWebhook", "description"),
        ("PatchPlan", "concurrency"),
        ("PatchKeyRequest", "owner"),
    ] {
        assert!(property(schema, field), "{schema}.{field} is nullable");
    }
    let text = doc.to_string();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("#/components/schemas/") {
        let tail = &rest[i + "#/components/schemas/".len()..];
        let name: String = tail.chars().take_while(|c| *c != '"').collect();
        assert!(schemas.contains_key(&name), "dangling $ref {name}");
        rest = tail;
    }

    // Every documented route is really served (never the catch-all 404).
    for (method, path) in ROUTES {
        let concrete = path.replace("{id}", "1").replace("{name}", "free");
        let res = send(
            app.req(method.to_uppercase().parse().expect("method"), &concrete)
                .json(&json!({})),
        )
        .await;
        let status = res.status();
        let body = res.text().await.expect("body");
        assert!(
            !(status == StatusCode::NOT_FOUND && body.contains("no such endpoint"))
                && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is not served: {status} {body}"
        );
    }
}
both!(openapi_document_covers_every_route);

async fn unknown_routes_and_methods_are_problems(app: TestApp) {
    problem(
        app.get("/api/nothing-here").await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    problem(
        send(app.anon(Method::GET, "/api")).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    problem(
        send(app.req(Method::PUT, "/api/keys")).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
    )
    .await;
    problem(
        send(app.anon(Method::GET, "/api/auth/login")).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
    )
    .await;
}
both!(unknown_routes_and_methods_are_problems);

async fn bootstrap_creates_the_first_admin_and_keeps_the_secret(app: TestApp) {
    // `app` already has an admin: a second bootstrap creates none and
    // returns None; the JWT secret is generated once and persisted.
    let config = test_config();
    let (s1, created) = bootstrap_with_db(app.db.clone(), &config)
        .await
        .expect("bootstrap");
    assert_eq!(created, None);
    let (s2, _) = bootstrap_with_db(app.db.clone(), &config)
        .await
        .expect("bootstrap again");
    let admin = app.db.list_admins().await.expect("admins").remove(0);
    let (t1, _) = s1.jwt().issue(&admin).expect("token");
    s2.jwt()
        .verify(&t1)
        .expect("a restart keeps sessions valid");
    assert!(
        app.state.jwt().verify(&t1).is_err(),
        "a different secret than the test's"
    );

    // A secret from the environment variable named in the config wins. (An
    // variable that is always set, so the test never mutates the environment.)
    let mut with_env = config.clone();
    with_env.admin.jwt_secret_env = "PATH".into();
    let path = std::env::var("PATH").expect("PATH is set");
    if let Some(reason) = tollgate_admin_api::password::weak_secret_reason(&path) {
        // PATH is not a strong secret here: the admin role refuses it.
        match bootstrap_with_db(app.db.clone(), &with_env).await {
            Err(tollgate_admin_api::BootstrapError::WeakSecret { var, .. }) => {
                assert_eq!(var, "PATH", "{reason}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a weak secret was accepted: {reason}"),
        }
        return;
    }
    let (s3, _) = bootstrap_with_db(app.db.clone(), &with_env)
        .await
        .expect("bootstrap");
    let env_keys =
        tollgate_admin_api::auth::JwtKeys::new(path.as_bytes(), config.admin.session_ttl);
    let (t3, _) = env_keys.issue(&admin).expect("token");
    s3.jwt().verify(&t3).expect("env secret used");
    assert!(s3.jwt().verify(&t1).is_err());
}
both!(bootstrap_creates_the_first_admin_and_keeps_the_secret);

#[tokio::test]
async fn bootstrap_on_a_fresh_database_prints_a_random_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config();
    config.storage.database_url = format!("sqlite://{}", dir.path().join("boot.db").display());
    let (state, password) = bootstrap(&config).await.expect("bootstrap");
    let password = password.expect("a generated password on first start");
    assert!(password.len() >= 16);
    let admins = state.db().list_admins().await.expect("admins");
    assert_eq!(admins.len(), 1);
    assert_eq!(admins[0].username, "admin");
    // Serve it and log in with the printed password.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tollgate_admin_api::serve(
        listener,
        state.clone(),
        async move {
            let _ = rx.await;
        },
    ));
    let res = reqwest::Client::new()
        .post(format!("http://{addr}/api/auth/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .expect("request");
    let body: Value = json(res, StatusCode::OK).await;
    let token = body["token"].as_str().expect("token").to_string();
    // Graceful shutdown ends `serve`.
    let _ = tx.send(());
    server.await.expect("join").expect("serve");
    state.db().close().await;

    // Restart on the same file: no new admin, and the old token still works.
    let (state2, again) = bootstrap(&config).await.expect("bootstrap again");
    assert_eq!(again, None);
    state2
        .jwt()
        .verify(&token)
        .expect("the session survives a restart");
}
