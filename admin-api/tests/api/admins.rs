//! /api/admins

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both;
use crate::common::*;

async fn list_create_get_delete(app: TestApp) {
    let list = json(app.get("/api/admins").await, StatusCode::OK).await;
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["username"], "admin");
    assert!(list[0].get("password_hash").is_none());

    let res = app
        .post(
            "/api/admins",
            json!({"username": "alice", "password": "alice-password"}),
        )
        .await;
    let location = location(&res);
    let alice = json(res, StatusCode::CREATED).await;
    let id = alice["id"].as_i64().expect("id");
    assert_eq!(location, format!("/api/admins/{id}"));
    assert_eq!(alice["username"], "alice");
    assert!(alice["created_at"].as_i64().expect("created_at") > 0);
    assert!(alice.get("password").is_none() && alice.get("password_hash").is_none());
    let got = json(app.get(&location).await, StatusCode::OK).await;
    assert_eq!(got, alice);

    // The stored hash is argon2id.
    let (_, phc) = app
        .db
        .get_admin_by_username("alice")
        .await
        .expect("db")
        .expect("alice");
    assert!(phc.starts_with("$argon2id$"), "{phc}");

    // Alice can log in and act.
    let body = json(app.login("alice", "alice-password").await, StatusCode::OK).await;
    let alice_token = body["token"].as_str().expect("token").to_string();
    let list = json(app.get("/api/admins").await, StatusCode::OK).await;
    assert_eq!(list.as_array().expect("array").len(), 2);

    // Delete her: 204, then 404 everywhere, and her token stops working.
    let res = app.delete(&location).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.bytes().await.expect("body").is_empty());
    problem(app.get(&location).await, StatusCode::NOT_FOUND, "not-found").await;
    problem(
        app.delete(&location).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let res = send(
        app.anon(Method::GET, "/api/admins")
            .bearer_auth(&alice_token),
    )
    .await;
    problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
}
both!(list_create_get_delete);

async fn duplicates_and_bad_input(app: TestApp) {
    let r = app
        .post(
            "/api/admins",
            json!({"username": "admin", "password": "another-password"}),
        )
        .await;
    problem(r, StatusCode::CONFLICT, "conflict").await;
    let r = app
        .post(
            "/api/admins",
            json!({"username": "", "password": "long-enough"}),
        )
        .await;
    invalid(r, "username").await;
    let r = app
        .post(
            "/api/admins",
            json!({"username": "has space", "password": "long-enough"}),
        )
        .await;
    invalid(r, "username").await;
    let r = app
        .post(
            "/api/admins",
            json!({"username": "x".repeat(65), "password": "long-enough"}),
        )
        .await;
    invalid(r, "username").await;
    let r = app
        .post(
            "/api/admins",
            json!({"username": "bob", "password": "short"}),
        )
        .await;
    invalid(r, "password").await;
    let r = app.post("/api/admins", json!({"username": "bob"})).await;
    invalid(r, "password").await;
    // Mass assignment is refused, naming the field.
    let r = app
        .post(
            "/api/admins",
            json!({"username": "bob", "password": "long-enough", "id": 99}),
        )
        .await;
    invalid(r, "id").await;
    let r = app
        .post(
            "/api/admins",
            json!({"username": "bob", "password": "long-enough", "password_hash": "x"}),
        )
        .await;
    invalid(r, "password_hash").await;
    let r = app
        .post(
            "/api/admins",
            json!({"username": "bob", "password": "long-enough", "created_at": 1}),
        )
        .await;
    invalid(r, "created_at").await;
    let r = app.post("/api/admins", json!(["bob"])).await;
    invalid(r, "body").await;
    // Nothing was created.
    let list = json(app.get("/api/admins").await, StatusCode::OK).await;
    assert_eq!(list.as_array().expect("array").len(), 1);
    // Bad ids.
    problem(
        app.get("/api/admins/abc").await,
        StatusCode::BAD_REQUEST,
        "malformed-request",
    )
    .await;
    problem(
        app.delete("/api/admins/-3").await,
        StatusCode::BAD_REQUEST,
        "malformed-request",
    )
    .await;
    problem(
        app.get("/api/admins/999999").await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
}
both!(duplicates_and_bad_input);

async fn the_last_admin_cannot_be_deleted(app: TestApp) {
    let list = json(app.get("/api/admins").await, StatusCode::OK).await;
    let id = list[0]["id"].as_i64().expect("id");
    let v = problem(
        app.delete(&format!("/api/admins/{id}")).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert!(v["detail"].as_str().expect("detail").contains("last owner"));
    // With a second owner, the first can go (even deleting itself).
    let bob = json(
        app.post(
            "/api/admins",
            json!({"username": "bob", "password": OTHER_PASSWORD, "role": "owner"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let res = app.delete(&format!("/api/admins/{id}")).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // Now bob is the last one.
    let body = json(app.login("bob", OTHER_PASSWORD).await, StatusCode::OK).await;
    let token = body["token"].as_str().expect("token");
    let res = send(
        app.anon(Method::DELETE, &format!("/api/admins/{}", bob["id"]))
            .bearer_auth(token),
    )
    .await;
    problem(res, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(app.db.count_admins().await.expect("count"), 1);
}
both!(the_last_admin_cannot_be_deleted);
