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
