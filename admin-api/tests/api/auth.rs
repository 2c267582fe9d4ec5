//! Login, tokens, the login limiter.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both;
use crate::common::*;

async fn login_returns_a_working_token(app: TestApp) {
    let before = tollgate_core::now_ms();
    let body = json(app.login("admin", ADMIN_PASSWORD).await, StatusCode::OK).await;
    let token = body["token"].as_str().expect("token");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["admin"]["username"], "admin");
    let exp = body["expires_at"].as_i64().expect("expires_at");
    let after = tollgate_core::now_ms();
    let ttl = 12 * 3600 * 1000;
    assert!(
        exp >= before + ttl - 1000 && exp <= after + ttl + 1000,
        "{exp} not 12 h (admin.session_ttl) after the login ({before}..{after})"
    );
    // The header says HS256.
    let header: serde_json::Value =
        serde_json::from_slice(&b64url_decode(token.split('.').next().expect("header")))
            .expect("json");
    assert_eq!(header["alg"], "HS256");
    let res = send(app.anon(Method::GET, "/api/admins").bearer_auth(token)).await;
    json(res, StatusCode::OK).await;
    // The scheme is case-insensitive.
    let res = send(
        app.anon(Method::GET, "/api/admins")
            .header("authorization", format!("bearer {token}")),
    )
    .await;
    json(res, StatusCode::OK).await;
}
both!(login_returns_a_working_token);

async fn wrong_credentials_are_401(app: TestApp) {
    problem(
        app.login("admin", "wrong-password").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let v = problem(
        app.login("nobody", ADMIN_PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    // The same answer for an unknown user and a wrong password.
    assert_eq!(v["detail"], "wrong username or password");
}
both!(wrong_credentials_are_401);

async fn bad_login_bodies_are_400_or_422(app: TestApp) {
    let send = |body: &'static str, ct: &'static str| {
        app.anon(Method::POST, "/api/auth/login")
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = send(r#"{"username":"admin""#, "application/json")
        .await
        .expect("request");
    problem(r, StatusCode::BAD_REQUEST, "malformed-request").await;
    let r = send("", "application/json").await.expect("request");
    problem(r, StatusCode::BAD_REQUEST, "malformed-request").await;
    let r = send(r#"{"username":"admin"}"#, "application/json")
        .await
        .expect("request");
    invalid(r, "password").await;
    let r = send(r#"{"username":5,"password":"x"}"#, "application/json")
        .await
        .expect("request");
    invalid(r, "username").await;
    let r = send(
        r#"{"username":"admin","password":"x","admin":true}"#,
        "application/json",
    )
    .await
    .expect("request");
    invalid(r, "admin").await;
    let r = send(r#"{"username":"","password":"x"}"#, "application/json")
        .await
        .expect("request");
    invalid(r, "username").await;
    let r = send("username=admin", "application/x-www-form-urlencoded")
        .await
        .expect("request");
    problem(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
}
both!(bad_login_bodies_are_400_or_422);

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(ip.parse().expect("ip")))
        .build()
        .expect("client")
}

async fn login_from(
    app: &TestApp,
    client: &reqwest::Client,
    user: &str,
    pw: &str,
) -> reqwest::Response {
    client
        .post(app.url("/api/auth/login"))
        .json(&json!({"username": user, "password": pw}))
        .send()
        .await
        .expect("request")
}

async fn failed_logins_are_rate_limited(app: TestApp) {
    // Five failures from one IP for one username …
    let a = client_from("127.0.0.2");
    for _ in 0..5 {
        let r = login_from(&app, &a, "admin", "nope-nope").await;
        problem(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    // … then even the right password is refused, with Retry-After.
    let r = login_from(&app, &a, "admin", ADMIN_PASSWORD).await;
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let v = problem(r, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    assert_eq!(v["retry_after"], retry);
    // Per IP: from the first IP, another username is refused too.
    let r = login_from(&app, &a, "someone-else", "whatever-pw").await;
    problem(r, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    // Per username, but only for addresses that failed themselves: one
    // that failed with another name is held back for "admin" …
    let b = client_from("127.0.0.3");
    let r = login_from(&app, &b, "bob", "whatever-pw").await;
    problem(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let r = login_from(&app, &b, "admin", ADMIN_PASSWORD).await;
    problem(r, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    // … while a clean address logs the real admin in.
    let c = client_from("127.0.0.4");
    let r = login_from(&app, &c, "admin", ADMIN_PASSWORD).await;
    json(r, StatusCode::OK).await;
}
both!(failed_logins_are_rate_limited);

async fn expect_401(app: &TestApp, auth: Option<String>) -> serde_json::Value {
    let mut req = app.anon(Method::GET, "/api/keys");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let res = req.send().await.expect("request");
    assert!(
        res.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer")),
        "WWW-Authenticate: Bearer"
    );
    problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await
}

async fn bad_tokens_are_401(app: TestApp) {
    // No header, another scheme, garbage.
    expect_401(&app, None).await;
    expect_401(&app, Some(format!("Basic {}", b64url(b"admin:pw")))).await;
    expect_401(&app, Some("Bearer".into())).await;
    expect_401(&app, Some("Bearer not.a.jwt".into())).await;

    let now = tollgate_core::now_ms() / 1000;
    let admin_id: i64 = app.token_admin_id();
    let claims = json!({"sub": admin_id.to_string(), "name": "admin", "iat": now, "exp": now + 3600, "jti": "a1", "gen": 0});

    // alg: none, without a signature (with and without the trailing dot).
    let none = format!(
        "{}.{}",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    );
    expect_401(&app, Some(format!("Bearer {none}."))).await;
    expect_401(&app, Some(format!("Bearer {none}"))).await;

    // Signed with another key.
    let other = tollgate_admin_api::auth::JwtKeys::new(
        b"a different secret of enough length!!",
        std::time::Duration::from_secs(3600),
    );
    let (t, _) = other.issue(&fake_admin(admin_id, "admin")).expect("issue");
    expect_401(&app, Some(format!("Bearer {t}"))).await;

    // Tampered payload: claim to be someone else, keep the signature.
    let parts: Vec<&str> = app.token.split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&b64url_decode(parts[1])).expect("payload");
    payload["exp"] = json!(now + 10 * 24 * 3600);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(payload.to_string().as_bytes()),
        parts[2]
    );
    expect_401(&app, Some(format!("Bearer {tampered}"))).await;
    // Tampered signature.
    let mut sig = parts[2].to_string();
    let last = if sig.ends_with('A') { 'B' } else { 'A' };
    sig.pop();
    sig.push(last);
    expect_401(
        &app,
        Some(format!("Bearer {}.{}.{sig}", parts[0], parts[1])),
    )
    .await;

    // HS384 with the right secret: another algorithm is refused.
    let h384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .expect("encode");
    expect_401(&app, Some(format!("Bearer {h384}"))).await;

    // Expired (with the right key).
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": admin_id.to_string(), "name": "admin", "iat": now - 90_000, "exp": now - 3600}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .expect("encode");
    let v = expect_401(&app, Some(format!("Bearer {expired}"))).await;
    assert!(v["detail"].as_str().expect("detail").contains("expired"));

    // Without exp.
    let no_exp = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": admin_id.to_string(), "name": "admin"}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .expect("encode");
    expect_401(&app, Some(format!("Bearer {no_exp}"))).await;

    // The right key, but an admin that does not exist.
    let (ghost, _) = app
        .state
        .jwt()
        .issue(&fake_admin(admin_id + 1000, "ghost"))
        .expect("issue");
    expect_401(&app, Some(format!("Bearer {ghost}"))).await;

    // And the real token still works.
    json(app.get("/api/keys").await, StatusCode::OK).await;
}
both!(bad_tokens_are_401);

async fn every_protected_route_needs_a_token(app: TestApp) {
    for (method, path) in [
        (Method::GET, "/api/admins"),
        (Method::POST, "/api/admins"),
        (Method::GET, "/api/admins/1"),
        (Method::DELETE, "/api/admins/1"),
        (Method::PATCH, "/api/admins/1"),
        (Method::GET, "/api/admins/me"),
        (Method::POST, "/api/admins/me/password"),
        (Method::POST, "/api/auth/logout"),
        (Method::GET, "/api/audit"),
        (Method::GET, "/api/keys"),
        (Method::POST, "/api/keys"),
        (Method::GET, "/api/keys/1"),
        (Method::PATCH, "/api/keys/1"),
        (Method::DELETE, "/api/keys/1"),
        (Method::POST, "/api/keys/1/rotate"),
        (Method::GET, "/api/plans"),
        (Method::POST, "/api/plans"),
        (Method::GET, "/api/plans/free"),
        (Method::PATCH, "/api/plans/free"),
        (Method::DELETE, "/api/plans/free"),
    ] {
        let res = send(app.anon(method.clone(), path).json(&json!({}))).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
}
both!(every_protected_route_needs_a_token);

impl TestApp {
    fn token_admin_id(&self) -> i64 {
        let payload = self.token.split('.').nth(1).expect("payload");
        let v: serde_json::Value = serde_json::from_slice(&b64url_decode(payload)).expect("json");
        v["sub"].as_str().expect("sub").parse().expect("id")
    }
}
