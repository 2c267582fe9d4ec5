//! Hostile query strings on every endpoint that takes one: each refused
//! value is a 422 `validation-error` naming the parameter, never a 200 with
//! the value taken as absent, a 500 or a panic.

use reqwest::StatusCode;
use serde_json::json;

use crate::both;
use crate::common::{invalid, json, TestApp};

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
    // Unknown parameters are ignored, empty text filters mean no filter.
    for url in [
        "/api/keys?foo=bar&name=",
        "/api/keys?plan=&state=enabled",
        "/api/audit?actor=&action=&target=&target_type=&zzz=",
        "/api/analytics/violations?route=&x=",
        "/api/analytics/timeseries?route=&step=1m",
        "/api/analytics/summary?unknown=1",
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
