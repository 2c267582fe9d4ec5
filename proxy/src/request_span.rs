//! The OpenTelemetry span of one proxied request (`telemetry.otlp_endpoint`):
//! what the request filter learnt, as span attributes. Plain data in, a
//! [`Span`] out; the service hands it to the exporter in `logging`.
//!
//! The span's ids are the request's [`RequestTrace`]: the trace and parent
//! come from a valid incoming `traceparent`, the span id is the one the
//! upstream was sent as its parent. A request refused before it went
//! upstream gets a trace started in `logging`.

use std::time::{Duration, SystemTime};

use tollgate_telemetry::{KeyValue, Span, SpanStatus};

use crate::telemetry::RequestTrace;

/// What one request did, for its span.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The route's name; empty when no route matched.
    pub route: &'a str,
    pub key_id: Option<i64>,
    /// The external id of the key's identity (empty without one).
    pub identity: &'a str,
    pub request_id: &'a str,
    /// `allowed`, `limited`, `unauthorized`, … (`metrics::outcome`).
    pub decision: &'a str,
    pub violated: Vec<&'a str>,
    /// Which limiter decided (`local`, `redis`, `fallback`, `none`).
    pub limiter: &'a str,
    /// Time in the limiter when it was Redis.
    pub redis_time: Option<Duration>,
    /// The upstream target, when one was picked.
    pub upstream: Option<String>,
    /// The status sent to the client (0: none was sent).
    pub status: u16,
    /// Why the request failed, if it did (5xx, upstream error).
    pub error: Option<String>,
}

/// The request's span, ended now and `elapsed` long.
pub fn span(trace: &RequestTrace, facts: &RequestFacts<'_>, elapsed: Duration) -> Span {
    let end = SystemTime::now();
    let name = match (facts.route, facts.method) {
        ("", m) => m.to_string(),
        (r, m) => format!("{m} {r}"),
    };
    let mut attributes = vec![
        KeyValue::new("http.request.method", facts.method.to_string()),
        KeyValue::new(
            "url.path",
            tollgate_core::keys::redact_keys(facts.path).into_owned(),
        ),
        KeyValue::new("http.response.status_code", i64::from(facts.status)),
        KeyValue::new("tollgate.route", facts.route.to_string()),
        KeyValue::new("tollgate.identity", facts.identity.to_string()),
        KeyValue::new("tollgate.request_id", facts.request_id.to_string()),
        KeyValue::new("tollgate.decision", facts.decision.to_string()),
        KeyValue::new("tollgate.limiter", facts.limiter.to_string()),
        KeyValue::new(
            "tollgate.limits.violated",
            opentelemetry_array(&facts.violated),
        ),
    ];
    if let Some(id) = facts.key_id {
        attributes.push(KeyValue::new("tollgate.key_id", id));
    }
    if let Some(t) = facts.redis_time {
        attributes.push(KeyValue::new(
            "tollgate.redis.duration_us",
            i64::try_from(t.as_micros()).unwrap_or(i64::MAX),
        ));
    }
    if let Some(u) = &facts.upstream {
        attributes.push(KeyValue::new("tollgate.upstream", u.clone()));
    }
    let status = match &facts.error {
        Some(e) => SpanStatus::Error(e.clone()),
        None if facts.status >= 500 => SpanStatus::Error(format!("HTTP {}", facts.status)),
        None => SpanStatus::Unset,
    };
    Span {
        name: name.into(),
        context: trace.span,
        parent_span_id: trace.parent.map(|p| p.span_id),
        start: end.checked_sub(elapsed).unwrap_or(end),
        end,
        attributes,
        status,
    }
}

fn opentelemetry_array(names: &[&str]) -> tollgate_telemetry::Value {
    tollgate_telemetry::Value::Array(tollgate_telemetry::Array::String(
        names.iter().map(|n| n.to_string().into()).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::trace::{child_of, parse_traceparent, OsIds};

    fn attr<'a>(s: &'a Span, k: &str) -> Option<&'a tollgate_telemetry::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| &kv.value)
    }

    #[test]
    fn a_refusal_carries_its_decision_and_limits() {
        let parent = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let trace = RequestTrace {
            span: child_of(parent.as_ref(), &mut OsIds),
            parent,
            tracestate: None,
        };
        let facts = RequestFacts {
            method: "GET",
            path: "/v1/x",
            route: "api",
            key_id: Some(7),
            decision: "limited",
            violated: vec!["per_minute"],
            limiter: "redis",
            redis_time: Some(Duration::from_micros(420)),
            status: 429,
            ..Default::default()
        };
        let s = span(&trace, &facts, Duration::from_millis(3));
        assert_eq!(s.name, "GET api");
        assert_eq!(s.context, trace.span);
        assert_eq!(s.parent_span_id, Some(parent.expect("valid").span_id));
        assert!(s.end >= s.start);
        assert_eq!(attr(&s, "tollgate.decision"), Some(&"limited".into()));
        assert_eq!(attr(&s, "tollgate.key_id"), Some(&7i64.into()));
        assert_eq!(attr(&s, "http.response.status_code"), Some(&429i64.into()));
        assert_eq!(attr(&s, "tollgate.redis.duration_us"), Some(&420i64.into()));
        assert_eq!(
            attr(&s, "tollgate.limits.violated").map(|v| v.to_string()),
            Some("[\"per_minute\"]".to_string())
        );
        assert_eq!(attr(&s, "tollgate.upstream"), None);
        assert_eq!(s.status, SpanStatus::Unset);
    }

    #[test]
    fn an_unrouted_upstream_failure_is_an_error_root_span() {
        let trace = RequestTrace {
            span: child_of(None, &mut OsIds),
            parent: None,
            tracestate: None,
        };
        let facts = RequestFacts {
            method: "POST",
            status: 502,
            upstream: Some("127.0.0.1:9".into()),
            ..Default::default()
        };
        let s = span(&trace, &facts, Duration::ZERO);
        assert_eq!(s.name, "POST");
        assert_eq!(s.parent_span_id, None);
        assert!(matches!(s.status, SpanStatus::Error(_)));
        assert_eq!(attr(&s, "tollgate.key_id"), None);
        assert_eq!(
            attr(&s, "tollgate.upstream"),
            Some(&"127.0.0.1:9".to_string().into())
        );
    }
}
