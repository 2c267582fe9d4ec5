//! `POST /api/keys/{id}/quotas/{name}` and `POST /api/identities/{id}/quotas/{name}`
//! (issue #20, reset / adjust a quota): one row per call for the current
//! period, audited, refused clearly for hostile input and the wrong role.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tollgate_core::credits::SubjectKind;
use tollgate_core::quota::adjust::QuotaChange;

use crate::both;
use crate::common::*;

/// A key with a daily quota of 5 and a bucket: its id.
async fn metered_key(app: &TestApp) -> i64 {
    let key = json(
        app.post(
            "/api/keys",
            json!({"name": "metered", "limits": [
                {"name": "daily", "quota": 5, "period": "day"},
                {"name": "second", "rate": 10, "per": "1s"},
            ]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    key["id"].as_i64().expect("id")
}

/// `GET /api/keys/{id}/quotas`, 200.
async fn key_quotas(app: &TestApp, id: i64) -> serde_json::Value {
    json(
        app.get(&format!("/api/keys/{id}/quotas")).await,
        StatusCode::OK,
    )
    .await
}

async fn quotas_are_reset_and_adjusted_once_per_call(app: TestApp) {
    let id = metered_key(&app).await;
    let path = format!("/api/keys/{id}/quotas/daily");
    let v = json(
        app.post(&path, json!({"reset": true})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(v["quota"], "daily");
    assert_eq!(
        (v["reset"].as_bool(), v["used_delta"].as_i64()),
        (Some(true), Some(0))
    );
    let (start, end) = (
        v["period_start"].as_i64().expect("start"),
        v["period_end"].as_i64().expect("end"),
    );
    let now = tollgate_core::now_ms();
    assert!(
        start <= now && now < end && end - start == 86_400_000,
        "{v}"
    );
    assert_eq!(start % 86_400_000, 0, "a UTC day: {v}");
    let v = json(
        app.post(&path, json!({"used_delta": -3})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        (v["reset"].as_bool(), v["used_delta"].as_i64()),
        (Some(false), Some(-3))
    );
    let rows = app
        .db
        .quota_adjustments_running(now.saturating_mul(1_000))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].subject_kind, rows[0].subject_id, rows[0].change),
        (SubjectKind::Key, id, QuotaChange::Reset)
    );
    assert_eq!(rows[1].change, QuotaChange::Delta(-3));
    assert_eq!(rows[1].actor, "admin:admin");
    let audit = json(
        app.get(&format!(
            "/api/audit?target_type=key&target={id}&action=key.quota"
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(2), "{audit}");

    // Hostile bodies: a clear 4xx naming the field, nothing recorded.
    for (body, field) in [
        (json!({}), "reset"),
        (json!({"reset": false}), "reset"),
        (json!({"reset": true, "used_delta": 1}), "used_delta"),
        (json!({"used_delta": 0}), "used_delta"),
        (
            json!({"used_delta": 1_125_899_906_842_625i64}),
            "used_delta",
        ),
        (json!({"used_delta": i64::MIN}), "used_delta"),
    ] {
        invalid(app.post(&path, body.clone()).await, field).await;
    }
    for body in [
        json!({"used_delta": 1.5}),
        json!({"used_delta": "5"}),
        json!({"used_delta": 1e30}),
        json!({"used_delta": 18446744073709551615u64}),
        json!({"reset": "yes"}),
        json!({"reset": null, "used_delta": null}),
        json!({"reset": true, "extra": 1}),
        json!([true]),
    ] {
        let s = app.post(&path, body.clone()).await.status();
        assert!(s.is_client_error(), "{body}: {s}");
    }
    // Names: no such quota (404), a bucket (409), impossible names (400).
    problem(
        app.post(
            &format!("/api/keys/{id}/quotas/weekly"),
            json!({"reset": true}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    problem(
        app.post(
            &format!("/api/keys/{id}/quotas/second"),
            json!({"reset": true}),
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    let long = "d".repeat(10_000);
    for bad in ["da%20ily", "%00", "..", "d%22", long.as_str()] {
        let s = app
            .post(
                &format!("/api/keys/{id}/quotas/{bad}"),
                json!({"reset": true}),
            )
            .await
            .status();
        assert!(s.is_client_error(), "{bad:.20}: {s}");
    }
    for bad in ["0", "-1", "x", "99999999999999999999"] {
        let s = app
            .post(
                &format!("/api/keys/{bad}/quotas/daily"),
                json!({"reset": true}),
            )
            .await
            .status();
        assert!(s.is_client_error(), "{bad}: {s}");
    }
    let s = app
        .post("/api/keys/999999/quotas/daily", json!({"reset": true}))
        .await
        .status();
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        app.db
            .quota_adjustments_running(0)
            .await
            .expect("rows")
            .len(),
        2
    );

    // A viewer may not.
    let (_, viewer) = app.admin_with_role("watcher", "viewer").await;
    let s = send(
        app.with(&viewer, Method::POST, &path)
            .json(&json!({"reset": true})),
    )
    .await
    .status();
    assert_eq!(s, StatusCode::FORBIDDEN);
}

both!(quotas_are_reset_and_adjusted_once_per_call);

/// An identity's shared quota is changed on the identity, a per-key quota
/// on each key, never the other way round.
async fn shared_quotas_are_changed_on_the_identity(app: TestApp) {
    let identity = json(
        app.post(
            "/api/identities",
            json!({"external_id": "cus_q", "name": "Q", "limits": [
                {"name": "monthly", "quota": 100, "period": "month", "anchor": "15",
                 "time_zone": "Europe/Paris", "scope": "identity"},
                {"name": "daily", "quota": 5, "period": "day"},
            ]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let iid = identity["id"].as_i64().expect("id");
    let key = json(
        app.post("/api/keys", json!({"name": "member", "identity_id": iid}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let kid = key["id"].as_i64().expect("id");
    let v = json(
        app.post(
            &format!("/api/identities/{iid}/quotas/monthly"),
            json!({"used_delta": 7}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let (start, end) = (
        v["period_start"].as_i64().expect("start"),
        v["period_end"].as_i64().expect("end"),
    );
    // From a 15th to the next, midnight in Paris (UTC+1 in winter, +2 in summer).
    let days = (end - start) / 86_400_000;
    assert!((27..=31).contains(&days), "{v}");
    let audit = json(
        app.get(&format!(
            "/api/audit?target_type=identity&target={iid}&action=identity.quota"
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");
    // The key's own count of `daily` is the key's; `monthly` is shared.
    json(
        app.post(
            &format!("/api/keys/{kid}/quotas/daily"),
            json!({"reset": true}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let p = problem(
        app.post(
            &format!("/api/keys/{kid}/quotas/monthly"),
            json!({"reset": true}),
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("identity {iid}"))),
        "{p}"
    );
    problem(
        app.post(
            &format!("/api/identities/{iid}/quotas/daily"),
            json!({"reset": true}),
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    problem(
        app.post(
            "/api/identities/999999/quotas/monthly",
            json!({"reset": true}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    assert_eq!(
        app.db
            .quota_adjustments_running(0)
            .await
            .expect("rows")
            .len(),
        2
    );
}

both!(shared_quotas_are_changed_on_the_identity);

/// `GET …/quotas` with the local backend: the quotas and their periods,
/// the use as the local proxies last wrote it (`quota_counts`; none yet:
/// 0 used), the balance not known here.
async fn quota_use_lists_quotas_and_credits(app: TestApp) {
    let id = metered_key(&app).await;
    let v = key_quotas(&app, id).await;
    assert_eq!(v["counted"], "database", "{v}");
    let quotas = v["quotas"].as_array().expect("quotas");
    assert_eq!(quotas.len(), 1, "buckets are not quotas: {v}");
    let q = &quotas[0];
    assert_eq!(
        (q["name"].as_str(), q["quota"].as_u64()),
        (Some("daily"), Some(5))
    );
    assert_eq!(
        (q["period"].as_str(), q["scope"].as_str()),
        (Some("day"), Some("key"))
    );
    assert_eq!(
        (q["used"].as_u64(), q["remaining"].as_u64()),
        (Some(0), Some(5)),
        "{v}"
    );
    let now = tollgate_core::now_ms();
    let (start, end) = (
        q["period_start"].as_i64().expect("start"),
        q["resets_at"].as_i64().expect("end"),
    );
    assert!(start <= now && now < end, "{v}");
    assert!(v["credits"].is_null(), "{v}");
    // What a local proxy wrote with its last flush.
    use tollgate_core::db::quota_counts::{CountHolder, QuotaCount};
    let written = QuotaCount {
        holder: CountHolder::Key(id).name(),
        owner_key: 0,
        bucket: "p:daily".into(),
        period: tollgate_core::quota::PeriodBounds {
            start_us: start * 1_000,
            end_us: end * 1_000,
        },
        used: 3,
        adjusted_through: 0,
    };
    app.db
        .save_quota_counts("a@127.0.0.1:1", std::slice::from_ref(&written), now * 1_000)
        .await
        .expect("written");
    // A second local proxy's count: the answer is what they counted together.
    let one = QuotaCount { used: 1, ..written };
    app.db
        .save_quota_counts("b@127.0.0.1:2", &[one], now * 1_000)
        .await
        .expect("written");
    let v = key_quotas(&app, id).await;
    let q = &v["quotas"][0];
    assert_eq!(
        (q["used"].as_u64(), q["remaining"].as_u64()),
        (Some(4), Some(1)),
        "{v}"
    );
    json(
        app.post(&format!("/api/keys/{id}/credits"), json!({"delta": 50}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let v = key_quotas(&app, id).await;
    assert_eq!(v["credits"]["granted"], 50, "{v}");
    assert_eq!(v["credits"]["balance"], 50, "{v}");
    // A local proxy's spends (written with its usage flush) lower it.
    app.db
        .record_spends(
            "proxy-1",
            &[tollgate_core::db::credits::NewSpend {
                subject_kind: tollgate_core::credits::SubjectKind::Key,
                subject_id: id,
                delta: -7,
                spent_at: now,
            }],
        )
        .await
        .expect("spends");
    let v = key_quotas(&app, id).await;
    assert_eq!(
        (&v["credits"]["granted"], &v["credits"]["balance"]),
        (&json!(50), &json!(43)),
        "{v}"
    );
    // With a refill the rows do not give the balance: not known here.
    json(
        send(
            app.req(Method::PUT, &format!("/api/keys/{id}/credits/refill"))
                .json(&json!({"amount": 10, "every": "1d"})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let v = key_quotas(&app, id).await;
    assert!(v["credits"]["balance"].is_null(), "{v}");
    for bad in ["0", "-1", "x", "99999999999999999999"] {
        let s = app.get(&format!("/api/keys/{bad}/quotas")).await.status();
        assert!(s.is_client_error(), "{bad}: {s}");
    }
    assert_eq!(
        app.get("/api/keys/999999/quotas").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/identities/999999/quotas").await.status(),
        StatusCode::NOT_FOUND
    );
    // An identity lists its shared quotas only.
    let identity = json(
        app.post(
            "/api/identities",
            json!({"external_id": "cus_u", "name": "U", "limits": [
                {"name": "monthly", "quota": 100, "period": "month", "scope": "identity"},
                {"name": "daily", "quota": 5, "period": "day"},
            ]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let iid = identity["id"].as_i64().expect("id");
    let v = json(
        app.get(&format!("/api/identities/{iid}/quotas")).await,
        StatusCode::OK,
    )
    .await;
    let names: Vec<_> = v["quotas"]
        .as_array()
        .expect("quotas")
        .iter()
        .map(|q| q["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, ["monthly"], "{v}");
    // A viewer may read.
    let (_, viewer) = app.admin_with_role("reader", "viewer").await;
    let s = send(app.with(&viewer, Method::GET, &format!("/api/keys/{id}/quotas")))
        .await
        .status();
    assert_eq!(s, StatusCode::OK);
}

both!(quota_use_lists_quotas_and_credits);

/// With the Redis backend the counts and the balance are read where the
/// proxies keep them.
#[tokio::test]
async fn quota_use_is_read_from_redis() {
    use tollgate_core::quota::redis_keys::{key_balance_key, quota_count_key, Holder};
    let Some(url) = service_url("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let limiter = format!("  backend: redis\n  redis_url: \"{url}\"\n  redis_timeout: 20ms");
    let config = tollgate_core::config::parse(&test_yaml(&limiter), "test.yaml").expect("valid");
    let app = TestApp::sqlite_with(config).await;
    let key = json(
        app.post(
            "/api/keys",
            json!({"name": "metered", "limits": [{"name": "daily", "quota": 5, "period": "day"}]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = key["id"].as_i64().expect("id");
    json(
        app.post(&format!("/api/keys/{id}/credits"), json!({"delta": 50}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let v = key_quotas(&app, id).await;
    assert_eq!(v["counted"], "redis", "{v}");
    assert!(v["quotas"][0]["used"].is_u64(), "{v}");
    let start = v["quotas"][0]["period_start"].as_i64().expect("start");
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let count = quota_count_key(Holder::Key(id), "daily", start * 1_000);
    let balance = key_balance_key(id, None);
    let _: () = redis::cmd("SET")
        .arg(&count)
        .arg(3)
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .expect("set");
    let _: () = redis::cmd("SET")
        .arg(&balance)
        .arg(42)
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .expect("set");
    let v = key_quotas(&app, id).await;
    let _: () = redis::cmd("DEL")
        .arg(&count)
        .arg(&balance)
        .query_async(&mut conn)
        .await
        .expect("del");
    assert_eq!(
        (
            v["quotas"][0]["used"].as_u64(),
            v["quotas"][0]["remaining"].as_u64()
        ),
        (Some(3), Some(2)),
        "{v}"
    );
    assert_eq!(
        (
            v["credits"]["granted"].as_i64(),
            v["credits"]["balance"].as_i64()
        ),
        (Some(50), Some(42)),
        "{v}"
    );
}

/// Round 17 (black-box): the kept Redis connection of the quota read died
/// with a Redis restart (here: a relay that closes it) and stayed dead,
/// `counted: unavailable`, until `/api/health` failed once. The first read
/// after Redis is back answers from Redis (a read is retried once on a new
/// connection).
#[tokio::test]
async fn quota_use_reads_redis_again_after_it_comes_back() {
    use crate::relay::{Mode, Relay};
    let Some(url) = service_url("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let authority = url.trim_start_matches("redis://").trim_end_matches('/');
    let target = tokio::net::lookup_host(authority)
        .await
        .expect("resolve")
        .next()
        .expect("an address");
    let relay = Relay::start(target).await;
    let limiter = format!(
        "  backend: redis\n  redis_url: \"redis://{}\"\n  redis_timeout: 20ms",
        relay.addr
    );
    let config = tollgate_core::config::parse(&test_yaml(&limiter), "test.yaml").expect("valid");
    let app = TestApp::sqlite_with(config).await;
    let key = json(
        app.post(
            "/api/keys",
            json!({"name": "metered", "limits": [{"name": "daily", "quota": 5, "period": "day"}]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = key["id"].as_i64().expect("id");
    assert_eq!(key_quotas(&app, id).await["counted"], "redis");
    // Redis goes away (its connections closed) and comes back; no read
    // meanwhile.
    relay.set(Mode::Stopped);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    relay.set(Mode::Up);
    let v = key_quotas(&app, id).await;
    assert_eq!(
        v["counted"], "redis",
        "the first read after it is back: {v}"
    );
}
