//! The answers the proxy gives itself (401/403/404/405/429/502/503/504), as
//! plain data: status, headers and an RFC 9457 problem+json body.

use tollgate_core::limits::{Decision, RetryAfter, COST_OVER_BURST};
use tollgate_core::problem::{self, Problem};

use crate::headers;

/// A complete response the proxy writes without asking the upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Why, as usage records it: the problem type (`missing-api-key`), for
    /// invalid keys with the key's state (`invalid-api-key:disabled`).
    pub reason: String,
}

impl Answer {
    fn problem(p: Problem) -> Self {
        Self {
            reason: p.kind().to_string(),
            status: p.status,
            headers: vec![("Content-Type", problem::CONTENT_TYPE.to_string())],
            body: p.to_json(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Add `RateLimit-Policy` / `RateLimit` for the limits of a decision.
    pub fn with_rate_limit_headers(mut self, decision: &Decision) -> Self {
        if !decision.limits.is_empty() {
            self.headers
                .push((headers::POLICY, headers::policy(&decision.limits)));
            self.headers
                .push((headers::RATELIMIT, headers::ratelimit(&decision.limits)));
        }
        self
    }
}

/// The request body is (or is declared) larger than the route's
/// `max_body_bytes`.
pub fn body_too_large(limit: u64) -> Answer {
    Answer::problem(
        Problem::new("body-too-large", "Content Too Large", 413)
            .detail(format!(
                "the request body may be at most {limit} bytes on this route"
            ))
            .with("max_body_bytes", limit),
    )
}

/// A CORS preflight the route's `cors` does not allow (`what` names the
/// part: the origin, the method or a header; never the client's value).
pub fn cors_refused(what: &str) -> Answer {
    Answer::problem(
        Problem::new("cors-refused", "Forbidden", 403)
            .detail(format!("this route's CORS policy does not allow {what}")),
    )
}

/// No route takes the request's path. The path is not repeated: it may
/// carry a key, which no answer repeats (bodies end up in client logs).
pub fn not_found() -> Answer {
    Answer::problem(Problem::new("no-route", "Not Found", 404).detail("no route matches this path"))
}

/// The request header did not arrive in full within `proxy.header_timeout`
/// (written by the connection edge, then the connection is closed).
pub fn request_timeout(timeout: std::time::Duration) -> Answer {
    Answer::problem(
        Problem::new("request-timeout", "Request Timeout", 408)
            .detail(format!(
                "the request header did not arrive within {} ms",
                timeout.as_millis()
            ))
            .with(
                "header_timeout_ms",
                u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            ),
    )
}

/// The next piece of the request body did not arrive within
/// `proxy.body_timeout` (a client fault, not an upstream one).
pub fn body_timeout(timeout: std::time::Duration) -> Answer {
    Answer::problem(
        Problem::new("request-timeout", "Request Timeout", 408)
            .detail(format!(
                "the request body stalled for more than {} ms",
                timeout.as_millis()
            ))
            .with(
                "body_timeout_ms",
                u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            ),
    )
}

/// `a` as the bytes of a whole HTTP/1.1 response that closes the connection,
/// for the connection edge, which answers outside Pingora's session.
pub fn to_http1_close(a: &Answer) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(a.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", a.status);
    for (name, value) in &a.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        a.body.len()
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&a.body);
    bytes
}

/// A request target refused by `proxy.path_policy` or the fixed path rules.
pub fn bad_path(e: tollgate_core::path::PathError) -> Answer {
    Answer::problem(
        Problem::new("bad-path", "Bad Request", 400)
            .detail(e.detail())
            .with("reason", e.reason()),
    )
}

/// A request that breaks HTTP/1 framing rules (the connection is closed after it).
pub fn bad_request(reason: &str, detail: &str) -> Answer {
    Answer::problem(
        Problem::new("bad-request", "Bad Request", 400)
            .detail(detail)
            .with("reason", reason),
    )
}

/// More header field lines than the HTTP/1 parser takes (`max`).
pub fn too_many_header_fields(max: usize) -> Answer {
    Answer::problem(
        Problem::new("header-too-large", "Request Header Fields Too Large", 431)
            .detail(format!("the request header has more than {max} fields"))
            .with("max_header_fields", max),
    )
}

/// The request line and header fields exceed `proxy.max_header_bytes`.
pub fn header_too_large(limit: usize) -> Answer {
    Answer::problem(
        Problem::new("header-too-large", "Request Header Fields Too Large", 431)
            .detail(format!("the request header is larger than {limit} bytes"))
            .with("max_header_bytes", limit),
    )
}

pub fn method_not_allowed(method: &str, allowed: &[String]) -> Answer {
    Answer::problem(
        Problem::new("method-not-allowed", "Method Not Allowed", 405)
            .detail(format!("{method} is not allowed on this route"))
            .with("allowed", allowed.to_vec()),
    )
    .with_header("Allow", allowed.join(", "))
}

pub fn missing_key(key_header: &str) -> Answer {
    Answer::problem(
        Problem::new("missing-api-key", "Unauthorized", 401).detail(format!(
            "send an API key in the {key_header} header or as Authorization: Bearer <key>"
        )),
    )
    .with_header("WWW-Authenticate", "Bearer".to_string())
}

/// `reason` is one of `malformed`, `unknown`, `disabled`, `expired`.
pub fn forbidden_key(reason: &str) -> Answer {
    let mut a = Answer::problem(
        Problem::new("invalid-api-key", "Forbidden", 403)
            .detail(format!("the API key is {reason}"))
            .with("reason", reason),
    );
    a.reason = format!("invalid-api-key:{reason}");
    a
}

/// The key is valid but names a plan that exists nowhere: fail closed
/// rather than guess its limits. The plan's name is not disclosed.
pub fn unknown_plan() -> Answer {
    Answer::problem(
        Problem::new("unknown-plan", "Forbidden", 403)
            .detail("this API key's plan is not configured; ask the API's operator to fix the key"),
    )
}

/// A scope or IP rule refuses the request (`scope-denied`, `ip-not-allowed`).
pub fn access_denied(d: &tollgate_core::rules::access::Denial) -> Answer {
    Answer::problem(Problem::new(d.kind(), "Forbidden", 403).detail(d.detail()))
}

/// Too many 401/403 answers to one client IP.
pub fn auth_throttled(retry_after: u64) -> Answer {
    Answer::problem(
        Problem::new("too-many-auth-failures", "Too Many Requests", 429)
            .detail("too many requests with a missing or invalid API key from this address"),
    )
    .with_header("Retry-After", retry_after.to_string())
}

/// Too many reads of `proxy.usage_path` by one key.
pub fn usage_reads_throttled(per_second: u32) -> Answer {
    Answer::problem(
        Problem::new("too-many-usage-reads", "Too Many Requests", 429)
            .detail(format!(
                "a key may read its usage {per_second} times per second"
            ))
            .with("per_second", per_second),
    )
    .with_header("Retry-After", "1".to_string())
}

pub fn quota_exceeded(decision: &Decision) -> Answer {
    let violated = decision.violated_names();
    let mut p = Problem::new("quota-exceeded", "Too Many Requests", 429)
        .detail(format!("rate limit exceeded: {}", violated.join(", ")))
        .with("violated_limits", violated);
    let retry = match decision.retry_after() {
        RetryAfter::Secs(s) => Some(s),
        RetryAfter::Never => {
            // The request costs more than a bucket can ever hold: no
            // `Retry-After` (`RateLimit` shows the buckets as they stand).
            p = p
                .detail(
                    "this request costs more than a limit holds (its burst, or a calendar \
                     quota) and can never be admitted",
                )
                .with("reason", COST_OVER_BURST);
            None
        }
    };
    let mut a = Answer::problem(p).with_rate_limit_headers(decision);
    a.reason = limited_reason(decision);
    if let Some(r) = retry {
        a = a.with_header("Retry-After", r.to_string());
    }
    a
}

/// Usage's reason for a refusal by the limits' buckets: `quota-exceeded`,
/// `quota-exceeded:cost-over-burst` when no wait would admit the request.
/// The verify API records the same.
pub fn limited_reason(decision: &Decision) -> String {
    match decision.retry_after() {
        RetryAfter::Secs(_) => "quota-exceeded".to_string(),
        RetryAfter::Never => format!("quota-exceeded:{COST_OVER_BURST}"),
    }
}

/// A limiter's refusal: `quota-exhausted` naming the calendar quotas that
/// refused (`Retry-After`: until the longest wait, a quota's period end),
/// else `quota-exceeded` ([`quota_exceeded`], token buckets only).
pub fn limited(buckets: &[&crate::limiter::Bucket], decision: &Decision) -> Answer {
    let quotas = crate::limiter::quota::refusing_quotas(buckets, decision);
    if quotas.is_empty() {
        return quota_exceeded(decision);
    }
    let RetryAfter::Secs(retry) = decision.retry_after() else {
        // A bucket beside the quota can never admit the request.
        return quota_exceeded(decision);
    };
    let p = Problem::new("quota-exhausted", "Too Many Requests", 429)
        .detail(format!(
            "quota exhausted: {} (the period resets in {retry} s)",
            quotas.join(", ")
        ))
        .with("violated_limits", decision.violated_names())
        .with("quotas", quotas);
    Answer::problem(p)
        .with_rate_limit_headers(decision)
        .with_header("Retry-After", retry.to_string())
}

/// 429 `credits-exhausted`: the key's prepaid balance is short of the
/// request's cost (nothing was spent anywhere). `RateLimit` carries the
/// balance as its `credits` member.
pub fn credits_exhausted(balance: i64, cost: u64) -> Answer {
    let p = Problem::new("credits-exhausted", "Too Many Requests", 429)
        .detail(format!(
            "prepaid credits exhausted: {balance} left, this request costs {cost}"
        ))
        .with("credits", balance)
        .with("cost", cost);
    Answer::problem(p).with_header(
        headers::RATELIMIT,
        headers::ratelimit(&[crate::limiter::credits::state(balance, true)]),
    )
}

/// The problem type of [`streams_per_address`].
pub const STREAMS_PER_ADDRESS: &str = "too-many-streams";

/// An HTTP/2 stream from an address whose connections and streams in flight
/// are at `proxy.max_connections_per_ip`.
pub fn streams_per_address(cap: u32) -> Answer {
    Answer::problem(
        Problem::new(STREAMS_PER_ADDRESS, "Too Many Requests", 429)
            .detail(format!(
                "this address has {cap} connections and HTTP/2 streams in flight"
            ))
            .with("max_connections_per_ip", cap),
    )
    .with_header("Retry-After", "1".to_string())
}

pub fn concurrency_exceeded(limit: u32) -> Answer {
    Answer::problem(
        Problem::new("concurrency-exceeded", "Too Many Requests", 429)
            .detail(format!("more than {limit} requests in flight for this key"))
            .with("concurrency", limit),
    )
    .with_header("Retry-After", "1".to_string())
}

pub fn limiter_unavailable() -> Answer {
    Answer::problem(
        Problem::new("limiter-unavailable", "Service Unavailable", 503).detail(
            "the rate limiter is unavailable and the gateway is configured to refuse \
                 (always, for a request that spends prepaid credits)",
        ),
    )
    .with_header("Retry-After", "1".to_string())
}

pub fn no_healthy_upstream(upstream: &str) -> Answer {
    Answer::problem(
        Problem::new("no-healthy-upstream", "Bad Gateway", 502)
            .detail(format!("no healthy target in upstream {upstream}")),
    )
}

pub fn upstream_failed(status: u16) -> Answer {
    let (kind, title, detail) = match status {
        504 => (
            "upstream-timeout",
            "Gateway Timeout",
            "the upstream did not answer in time",
        ),
        400 => (
            "bad-request",
            "Bad Request",
            "the request could not be read",
        ),
        _ => (
            "upstream-error",
            "Bad Gateway",
            "the upstream could not be reached or failed",
        ),
    };
    Answer::problem(Problem::new(kind, title, status).detail(detail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::limits::LimitState;

    fn v(a: &Answer) -> serde_json::Value {
        serde_json::from_slice(&a.body).expect("json body")
    }

    #[test]
    fn request_timeout_as_a_whole_http1_response_that_closes() {
        let a = request_timeout(std::time::Duration::from_millis(1500));
        assert_eq!(a.status, 408);
        assert_eq!(v(&a)["header_timeout_ms"], 1500);
        let bytes = to_http1_close(&a);
        let text = String::from_utf8(bytes).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("HTTP/1.1 408 Request Timeout"));
        let headers: Vec<&str> = lines.collect();
        assert!(headers.contains(&"Content-Type: application/problem+json"));
        assert!(headers.contains(&"Connection: close"));
        assert!(headers.contains(&format!("Content-Length: {}", body.len()).as_str()));
        assert_eq!(body.as_bytes(), a.body.as_slice());
    }

    #[test]
    fn a_refusing_quota_is_quota_exhausted_with_the_period_end() {
        use crate::limiter::{Bucket, Scope};
        use tollgate_core::limits::Limit;
        use tollgate_core::quota::{Period, QuotaSpec};
        let spec = QuotaSpec {
            period: Period::Month,
            anchor: None,
            time_zone: None,
        };
        let q = Bucket::new(Scope::Key, Limit::new_quota("monthly", 100, spec, None));
        let b = Bucket::new(
            Scope::Key,
            Limit::new("second", 5, std::time::Duration::from_secs(1), None, None),
        );
        let state = |name: &str, violated, retry| LimitState {
            name: name.into(),
            quota: 100,
            window_secs: 2_592_000,
            remaining: 0,
            reset_secs: 86_400,
            violated,
            retry_after_secs: retry,
        };
        let d = Decision {
            allowed: false,
            limits: smallvec::smallvec![state("second", false, 0), state("monthly", true, 86_400)],
        };
        let a = limited(&[&b, &q], &d);
        assert_eq!(a.status, 429);
        assert_eq!(a.header("retry-after"), Some("86400"));
        let body = v(&a);
        assert!(body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("/quota-exhausted")));
        assert_eq!(body["quotas"], serde_json::json!(["monthly"]));
        assert!(a
            .header("ratelimit")
            .is_some_and(|h| h.contains("\"monthly\";r=0;t=86400")));
        // Only the bucket refused: quota-exceeded as before.
        let d = Decision {
            allowed: false,
            limits: smallvec::smallvec![state("second", true, 1), state("monthly", false, 0)],
        };
        let body = v(&limited(&[&b, &q], &d));
        assert!(body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("/quota-exceeded")));
    }

    #[test]
    fn quota_exceeded_names_limits_and_sets_retry_after() {
        let d = Decision {
            allowed: false,
            limits: smallvec::smallvec![
                LimitState {
                    name: "minute".into(),
                    quota: 60,
                    window_secs: 60,
                    remaining: 0,
                    reset_secs: 7,
                    violated: true,
                    retry_after_secs: 2,
                },
                LimitState {
                    name: "route".into(),
                    quota: 10,
                    window_secs: 1,
                    remaining: 4,
                    reset_secs: 1,
                    violated: false,
                    retry_after_secs: 0,
                },
            ],
        };
        let a = quota_exceeded(&d);
        assert_eq!(a.status, 429);
        assert_eq!(a.header("content-type"), Some("application/problem+json"));
        assert_eq!(a.header("retry-after"), Some("2"));
        assert_eq!(
            a.header("ratelimit"),
            Some(r#""minute";r=0;t=7, "route";r=4;t=1"#)
        );
        let body = v(&a);
        assert!(body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("/quota-exceeded")));
        assert_eq!(body["violated_limits"], serde_json::json!(["minute"]));
    }

    /// Black-box round 10: `Retry-After: 18446744074` for a request whose
    /// cost is above a bucket's burst.
    #[test]
    fn a_cost_above_the_burst_has_no_retry_after() {
        let never = |retry_after_secs| LimitState {
            name: "second".into(),
            quota: 5,
            window_secs: 1,
            remaining: 5,
            reset_secs: 0,
            violated: true,
            retry_after_secs,
        };
        let d = Decision {
            allowed: false,
            limits: smallvec::smallvec![never(tollgate_core::limits::NEVER)],
        };
        let a = quota_exceeded(&d);
        assert_eq!((a.status, a.header("retry-after")), (429, None));
        assert_eq!(a.header("ratelimit"), Some(r#""second";r=5;t=0"#));
        assert_eq!(v(&a)["reason"], "cost-over-burst");
        assert_eq!(a.reason, "quota-exceeded:cost-over-burst");
        assert_eq!(limited(&[], &d), a);
        let wait = Decision {
            allowed: false,
            limits: smallvec::smallvec![never(3)],
        };
        let a = quota_exceeded(&wait);
        assert_eq!(a.header("retry-after"), Some("3"));
        assert_eq!(a.reason, "quota-exceeded");
        assert_eq!(v(&a)["reason"], serde_json::Value::Null);
    }

    #[test]
    fn every_answer_is_problem_json() {
        for a in [
            not_found(),
            method_not_allowed("PUT", &["GET".into()]),
            missing_key("x-api-key"),
            forbidden_key("disabled"),
            unknown_plan(),
            auth_throttled(1),
            concurrency_exceeded(2),
            limiter_unavailable(),
            no_healthy_upstream("demo"),
            upstream_failed(504),
            bad_path(tollgate_core::path::PathError::DotSegment),
            bad_request("te-and-cl", "x"),
            header_too_large(32),
        ] {
            let body = v(&a);
            assert_eq!(body["status"], a.status);
            assert_eq!(a.header("Content-Type"), Some("application/problem+json"));
        }
        assert_eq!(
            method_not_allowed("PUT", &["GET".into()]).header("allow"),
            Some("GET")
        );
    }
}
