//! /api/service-tokens: shown once, stored hashed, admin to change, viewer
//! to list, hostile bodies 4xx, audited.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::common::*;

async fn service_tokens_are_shown_once_and_stored_hashed(app: TestApp) {
    let made = json(
        app.post("/api/service-tokens", json!({"name": "  billing  "}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let token = made["token"].as_str().expect("token").to_string();
    assert_eq!(made["name"], "billing");
    assert_eq!(made["created_by"], "admin");
    assert!(token.starts_with("tgs_") && token.len() == tollgate_core::service_tokens::TOKEN_LEN);
    let hashes = app.db.service_token_hashes().await.expect("hashes");
    assert_eq!(hashes, vec![tollgate_core::service_tokens::hash(&token)]);
    let list = json(app.get("/api/service-tokens").await, StatusCode::OK).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert!(!list.to_string().contains(&token));
    assert_eq!(list[0]["prefix"], &token[..10]);

    for bad in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "a\u{0}b"}),
        json!({"name": "x".repeat(201)}),
        json!({"name": 1}),
        json!({"name": "x", "token": "tgs_mine"}),
        json!([]),
    ] {
        let res = app.post("/api/service-tokens", bad.clone()).await;
        assert!(res.status().is_client_error(), "{bad} → {}", res.status());
    }
    let id = made["id"].as_i64().expect("id");
    let res = app.delete(&format!("/api/service-tokens/{id}")).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    problem(
        app.delete(&format!("/api/service-tokens/{id}")).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    for bad in ["0", "-1", "x", "99999999999999999999"] {
        let res = app.delete(&format!("/api/service-tokens/{bad}")).await;
        assert!(res.status().is_client_error(), "{bad} → {}", res.status());
    }
    assert!(app
        .db
        .service_token_hashes()
        .await
        .expect("hashes")
        .is_empty());
    let audit = json(
        app.get("/api/audit?action=service_token.").await,
        StatusCode::OK,
    )
    .await;
    let text = audit.to_string();
    assert!(
        text.contains("service_token.create") && text.contains("service_token.delete"),
        "{audit}"
    );
    assert!(!text.contains(&token), "the audit log holds the token");
}
both!(service_tokens_are_shown_once_and_stored_hashed);

async fn a_viewer_lists_service_tokens_but_cannot_make_them(app: TestApp) {
    let made = json(
        app.post("/api/service-tokens", json!({"name": "s"})).await,
        StatusCode::CREATED,
    )
    .await;
    let (_, viewer) = app.admin_with_role("vera", "viewer").await;
    let res = send(app.with(&viewer, Method::GET, "/api/service-tokens")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let id = made["id"].as_i64().expect("id");
    for (method, path, body) in [
        (
            Method::POST,
            "/api/service-tokens".to_string(),
            json!({"name": "x"}),
        ),
        (
            Method::DELETE,
            format!("/api/service-tokens/{id}"),
            Value::Null,
        ),
    ] {
        let mut req = app.with(&viewer, method, &path);
        if !body.is_null() {
            req = req.json(&body);
        }
        problem(
            req.send().await.expect("request"),
            StatusCode::FORBIDDEN,
            "insufficient-role",
        )
        .await;
    }
    let anon = send(app.anon(Method::GET, "/api/service-tokens")).await;
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.db.list_service_tokens().await.expect("list").len(), 1);
}
both!(a_viewer_lists_service_tokens_but_cannot_make_them);
