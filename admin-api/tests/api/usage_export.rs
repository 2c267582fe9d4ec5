//! GET /api/usage/export: the billing feed over usage rows written through
//! the database layer (as the proxies write them), on both databases. Its
//! sums equal what was written, the same range gives the same bytes, and
//! hostile parameters are 400s.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tollgate_core::db::identities::NewIdentity;
use tollgate_core::db::usage::{Counts, UsageRow};
use tollgate_core::db::NewApiKey;

use crate::both;
use crate::common::*;

/// A UTC midnight.
const T0: i64 = 1_699_920_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

async fn text(app: &TestApp, query: &str) -> (StatusCode, String, String) {
    let res = app.get(&format!("/api/usage/export?{query}")).await;
    let status = res.status();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ct, res.text().await.expect("body"))
}

/// Rows over three hours for the keys and "no key" (0), alternating between
/// two routes: minute `m` of the `i`th key gets `allowed = (m % 7) + i`,
/// `limited = m % 3`, and one 401 for "no key".
fn rows(keys: &[i64]) -> Vec<UsageRow> {
    let mut out = Vec::new();
    for m in 0..180 {
        for (i, &k) in keys.iter().chain([0].iter()).enumerate() {
            let route = if (m + i as i64) % 2 == 0 {
                "users"
            } else {
                "orders"
            };
            out.push(UsageRow {
                minute: T0 + m * MIN,
                key_id: k,
                route: route.into(),
                counts: Counts {
                    allowed: (m % 7) + i as i64,
                    limited: m % 3,
                    unauthorized: i64::from(k == 0),
                    ..Counts::default()
                },
            });
        }
    }
    out
}

fn expected(
    rows: &[UsageRow],
    from: i64,
    to: i64,
    by: impl Fn(&UsageRow) -> String,
) -> BTreeMap<String, (i64, i64, i64)> {
    let mut m: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.minute >= from && r.minute < to) {
        let e = m.entry(by(r)).or_default();
        e.0 += r.counts.total();
        e.1 += r.counts.allowed;
        e.2 += r.counts.limited;
    }
    m
}

/// `(group, (requests, allowed, limited))` of CSV lines, summed per group
/// (`group_col` is the column of the key id or route; the six counts are
/// the last columns, whatever commas a quoted name holds).
fn csv_sums(body: &str, group_col: usize) -> BTreeMap<String, (i64, i64, i64)> {
    let mut lines = body.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    assert_eq!(
        header[header.len() - 6..],
        [
            "requests",
            "allowed",
            "limited",
            "unauthorized",
            "forbidden",
            "upstream_errors"
        ]
    );
    let mut m: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let n = |i: usize| f[f.len() - 6 + i].parse::<i64>().expect("count");
        let e = m.entry(f[group_col].to_string()).or_default();
        e.0 += n(0);
        e.1 += n(1);
        e.2 += n(2);
    }
    m
}

async fn export_sums_equal_what_was_recorded(app: TestApp) {
    let acme = app
        .db
        .create_identity(&NewIdentity {
            external_id: "cus_acme".into(),
            name: "Acme, \"Inc\"".into(),
            metadata: None,
            plan: None,
            limits: None,
        })
        .await
        .expect("identity");
    let (a, _) = app
        .db
        .create_key(&NewApiKey {
            name: "alpha".into(),
            identity_id: Some(acme.id),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    let (b, _) = app
        .db
        .create_key(&NewApiKey {
            name: "=cmd|' /C calc'!A0, \"beta\"".into(),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    let rows = rows(&[a.id, b.id]);
    // Written in two batches, as two proxies would.
    let (one, two) = rows.split_at(rows.len() / 2);
    app.db.upsert_usage(one).await.expect("upsert");
    app.db.upsert_usage(two).await.expect("upsert");

    // Ragged ends: minutes at both ends, whole hours between.
    let (from, to) = (T0 + 17 * MIN, T0 + 2 * HOUR + 41 * MIN);
    let q = format!("from={from}&to={to}&group_by=key");
    let (status, ct, csv) = text(&app, &q).await;
    assert_eq!(status, StatusCode::OK, "{csv}");
    assert_eq!(ct, "text/csv; charset=utf-8");
    let want = expected(&rows, from, to, |r| r.key_id.to_string());
    assert_eq!(csv_sums(&csv, 2), want);
    assert_eq!(csv.lines().count(), 1 + 3, "{csv}");
    // A hostile key name is one quoted field that no spreadsheet runs.
    assert!(
        csv.contains(",\"'=cmd|' /C calc'!A0, \"\"beta\"\"\","),
        "{csv}"
    );
    // The same closed range, the same bytes.
    let (_, _, again) = text(&app, &q).await;
    assert_eq!(again, csv);

    // Per route, and per hour: the same totals, cut differently.
    let (status, _, by_route) = text(&app, &format!("from={from}&to={to}&group_by=route")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        csv_sums(&by_route, 2),
        expected(&rows, from, to, |r| r.route.clone())
    );
    // Per identity: alpha's rows are Acme's; beta's and "no key" are 0's.
    let (status, _, by_identity) =
        text(&app, &format!("from={from}&to={to}&group_by=identity")).await;
    assert_eq!(status, StatusCode::OK, "{by_identity}");
    assert!(
        by_identity.starts_with("start,end,identity_id,external_id,identity_name,"),
        "{by_identity}"
    );
    assert!(
        by_identity.contains(",cus_acme,\"Acme, \"\"Inc\"\"\","),
        "{by_identity}"
    );
    let acme_id = acme.id;
    assert_eq!(
        csv_sums(&by_identity, 2),
        expected(&rows, from, to, |r| if r.key_id == a.id {
            acme_id.to_string()
        } else {
            "0".into()
        })
    );
    // Moving the key to another customer (or detaching it) later never
    // moves the usage it made before (black-box round 3, B3).
    let other = app
        .db
        .create_identity(&NewIdentity {
            external_id: "cus_other".into(),
            name: "Other".into(),
            metadata: None,
            plan: None,
            limits: None,
        })
        .await
        .expect("identity");
    for identity in [Some(other.id), None] {
        app.db
            .update_key(
                a.id,
                &tollgate_core::db::KeyPatch {
                    identity_id: Some(identity),
                    ..Default::default()
                },
            )
            .await
            .expect("move")
            .expect("key");
        let (status, _, again) =
            text(&app, &format!("from={from}&to={to}&group_by=identity")).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again, by_identity, "after moving the key to {identity:?}");
    }
    let (hf, ht) = (T0, T0 + 3 * HOUR);
    let (status, _, hourly) =
        text(&app, &format!("from={hf}&to={ht}&group_by=key&step=hour")).await;
    assert_eq!(status, StatusCode::OK, "{hourly}");
    assert_eq!(hourly.lines().count(), 1 + 3 * 3);
    assert_eq!(
        csv_sums(&hourly, 2),
        expected(&rows, hf, ht, |r| r.key_id.to_string())
    );
    assert!(hourly
        .lines()
        .nth(1)
        .is_some_and(|l| l.starts_with("2023-11-14T00:00:00Z,2023-11-14T01:00:00Z,0,")));

    // NDJSON: one object per line, the same numbers.
    let (status, ct, nd) = text(&app, &format!("{q}&format=json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, "application/x-ndjson");
    let mut sums: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for line in nd.lines() {
        let v: Value = serde_json::from_str(line).expect("one JSON object per line");
        let e = sums.entry(v["key_id"].to_string()).or_default();
        e.0 += v["requests"].as_i64().expect("requests");
        e.1 += v["allowed"].as_i64().expect("allowed");
        e.2 += v["limited"].as_i64().expect("limited");
        assert_eq!(v["start"], "2023-11-14T00:17:00Z");
        assert_eq!(v["end"], "2023-11-14T02:41:00Z");
    }
    assert_eq!(sums, want);

    // A deleted key keeps its usage, without a name.
    app.db.delete_key(a.id).await.expect("delete");
    let (_, _, after) = text(&app, &q).await;
    assert_eq!(csv_sums(&after, 2), want);
    assert!(
        after.lines().any(|l| l.contains(&format!(",{},,,", a.id))),
        "{after}"
    );

    // An empty range is the header alone.
    let (status, _, empty) = text(
        &app,
        &format!(
            "from={}&to={}&group_by=route",
            T0 + 10 * HOUR,
            T0 + 11 * HOUR
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        empty,
        "start,end,route,requests,allowed,limited,unauthorized,forbidden,upstream_errors\n"
    );
}
both!(export_sums_equal_what_was_recorded);

async fn export_refuses_hostile_parameters(app: TestApp) {
    for (q, field) in [
        ("from=2026-11-01&to=2026-12-01&group_by=keys", "group_by"),
        ("from=2026-11-31&to=2026-12-01&group_by=key", "from"),
        ("from=2026-12-01&to=2026-11-01&group_by=key", "to"),
        ("from=1970-01-01&to=2026-12-01&group_by=key", "to"),
        (
            "from=2026-11-01&to=2026-12-01&group_by=key&format=xlsx",
            "format",
        ),
        ("from=1&to=60001&group_by=route", "from"),
        ("from=2026-11-01&to=2026-12-01&group_by=key&from=1", "from"),
        ("from=2026-11-01&to=2026-12-01&group_by=key&evil=1", "evil"),
    ] {
        let v = problem(
            app.get(&format!("/api/usage/export?{q}")).await,
            StatusCode::BAD_REQUEST,
            "malformed-request",
        )
        .await;
        assert_eq!(v["field"], field, "{q}: {v}");
    }
    // A session is needed; any role may read usage.
    let res = send(app.anon(
        Method::GET,
        "/api/usage/export?from=2026-11-01&to=2026-12-01&group_by=key",
    ))
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (_, viewer) = app.admin_with_role("auditor", "viewer").await;
    let res = send(app.with(
        &viewer,
        Method::GET,
        "/api/usage/export?from=2026-11-01&to=2026-12-01&group_by=key",
    ))
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    // Documented.
    let doc = json(app.get("/api/openapi.json").await, StatusCode::OK).await;
    assert!(doc["paths"]["/api/usage/export"]["get"].is_object());
}
both!(export_refuses_hostile_parameters);

/// A slow reader cannot hold the export slots (attack round 3, B8): an
/// admin runs one export at a time (429), another admin still gets one, and
/// an export whose client stops reading is cut after
/// `EXPORT_STALL_DEADLINE` (10 s) — long before `admin.idle_timeout` (300 s
/// here) would close its connection — giving its slot back; the cut body
/// never ends like a whole one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_export_gives_its_slot_back() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut config = test_config();
    config.admin.idle_timeout = Duration::from_secs(300);
    let app = TestApp::sqlite_with(config).await;
    // 400 days of hours × 10 routes: ~20 MB of NDJSON, far more than the
    // socket buffers and read-ahead hold.
    let mut batch = Vec::new();
    for h in 0..400 * 24 {
        for r in 0..10 {
            batch.push(UsageRow {
                minute: T0 + h * HOUR,
                key_id: 0,
                route: format!("route-{r}"),
                counts: Counts {
                    allowed: 1,
                    ..Counts::default()
                },
            });
        }
        if batch.len() >= 4000 {
            app.db.upsert_usage(&batch).await.expect("upsert");
            batch.clear();
        }
    }
    app.db.upsert_usage(&batch).await.expect("upsert");
    let (_, viewer) = app.admin_with_role("slow-reader", "viewer").await;
    let big = "/api/usage/export?from=1699920000000&to=1734480000000&group_by=route&step=hour&format=json";
    let small = "/api/usage/export?from=2023-11-14&to=2023-11-15&group_by=route";

    // The slow reader: a 4 KiB receive buffer, reads the head, then stops.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut slow = sock.connect(app.addr()).await.expect("connect");
    slow.write_all(
        format!("GET {big} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {viewer}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut head = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(30), slow.read(&mut head))
        .await
        .expect("export head within 30 s")
        .expect("read");
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    let held = Instant::now();

    // Same admin, second export: 429. Another admin: the other slot.
    problem(
        send(app.with(&viewer, Method::GET, small)).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
    )
    .await;
    let (status, _, _) = text(&app, "from=2023-11-14&to=2023-11-15&group_by=route").await;
    assert_eq!(status, StatusCode::OK);

    // The stalled export is cut and its slot is back well before the idle
    // timeout (300 s).
    loop {
        let res = send(app.with(&viewer, Method::GET, small)).await;
        if res.status() == StatusCode::OK {
            break;
        }
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            held.elapsed() < Duration::from_secs(120),
            "the stalled export still holds its slot after {:?}",
            held.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // What the slow reader still gets is a broken transfer, not a whole one.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), slow.read_to_end(&mut rest)).await;
    assert!(
        !rest.ends_with(b"\r\n0\r\n\r\n"),
        "a cut export ended like a whole one ({} bytes)",
        rest.len()
    );
}
