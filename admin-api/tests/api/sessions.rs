//! Sessions: logout revokes the token, a password change ends every other
//! session, and a token may not live longer than `admin.session_ttl`.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both;
use crate::common::*;

async fn token_of(app: &TestApp, user: &str, password: &str) -> String {
    let v = json(app.login(user, password).await, StatusCode::OK).await;
    v["token"].as_str().expect("token").to_string()
}

async fn status(app: &TestApp, token: &str) -> StatusCode {
    send(app.with(token, Method::GET, "/api/keys"))
        .await
        .status()
}

async fn logout_revokes_only_that_token(app: TestApp) {
    let a = token_of(&app, "admin", ADMIN_PASSWORD).await;
    let b = token_of(&app, "admin", ADMIN_PASSWORD).await;
    assert_ne!(a, b, "every login gets its own jti");
    assert_eq!(status(&app, &a).await, StatusCode::OK);
    let res = app
        .with(&a, Method::POST, "/api/auth/logout")
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = send(app.with(&a, Method::GET, "/api/keys")).await;
    problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // Logging out twice with it is refused too.
    let res = app
        .with(&a, Method::POST, "/api/auth/logout")
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(status(&app, &b).await, StatusCode::OK);
    // The revocation is in the database, so another admin API instance (or
    // a restart) honours it.
    let other = tollgate_admin_api::AppState::new(app.db.clone(), test_config(), JWT_SECRET);
    assert!(tollgate_admin_api::auth::authenticate(&other, &a, None)
        .await
        .is_err());
}
both!(logout_revokes_only_that_token);

async fn password_change_ends_the_other_sessions(app: TestApp) {
    let a = token_of(&app, "admin", ADMIN_PASSWORD).await;
    let b = token_of(&app, "admin", ADMIN_PASSWORD).await;
    let change = |old: &str, new: &str| {
        app.with(&a, Method::POST, "/api/admins/me/password")
            .json(&json!({"old_password": old, "new_password": new}))
            .send()
    };
    // The old password is required, and the new one must be strong.
    invalid(
        change("wrong-password-x", OTHER_PASSWORD).await.expect("r"),
        "old_password",
    )
    .await;
    invalid(
        change(ADMIN_PASSWORD, "short").await.expect("r"),
        "new_password",
    )
    .await;
    invalid(
        change(ADMIN_PASSWORD, "password1234").await.expect("r"),
        "new_password",
    )
    .await;
    invalid(
        change(ADMIN_PASSWORD, ADMIN_PASSWORD).await.expect("r"),
        "new_password",
    )
    .await;
    // Failed attempts changed nothing.
    assert_eq!(status(&app, &b).await, StatusCode::OK);
    let res = change(ADMIN_PASSWORD, OTHER_PASSWORD).await.expect("r");
    let v = json(res, StatusCode::OK).await;
    let fresh = v["token"].as_str().expect("token").to_string();
    assert_eq!(status(&app, &fresh).await, StatusCode::OK);
    assert_eq!(status(&app, &a).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&app, &b).await, StatusCode::UNAUTHORIZED);
    problem(
        app.login("admin", ADMIN_PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    token_of(&app, "admin", OTHER_PASSWORD).await;
    let hash = app
        .db
        .get_admin_by_username("admin")
        .await
        .expect("q")
        .expect("admin")
        .1;
    assert!(hash.starts_with("$argon2id$") && !hash.contains(OTHER_PASSWORD));
}
both!(password_change_ends_the_other_sessions);

/// Guessing the old password through the change endpoint is throttled like
/// logins.
async fn wrong_old_passwords_are_throttled(app: TestApp) {
    let mut throttled = false;
    for i in 0..10 {
        let res = app
            .req(Method::POST, "/api/admins/me/password")
            .json(&json!({"old_password": format!("guess-{i}"), "new_password": OTHER_PASSWORD}))
            .send()
            .await
            .expect("request");
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = true;
            break;
        }
        invalid(res, "old_password").await;
    }
    assert!(throttled, "never throttled");
}
both!(wrong_old_passwords_are_throttled);

async fn tokens_longer_than_the_session_ttl_are_refused(app: TestApp) {
    let now = tollgate_core::now_ms() / 1000;
    let admin = app
        .db
        .get_admin_by_username("admin")
        .await
        .expect("q")
        .expect("admin")
        .0;
    let sign = |iat: i64, exp: i64| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": admin.id.to_string(), "name": "admin", "iat": iat, "exp": exp,
                    "jti": "0123abcd", "gen": admin.session_gen}),
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
        )
        .expect("encode")
    };
    // Signed with the right secret, valid for a year: refused.
    let year = sign(now, now + 365 * 86_400);
    let v = problem(
        app.with(&year, Method::GET, "/api/keys")
            .send()
            .await
            .expect("r"),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert!(
        v["detail"].as_str().unwrap_or("").contains("session_ttl"),
        "{v}"
    );
    // Back-dated iat to stretch the window: still more than the TTL.
    let stretched = sign(now - 86_400, now + 12 * 3600);
    assert_eq!(status(&app, &stretched).await, StatusCode::UNAUTHORIZED);
    // Issued in the future.
    let future = sign(now + 3600, now + 7200);
    assert_eq!(status(&app, &future).await, StatusCode::UNAUTHORIZED);
    // Without a jti, or from an older session generation.
    let no_jti = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": admin.id.to_string(), "name": "admin", "iat": now, "exp": now + 60, "gen": 0}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .expect("encode");
    assert_eq!(status(&app, &no_jti).await, StatusCode::UNAUTHORIZED);
    let old_gen = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": admin.id.to_string(), "name": "admin", "iat": now, "exp": now + 60,
                "jti": "x1", "gen": admin.session_gen - 1}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .expect("encode");
    assert_eq!(status(&app, &old_gen).await, StatusCode::UNAUTHORIZED);
    // Within the TTL: accepted.
    let fine = sign(now, now + 3600);
    assert_eq!(status(&app, &fine).await, StatusCode::OK);
    // A login's token lasts exactly the TTL (12 h by default).
    let v = json(app.login("admin", ADMIN_PASSWORD).await, StatusCode::OK).await;
    let exp = v["expires_at"].as_i64().expect("exp") / 1000;
    assert!((exp - now - 12 * 3600).abs() <= 5, "{}", exp - now);
}
both!(tokens_longer_than_the_session_ttl_are_refused);
