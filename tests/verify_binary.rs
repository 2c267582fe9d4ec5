//! The verify API through the real `tollgate` binary (`tollgate dev`, issue
//! #21 items 3 and 7): a service token made in the admin API (audited, in
//! the OpenAPI document) opens `POST /v1/verify`; verified and proxied
//! requests spend one budget exactly (limit 10: 5 + 5, the 11th refused
//! either way); a deleted token is refused within the key refresh; the CLI
//! twin `tollgate service-tokens create/list/delete` works on the same
//! database.

use std::time::{Duration, Instant};

use crate::common::{free_port, tollgate, Dev};
use reqwest::Method;
use serde_json::{json, Value};

struct Api {
    client: reqwest::Client,
    dev: Dev,
    token: String,
    verify_port: u16,
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, self.dev.admin_url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("admin request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn verify(&self, token: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("http://127.0.0.1:{}/v1/verify", self.verify_port))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("verify request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn proxy(&self, key: &str) -> u16 {
        self.client
            .get(self.dev.proxy_url("/api/products"))
            .header("x-api-key", key)
            .send()
            .await
            .expect("proxy request")
            .status()
            .as_u16()
    }
}

async fn start() -> Api {
    let verify_port = free_port();
    let listen = format!("verify:\n  listen: \"127.0.0.1:{verify_port}\"\nroutes:");
    let dev = Dev::start(
        &[("\nroutes:", &format!("\n{listen}"))],
        &[("TOLLGATE_ADMIN_PASSWORD", "verify-password-1")],
    );
    assert_eq!(
        dev.line("verify: ").as_deref(),
        Some(format!("http://127.0.0.1:{verify_port}/v1/verify").as_str())
    );
    let client = reqwest::Client::new();
    let token = dev.login(&client, "verify-password-1").await;
    Api {
        client,
        dev,
        token,
        verify_port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_proxy_share_one_budget_through_the_binary() {
    let api = start().await;
    let (status, plan) = api
        .call(
            Method::POST,
            "/api/plans",
            Some(json!({"name": "ten", "limits": [{"name": "ten-an-hour", "rate": 10, "per": "1h"}]})),
        )
        .await;
    assert_eq!(status, 201, "{plan}");
    let (status, created) = api
        .call(
            Method::POST,
            "/api/keys",
            Some(json!({"name": "mix", "plan": "ten"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().expect("key").to_string();
    let key_id = created["id"].as_i64().expect("id");

    let (status, made) = api
        .call(
            Method::POST,
            "/api/service-tokens",
            Some(json!({"name": "billing"})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let token = made["token"].as_str().expect("token").to_string();
    assert!(token.starts_with("tgs_"));
    assert!(token.starts_with(made["prefix"].as_str().expect("prefix")));
    // Hostile creations.
    for bad in [
        json!({}),
        json!({"name": ""}),
        json!({"name": 5}),
        json!({"name": "x", "admin": true}),
    ] {
        let (s, body) = api
            .call(Method::POST, "/api/service-tokens", Some(bad.clone()))
            .await;
        assert!((400..500).contains(&s), "{bad} → {s} {body}");
    }
    let (status, listed) = api.call(Method::GET, "/api/service-tokens", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert!(listed[0].get("token").is_none(), "{listed}");
    assert!(!listed.to_string().contains(&token));
    let (_, audit) = api
        .call(Method::GET, "/api/audit?action=service_token.create", None)
        .await;
    assert!(
        audit.to_string().contains("service_token.create"),
        "{audit}"
    );
    let (_, doc) = api.call(Method::GET, "/api/openapi.json", None).await;
    assert!(doc["paths"].get("/api/service-tokens").is_some());
    assert!(doc["paths"].get("/api/service-tokens/{id}").is_some());

    // The token and the key reach the proxy process.
    let start = Instant::now();
    loop {
        let (s, r) = api
            .verify(&token, json!({"key": key, "route": "products"}))
            .await;
        if s == 200 && r["valid"] == true {
            assert_eq!(r["key_id"], key_id);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{s} {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 1 verified so far; 4 more verified and 5 proxied: 10.
    for i in 0..9 {
        if i % 2 == 0 {
            assert_eq!(api.proxy(&key).await, 200, "proxied #{i}");
        } else {
            let (s, r) = api
                .verify(&token, json!({"key": key, "route": "products"}))
                .await;
            assert_eq!((s, r["valid"].clone()), (200, json!(true)), "{r}");
        }
    }
    let (s, r) = api
        .verify(&token, json!({"key": key, "route": "products"}))
        .await;
    assert_eq!((s, r["code"].clone()), (200, json!("rate-limited")), "{r}");
    assert_eq!(api.proxy(&key).await, 429);

    // A bad token: 401; the deleted token: 401 within the key refresh.
    let (s, _) = api.verify("tgs_wrong", json!({"key": key})).await;
    assert_eq!(s, 401);
    let id = made["id"].as_i64().expect("id");
    let (s, _) = api
        .call(Method::DELETE, &format!("/api/service-tokens/{id}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = api
        .call(Method::DELETE, &format!("/api/service-tokens/{id}"), None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = api
        .call(Method::DELETE, "/api/service-tokens/nope", None)
        .await;
    assert!((400..500).contains(&s));
    let start = Instant::now();
    while api.verify(&token, json!({"key": key})).await.0 != 401 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "deleted token still accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The CLI twin, on the same database.
    let config = api.dev.dir.path().join("tollgate.yaml");
    let out = tollgate()
        .args([
            "service-tokens",
            "create",
            "--name",
            "from the cli",
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let cli_token = text
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .map(|t| t.trim().to_string())
        .expect("token line");
    let start = Instant::now();
    loop {
        let (s, r) = api.verify(&cli_token, json!({"key": key})).await;
        if s == 200 {
            assert_eq!(r["code"], "rate-limited", "{r}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "CLI token never accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = tollgate()
        .args(["service-tokens", "list", "--json", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    let listed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&cli_token));
    let cli_id = listed[0]["id"].as_i64().expect("id").to_string();
    let out = tollgate()
        .args(["service-tokens", "delete", &cli_id, "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(out.status.success());
    let out = tollgate()
        .args(["service-tokens", "delete", &cli_id, "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(!out.status.success(), "deleting twice succeeded");
    let out = tollgate()
        .args(["service-tokens", "create", "--name", " ", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(!out.status.success(), "an empty name was accepted");
    let (_, audit) = api
        .call(Method::GET, "/api/audit?action=service_token.", None)
        .await;
    let text = audit.to_string();
    assert!(
        text.contains("service_token.delete") && text.contains("cli:"),
        "{audit}"
    );
}
