//! Hostile query strings on every endpoint that takes one: each refused
//! value is a 422 `validation-error` naming the parameter, and a parameter
//! the endpoint does not take a 400 `malformed-request` naming it, never a
//! 200 with the value taken as absent, a 500 or a panic.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both;
use crate::common::{invalid, json, problem, send, TestApp};

/// The typed parameters of each endpoint: (path, parameter, a valid value).
fn typed(key_id: i64) -> Vec<(String, &'static str, String)> {
    // An hour ago: a range short enough for every time series step.
    let recent = (tollgate_core::now_ms() - 3_600_000).to_string();
    let mut out = Vec::new();
    let analytics = [
        ("/api/analytics/summary".to_string(), &["from", "to"][..]),
        (
            "/api/analytics/timeseries".to_string(),
            &["from", "to", "key"][..],
        ),
        (format!("/api/analytics/keys/{key_id}"), &["from", "to"][..]),
        (
            "/api/analytics/top-keys".to_string(),
            &["from", "to", "limit"][..],
        ),
        (
            "/api/analytics/violations".to_string(),
            &["from", "to", "key", "page", "per_page"][..],
        ),
        ("/api/keys".to_string(), &["page", "per_page"][..]),
        (
            "/api/audit".to_string(),
            &["from", "to", "page", "per_page"][..],
        ),
    ];
    for (path, params) in analytics {
        for p in params {
            let valid = match *p {
                "from" => recent.clone(),
                "to" => tollgate_core::now_ms().to_string(),
                _ => "1".to_string(),
            };
            out.push((path.clone(), *p, valid));
        }
    }
    out
}

async fn empty_and_hostile_values_are_refused(app: TestApp) {
    let key = json(
        app.post("/api/keys", json!({"name": "k"})).await,
        StatusCode::CREATED,
    )
    .await;
    let id = key["id"].as_i64().unwrap_or_default();
    let params = typed(id);
    for (path, param, valid) in &params {
        // The valid value is accepted (the baseline the refusals differ from).
        let ok = format!("{path}?{param}={valid}");
        let res = app.get(&ok).await;
        assert_eq!(res.status(), StatusCode::OK, "{ok}");
        for bad in [
            "",
            "abc",
            "1.5",
            "-1",
            "99999999999999999999999",
            "%00",
            "1%20",
            "0x10",
        ] {
            // `from=0` and `key=0` are valid, hence "-1" rather than "0".
            let url = format!("{path}?{param}={bad}");
            invalid(app.get(&url).await, param).await;
        }
        // Given twice, even with the same value.
        let twice = format!("{path}?{param}={valid}&{param}={valid}");
        invalid(app.get(&twice).await, param).await;
    }
    // The enumerated parameters.
    for (url, field) in [
        ("/api/analytics/timeseries?step=", "step"),
        ("/api/analytics/timeseries?step=2m", "step"),
        ("/api/analytics/timeseries?step=1M", "step"),
        ("/api/analytics/timeseries?step=1m&step=1m", "step"),
        ("/api/keys?state=", "state"),
        ("/api/keys?state=ENABLED", "state"),
        ("/api/keys?enabled=", "enabled"),
        ("/api/keys?enabled=yes", "enabled"),
        ("/api/keys?enabled=true&enabled=false", "enabled"),
        ("/api/keys?name=a&name=b", "name"),
        ("/api/audit?actor=a&actor=a", "actor"),
    ] {
        let v = invalid(app.get(url).await, field).await;
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    }
    let v = invalid(app.get("/api/analytics/timeseries?step=2m").await, "step").await;
    assert!(
        v["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1m, 5m, 1h, 1d")),
        "{v}"
    );
    // Empty text filters mean no filter.
    for url in [
        "/api/keys?name=",
        "/api/keys?plan=&state=enabled",
        "/api/audit?actor=&action=&target=&target_type=",
        "/api/analytics/violations?route=",
        "/api/analytics/timeseries?route=&step=1m",
    ] {
        json(app.get(url).await, StatusCode::OK).await;
    }
    // The values still mean what they did.
    let page = json(app.get("/api/keys?enabled=1").await, StatusCode::OK).await;
    assert_eq!(page["total"], 1, "{page}");
    let page = json(app.get("/api/keys?enabled=0").await, StatusCode::OK).await;
    assert_eq!(page["total"], 0, "{page}");
    let page = json(app.get("/api/keys?state=disabled").await, StatusCode::OK).await;
    assert_eq!(page["total"], 0, "{page}");
    invalid(
        app.get("/api/keys?state=disabled&enabled=true").await,
        "state",
    )
    .await;
    let series = json(
        app.get("/api/analytics/timeseries?from=0&to=7200000&step=1h")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(series["step"], "1h", "{series}");
    assert_eq!(series["points"].as_array().map(Vec::len), Some(2));
}
both!(empty_and_hostile_values_are_refused);

/// Round 12: `GET /api/audit?since=…` (no such filter) or a misspelt filter
/// silently returned everything, while the usage export refused unknown
/// parameters. Every endpoint that reads a query now refuses a parameter
/// it does not take, the way the export does: 400 `malformed-request`
/// naming it, with the parameters it takes.
async fn unknown_query_parameters_are_refused_everywhere(app: TestApp) {
    let key = json(
        app.post("/api/keys", json!({"name": "k"})).await,
        StatusCode::CREATED,
    )
    .await["id"]
        .clone();
    let identity = json(
        app.post(
            "/api/identities",
            json!({"external_id": "cus_q", "name": "Q"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await["id"]
        .clone();
    let hook = json(
        app.post(
            "/api/webhooks",
            json!({"url": "https://hooks.example.com/q", "events": ["key.rotated"]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await["id"]
        .clone();
    let export = "/api/usage/export?from=2026-11-01&to=2026-12-01&group_by=key".to_string();
    for (base, takes) in [
        ("/api/audit?".to_string(), "actor"),
        ("/api/keys?".to_string(), "per_page"),
        ("/api/identities?".to_string(), "search"),
        (format!("/api/identities/{identity}/keys?"), "state"),
        (format!("/api/webhooks/{hook}/deliveries?"), "per_page"),
        ("/api/analytics/summary?".to_string(), "from"),
        ("/api/analytics/timeseries?".to_string(), "step"),
        (format!("/api/analytics/keys?ids={key}&"), "ids"),
        (format!("/api/analytics/keys/{key}?"), "to"),
        ("/api/analytics/top-keys?".to_string(), "limit"),
        ("/api/analytics/violations?".to_string(), "route"),
        (format!("/api/analytics/identities/{identity}?"), "from"),
        (format!("{export}&"), "group_by"),
    ] {
        // A filter that does not exist, a misspelt one, one in the wrong case.
        for (extra, name) in [
            ("since=2026-01-01", "since"),
            ("actr=admin", "actr"),
            ("Page=2", "Page"),
            ("zzz=", "zzz"),
        ] {
            let url = format!("{base}{extra}");
            let v = problem(
                app.get(&url).await,
                StatusCode::BAD_REQUEST,
                "malformed-request",
            )
            .await;
            assert_eq!(v["field"], name, "{url}: {v}");
            let detail = v["detail"].as_str().unwrap_or_default();
            assert!(
                detail.starts_with(&format!("{name}: unknown query parameter"))
                    && detail.contains(takes),
                "{url}: {v}"
            );
        }
    }
    // The parameters they take still work.
    json(app.get("/api/audit?actor=admin").await, StatusCode::OK).await;
    json(
        app.get(&format!("/api/analytics/keys?ids={key}")).await,
        StatusCode::OK,
    )
    .await;
}
both!(unknown_query_parameters_are_refused_everywhere);

/// A 400 `malformed-request` naming `name`, saying the endpoint takes none.
async fn takes_none(res: reqwest::Response, name: &str, what: &str) {
    let v = problem(res, StatusCode::BAD_REQUEST, "malformed-request").await;
    assert_eq!(v["field"], name, "{what}: {v}");
    let detail = v["detail"].as_str().unwrap_or_default();
    assert_eq!(
        detail,
        format!("{name}: unknown query parameter (this endpoint takes: none)"),
        "{what}: {v}"
    );
}

/// Round 13: endpoints that take no query ignored one, even when it reads
/// like a safety switch: `DELETE /api/keys/N?dry_run=true` deleted the key
/// and `POST …/rotate?grace_seconds=3600` rotated with no grace. Every
/// operation now refuses a parameter it does not take (one route layer),
/// before anything is changed.
async fn endpoints_without_a_query_refuse_one(app: TestApp) {
    let key = json(
        app.post("/api/keys", json!({"name": "k", "metadata": {"a": 1}}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let id = key["id"].as_i64().unwrap_or_default();
    let one = format!("/api/keys/{id}");
    let before = json(app.get(&one).await, StatusCode::OK).await;
    let audit = json(app.get("/api/audit").await, StatusCode::OK).await["total"].clone();
    let rotate = format!("{one}/rotate");
    let cases: [(Method, &str, &str, Option<serde_json::Value>); 5] = [
        (Method::DELETE, &one, "dry_run=true", None),
        (Method::POST, &rotate, "grace_seconds=3600", Some(json!({}))),
        (
            Method::PATCH,
            &one,
            "bogus=1",
            Some(json!({"name": "renamed"})),
        ),
        (Method::GET, &one, "bogus=1", None),
        (
            Method::POST,
            "/api/keys",
            "bogus=1",
            Some(json!({"name": "k2"})),
        ),
    ];
    for (method, path, query, body) in cases {
        let url = format!("{path}?{query}");
        let mut req = app.req(method.clone(), &url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let name = query.split('=').next().unwrap_or_default();
        takes_none(send(req).await, name, &format!("{method} {url}")).await;
    }
    // Nothing changed: the key is there, not rotated, not renamed; no key
    // was created and no audit row written.
    let after = json(app.get(&one).await, StatusCode::OK).await;
    assert_eq!(after, before);
    let list = json(app.get("/api/keys").await, StatusCode::OK).await;
    assert_eq!(list["total"], 1, "{list}");
    let now = json(app.get("/api/audit").await, StatusCode::OK).await["total"].clone();
    assert_eq!(now, audit);
    // Every route, whatever it is: the layer answers before the handler.
    for (method, path) in crate::openapi::ROUTES {
        let path = path.replace("{id}", &id.to_string()).replace("{name}", "x");
        let method =
            Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET);
        let url = format!("{path}?bogus=1");
        let res = send(app.req(method.clone(), &url).json(&json!({}))).await;
        let v = problem(res, StatusCode::BAD_REQUEST, "malformed-request").await;
        assert_eq!(v["field"], "bogus", "{method} {url}: {v}");
    }
    json(app.get(&one).await, StatusCode::OK).await;
    // Without the parameter, the same calls work.
    json(app.post(&rotate, json!({})).await, StatusCode::OK).await;
    let res = app.delete(&one).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}
both!(endpoints_without_a_query_refuse_one);
