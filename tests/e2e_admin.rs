//! The admin API driving the real proxy: both run in one real `tollgate dev`
//! process; every change made through the API must reach the proxy within 1 s.

mod common;

use std::time::{Duration, Instant};

use common::Dev;
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
        let start = Instant::now();
        loop {
            let s = self.proxy(key).await.status().as_u16();
            if s == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "still {s}, want {want}"
            );
            // 10 polls a second: below the proxy's throttle of repeated bad
            // keys (20 per second per IP), which would otherwise answer 429
            // for a while after the key becomes valid.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
