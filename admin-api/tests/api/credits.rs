//! `POST /api/keys/{id}/credits` (issue #20 item 2): recorded once per
//! call, audited, refused clearly for hostile bodies.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tollgate_core::credits::SubjectKind;

use crate::both;
use crate::common::*;

async fn credits_are_added_audited_and_checked(app: TestApp) {
    let created = json(
        app.post("/api/keys", json!({"name": "prepaid", "plan": "free"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_i64().expect("id");
    let path = format!("/api/keys/{id}/credits");
    let v = json(
        app.post(&path, json!({"delta": 50})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        (v["delta"].as_i64(), v["granted"].as_i64()),
        (Some(50), Some(50))
    );
    let v = json(
        app.post(&path, json!({"delta": -20})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(v["granted"].as_i64(), Some(30));
    assert_eq!(
        app.db
            .credits_granted(SubjectKind::Key, id)
            .await
            .expect("sum"),
        Some(30)
    );
    let rows = app.db.credit_adjustments_since(0).await.expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].actor, "admin:admin");

    let audit = json(
        app.get(&format!(
            "/api/audit?target_type=key&target={id}&action=key.credits"
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(2), "{audit}");

    // Hostile bodies: clear 4xx, nothing recorded.
    for body in [
        json!({"delta": 0}),
        json!({"delta": 9007199254740992i64}),
        json!({"delta": i64::MIN}),
    ] {
        invalid(app.post(&path, body.clone()).await, "delta").await;
    }
    for body in [
        json!({"delta": 1.5}),
        json!({"delta": "50"}),
        json!({"delta": 1e30}),
        json!({"delta": 18446744073709551615u64}),
        json!({}),
        json!({"delta": 5, "extra": 1}),
        json!([50]),
    ] {
        let s = app.post(&path, body.clone()).await.status();
        assert!(s.is_client_error(), "{body}: {s}");
    }
    let s = app
        .post("/api/keys/999999/credits", json!({"delta": 5}))
        .await
        .status();
    assert_eq!(s, StatusCode::NOT_FOUND);
    for bad in ["0", "-1", "x", "99999999999999999999"] {
        let s = app
            .post(&format!("/api/keys/{bad}/credits"), json!({"delta": 5}))
            .await
            .status();
        assert!(s.is_client_error(), "{bad}: {s}");
    }
    assert_eq!(
        app.db
            .credit_adjustments_since(0)
            .await
            .expect("rows")
            .len(),
        2
    );

    // A viewer may not.
    let (_, viewer) = app.admin_with_role("watcher", "viewer").await;
    let s = send(
        app.with(&viewer, Method::POST, &path)
            .json(&json!({"delta": 5})),
    )
    .await
    .status();
    assert_eq!(s, StatusCode::FORBIDDEN);
}

both!(credits_are_added_audited_and_checked);

/// `POST /api/identities/{id}/credits`: the identity's shared balance,
/// recorded as an identity adjustment, audited, shown by GET, and refused
/// clearly for hostile bodies and ids.
async fn identity_credits_are_added_shown_and_checked(app: TestApp) {
    let created = json(
        app.post(
            "/api/identities",
            json!({"external_id": "cus_prepaid", "name": "Prepaid"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_i64().expect("id");
    assert!(created.get("credits_granted").is_none(), "{created}");
    let path = format!("/api/identities/{id}/credits");
    let v = json(
        app.post(&path, json!({"delta": 6})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        (v["delta"].as_i64(), v["granted"].as_i64()),
        (Some(6), Some(6))
    );
    json(
        app.post(&path, json!({"delta": -1})).await,
        StatusCode::CREATED,
    )
    .await;
    let shown = json(
        app.get(&format!("/api/identities/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(shown["credits_granted"].as_i64(), Some(5), "{shown}");
    assert_eq!(
        app.db
            .credits_granted(SubjectKind::Identity, id)
            .await
            .expect("sum"),
        Some(5)
    );
    // Recorded for the identity, not for a key of the same id.
    assert_eq!(
        app.db
            .credits_granted(SubjectKind::Key, id)
            .await
            .expect("sum"),
        None
    );
    let audit = json(
        app.get(&format!(
            "/api/audit?target_type=identity&target={id}&action=identity.credits"
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(2), "{audit}");

    for body in [
        json!({"delta": 0}),
        json!({"delta": 9007199254740992i64}),
        json!({"delta": i64::MIN}),
    ] {
        invalid(app.post(&path, body.clone()).await, "delta").await;
    }
    for body in [
        json!({"delta": 1.5}),
        json!({"delta": "6"}),
        json!({}),
        json!({"delta": 5, "extra": 1}),
        json!(null),
    ] {
        let s = app.post(&path, body.clone()).await.status();
        assert!(s.is_client_error(), "{body}: {s}");
    }
    let s = app
        .post("/api/identities/999999/credits", json!({"delta": 5}))
        .await
        .status();
    assert_eq!(s, StatusCode::NOT_FOUND);
    for bad in ["0", "-1", "x", "99999999999999999999", "1%00"] {
        let s = app
            .post(
                &format!("/api/identities/{bad}/credits"),
                json!({"delta": 5}),
            )
            .await
            .status();
        assert!(s.is_client_error(), "{bad}: {s}");
    }
    assert_eq!(
        app.db
            .credit_adjustments_since(0)
            .await
            .expect("rows")
            .len(),
        2
    );
    let (_, viewer) = app.admin_with_role("watcher", "viewer").await;
    let s = send(
        app.with(&viewer, Method::POST, &path)
            .json(&json!({"delta": 5})),
    )
    .await
    .status();
    assert_eq!(s, StatusCode::FORBIDDEN);
}

both!(identity_credits_are_added_shown_and_checked);

async fn put(app: &TestApp, path: &str, body: serde_json::Value) -> reqwest::Response {
    send(app.req(Method::PUT, path).json(&body)).await
}

/// `PUT`/`DELETE /api/{keys,identities}/{id}/credits/refill`: set,
/// replaced, removed, audited; hostile refills are 4xx naming the field,
/// and nothing is written.
async fn own_refills_are_set_checked_and_removed(app: TestApp) {
    let key = json(
        app.post("/api/keys", json!({"name": "refilled"})).await,
        StatusCode::CREATED,
    )
    .await;
    let key = key["id"].as_i64().expect("id");
    let identity = json(
        app.post(
            "/api/identities",
            json!({"external_id": "cus_refill", "name": "Refill"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let identity = identity["id"].as_i64().expect("id");
    let kp = format!("/api/keys/{key}/credits/refill");
    let ip = format!("/api/identities/{identity}/credits/refill");
    let v = json(
        put(&app, &kp, json!({"amount": 100, "every": "1d"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(v, json!({"amount": 100, "every": "1d"}));
    // A number or a string anchor.
    json(
        put(
            &app,
            &ip,
            json!({"amount": 5, "period": "month", "anchor": 15, "time_zone": "Europe/Paris"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let stored = app
        .db
        .credit_refill(SubjectKind::Identity, identity)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(stored.spec.anchor.as_deref(), Some("15"));
    // Replaced.
    json(
        put(&app, &kp, json!({"amount": 7, "every": "1h"})).await,
        StatusCode::OK,
    )
    .await;
    let stored = app
        .db
        .credit_refill(SubjectKind::Key, key)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(
        (stored.spec.amount, stored.spec.every.as_deref()),
        (Some(7), Some("1h"))
    );

    for (body, field) in [
        (json!({"amount": 0, "every": "1d"}), "amount"),
        (
            json!({"amount": 9007199254740992u64, "every": "1d"}),
            "amount",
        ),
        (json!({"amount": 5}), "every"),
        (json!({"amount": 5, "every": "0s"}), "every"),
        (json!({"amount": 5, "every": "400d"}), "every"),
        (
            json!({"amount": 5, "every": "1d", "period": "month"}),
            "every",
        ),
        (json!({"amount": 5, "every": "1d", "anchor": 3}), "anchor"),
        (json!({"amount": 5, "period": "fortnight"}), "period"),
        (
            json!({"amount": 5, "period": "month", "anchor": 32}),
            "anchor",
        ),
        (
            json!({"amount": 5, "period": "month", "anchor": -1}),
            "anchor",
        ),
        (
            json!({"amount": 5, "period": "month", "anchor": [1]}),
            "anchor",
        ),
        (
            json!({"amount": 5, "period": "month", "time_zone": "Mars/Base"}),
            "time_zone",
        ),
    ] {
        invalid(put(&app, &ip, body.clone()).await, field).await;
    }
    for body in [
        json!({"amount": -5, "every": "1d"}),
        json!({"amount": "5", "every": "1d"}),
        json!({"amount": 1.5, "every": "1d"}),
        json!({"every": "1d"}),
        json!({"amount": 5, "every": "1d", "extra": 1}),
        json!(null),
    ] {
        let s = put(&app, &ip, body.clone()).await.status();
        assert!(s.is_client_error(), "{body}: {s}");
    }
    let s = put(
        &app,
        "/api/keys/999999/credits/refill",
        json!({"amount": 5, "every": "1d"}),
    )
    .await
    .status();
    assert_eq!(s, StatusCode::NOT_FOUND);
    for bad in ["0", "-1", "x", "99999999999999999999"] {
        let s = put(
            &app,
            &format!("/api/identities/{bad}/credits/refill"),
            json!({"amount": 5, "every": "1d"}),
        )
        .await
        .status();
        assert!(s.is_client_error(), "{bad}: {s}");
    }
    assert_eq!(app.db.credit_refills().await.expect("all").len(), 2);

    let (_, viewer) = app.admin_with_role("watcher", "viewer").await;
    let s = send(
        app.with(&viewer, Method::PUT, &kp)
            .json(&json!({"amount": 5, "every": "1d"})),
    )
    .await
    .status();
    assert_eq!(s, StatusCode::FORBIDDEN);

    assert_eq!(app.delete(&kp).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.delete(&kp).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.db.credit_refills().await.expect("all").len(), 1);
    let audit = json(
        app.get(&format!(
            "/api/audit?target_type=key&target={key}&action=key.credits_refill"
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(3), "{audit}");
}

both!(own_refills_are_set_checked_and_removed);

/// A key holding credits of its own cannot change identity (black-box
/// round 3, B14: its balance lives with its identity's, and a move started
/// a fresh one elsewhere and applied its top-ups again); a key without
/// credits moves freely.
async fn a_key_with_own_credits_cannot_change_identity(app: TestApp) {
    let identity = json(
        app.post(
            "/api/identities",
            json!({"external_id": "cus_move", "name": "Move"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await["id"]
        .as_i64()
        .expect("identity id");
    let key = |name: &'static str| {
        let app = &app;
        async move {
            json(
                app.post("/api/keys", json!({"name": name})).await,
                StatusCode::CREATED,
            )
            .await["id"]
                .as_i64()
                .expect("id")
        }
    };
    let (plain, prepaid) = (key("plain").await, key("prepaid").await);
    json(
        app.post(&format!("/api/keys/{prepaid}/credits"), json!({"delta": 5}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let moved = app
        .patch(
            &format!("/api/keys/{plain}"),
            json!({"identity_id": identity}),
        )
        .await;
    assert_eq!(moved.status(), StatusCode::OK);
    let refused = app
        .patch(
            &format!("/api/keys/{prepaid}"),
            json!({"identity_id": identity}),
        )
        .await;
    let body = problem(refused, StatusCode::CONFLICT, "conflict").await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("credits")),
        "{body}"
    );
    let k = app.db.get_key(prepaid).await.expect("get").expect("key");
    assert_eq!(k.identity_id, None);
    // Other changes to the same key still go through.
    let renamed = app
        .patch(
            &format!("/api/keys/{prepaid}"),
            json!({"name": "renamed", "identity_id": null}),
        )
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
}

both!(a_key_with_own_credits_cannot_change_identity);

/// Finding B1: a top-up whose running total would leave the 64-bit range
/// is refused 422 naming `delta` and not stored, for keys and identities;
/// the subject can still be corrected, and `granted` is exact.
async fn a_total_beyond_64_bits_is_refused_and_not_stored(app: TestApp) {
    use tollgate_core::credits::MAX_DELTA;
    let key = json(
        app.post("/api/keys", json!({"name": "rich", "plan": "free"}))
            .await,
        StatusCode::CREATED,
    )
    .await["id"]
        .as_i64()
        .expect("id");
    let identity = json(
        app.post(
            "/api/identities",
            json!({"external_id": "cus_rich", "name": "Rich"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await["id"]
        .as_i64()
        .expect("id");
    // 1024 × (2^53 − 1) = 2^63 − 1024: the largest total in range, below.
    for (kind, id) in [(SubjectKind::Key, key), (SubjectKind::Identity, identity)] {
        for _ in 0..1023 {
            app.db
                .add_credits(kind, id, MAX_DELTA, "seed")
                .await
                .expect("in range");
        }
    }
    for (path, kind, id) in [
        (format!("/api/keys/{key}/credits"), SubjectKind::Key, key),
        (
            format!("/api/identities/{identity}/credits"),
            SubjectKind::Identity,
            identity,
        ),
    ] {
        let v = json(
            app.post(&path, json!({"delta": MAX_DELTA})).await,
            StatusCode::CREATED,
        )
        .await;
        assert_eq!(v["granted"].as_i64(), Some(1024 * MAX_DELTA), "{v}");
        let rows = app
            .db
            .credit_adjustments_since(0)
            .await
            .expect("rows")
            .len();
        // Retried as a billing integration does on errors: never stored.
        for _ in 0..3 {
            invalid(app.post(&path, json!({"delta": MAX_DELTA})).await, "delta").await;
            invalid(app.post(&path, json!({"delta": 1024})).await, "delta").await;
        }
        assert_eq!(
            app.db
                .credit_adjustments_since(0)
                .await
                .expect("rows")
                .len(),
            rows
        );
        // Still correctable both ways.
        json(
            app.post(&path, json!({"delta": 1023})).await,
            StatusCode::CREATED,
        )
        .await;
        let v = json(
            app.post(&path, json!({"delta": -MAX_DELTA})).await,
            StatusCode::CREATED,
        )
        .await;
        assert_eq!(v["granted"].as_i64(), Some(i64::MAX - MAX_DELTA), "{v}");
        assert_eq!(
            app.db.credits_granted(kind, id).await.expect("sum"),
            Some(i64::MAX - MAX_DELTA)
        );
    }
}

both!(a_total_beyond_64_bits_is_refused_and_not_stored);

/// An identity whose keys hold credits of their own cannot be deleted
/// (black-box round 3, B14: detaching them moved their balances out of the
/// identity's hash tag); once those keys are gone it can.
async fn an_identity_whose_keys_hold_credits_cannot_be_deleted(app: TestApp) {
    let identity = json(
        app.post(
            "/api/identities",
            json!({"external_id": "cus_del", "name": "Del"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await["id"]
        .as_i64()
        .expect("identity id");
    let key = json(
        app.post(
            "/api/keys",
            json!({"name": "member", "identity_id": identity}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await["id"]
        .as_i64()
        .expect("id");
    json(
        app.post(&format!("/api/keys/{key}/credits"), json!({"delta": 3}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let refused = app.delete(&format!("/api/identities/{identity}")).await;
    let body = problem(refused, StatusCode::CONFLICT, "conflict").await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&key.to_string())),
        "{body}"
    );
    assert!(app.db.get_identity(identity).await.expect("get").is_some());
    assert_eq!(
        app.delete(&format!("/api/keys/{key}")).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete(&format!("/api/identities/{identity}"))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
}

both!(an_identity_whose_keys_hold_credits_cannot_be_deleted);
