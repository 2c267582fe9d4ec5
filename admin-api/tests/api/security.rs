//! Attacks on the admin API: forged and stale tokens (beyond `auth.rs`), mass
//! assignment, injection strings, the full key leaking after creation, and
//! ambiguous requests (two credentials, a body in a content coding).
//!
//! Mass assignment policy: every request body is a closed object
//! (`deny_unknown_fields`). A field the client may not set (`id`, `key`,
//! `key_hash`, `key_prefix`, `created_at`, `source`, `password_hash`, …) is
//! refused with 422 `validation-error` naming it in `field`, on every POST and
//! PATCH, nested ones included, and nothing is written.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::common::*;

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// GET `path` with `auth` as the whole Authorization header: must be a 401
/// problem.
async fn refused(app: &TestApp, path: &str, auth: &str) {
    let res = send(app.anon(Method::GET, path).header("authorization", auth)).await;
    problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("encode")
}

async fn admin_id(app: &TestApp, name: &str) -> i64 {
    app.db
        .get_admin_by_username(name)
        .await
        .expect("query")
        .expect("admin")
        .0
        .id
}

/// `auth.rs` covers `alg: none`, another key, HS384, tampered payload and
/// signature, expiry and a missing `exp`. Here: the spellings of `none`,
/// impersonating another admin by editing the payload, tokens that outlive
/// their admin (deleted, recreated under the same name), an empty secret,
/// tokens in the query string, and the analytics routes.
async fn forged_and_stale_tokens_are_401(app: TestApp) {
    let now = tollgate_core::now_ms() / 1000;
    let me = admin_id(&app, "admin").await;
    let claims = json!({"sub": me.to_string(), "name": "admin", "iat": now, "exp": now + 3600});
    let body = b64url(claims.to_string().as_bytes());
    for alg in ["none", "None", "NONE", "nOnE", ""] {
        let header = b64url(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        refused(&app, "/api/keys", &format!("Bearer {header}.{body}.")).await;
        // A signature made with the real secret does not rescue it either.
        let real_sig = app.token.split('.').nth(2).expect("signature");
        refused(
            &app,
            "/api/keys",
            &format!("Bearer {header}.{body}.{real_sig}"),
        )
        .await;
    }

    // Another admin exists; edit our token's payload to be them.
    json(
        app.post(
            "/api/admins",
            json!({"username": "bob", "password": "bob-password-1", "role": "owner"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let bob = admin_id(&app, "bob").await;
    let parts: Vec<&str> = app.token.split('.').collect();
    let as_bob = json!({"sub": bob.to_string(), "name": "bob", "iat": now, "exp": now + 3600});
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64url(as_bob.to_string().as_bytes()),
        parts[2]
    );
    refused(&app, "/api/admins", &format!("Bearer {forged}")).await;
    // Signed correctly, but the name does not match the id.
    let mixed = hs256(
        JWT_SECRET,
        &json!({"sub": bob.to_string(), "name": "admin", "iat": now, "exp": now + 3600}),
    );
    refused(&app, "/api/admins", &format!("Bearer {mixed}")).await;
    // The id is not a number.
    let odd = hs256(
        JWT_SECRET,
        &json!({"sub": "1 OR 1=1", "name": "admin", "iat": now, "exp": now + 3600}),
    );
    refused(&app, "/api/admins", &format!("Bearer {odd}")).await;
    // An empty secret.
    let empty = hs256(b"", &claims);
    refused(&app, "/api/admins", &format!("Bearer {empty}")).await;

    // Bob logs in, is deleted, and is created again under the same name: his
    // old token does not come back to life.
    let login = json(app.login("bob", "bob-password-1").await, StatusCode::OK).await;
    let bob_token = login["token"].as_str().expect("token").to_string();
    let res = send(app.anon(Method::GET, "/api/admins").bearer_auth(&bob_token)).await;
    json(res, StatusCode::OK).await;
    let res = app.delete(&format!("/api/admins/{bob}")).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    refused(&app, "/api/admins", &format!("Bearer {bob_token}")).await;
    json(
        app.post(
            "/api/admins",
            json!({"username": "bob", "password": "bob-password-2"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_ne!(admin_id(&app, "bob").await, bob);
    refused(&app, "/api/admins", &format!("Bearer {bob_token}")).await;

    // A token is read from the Authorization header only: one in the query
    // is an unknown parameter, refused before anything is read (round 13),
    // and beside a real header it changes nothing either.
    for q in ["token", "access_token", "jwt"] {
        let res = send(app.anon(Method::GET, &format!("/api/keys?{q}={}", app.token))).await;
        let body = problem(res, StatusCode::BAD_REQUEST, "malformed-request").await;
        assert_eq!(body["field"], q, "{body}");
        let res = send(
            app.anon(Method::GET, &format!("/api/keys?{q}=x"))
                .bearer_auth("forged"),
        )
        .await;
        assert_ne!(res.status(), StatusCode::OK);
    }
    let res = send(
        app.anon(Method::GET, "/api/keys")
            .header("cookie", format!("token={}", app.token)),
    )
    .await;
    problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // The analytics routes (not in auth.rs's list) need a token too.
    for path in [
        "/api/analytics/summary",
        "/api/analytics/timeseries",
        "/api/analytics/keys/1",
        "/api/analytics/top-keys",
        "/api/analytics/violations",
    ] {
        let res = send(app.anon(Method::GET, path)).await;
        problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
        refused(&app, path, &format!("Bearer {forged}")).await;
    }
}
both!(forged_and_stale_tokens_are_401);

/// Send `body` and expect 422 naming `field`.
async fn refuses_field(app: &TestApp, method: Method, path: &str, body: Value, field: &str) {
    let res = send(app.req(method.clone(), path).json(&body)).await;
    let v = problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
    assert_eq!(v["field"], field, "{method} {path} {body}: {v}");
}

/// Server-owned fields cannot be set on create or update: 422 naming the
/// field, and neither the record nor the stored hash changes.
async fn mass_assignment_is_refused(app: TestApp) {
    let created = json(
        app.post("/api/keys", json!({"name": "victim", "plan": "free"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_i64().expect("id");
    let key = created["key"].as_str().expect("key").to_string();
    let before = json(app.get(&format!("/api/keys/{id}")).await, StatusCode::OK).await;
    let forged_hash = hex_of(&tollgate_core::keys::hash("tg_attacker"));
    let server_owned = [
        ("id", json!(999)),
        ("key", json!("tg_attackerchosenkey0000000000000000000")),
        ("key_hash", json!(forged_hash)),
        ("hash", json!(forged_hash)),
        ("prev_key_hash", json!(forged_hash)),
        ("prev_valid_until", json!(i64::MAX)),
        ("key_prefix", json!("tg_fake")),
        ("prefix", json!("tg_fake")),
        ("secret", json!("x")),
        ("created_at", json!(1)),
        ("updated_at", json!(1)),
        ("last_used_at", json!(1)),
    ];
    for (field, value) in &server_owned {
        let mut body = json!({"name": "intruder"});
        body[field] = value.clone();
        refuses_field(&app, Method::POST, "/api/keys", body, field).await;
        let mut body = json!({"name": "renamed"});
        body[field] = value.clone();
        refuses_field(&app, Method::PATCH, &format!("/api/keys/{id}"), body, field).await;
        // Rotation takes only grace_seconds.
        let body = json!({ (*field): value.clone() });
        refuses_field(
            &app,
            Method::POST,
            &format!("/api/keys/{id}/rotate"),
            body,
            field,
        )
        .await;
    }
    // Nested: a limit is closed too.
    refuses_field(
        &app,
        Method::POST,
        "/api/keys",
        json!({"name": "n", "limits": [{"name": "s", "rate": 1, "per": "1s", "id": 5}]}),
        "limits[0].id",
    )
    .await;
    // Nothing was created, renamed, re-keyed or rotated.
    let list = json(app.get("/api/keys").await, StatusCode::OK).await;
    assert_eq!(list["total"], 1, "{list}");
    let after = json(app.get(&format!("/api/keys/{id}")).await, StatusCode::OK).await;
    assert_eq!(after, before);
    let records = app.db.load_key_records().await.expect("records");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].hash, tollgate_core::keys::hash(&key));
    assert!(records[0].previous.is_none());

    // Plans: name (no renames), source and read_only are not settable.
    json(
        app.post(
            "/api/plans",
            json!({"name": "partner", "limits": [{"name": "s", "rate": 5, "per": "1s"}]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let plan_before = json(app.get("/api/plans/partner").await, StatusCode::OK).await;
    for (field, value) in [
        ("source", json!("config")),
        ("read_only", json!(true)),
        ("created_at", json!(1)),
        ("updated_at", json!(1)),
        ("id", json!(1)),
    ] {
        let body = json!({"name": "other", "limits": [{"name": "s", "rate": 5, "per": "1s"}], field: value});
        refuses_field(&app, Method::POST, "/api/plans", body, field).await;
        refuses_field(
            &app,
            Method::PATCH,
            "/api/plans/partner",
            json!({ field: value }),
            field,
        )
        .await;
    }
    refuses_field(
        &app,
        Method::PATCH,
        "/api/plans/partner",
        json!({"name": "renamed"}),
        "name",
    )
    .await;
    let plan_after = json(app.get("/api/plans/partner").await, StatusCode::OK).await;
    assert_eq!(plan_after, plan_before);
    let plans = json(app.get("/api/plans").await, StatusCode::OK).await;
    assert_eq!(plans.as_array().expect("plans").len(), 3, "{plans}");

    // Admins: no id, hash, time or role.
    for (field, value) in [
        ("id", json!(1)),
        (
            "password_hash",
            json!("$argon2id$v=19$m=19456,t=2,p=1$AAAA$AAAA"),
        ),
        ("created_at", json!(1)),
        ("role", json!("superadmin")),
        ("is_admin", json!(true)),
    ] {
        let body = json!({"username": "mallory", "password": "mallory-pw-1", field: value});
        refuses_field(&app, Method::POST, "/api/admins", body, field).await;
    }
    let admins = json(app.get("/api/admins").await, StatusCode::OK).await;
    assert_eq!(admins.as_array().expect("admins").len(), 1, "{admins}");
    let text = app.get("/api/admins").await.text().await.expect("body");
    assert!(
        !text.contains("argon2") && !text.contains("password"),
        "{text}"
    );
}
both!(mass_assignment_is_refused);

const INJECTIONS: [&str; 9] = [
    "'; DROP TABLE api_keys; --",
    "\" OR 1=1 --",
    "' OR '1'='1",
    "Robert'); DROP TABLE admins;--",
    "1; SELECT * FROM admins",
    "%' OR name LIKE '%",
    "\\'; DELETE FROM plans; --",
    "名前 🔑 Ünïcødé \u{202e}rtl",
    "%_\\%",
];

/// Percent-encode a query value (everything but unreserved characters).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Injection strings in names, owners, metadata, filters and path segments
/// are stored and returned verbatim, or refused with a 4xx problem; the
/// tables survive and filters match literally.
async fn injection_strings_are_data(app: TestApp) {
    let mut ids = Vec::new();
    for s in INJECTIONS {
        let created = json(
            app.post(
                "/api/keys",
                json!({"name": s, "owner": s, "metadata": {"note": s, s: [s]}}),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
        assert_eq!(created["name"], s);
        let id = created["id"].as_i64().expect("id");
        let got = json(app.get(&format!("/api/keys/{id}")).await, StatusCode::OK).await;
        assert_eq!(got["name"], s);
        assert_eq!(got["owner"], s);
        assert_eq!(got["metadata"], json!({"note": s, s: [s]}));
        ids.push((id, s));
    }
    // NUL and other control characters: refused by name and owner, kept
    // verbatim (escaped JSON) inside metadata.
    for bad in ["a\u{0}b", "\u{0}", "line\nbreak", "bell\u{7}", "c1\u{85}"] {
        invalid(app.post("/api/keys", json!({"name": bad})).await, "name").await;
        invalid(
            app.post("/api/keys", json!({"name": "ok", "owner": bad}))
                .await,
            "owner",
        )
        .await;
        invalid(
            app.patch(&format!("/api/keys/{}", ids[0].0), json!({"name": bad}))
                .await,
            "name",
        )
        .await;
    }
    let with_nul = json(
        app.post(
            "/api/keys",
            json!({"name": "nul in metadata", "metadata": {"v": "a\u{0}b", "k\u{0}": 1}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let nul_id = with_nul["id"].as_i64().expect("id");
    let got = json(
        app.get(&format!("/api/keys/{nul_id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["metadata"], json!({"v": "a\u{0}b", "k\u{0}": 1}));

    // Search: each string finds exactly its own key (LIKE wildcards match
    // themselves), never every key.
    for (id, s) in &ids {
        let page = json(
            app.get(&format!("/api/keys?name={}", enc(s))).await,
            StatusCode::OK,
        )
        .await;
        let found: Vec<i64> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|k| k["id"].as_i64().expect("id"))
            .collect();
        assert!(found.contains(id), "{s:?} not found: {page}");
        assert!(found.len() < INJECTIONS.len(), "{s:?} matched {found:?}");
        // Unknown plan names and other filters: an empty page, not an error.
        let page = json(
            app.get(&format!("/api/keys?plan={}", enc(s))).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(page["total"], 0, "{page}");
    }
    let page = json(app.get("/api/keys?name=%25").await, StatusCode::OK).await;
    assert_eq!(page["total"], 2, "only the names holding a %: {page}");
    // NUL or another control character in a filter: 422 naming it (the
    // database is never asked to compare it).
    for (path, field) in [
        ("/api/keys?name=%00", "name"),
        ("/api/keys?plan=%00", "plan"),
        ("/api/keys?name=a%00b&plan=free", "name"),
        ("/api/keys?plan=a%0Ab", "plan"),
        ("/api/analytics/violations?route=%00", "route"),
        ("/api/analytics/timeseries?route=%00", "route"),
        ("/api/analytics/timeseries?key=%00", "key"),
    ] {
        invalid(app.get(path).await, field).await;
    }

    // Plan names and key ids in the path: 404 / 400 / 422 problems.
    for s in INJECTIONS.iter().copied().chain(["\u{0}", "a\u{0}"]) {
        let path = format!("/api/plans/{}", enc(s));
        problem(app.get(&path).await, StatusCode::NOT_FOUND, "not-found").await;
        problem(
            app.patch(&path, json!({"concurrency": 2})).await,
            StatusCode::NOT_FOUND,
            "not-found",
        )
        .await;
        problem(app.delete(&path).await, StatusCode::NOT_FOUND, "not-found").await;
        invalid(
            app.post(
                "/api/plans",
                json!({"name": s, "limits": [{"name": "s", "rate": 1, "per": "1s"}]}),
            )
            .await,
            "name",
        )
        .await;
        invalid(
            app.post("/api/keys", json!({"name": "k", "plan": s})).await,
            "plan",
        )
        .await;
        let key_path = format!("/api/keys/{}", enc(s));
        problem(
            app.get(&key_path).await,
            StatusCode::BAD_REQUEST,
            "malformed-request",
        )
        .await;
        problem(
            app.get(&format!("/api/analytics/keys/{}", enc(s))).await,
            StatusCode::BAD_REQUEST,
            "malformed-request",
        )
        .await;
        let q = format!("/api/analytics/violations?route={}", enc(s));
        if s.contains('\u{0}') {
            invalid(app.get(&q).await, "route").await;
        } else {
            json(app.get(&q).await, StatusCode::OK).await;
        }
        // Usernames allow a small alphabet; logins with such names are plain failures.
        invalid(
            app.post(
                "/api/admins",
                json!({"username": s, "password": "long-enough-pw"}),
            )
            .await,
            "username",
        )
        .await;
        // (After five failures the login throttle answers instead.)
        let res = app.login(s, "' OR '1'='1").await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
        } else {
            problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
        }
    }

    // Every table is still there and whole.
    let all = json(app.get("/api/keys?per_page=200").await, StatusCode::OK).await;
    assert_eq!(all["total"], INJECTIONS.len() as i64 + 1);
    assert_eq!(
        json(app.get("/api/admins").await, StatusCode::OK)
            .await
            .as_array()
            .expect("admins")
            .len(),
        1
    );
    json(app.get("/api/plans").await, StatusCode::OK).await;
    json(app.get("/api/analytics/summary").await, StatusCode::OK).await;
    json(app.get("/api/analytics/top-keys").await, StatusCode::OK).await;
    // PATCH with an injection string is stored verbatim too.
    let (id, _) = ids[0];
    let v = json(
        app.patch(
            &format!("/api/keys/{id}"),
            json!({"name": "x' WHERE 1=1; --", "owner": null}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(v["name"], "x' WHERE 1=1; --");
    let others = json(app.get("/api/keys?per_page=200").await, StatusCode::OK).await;
    let renamed = others["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|k| k["name"] == "x' WHERE 1=1; --")
        .count();
    assert_eq!(renamed, 1, "the PATCH touched one row only");
}
both!(injection_strings_are_data);

/// Every place a key shows up after creation: list (all filters), GET, PATCH
/// and analytics answers, plans, admins, health, the OpenAPI document.
const READ_PATHS: [&str; 9] = [
    "/api/keys",
    "/api/keys?per_page=200&name=leak",
    "/api/keys?state=enabled",
    "/api/plans",
    "/api/admins",
    "/api/analytics/summary",
    "/api/analytics/top-keys",
    "/api/analytics/violations",
    "/api/openapi.json",
];

async fn assert_nowhere(app: &TestApp, id: i64, secrets: &[String]) {
    let mut paths: Vec<String> = READ_PATHS.iter().map(|p| p.to_string()).collect();
    paths.push(format!("/api/keys/{id}"));
    paths.push(format!("/api/analytics/keys/{id}"));
    paths.push(format!("/api/analytics/timeseries?key={id}"));
    for path in paths {
        let res = app.get(&path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let text = res.text().await.expect("body");
        for s in secrets {
            assert!(!text.contains(s.as_str()), "{path} shows {s}: {text}");
        }
    }
    let res = app
        .patch(&format!("/api/keys/{id}"), json!({"owner": "someone"}))
        .await;
    let text = res.text().await.expect("body");
    for s in secrets {
        assert!(!text.contains(s.as_str()), "PATCH shows {s}: {text}");
    }
}

/// What must never show: the key, its secret part without the display
/// prefix, and its SHA-256.
fn secret_forms(key: &str, prefix: &str) -> Vec<String> {
    let rest = key
        .strip_prefix(prefix)
        .expect("the key starts with its prefix");
    assert!(rest.len() >= 20, "{key} / {prefix}");
    vec![
        key.to_string(),
        rest.to_string(),
        hex_of(&tollgate_core::keys::hash(key)),
    ]
}

async fn full_key_is_shown_only_once(app: TestApp) {
    let created = json(
        app.post("/api/keys", json!({"name": "leak test", "plan": "free"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_i64().expect("id");
    let key = created["key"].as_str().expect("key").to_string();
    let prefix = created["key_prefix"].as_str().expect("prefix").to_string();
    assert!(prefix.len() < 16, "the prefix is short: {prefix}");
    let first = secret_forms(&key, &prefix);
    assert_nowhere(&app, id, &first).await;

    // Rotation shows the new key once; neither old nor new appears again.
    let rotated = app.rotate_key(id, 60).await;
    let new_key = rotated["key"].as_str().expect("key").to_string();
    assert_ne!(new_key, key);
    assert!(
        !rotated.to_string().contains(&key),
        "rotate shows the old key"
    );
    let mut all = first;
    all.extend(secret_forms(
        &new_key,
        rotated["key_prefix"].as_str().expect("prefix"),
    ));
    assert_nowhere(&app, id, &all).await;

    let page = json(
        app.get(&format!("/api/keys?name={}", enc(&new_key))).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["total"], 0, "searching by the key finds nothing");
}
both!(full_key_is_shown_only_once);

/// Two `Authorization` field lines are two credentials: 400
/// `malformed-request` whichever comes first and whether or not either is
/// valid (RFC 6750 §3.1 `invalid_request`; the field is a singleton, RFC
/// 9110 §11.6.2). Before, the first one won.
async fn two_authorization_headers_are_400(app: TestApp) {
    let valid = format!("Bearer {}", app.token);
    let cases = [
        [valid.as_str(), "Bearer garbage"],
        ["Bearer garbage", valid.as_str()],
        [valid.as_str(), valid.as_str()],
        [valid.as_str(), "Basic YWRtaW46eA=="],
    ];
    for path in ["/api/keys", "/api/admins", "/api/health"] {
        for [first, second] in &cases {
            let res = send(
                app.anon(Method::GET, path)
                    .header("authorization", *first)
                    .header("authorization", *second),
            )
            .await;
            let v = problem(res, StatusCode::BAD_REQUEST, "malformed-request").await;
            assert!(
                v["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("more than one Authorization header")),
                "{path}: {v}"
            );
        }
        // One of them alone is fine.
        let res = send(app.anon(Method::GET, path).header("authorization", &valid)).await;
        json(res, StatusCode::OK).await;
    }
    // A change with two credentials changes nothing.
    let res = send(
        app.anon(Method::POST, "/api/keys")
            .header("authorization", &valid)
            .header("authorization", &valid)
            .json(&json!({"name": "two-credentials"})),
    )
    .await;
    problem(res, StatusCode::BAD_REQUEST, "malformed-request").await;
    let page = json(app.get("/api/keys").await, StatusCode::OK).await;
    assert_eq!(page["total"], 0, "{page}");
}
both!(two_authorization_headers_are_400);

/// A JSON body sent with `Content-Encoding` (here a plain body claiming
/// `gzip`, as a black-box tester sent it) is 415 with `Accept-Encoding:
/// identity`: the API decodes no request body, so it never parses one as
/// if it were plain. `identity` means no coding.
async fn bodies_in_a_content_coding_are_415(app: TestApp) {
    for coding in [
        "gzip",
        "br",
        "deflate",
        "GZIP",
        "identity, gzip",
        "x-custom",
    ] {
        let res = send(
            app.req(Method::POST, "/api/keys")
                .header("content-encoding", coding)
                .json(&json!({"name": "coded"})),
        )
        .await;
        assert_eq!(
            res.headers()
                .get("accept-encoding")
                .and_then(|v| v.to_str().ok()),
            Some("identity"),
            "{coding}"
        );
        let v = problem(
            res,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
        )
        .await;
        assert!(
            v["detail"]
                .as_str()
                .is_some_and(|d| d.contains("Content-Encoding")),
            "{coding}: {v}"
        );
    }
    // The same on a PATCH and on the login (every JSON body, one extractor).
    let res = send(
        app.req(Method::PATCH, "/api/admins/1")
            .header("content-encoding", "gzip")
            .json(&json!({"role": "viewer"})),
    )
    .await;
    problem(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
    let res = send(
        app.anon(Method::POST, "/api/auth/login")
            .header("content-encoding", "gzip")
            .json(&json!({"username": "admin", "password": ADMIN_PASSWORD})),
    )
    .await;
    problem(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
    let page = json(app.get("/api/keys").await, StatusCode::OK).await;
    assert_eq!(page["total"], 0, "nothing was created: {page}");
    // `identity` is no coding at all.
    let res = send(
        app.req(Method::POST, "/api/keys")
            .header("content-encoding", "identity")
            .json(&json!({"name": "plain"})),
    )
    .await;
    json(res, StatusCode::CREATED).await;
}
both!(bodies_in_a_content_coding_are_415);
