//! One finished span as plain data, and its OTLP form.

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext as OtelContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use tollgate_core::trace::SpanContext;

/// How the span ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanStatus {
    /// Nothing to say (the status code tells).
    Unset,
    /// The request failed on the server side (5xx, upstream error).
    Error(String),
}

/// A finished server span.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: Cow<'static, str>,
    /// This span's trace and span id (and sampled flag).
    pub context: SpanContext,
    /// The caller's span, from a valid incoming `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    pub status: SpanStatus,
}

impl Span {
    /// The SDK's form, ready for the OTLP exporter.
    pub(crate) fn into_data(self, scope: &InstrumentationScope) -> SpanData {
        let flags = if self.context.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanData {
            span_context: OtelContext::new(
                TraceId::from_bytes(self.context.trace_id),
                SpanId::from_bytes(self.context.span_id),
                flags,
                false,
                TraceState::NONE,
            ),
            parent_span_id: self
                .parent_span_id
                .map_or(SpanId::INVALID, SpanId::from_bytes),
            span_kind: SpanKind::Server,
            name: self.name,
            start_time: self.start,
            end_time: self.end.max(self.start),
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: match self.status {
                SpanStatus::Unset => Status::Unset,
                SpanStatus::Error(d) => Status::error(d),
            },
            instrumentation_scope: scope.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_and_parent_are_carried_over() {
        let start = SystemTime::now();
        let span = Span {
            name: "GET /v1".into(),
            context: SpanContext {
                trace_id: [1; 16],
                span_id: [2; 8],
                sampled: true,
            },
            parent_span_id: Some([3; 8]),
            start,
            // A clock step back never makes a negative duration.
            end: start - Duration::from_secs(1),
            attributes: vec![KeyValue::new("http.response.status_code", 200)],
            status: SpanStatus::Unset,
        };
        let d = span.into_data(&InstrumentationScope::builder("t").build());
        assert_eq!(d.span_context.trace_id(), TraceId::from_bytes([1; 16]));
        assert_eq!(d.span_context.span_id(), SpanId::from_bytes([2; 8]));
        assert!(d.span_context.is_sampled());
        assert_eq!(d.parent_span_id, SpanId::from_bytes([3; 8]));
        assert_eq!(d.end_time, d.start_time);
        assert_eq!(d.span_kind, SpanKind::Server);
    }

    #[test]
    fn a_root_span_has_no_parent() {
        let now = SystemTime::now();
        let d = Span {
            name: "x".into(),
            context: SpanContext {
                trace_id: [1; 16],
                span_id: [2; 8],
                sampled: true,
            },
            parent_span_id: None,
            start: now,
            end: now,
            attributes: vec![],
            status: SpanStatus::Error("boom".into()),
        }
        .into_data(&InstrumentationScope::builder("t").build());
        assert_eq!(d.parent_span_id, SpanId::INVALID);
        assert!(matches!(d.status, Status::Error { .. }));
    }
}
