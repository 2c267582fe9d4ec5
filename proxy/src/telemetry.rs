//! W3C trace context on the request path (`telemetry.trace_context`): the
//! proxy's span is a child of a valid incoming `traceparent` (or the root of
//! a fresh trace), and the upstream is told the proxy's span as its parent.
//! With the setting off nothing here runs (one branch in the filter).

use http::{HeaderMap, HeaderName};
use pingora::http::RequestHeader;
use tollgate_core::trace::{self, IdSource, SpanContext};

/// The request's trace: the proxy's own span and the `tracestate` passed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTrace {
    /// The client's span, when it sent a valid `traceparent`.
    pub parent: Option<SpanContext>,
    /// The proxy's span.
    pub span: SpanContext,
    pub tracestate: Option<String>,
}

/// Read the client's trace context and start the proxy's span.
pub fn start(req: &RequestHeader, ids: &mut impl IdSource) -> RequestTrace {
    let h = &req.headers;
    let incoming = trace::incoming_lines(
        h.get_all("traceparent").iter().map(|v| v.as_bytes()),
        h.get_all("tracestate").iter().map(|v| v.as_bytes()),
    );
    RequestTrace {
        span: trace::child_of(incoming.parent.as_ref(), ids),
        parent: incoming.parent,
        tracestate: incoming.tracestate,
    }
}

/// What the upstream sees: `traceparent` naming the proxy's span; the
/// client's `tracestate` only if it was valid (else none).
pub fn propagate(t: &RequestTrace, upstream: &mut HeaderMap) -> pingora::Result<()> {
    const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
    upstream.insert(TRACEPARENT, crate::forward::value(&t.span.traceparent())?);
    match &t.tracestate {
        Some(s) => {
            upstream.insert(TRACESTATE, crate::forward::value(s)?);
        }
        None => {
            upstream.remove(TRACESTATE);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::trace::OsIds;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).expect("request");
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).expect("header");
        }
        r
    }

    #[test]
    fn upstream_gets_the_proxy_span_as_parent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let inbound = req(&[("traceparent", tp), ("tracestate", "a=b")]);
        let t = start(&inbound, &mut OsIds);
        assert_eq!(
            t.parent.map(|p| p.span_id_hex()).as_deref(),
            Some("00f067aa0ba902b7")
        );
        let mut up = inbound.clone();
        crate::header_edit::request(&mut up, |h| propagate(&t, h)).expect("headers");
        let sent = up
            .headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .expect("sent");
        let parsed = trace::parse_traceparent(sent).expect("valid");
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id, t.span.span_id);
        assert_ne!(parsed.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(
            up.headers.get("tracestate").map(|v| v.as_bytes()),
            Some(&b"a=b"[..])
        );
    }

    #[test]
    fn hostile_context_is_replaced_by_a_fresh_trace() {
        let huge = format!("a={}", "b".repeat(4096));
        let inbound = req(&[
            (
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            ("tracestate", huge.as_str()),
        ]);
        let t = start(&inbound, &mut OsIds);
        assert!(t.parent.is_none());
        let mut up = inbound.clone();
        crate::header_edit::request(&mut up, |h| propagate(&t, h)).expect("headers");
        let sent = up
            .headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .expect("sent");
        assert_eq!(trace::parse_traceparent(sent), Some(t.span));
        assert!(up.headers.get("tracestate").is_none());
    }
}
