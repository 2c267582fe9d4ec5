//! One OpenTelemetry span per admin API request (`telemetry.otlp_endpoint`):
//! method, route template, status; the parent from a valid incoming
//! `traceparent`. Exported with the proxy's exporter (`tollgate-telemetry`).

use std::time::{Instant, SystemTime};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tollgate_core::trace::{self, OsIds};
use tollgate_telemetry::{KeyValue, Span, SpanStatus, Spans};

/// The middleware: time the request, record its span when it is answered.
pub async fn record(State(spans): State<Spans>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = tollgate_core::keys::recorded_method(req.method().as_str()).to_string();
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let h = req.headers();
    let incoming = trace::incoming_lines(
        h.get_all("traceparent").iter().map(|v| v.as_bytes()),
        h.get_all("tracestate").iter().map(|v| v.as_bytes()),
    );
    let res = next.run(req).await;
    spans.record(span(
        &incoming,
        &method,
        template.as_deref(),
        res.status().as_u16(),
        started,
    ));
    res
}

/// The span of one answered request.
fn span(
    incoming: &trace::Incoming,
    method: &str,
    template: Option<&str>,
    status: u16,
    started: Instant,
) -> Span {
    let end = SystemTime::now();
    let name = match template {
        Some(t) => format!("{method} {t}"),
        None => method.to_string(),
    };
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.to_string()),
        KeyValue::new("http.response.status_code", i64::from(status)),
    ];
    if let Some(t) = template {
        attributes.push(KeyValue::new("http.route", t.to_string()));
    }
    Span {
        name: name.into(),
        context: trace::child_of(incoming.parent.as_ref(), &mut OsIds),
        parent_span_id: incoming.parent.map(|p| p.span_id),
        start: end.checked_sub(started.elapsed()).unwrap_or(end),
        end,
        attributes,
        status: if status >= 500 {
            SpanStatus::Error(format!("HTTP {status}"))
        } else {
            SpanStatus::Unset
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_span_names_the_route_template_and_keeps_the_parent() {
        let inc = trace::incoming(
            Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None,
        );
        let s = span(&inc, "GET", Some("/api/keys/{id}"), 404, Instant::now());
        assert_eq!(s.name, "GET /api/keys/{id}");
        assert_eq!(s.parent_span_id, Some(inc.parent.expect("parent").span_id));
        assert_eq!(s.context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s.status, SpanStatus::Unset);
        let junk = trace::incoming(Some(&[b'0'; 4000]), None);
        let s = span(&junk, "POST", None, 503, Instant::now());
        assert_eq!(s.name, "POST");
        assert_eq!(s.parent_span_id, None);
        assert!(matches!(s.status, SpanStatus::Error(_)));
    }
}
