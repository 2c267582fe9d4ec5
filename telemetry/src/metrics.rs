//! `tollgate_otlp_spans_total{outcome}`: spans exported, dropped (queue
//! full) and lost to failed exports. In the default registry, so both the
//! proxy's and the admin API's `/metrics` show them.

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, Opts};

static SPANS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new(
            "tollgate_otlp_spans_total",
            "OpenTelemetry spans by outcome: exported, dropped (export queue full), failed (the collector refused or did not answer)",
        ),
        &["outcome"],
    )
    .expect("valid metric definition");
    if let Err(e) = prometheus::register(Box::new(c.clone())) {
        tracing::debug!(error = %e, "otlp span metric already registered");
    }
    c
});

fn outcome(name: &str) -> IntCounter {
    SPANS.with_label_values(&[name])
}

/// Spans the collector accepted.
pub fn spans_exported() -> IntCounter {
    outcome("exported")
}

/// Spans dropped because the export queue was full.
pub fn spans_dropped() -> IntCounter {
    outcome("dropped")
}

/// Spans lost to an export that failed or timed out.
pub fn spans_failed() -> IntCounter {
    outcome("failed")
}

/// Make the series visible at 0 from the start.
pub(crate) fn init() {
    for name in ["exported", "dropped", "failed"] {
        let _ = outcome(name);
    }
}
