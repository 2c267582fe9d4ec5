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
