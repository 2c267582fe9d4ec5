//! The admin API driving the real proxy: both run in one real `tollgate dev`
//! process; every change made through the API must reach the proxy within 1 s.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::Dev;
use serde_json::{json, Value};

struct Api {
    client: reqwest::Client,
    dev: Dev,
    token: String,
}

impl Api {
    async fn login(dev: Dev) -> Self {
        let client = reqwest::Client::new();
        let token = dev.login(&client, "e2e-password-1").await;
        Self { client, dev, token }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, self.dev.admin_url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("admin request");
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn proxy(&self, key: &str) -> reqwest::Response {
        self.client
            .get(self.dev.proxy_url("/api/products"))
            .header("x-api-key", key)
            .send()
            .await
            .expect("proxy request")
    }

    /// How long until the proxy answers `want` for `key` (fails after 3 s).
    async fn until(&self, key: &str, want: u16) -> Duration {
        self.until_within(key, want, Duration::from_secs(3)).await
    }

    /// [`Api::until`], failing after `limit`.
    async fn until_within(&self, key: &str, want: u16, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let s = self.proxy(key).await.status().as_u16();
            if s == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "still {s} after {limit:?}, want {want}"
            );
            // 10 polls a second: below the proxy's throttle of repeated bad
            // keys (20 per second per IP), which would otherwise answer 429
            // for a while after the key becomes valid.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The proxy's `tollgate_config_reloads_total{result}`.
    async fn reloads(&self, result: &str) -> u64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.dev.ports.metrics);
        let text = self
            .client
            .get(url)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        let line = format!("tollgate_config_reloads_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Write the config file with `from` replaced by `to` (whole, then
    /// renamed into place) and wait until the proxy counts one more reload
    /// with `result` (`ok` or `failed`).
    async fn edit_config(&self, from: &str, to: &str, result: &str) {
        let file = self.dev.dir.path().join("tollgate.yaml");
        let text = std::fs::read_to_string(&file).expect("config");
        assert!(text.contains(from), "config has no {from:?}");
        let before = self.reloads(result).await;
        let next = file.with_extension("yaml.next");
        std::fs::write(&next, text.replacen(from, to, 1)).expect("write");
        std::fs::rename(&next, &file).expect("rename");
        let start = Instant::now();
        while self.reloads(result).await == before {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{from:?} -> {to:?}: no {result} reload counted"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `allowed` requests of key `id` in the usage export of the last
    /// few minutes.
    async fn allowed_of(&self, id: i64) -> i64 {
        const MIN: i64 = 60_000;
        let now = chrono::Utc::now().timestamp_millis();
        let minute = now - now.rem_euclid(MIN);
        let path = format!(
            "/api/usage/export?from={}&to={}&group_by=key&format=json",
            minute - 5 * MIN,
            minute + 2 * MIN
        );
        let r = self
            .client
            .get(self.dev.admin_url(&path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("export");
        assert_eq!(r.status(), 200);
        r.text()
            .await
            .expect("body")
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("NDJSON"))
            .filter(|r| r["key_id"] == id)
            .map(|r| r["allowed"].as_i64().expect("allowed"))
            .sum()
    }
}

fn dev() -> Dev {
    Dev::start(&[], &[("TOLLGATE_ADMIN_PASSWORD", "e2e-password-1")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_lifecycle_through_the_admin_api_reaches_the_proxy() {
    use reqwest::Method;
    let api = Api::login(dev()).await;

    let (status, created) = api
        .call(
            Method::POST,
            "/api/keys",
            Some(json!({"name": "e2e", "plan": "pro"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().expect("id");
    let key = created["key"].as_str().expect("full key").to_string();
    let took = api.until(&key, 200).await;
    assert!(
        took < Duration::from_secs(1),
        "new key usable after {took:?}"
    );

    let (status, _) = api
        .call(
            Method::PATCH,
            &format!("/api/keys/{id}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    let took = api.until(&key, 403).await;
    assert!(took < Duration::from_secs(1), "disable took {took:?}");

    api.call(
        Method::PATCH,
        &format!("/api/keys/{id}"),
        Some(json!({"enabled": true})),
    )
    .await;
    api.until(&key, 200).await;

    // Rotate with a 2 s grace: both secrets work, then only the new one.
    let (status, rotated) = api
        .call(
            Method::POST,
            &format!("/api/keys/{id}/rotate"),
            Some(json!({"grace_seconds": 2})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_key = rotated["key"].as_str().expect("new key").to_string();
    assert_ne!(new_key, key);
    api.until(&new_key, 200).await;
    assert_eq!(
        api.proxy(&key).await.status(),
        200,
        "old secret valid during grace"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let took = api.until(&key, 403).await;
    assert!(
        took < Duration::from_secs(1),
        "old secret still valid {took:?} after grace"
    );
    assert_eq!(api.proxy(&new_key).await.status(), 200);

    let (status, _) = api
        .call(Method::DELETE, &format!("/api/keys/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let took = api.until(&new_key, 403).await;
    assert!(took < Duration::from_secs(1), "delete took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_edits_through_the_admin_api_reach_the_proxy() {
    use reqwest::Method;
    let api = Api::login(dev()).await;
    let (status, plan) = api
        .call(
            Method::POST,
            "/api/plans",
            Some(
                json!({"name": "gold", "limits": [{"name": "gold-min", "rate": 100, "per": "1m"}]}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{plan}");
    let (_, created) = api
        .call(
            Method::POST,
            "/api/keys",
            Some(json!({"name": "g", "plan": "gold"})),
        )
        .await;
    let key = created["key"].as_str().expect("key").to_string();
    api.until(&key, 200).await;
    let policy = |r: &reqwest::Response| {
        r.headers()
            .get("ratelimit-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert!(policy(&api.proxy(&key).await).starts_with(r#""gold-min";q=100;w=60"#));

    let (status, _) = api
        .call(
            Method::PATCH,
            "/api/plans/gold",
            Some(json!({"limits": [{"name": "gold-min", "rate": 7, "per": "1m"}]})),
        )
        .await;
    assert_eq!(status, 200);
    let start = Instant::now();
    while !policy(&api.proxy(&key).await).starts_with(r#""gold-min";q=7;w=60"#) {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "plan edit not applied within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // In use: cannot be deleted.
    let (status, body) = api.call(Method::DELETE, "/api/plans/gold", None).await;
    assert_eq!(status, 409, "{body}");
}

/// The billing feed black-box: requests sent through the proxy of a real
/// `tollgate dev` come back from `GET /api/usage/export` exactly (per key
/// and in total), and `tollgate usage export` prints the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_export_sums_equal_the_requests_sent() {
    use reqwest::Method;
    const MIN: i64 = 60_000;
    let started = chrono::Utc::now().timestamp_millis();
    let api = Api::login(dev()).await;
    let (status, created) = api
        .call(
            Method::POST,
            "/api/keys",
            Some(json!({"name": "billed", "plan": "pro"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().expect("id");
    let key = created["key"].as_str().expect("key").to_string();
    // Until the proxy knows the key, its requests count as "no key".
    let mut sent = 0;
    let mut ok = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = api.proxy(&key).await.status().as_u16();
        sent += 1;
        if s == 200 {
            ok += 1;
            break;
        }
        assert!(Instant::now() < deadline, "key never accepted: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..37 {
        let s = api.proxy(&key).await.status().as_u16();
        sent += 1;
        assert_eq!(s, 200, "the pro plan admits 38 requests");
        ok += 1;
    }
    let from = started - started.rem_euclid(MIN) - MIN;
    let now = chrono::Utc::now().timestamp_millis();
    let to = now - now.rem_euclid(MIN) + 2 * MIN;
    let path = format!("/api/usage/export?from={from}&to={to}&group_by=key&format=json");
    // Poll (generously) until the proxy's flush is visible.
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let r = api
            .client
            .get(api.dev.admin_url(&path))
            .bearer_auth(&api.token)
            .send()
            .await
            .expect("export");
        assert_eq!(r.status(), 200);
        let body = r.text().await.expect("body");
        let rows: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).expect("NDJSON"))
            .collect();
        let of = |key: i64| {
            rows.iter()
                .filter(|r| r["key_id"] == key)
                .map(|r| r["allowed"].as_i64().expect("allowed"))
                .sum::<i64>()
        };
        let total: i64 = rows
            .iter()
            .map(|r| r["requests"].as_i64().expect("requests"))
            .sum();
        if of(id) >= ok && total >= sent {
            assert_eq!(of(id), ok, "{body}");
            assert_eq!(total, sent, "{body}");
            break body;
        }
        assert!(Instant::now() < deadline, "export never caught up: {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The CLI twin reads the same database: the same bytes.
    let out = common::tollgate()
        .args(["usage", "export", "--config"])
        .arg(api.dev.dir.path().join("tollgate.yaml"))
        .args(["--from", &from.to_string(), "--to", &to.to_string()])
        .args(["--group-by", "key", "--format", "json"])
        .output()
        .expect("run the CLI");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), body);
    // Hostile arguments are refused before the database is opened.
    let out = common::tollgate()
        .args(["usage", "export", "--config"])
        .arg(api.dev.dir.path().join("tollgate.yaml"))
        .args([
            "--from",
            "2026-12-01",
            "--to",
            "2026-11-01",
            "--group-by",
            "key",
        ])
        .output()
        .expect("run the CLI");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("to: must be after from"));
}

/// Round 10 (black-box, 3a): method scopes in any case mean the method. A
/// YAML plan's `scopes: {methods: [get]}` is upper-cased by the config model
/// and a key's own `["get"]` by the admin API, through one rule
/// (`core::rules::access::normalise_scopes`): both let GET (and HEAD) pass
/// and refuse POST, and the API shows the stored form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_scopes_in_lower_case_mean_the_method_in_yaml_and_api() {
    use reqwest::Method;
    let dev = Dev::start(
        &[(
            "plans:\n",
            "plans:\n  ro: { limits: [ { name: m, rate: 100, per: 1m } ], scopes: { methods: [get] } }\n",
        )],
        &[("TOLLGATE_ADMIN_PASSWORD", "e2e-password-1")],
    );
    let api = Api::login(dev).await;
    let (status, on_plan) = api
        .call(
            Method::POST,
            "/api/keys",
            Some(json!({"name": "ro", "plan": "ro"})),
        )
        .await;
    assert_eq!(status, 201, "{on_plan}");
    let (status, own) = api
        .call(
            Method::POST,
            "/api/keys",
            Some(json!({"name": "own", "scopes": {"methods": ["get", "Head"]}})),
        )
        .await;
    assert_eq!(status, 201, "{own}");
    assert_eq!(own["scopes"]["methods"], json!(["GET", "HEAD"]), "{own}");
    for created in [&on_plan, &own] {
        let key = created["key"].as_str().expect("key").to_string();
        api.until(&key, 200).await;
        // (The demo upstream answers no HEAD: passed on is all that counts.)
        for (method, refused) in [
            (Method::GET, false),
            (Method::HEAD, false),
            (Method::POST, true),
        ] {
            let r = api
                .client
                .request(method.clone(), api.dev.proxy_url("/api/users"))
                .header("x-api-key", &key)
                .send()
                .await
                .expect("proxy request");
            let status = r.status().as_u16();
            assert_eq!(
                status == 403,
                refused,
                "{method} with {}: {status}",
                created["name"]
            );
            if method == Method::GET {
                assert_eq!(status, 200);
            }
        }
    }
}

/// Black-box: an IPv6 network holding all of `::ffff:0:0/96` (`::/0`,
/// `::/80`) holds every IPv4 client (`::ffff:a.b.c.d`), as `::ffff:0:0/96`
/// itself does, in every IP list (one rule, `core::net::matches`): a key's
/// `allowed_ips`, a route's `ip_allow` / `ip_deny`, `proxy.trusted_proxies`.
/// Mapped networks are still stored as the IPv4 network; a narrower IPv6
/// network (`::/96`, `2001:db8::/32`) holds no IPv4 client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_networks_wider_than_the_mapped_range_hold_ipv4_clients() {
    use reqwest::Method;
    let dev = Dev::start(
        &[
            (
                "  threads: 2\n",
                "  threads: 2\n  trusted_proxies: [\"::/0\"]\n",
            ),
            (
                "path_prefix: /api/products }\n",
                "path_prefix: /api/products }\n    ip_allow: [\"::/80\"]\n",
            ),
            (
                "orders-writes, rate: 5, per: 1s, cost: 1 } ]\n",
                "orders-writes, rate: 5, per: 1s, cost: 1 } ]\n    ip_deny: [\"::/0\"]\n",
            ),
        ],
        &[("TOLLGATE_ADMIN_PASSWORD", "e2e-password-1")],
    );
    let api = Api::login(dev).await;
    // (status, problem type) of a GET from 127.0.0.1.
    let get = |key: String, path: &'static str, xff: Option<&'static str>| {
        let mut req = api
            .client
            .get(api.dev.proxy_url(path))
            .header("x-api-key", key);
        if let Some(x) = xff {
            req = req.header("x-forwarded-for", x);
        }
        async move {
            let r = req.send().await.expect("proxy request");
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let kind = body["type"]
                .as_str()
                .and_then(|t| t.rsplit('/').next())
                .unwrap_or_default()
                .to_string();
            (status, kind)
        }
    };
    let until =
        |key: String, path: &'static str, xff: Option<&'static str>, want: (u16, &'static str)| {
            let get = &get;
            async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let got = get(key.clone(), path, xff).await;
                    if (got.0, got.1.as_str()) == want {
                        return;
                    }
                    assert!(Instant::now() < deadline, "{path}: {got:?}, want {want:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
    let mut keys = Vec::new();
    for (name, ips, stored) in [
        ("any", json!(["::/0"]), json!(["::/0"])),
        (
            "mapped",
            json!(["::ffff:127.0.0.1/128"]),
            json!(["127.0.0.1/32"]),
        ),
        (
            "narrow",
            json!(["::/96", "2001:db8::/32"]),
            json!(["::/96", "2001:db8::/32"]),
        ),
        ("tens", json!(["10.0.0.0/8"]), json!(["10.0.0.0/8"])),
    ] {
        let (status, k) = api
            .call(
                Method::POST,
                "/api/keys",
                Some(json!({"name": name, "allowed_ips": ips})),
            )
            .await;
        assert_eq!(status, 201, "{k}");
        assert_eq!(k["allowed_ips"], stored, "{k}");
        keys.push(k["key"].as_str().expect("key").to_string());
    }
    let [any, mapped, narrow, tens] = <[String; 4]>::try_from(keys).expect("four keys");
    // A key's `allowed_ips: ["::/0"]` admits 127.0.0.1, on a route whose
    // `ip_allow: ["::/80"]` does too; a mapped network as before.
    until(any.clone(), "/api/products", None, (200, "")).await;
    until(mapped.clone(), "/api/products", None, (200, "")).await;
    // IPv6 networks that do not hold all of ::ffff:0:0/96: no IPv4 client.
    until(narrow, "/api/products", None, (403, "ip-not-allowed")).await;
    // A route's `ip_deny: ["::/0"]` refuses the IPv4 client.
    assert_eq!(
        get(any.clone(), "/api/orders", None).await,
        (403, "ip-not-allowed".to_string())
    );
    // `trusted_proxies: ["::/0"]` trusts the IPv4 peer: its
    // `X-Forwarded-For` is the client, for the key's list and the route's.
    until(tens.clone(), "/api/products", Some("10.1.2.3"), (200, "")).await;
    assert_eq!(
        get(tens, "/api/products", None).await,
        (403, "ip-not-allowed".to_string())
    );
    assert_eq!(
        get(any, "/api/products", Some("2001:db8::1")).await,
        (403, "ip-not-allowed".to_string())
    );
}

/// Black-box round 12: a reload that shortens a background interval took
/// effect only after the sleep on the old one (`key_refresh: 60s` reverted
/// to 500ms: a disabled key still passed for ~56 s; `flush_interval` the
/// same for usage rows), and absurd intervals were accepted. Now an
/// interval past its maximum is refused by `check-config` and by the
/// reload, at its place, and the background tasks read their period again
/// at least every second: after the revert a disabled key is refused, and
/// a request's usage written, within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shortened_background_interval_applies_without_waiting_out_the_old_one() {
    use reqwest::Method;
    let dev = Dev::start(
        &[(
            "storage:\n",
            "usage:\n  flush_interval: 200ms\nstorage:\n  key_refresh: 500ms\n",
        )],
        &[("TOLLGATE_ADMIN_PASSWORD", "e2e-password-1")],
    );
    let api = Api::login(dev).await;
    let (status, created) = api
        .call(
            Method::POST,
            "/api/keys",
            Some(json!({"name": "intervals", "plan": "pro"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().expect("id");
    let key = created["key"].as_str().expect("key").to_string();
    api.until_within(&key, 200, Duration::from_secs(15)).await;

    // Absurd values: refused by check-config at their place, and by the reload.
    let file = api.dev.dir.path().join("tollgate.yaml");
    let huge = "key_refresh: 18446744073709551615ms";
    api.edit_config("key_refresh: 500ms", huge, "failed").await;
    let out = common::tollgate()
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(&file).expect("config");
    let line = text.lines().position(|l| l.contains(huge)).expect("line") + 1;
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:{line}:16: storage.key_refresh: must be at most 10m",
            file.display()
        )),
        "{stderr}"
    );
    api.edit_config(huge, "key_refresh: 500ms", "ok").await;
    api.edit_config(
        "flush_interval: 200ms",
        "flush_interval: 99999999999d",
        "failed",
    )
    .await;
    api.edit_config(
        "flush_interval: 99999999999d",
        "flush_interval: 200ms",
        "ok",
    )
    .await;

    // Long but valid intervals, then the short ones back.
    api.edit_config("key_refresh: 500ms", "key_refresh: 60s", "ok")
        .await;
    api.edit_config("flush_interval: 200ms", "flush_interval: 1h", "ok")
        .await;
    // Set-up, not a check: both tasks are now waiting on the long values
    // (they read them at their next beat, 500 ms and 200 ms after the reload).
    tokio::time::sleep(Duration::from_secs(2)).await;
    api.edit_config("key_refresh: 60s", "key_refresh: 500ms", "ok")
        .await;
    api.edit_config("flush_interval: 1h", "flush_interval: 200ms", "ok")
        .await;

    // Usage of a request made now is written within seconds, not in an hour.
    let before = api.allowed_of(id).await;
    assert_eq!(api.proxy(&key).await.status(), 200);
    let start = Instant::now();
    while api.allowed_of(id).await == before {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "usage not written after the flush interval was shortened again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A disabled key is refused within seconds, not ~a minute.
    let (status, _) = api
        .call(
            Method::PATCH,
            &format!("/api/keys/{id}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    api.until_within(&key, 403, Duration::from_secs(15)).await;
}
