//! OpenTelemetry span export (`telemetry.otlp_endpoint`), shared by the
//! proxy and the admin API (which never depend on each other).
//!
//! A request ends in one [`Span`] (plain data: ids from
//! [`tollgate_core::trace`], times, attributes). [`Spans::record`] puts it
//! in a bounded queue and returns at once; one thread of its own batches the
//! queue and sends it with the OTLP exporter of the `opentelemetry-otlp`
//! crate (HTTP/protobuf). A full queue (a slow or dead collector) drops the
//! span and counts it in `tollgate_otlp_spans_total{outcome="dropped"}`:
//! requests never wait for the collector.
//!
//! The batching is ours rather than the SDK's `BatchSpanProcessor` because
//! the proxy sets its own span and trace ids (the ones it sends upstream in
//! `traceparent`) and the SDK's processor does not tell how many spans it
//! dropped.

mod export;
mod metrics;
mod span;
#[cfg(feature = "testing")]
pub mod testing;

pub use export::{Settings, Spans, StartError};
pub use metrics::{spans_dropped, spans_exported, spans_failed};
pub use opentelemetry::{Array, KeyValue, Value};
pub use span::{Span, SpanStatus};

use std::time::Duration;

use tollgate_core::config::TelemetryConfig;

/// How long a stop waits for the last spans to go.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// The exporter `telemetry:` asks for: none without `otlp_endpoint`; none
/// either (logged) when it cannot start, as spans are no reason to refuse
/// traffic. `scope` names the instrumentation scope (`tollgate-proxy`,
/// `tollgate-admin`).
pub fn from_config(t: &TelemetryConfig, scope: &'static str) -> Option<Spans> {
    let endpoint = t.otlp_endpoint.as_ref()?;
    let settings = Settings {
        scope,
        ..Settings::new(endpoint.clone(), t.service_name.clone())
    };
    match Spans::start(settings) {
        Ok(s) => {
            tracing::info!(endpoint = %endpoint, "exporting OpenTelemetry spans");
            Some(s)
        }
        Err(e) => {
            tracing::error!(endpoint = %endpoint, "no OpenTelemetry spans: {e}");
            None
        }
    }
}

/// Send the queued spans (at most [`SHUTDOWN_FLUSH`]) and stop exporting.
pub fn stop(spans: Option<&Spans>) {
    if let Some(s) = spans {
        s.shutdown(SHUTDOWN_FLUSH);
    }
}
