//! Prepaid credits through the real binary: one proxy config on Redis, a
//! request, and the `credits` member of its `RateLimit` header.

use super::proxy::Proxy;

/// The `r` of the `credits` member of a `RateLimit` header value, if any.
pub fn credits_left(ratelimit: &str) -> Option<i64> {
    ratelimit
        .split(',')
        .find(|m| m.trim().starts_with("\"credits\""))
        .and_then(|m| m.split(';').find_map(|p| p.trim().strip_prefix("r=")))
        .and_then(|r| r.parse().ok())
}

/// A Redis limiter (`on_redis_error: deny`), plan `p` (100 000 an hour) on
/// `/api/users` to `upstream`.
pub fn users_on_redis(redis_url: &str, upstream: u16) -> String {
    format!(
        r#"limiter:
  backend: redis
  redis_url: "{redis_url}"
  redis_timeout: 2s
  on_redis_error: deny
plans:
  p: {{ limits: [ {{ name: hour, rate: 100000, per: 1h }} ] }}
upstreams:
  demo: {{ targets: ["127.0.0.1:{upstream}"] }}
routes:
  - name: users
    match: {{ path_prefix: /api/users }}
    upstream: demo
    strip_prefix: /api
    default_plan: p
"#
    )
}

/// `GET /api/users` with `key`: (status, credits left if shown, body).
pub async fn call(client: &reqwest::Client, p: &Proxy, key: &str) -> (u16, Option<i64>, String) {
    let r = client
        .get(p.url("/api/users"))
        .header("x-api-key", key)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let credits = r
        .headers()
        .get("ratelimit")
        .and_then(|v| v.to_str().ok())
        .and_then(credits_left);
    let body = r.text().await.unwrap_or_default();
    (status, credits, body)
}
