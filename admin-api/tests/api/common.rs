//! The test harness: the real admin API on a fresh database (SQLite in a
//! temporary directory, or a new PostgreSQL database), served on 127.0.0.1:0
//! and called over HTTP with reqwest.

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tollgate_admin_api::password::Argon2Gate;
use tollgate_admin_api::{ensure_first_admin, serve, AppState};
use tollgate_core::config::{self, Config};
use tollgate_core::db::Db;

pub const ADMIN_PASSWORD: &str = "correct-horse-battery";
/// The password of the admins tests create.
pub const OTHER_PASSWORD: &str = "plum tangent oyster 41";
pub const JWT_SECRET: &[u8] = b"test-secret-0123456789abcdef0123456789";

/// The YAML every test runs with: two config plans, one upstream with two
/// targets, the local limiter.
pub fn test_yaml(limiter: &str) -> String {
    format!(
        r#"
proxy:
  listen: "127.0.0.1:18080"
admin:
  listen: "127.0.0.1:18081"
  jwt_secret_env: "TOLLGATE_TEST_JWT_SECRET_NEVER_SET"
storage:
  database_url: "sqlite://unused.db"
limiter:
{limiter}
plans:
  free: {{ limits: [ {{ name: minute, rate: 60, per: 1m, burst: 10 }} ] }}
  pro:  {{ limits: [ {{ name: second, rate: 50, per: 1s, burst: 100 }},
                     {{ name: day, rate: 100000, per: 1d }} ] }}
upstreams:
  demo: {{ targets: ["127.0.0.1:3001", "127.0.0.1:3002"] }}
routes:
  - name: users
    match: {{ path_prefix: /api/users }}
    upstream: demo
    auth: api_key
    default_plan: free
"#
    )
}

pub fn test_config() -> Config {
    config::parse(&test_yaml("  backend: local"), "test.yaml").expect("test config is valid")
}

/// The value of a service's URL variable, or `None` (with a notice) when it is
/// missing and services are not required. Panics when they are required.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if tollgate_core::db::testing::services_required() => {
            panic!("{var} is not set but CI/TOLLGATE_REQUIRE_SERVICES is: run `eval \"$(scripts/services)\"`")
        }
        _ => {
            eprintln!(
                "notice: {var} is not set; skipping this test (run `eval \"$(scripts/services)\"`)"
            );
            None
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: Db,
    pub state: AppState,
    /// A valid token of the first admin (`admin`).
    pub token: String,
    shutdown: Option<oneshot::Sender<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestApp {
    pub async fn sqlite() -> TestApp {
        Self::sqlite_with(test_config()).await
    }

    pub async fn sqlite_with(config: Config) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
        Self::start(db, config, Some(dir)).await
    }

    /// `None` (after a notice) when PostgreSQL is not configured and not required.
    pub async fn postgres() -> Option<TestApp> {
        Self::postgres_with(test_config()).await
    }

    pub async fn postgres_with(config: Config) -> Option<TestApp> {
        service_url("TOLLGATE_TEST_POSTGRES_URL")?;
        let db = tollgate_core::db::testing::fresh_postgres().await.expect(
            "TOLLGATE_TEST_POSTGRES_URL is set, so a fresh PostgreSQL database must be created",
        );
        Some(Self::start(db, config, None).await)
    }

    pub async fn start(db: Db, config: Config, dir: Option<tempfile::TempDir>) -> TestApp {
        Self::start_gated(db, config, dir, Argon2Gate::default()).await
    }

    /// A fresh SQLite or PostgreSQL app (`None` when PostgreSQL is not
    /// configured), with `config` and an argon2 gate of `permits`/`queue`.
    pub async fn fresh(
        postgres: bool,
        config: Config,
        permits: usize,
        queue: usize,
    ) -> Option<TestApp> {
        let gate = Argon2Gate::new(permits, queue);
        if postgres {
            service_url("TOLLGATE_TEST_POSTGRES_URL")?;
            let db = tollgate_core::db::testing::fresh_postgres()
                .await
                .expect("a fresh PostgreSQL database");
            Some(Self::start_gated(db, config, None, gate).await)
        } else {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
            Some(Self::start_gated(db, config, Some(dir), gate).await)
        }
    }

    pub async fn start_gated(
        db: Db,
        config: Config,
        dir: Option<tempfile::TempDir>,
        gate: Argon2Gate,
    ) -> TestApp {
        ensure_first_admin(&db, Some(ADMIN_PASSWORD.to_string()))
            .await
            .expect("first admin");
        let state = AppState::with_argon2(db.clone(), config, JWT_SECRET, gate);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        let admin = db
            .get_admin_by_username("admin")
            .await
            .expect("query")
            .expect("admin exists")
            .0;
        let token = state.jwt().issue(&admin).expect("token").0;
        TestApp {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            db,
            state,
            token,
            shutdown: Some(tx),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// An unauthenticated request.
    pub fn anon(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A request with the admin's token.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.anon(method, path).bearer_auth(&self.token)
    }

    pub async fn get(&self, path: &str) -> Response {
        send(self.req(Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        send(self.req(Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        send(self.req(Method::POST, path).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Response {
        send(self.req(Method::PATCH, path).json(&body)).await
    }

    /// Rotate key `id` with a grace period: the answer (`key` is the new
    /// full key).
    pub async fn rotate_key(&self, id: i64, grace_seconds: u64) -> Value {
        json(
            self.post(
                &format!("/api/keys/{id}/rotate"),
                serde_json::json!({ "grace_seconds": grace_seconds }),
            )
            .await,
            StatusCode::OK,
        )
        .await
    }

    /// The address the app listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("addr")
    }

    /// Create an admin with `role` (as the owner) and log it in; returns
    /// its id and token.
    pub async fn admin_with_role(&self, name: &str, role: &str) -> (i64, String) {
        let body = json(
            self.post(
                "/api/admins",
                serde_json::json!({"username": name, "password": OTHER_PASSWORD, "role": role}),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
        assert_eq!(body["role"], role);
        let id = body["id"].as_i64().expect("id");
        let login = json(self.login(name, OTHER_PASSWORD).await, StatusCode::OK).await;
        (id, login["token"].as_str().expect("token").to_string())
    }

    /// A request with `token`.
    pub fn with(&self, token: &str, method: Method, path: &str) -> RequestBuilder {
        self.anon(method, path).bearer_auth(token)
    }

    /// Log in through the API; returns the response.
    /// Create a webhook endpoint from `body`; its id.
    pub async fn create_webhook(&self, body: &Value) -> i64 {
        json(
            self.post("/api/webhooks", body.clone()).await,
            StatusCode::CREATED,
        )
        .await["id"]
            .as_i64()
            .expect("webhook id")
    }

    /// Press "send test event" on webhook endpoint `id`.
    pub async fn press_test(&self, id: i64) {
        json(
            self.post(&format!("/api/webhooks/{id}/test"), serde_json::json!({}))
                .await,
            StatusCode::ACCEPTED,
        )
        .await;
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.anon(Method::POST, "/api/auth/login")
            .json(&serde_json::json!({"username": username, "password": password}))
            .send()
            .await
            .expect("request")
    }
}

/// Assert the status and a JSON body; returns the body.
/// Send a request (the app answers, or the test fails).
pub async fn send(req: RequestBuilder) -> Response {
    req.send().await.expect("request")
}

/// The `Location` header of a response.
pub fn location(res: &Response) -> String {
    res.headers()
        .get("location")
        .expect("Location")
        .to_str()
        .expect("ascii")
        .to_string()
}

pub async fn json(res: Response, status: StatusCode) -> Value {
    let got = res.status();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = res.text().await.expect("body");
    assert_eq!(got, status, "unexpected status; body: {text}");
    assert!(
        ct.starts_with("application/json"),
        "content-type {ct:?}; body: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Assert a problem+json answer with `status` and type suffix `kind`; returns the body.
pub async fn problem(res: Response, status: StatusCode, kind: &str) -> Value {
    let got = res.status();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = res.text().await.expect("body");
    assert_eq!(got, status, "unexpected status; body: {text}");
    assert_eq!(ct, "application/problem+json", "body: {text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(
        v["type"],
        format!("https://tollgate.dev/problems/{kind}"),
        "body: {text}"
    );
    assert_eq!(v["status"], status.as_u16(), "body: {text}");
    assert!(v["title"].is_string(), "body: {text}");
    v
}

/// Assert a 422 naming `field`.
pub async fn invalid(res: Response, field: &str) -> Value {
    let v = problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
    assert_eq!(v["field"], field, "body: {v}");
    v
}

/// Run one test body on a fresh SQLite database and on a fresh PostgreSQL
/// database: `both!(name);` expects `async fn name(app: TestApp)`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::TestApp::sqlite().await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = $crate::common::TestApp::postgres().await {
                    super::$name(app).await
                }
            }
        }
    };
}

/// An admin record for tokens of admins that may not exist.
pub fn fake_admin(id: i64, username: &str) -> tollgate_core::db::admins::Admin {
    tollgate_core::db::admins::Admin {
        id,
        username: username.to_string(),
        role: tollgate_core::db::admins::Role::Owner,
        created_at: 0,
        session_gen: 0,
    }
}

/// Unpadded base64url (JWT segments).
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The bytes of an unpadded base64url JWT segment.
pub fn b64url_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .expect("base64url")
}

/// The delivery log of webhook endpoint `id`.
pub async fn deliveries(app: &TestApp, id: i64) -> Value {
    json(
        app.get(&format!("/api/webhooks/{id}/deliveries")).await,
        StatusCode::OK,
    )
    .await
}

/// Poll the log of endpoint `id` until `done` holds (at most 90 s: the
/// retry comes 5 s after the failure, on a busy machine later).
pub async fn until(app: &TestApp, id: i64, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let log = deliveries(app, id).await;
        if done(&log) {
            return log;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "deliveries never got there: {log}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
