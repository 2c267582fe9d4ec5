//! The audit log: every change and login is recorded with who, when, from
//! where, what and the fields before/after — never a key, hash or password —
//! and the table is append-only.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::common::*;

async fn events(app: &TestApp, query: &str) -> Value {
    json(app.get(&format!("/api/audit{query}")).await, StatusCode::OK).await
}

async fn a_key_lifecycle_is_audited(app: TestApp) {
    let created = json(
        app.post("/api/keys", json!({"name": "audited", "plan": "free"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_i64().expect("id");
    let first = created["key"].as_str().expect("key").to_string();
    let second = app.rotate_key(id, 60).await["key"]
        .as_str()
        .expect("key")
        .to_string();
    json(
        app.patch(&format!("/api/keys/{id}"), json!({"enabled": false}))
            .await,
        StatusCode::OK,
    )
    .await;
    let res = app.delete(&format!("/api/keys/{id}")).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let page = events(&app, &format!("?target_type=key&target={id}")).await;
    let items = page["items"].as_array().expect("items");
    let actions: Vec<&str> = items
        .iter()
        .map(|e| e["action"].as_str().expect("a"))
        .collect();
    assert_eq!(
        actions,
        ["key.delete", "key.disable", "key.rotate", "key.create"],
        "{page}"
    );
    assert_eq!(page["total"], 4);
    for e in items {
        assert_eq!(e["actor"], "admin");
        assert_eq!(e["actor_kind"], "admin");
        assert_eq!(e["client_ip"], "127.0.0.1");
        assert_eq!(e["target"], id.to_string());
        assert!(e["at"].as_i64().expect("at") > 0);
    }
    let create = &items[3]["changes"];
    assert_eq!(create["name"]["after"], "audited");
    assert_eq!(create["plan"]["after"], "free");
    assert_eq!(create["name"]["before"], Value::Null);
    let rotate = &items[2]["changes"];
    assert_ne!(
        rotate["key_prefix"]["before"],
        rotate["key_prefix"]["after"]
    );
    assert_eq!(rotate["grace_seconds"]["after"], 60);
    assert_eq!(
        items[1]["changes"],
        json!({"enabled": {"before": true, "after": false}})
    );
    assert_eq!(items[0]["changes"]["name"]["before"], "audited");
    assert_eq!(items[0]["changes"]["name"]["after"], Value::Null);

    // No secret anywhere: neither key, their hashes, nor the password.
    let text = app
        .get("/api/audit?per_page=200")
        .await
        .text()
        .await
        .expect("body");
    let rows: Vec<String> = sqlx::query_scalar("SELECT COALESCE(changes, '') FROM audit_events")
        .fetch_all(app.db.pool())
        .await
        .expect("rows");
    let all = format!("{text}{}", rows.join(""));
    for secret in [
        first.clone(),
        second.clone(),
        hex::encode(tollgate_core::keys::hash(&first)),
        hex::encode(tollgate_core::keys::hash(&second)),
        ADMIN_PASSWORD.to_string(),
    ] {
        assert!(!all.contains(&secret), "the audit log holds a secret");
    }
}
both!(a_key_lifecycle_is_audited);

async fn logins_admins_and_plans_are_audited(app: TestApp) {
    problem(
        app.login("admin", "not-the-password").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    problem(
        app.login("ghost-user", "not-the-password").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    json(app.login("admin", ADMIN_PASSWORD).await, StatusCode::OK).await;
    let (vid, _) = app.admin_with_role("val", "viewer").await;
    json(
        app.patch(&format!("/api/admins/{vid}"), json!({"role": "admin"}))
            .await,
        StatusCode::OK,
    )
    .await;
    json(
        app.post(
            "/api/plans",
            json!({"name": "gold", "limits": [{"name": "s", "rate": 5, "per": "1s"}]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    json(
        app.patch(
            "/api/plans/gold",
            json!({"limits": [{"name": "s", "rate": 9, "per": "1s"}]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;

    let failures = events(&app, "?action=login.failure").await;
    assert_eq!(failures["total"], 2, "{failures}");
    let known = &failures["items"][1];
    assert_eq!(known["actor"], "anonymous");
    assert_eq!(known["changes"]["username"], "admin");
    // A name that is no admin's is not kept (it may be a mistyped password).
    let unknown = &failures["items"][0];
    assert_eq!(unknown["changes"], Value::Null, "{unknown}");
    assert!(!failures.to_string().contains("ghost-user"));

    let ok = events(&app, "?action=login.success&actor=admin").await;
    assert!(ok["total"].as_i64().expect("total") >= 1);
    let role = events(&app, "?action=admin.role").await;
    assert_eq!(
        role["items"][0]["changes"]["role"],
        json!({"before": "viewer", "after": "admin"})
    );
    let created = events(&app, "?action=admin.create").await;
    assert_eq!(created["items"][0]["changes"]["username"]["after"], "val");
    assert!(!created.to_string().contains(OTHER_PASSWORD));
    let plans = events(&app, "?action=plan.").await;
    let actions: Vec<&str> = plans["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["action"].as_str().expect("a"))
        .collect();
    assert_eq!(actions, ["plan.update", "plan.create"]);
    let upd = &plans["items"][0]["changes"]["limits"];
    assert_eq!(upd["before"][0]["rate"], 5);
    assert_eq!(upd["after"][0]["rate"], 9);
}
both!(logins_admins_and_plans_are_audited);

/// Round 12: `PATCH` with `{}` answered 200 and wrote an update audit row
/// with empty `changes` every time. A patch that changes nothing (empty, or
/// the values the record already has) now answers the record as it is,
/// writes nothing (`updated_at` stays) and leaves no audit row, on every
/// resource with a `PATCH`; a real change is still recorded.
async fn patches_that_change_nothing_leave_no_trace(app: TestApp) {
    let created = |path: &'static str, body: Value| {
        let app = &app;
        async move { json(app.post(path, body).await, StatusCode::CREATED).await }
    };
    let key = created("/api/keys", json!({"name": "same", "plan": "free"})).await;
    let identity = created(
        "/api/identities",
        json!({"external_id": "cus_same", "name": "Same"}),
    )
    .await;
    created(
        "/api/plans",
        json!({"name": "steady", "limits": [{"name": "s", "rate": 5, "per": "1s"}]}),
    )
    .await;
    let hook = created(
        "/api/webhooks",
        json!({"url": "https://hooks.example.com/t", "events": ["key.rotated"]}),
    )
    .await;
    let key = format!("/api/keys/{}", key["id"]);
    for (path, same) in [
        (
            key.clone(),
            json!({"name": "same", "plan": "free", "enabled": true, "owner": null}),
        ),
        (
            format!("/api/identities/{}", identity["id"]),
            json!({"name": "Same", "external_id": "cus_same"}),
        ),
        (
            "/api/plans/steady".to_string(),
            json!({"limits": [{"name": "s", "rate": 5, "per": "1s"}], "concurrency": null}),
        ),
        (
            format!("/api/webhooks/{}", hook["id"]),
            json!({"url": "https://hooks.example.com/t", "enabled": true}),
        ),
    ] {
        let current = json(app.get(&path).await, StatusCode::OK).await;
        for body in [json!({}), same] {
            let answer = json(app.patch(&path, body.clone()).await, StatusCode::OK).await;
            assert_eq!(answer["updated_at"], current["updated_at"], "{path} {body}");
            if !path.starts_with("/api/webhooks") {
                assert_eq!(answer, current, "{path} {body}");
            }
        }
    }
    for action in [
        "key.update",
        "key.enable",
        "identity.update",
        "plan.update",
        "webhook.update",
    ] {
        let page = events(&app, &format!("?action={action}")).await;
        assert_eq!(page["total"], 0, "{action}: {page}");
    }
    // A real change is still recorded, with what changed only.
    json(
        app.patch(&key, json!({"name": "renamed", "plan": "free"}))
            .await,
        StatusCode::OK,
    )
    .await;
    let page = events(&app, "?action=key.update").await;
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(
        page["items"][0]["changes"],
        json!({"name": {"before": "same", "after": "renamed"}})
    );
}
both!(patches_that_change_nothing_leave_no_trace);

/// Round 13: a limit's `burst` equal to its rate or `cost: 1` (the
/// defaults) spelled out or left out, or metadata `1` against `1.0`, wrote
/// a `key.update` row on every alternation. They mean the same: compared
/// in canonical form, such a patch changes nothing.
async fn patches_that_only_respell_defaults_leave_no_trace(app: TestApp) {
    let bare = json!([{"name": "m", "rate": 60, "per": "1m"}]);
    let key = json(
        app.post(
            "/api/keys",
            json!({"name": "k", "limits": bare, "metadata": {"tier": 1, "l": [2]}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let identity = json(
        app.post(
            "/api/identities",
            json!({"external_id": "cus_r", "name": "R", "metadata": {"n": 3}, "limits": bare}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    json(
        app.post("/api/plans", json!({"name": "p", "limits": bare}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let respelt = [
        json!({"limits": [{"name": "m", "rate": 60, "per": "1m", "burst": 60}]}),
        json!({"limits": bare}),
        json!({"limits": [{"name": "m", "rate": 60, "per": "1m", "cost": 1}]}),
        json!({"limits": bare}),
    ];
    let paths = [
        format!("/api/keys/{}", key["id"]),
        format!("/api/identities/{}", identity["id"]),
        "/api/plans/p".to_string(),
    ];
    for path in &paths {
        let current = json(app.get(path).await, StatusCode::OK).await;
        let mut bodies = respelt.to_vec();
        if !path.starts_with("/api/plans") {
            let meta = current["metadata"].clone();
            let floats = if path.starts_with("/api/keys") {
                json!({"tier": 1.0, "l": [2.0]})
            } else {
                json!({"n": 3.0})
            };
            bodies.extend([json!({"metadata": floats}), json!({"metadata": meta})]);
        }
        for body in bodies {
            let answer = json(app.patch(path, body.clone()).await, StatusCode::OK).await;
            assert_eq!(answer["updated_at"], current["updated_at"], "{path} {body}");
        }
    }
    for action in ["key.update", "identity.update", "plan.update"] {
        let page = events(&app, &format!("?action={action}")).await;
        assert_eq!(page["total"], 0, "{action}: {page}");
    }
    // A burst that differs from the rate is a change.
    json(
        app.patch(
            &paths[0],
            json!({"limits": [{"name": "m", "rate": 60, "per": "1m", "burst": 120}]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let page = events(&app, "?action=key.update").await;
    assert_eq!(page["total"], 1, "{page}");
}
both!(patches_that_only_respell_defaults_leave_no_trace);

async fn audit_filters_page_and_refuse_hostile_values(app: TestApp) {
    for i in 0..5 {
        json(
            app.post("/api/keys", json!({"name": format!("k{i}")}))
                .await,
            StatusCode::CREATED,
        )
        .await;
    }
    let p1 = events(&app, "?action=key.create&per_page=2").await;
    assert_eq!(p1["total"], 5);
    assert_eq!(p1["items"].as_array().expect("items").len(), 2);
    let p3 = events(&app, "?action=key.create&per_page=2&page=3").await;
    assert_eq!(p3["items"].as_array().expect("items").len(), 1);
    let ids: Vec<i64> = p1["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert!(ids[0] > ids[1], "newest first");
    let now = tollgate_core::now_ms();
    assert_eq!(
        events(&app, &format!("?from={}", now + 60_000)).await["total"],
        0
    );
    assert_eq!(
        events(&app, &format!("?to={}", now - 3_600_000)).await["total"],
        0
    );
    assert_eq!(events(&app, "?actor=nobody").await["total"], 0);
    assert_eq!(events(&app, "?action=key.").await["total"], 5);
    // `%` and `_` are not wildcards.
    assert_eq!(events(&app, "?action=key_create").await["total"], 0);
    assert_eq!(events(&app, "?actor=%25").await["total"], 0);
    for (q, field) in [
        ("?from=yesterday", "from"),
        ("?to=-5", "to"),
        ("?page=0", "page"),
        ("?per_page=100000", "per_page"),
        // Not "all", not 1: `tollgate audit list --limit 0` is refused too.
        ("?per_page=0", "per_page"),
        ("?actor=a%00b", "actor"),
        ("?target=%0a", "target"),
    ] {
        invalid(app.get(&format!("/api/audit{q}")).await, field).await;
    }
    let long = "x".repeat(300);
    invalid(
        app.get(&format!("/api/audit?action={long}")).await,
        "action",
    )
    .await;
    let res = app.get("/api/audit?page=1&page=2").await;
    assert!(res.status().is_client_error());
}
both!(audit_filters_page_and_refuse_hostile_values);

async fn the_audit_table_is_append_only(app: TestApp) {
    json(
        app.post("/api/keys", json!({"name": "k"})).await,
        StatusCode::CREATED,
    )
    .await;
    let pool = app.db.pool();
    assert!(
        sqlx::query("UPDATE audit_events SET actor = 'someone-else'")
            .execute(pool)
            .await
            .is_err()
    );
    assert!(sqlx::query("DELETE FROM audit_events")
        .execute(pool)
        .await
        .is_err());
    if app.db.kind() == tollgate_core::db::DbKind::Postgres {
        assert!(sqlx::query("TRUNCATE audit_events")
            .execute(pool)
            .await
            .is_err());
    }
    let (_, total) = app.db.list_audit(&Default::default()).await.expect("audit");
    assert_eq!(total, 1);
    // Retention removes only old rows.
    let old = tollgate_core::now_ms() - 400 * 86_400_000;
    sqlx::query(
        "INSERT INTO audit_events (at, actor_kind, actor, action) VALUES ($1, 'cli', 'cli:old', 'key.create')",
    )
    .bind(old)
    .execute(pool)
    .await
    .expect("insert");
    let gone = app
        .db
        .prune_audit(tollgate_core::now_ms() - 365 * 86_400_000)
        .await
        .expect("prune");
    assert_eq!(gone, 1);
    // Even asked to, it keeps what is younger than a day.
    assert_eq!(
        app.db
            .prune_audit(tollgate_core::now_ms() + 1)
            .await
            .expect("prune"),
        0
    );
    let (_, total) = app.db.list_audit(&Default::default()).await.expect("audit");
    assert_eq!(total, 1);
}
both!(the_audit_table_is_append_only);

async fn a_viewer_cannot_read_the_audit_log(app: TestApp) {
    let (_, viewer) = app.admin_with_role("vee", "viewer").await;
    let res = app
        .with(&viewer, Method::GET, "/api/audit")
        .send()
        .await
        .expect("r");
    problem(res, StatusCode::FORBIDDEN, "insufficient-role").await;
}
both!(a_viewer_cannot_read_the_audit_log);

/// Make the first insert into `table` from now on kill its own backend, as
/// a failover or `pg_terminate_backend` would (a sequence counts: it is not
/// rolled back with the insert); `fired()` tells how often it was reached.
async fn kill_first_insert(app: &TestApp, table: &str) -> impl Fn() -> i64 {
    let seq = format!("{table}_kill_once");
    for sql in [
        format!("CREATE SEQUENCE {seq}"),
        format!(
            "CREATE FUNCTION {seq}() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF nextval('{seq}') = 1 THEN \
             PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN NEW; END $$"
        ),
        format!(
            "CREATE TRIGGER {seq} BEFORE INSERT ON {table} \
             FOR EACH ROW EXECUTE FUNCTION {seq}()"
        ),
    ] {
        sqlx::query(&sql).execute(app.db.pool()).await.expect(&sql);
    }
    let db = app.db.clone();
    move || {
        let (db, sql) = (db.clone(), format!("SELECT last_value FROM {seq}"));
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move {
                sqlx::query_scalar(&sql)
                    .fetch_one(db.pool())
                    .await
                    .expect("sequence")
            })
        })
    }
}

/// Round 18 (black-box) and its re-check: the connection writing a
/// change's audit row, or its webhook event, was terminated (failover,
/// pooler restart, `pg_terminate_backend`): the client's 200 had no audit
/// row, a `key.disabled` event was never enqueued. Both are now written
/// again on a fresh connection. PostgreSQL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changes_records_outlive_a_terminated_connection() {
    let Some(app) = TestApp::postgres().await else {
        return;
    };
    let audit_fired = kill_first_insert(&app, "audit_events").await;
    let created = json(
        app.post("/api/keys", json!({"name": "survivor", "plan": "free"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_i64().expect("id");
    assert!(audit_fired() >= 2, "the first audit insert was not killed");
    let page = events(&app, &format!("?target_type=key&target={id}")).await;
    let actions: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, ["key.create"], "{page}");

    json(
        app.post(
            "/api/webhooks",
            json!({"url": "https://hooks.example.com/t", "events": ["key.disabled"]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let event_fired = kill_first_insert(&app, "webhook_events").await;
    json(
        app.patch(&format!("/api/keys/{id}"), json!({"enabled": false}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(event_fired() >= 2, "the first event insert was not killed");
    let enqueued: Vec<String> = sqlx::query_scalar("SELECT type FROM webhook_events ORDER BY id")
        .fetch_all(app.db.pool())
        .await
        .expect("events");
    assert_eq!(enqueued, ["key.disabled"]);
}
