//! The exporter against a real OTLP/HTTP receiver: spans arrive with their
//! ids and `service.name`, a stop sends what is queued, and a collector that
//! hangs never makes `record` wait (the overflow is dropped and counted).

use std::time::{Duration, Instant, SystemTime};

use tollgate_core::trace::SpanContext;
use tollgate_telemetry::testing::{Collector, Hanging};
use tollgate_telemetry::{KeyValue, Settings, Span, SpanStatus, Spans};

fn span(n: u8, sampled: bool) -> Span {
    let now = SystemTime::now();
    Span {
        name: format!("GET /{n}").into(),
        context: SpanContext {
            trace_id: [n; 16],
            span_id: [n; 8],
            sampled,
        },
        parent_span_id: Some([0xab; 8]),
        start: now - Duration::from_millis(2),
        end: now,
        attributes: vec![KeyValue::new("tollgate.route", format!("r{n}"))],
        status: SpanStatus::Unset,
    }
}

fn hex(b: u8, n: usize) -> String {
    format!("{b:02x}").repeat(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_and_a_stop_sends_the_queue() {
    let c = Collector::start().await;
    let spans = Spans::start(Settings {
        scope: "tollgate-test",
        ..Settings::new(format!("{}/v1/traces", c.endpoint()), "edge-eu")
    })
    .expect("exporter");
    spans.record(span(1, true));
    spans.record(span(2, false));
    let got = c
        .wait_for(Duration::from_secs(30), |s| s.span_id == hex(1, 8))
        .await
        .expect("span 1 exported within the batch interval");
    assert_eq!(got.trace_id, hex(1, 16));
    assert_eq!(got.parent_span_id, hex(0xab, 8));
    assert_eq!(got.service_name, "edge-eu");
    assert_eq!(got.scope, "tollgate-test");
    assert_eq!(got.name, "GET /1");
    assert_eq!(got.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(got.attr("tollgate.route"), Some("r1"));
    spans.shutdown(Duration::from_secs(30));
    // An unsampled span (the caller said so) is never sent.
    assert!(c.spans().iter().all(|s| s.span_id != hex(2, 8)));
    assert!(c.bad_requests.lock().expect("bad").is_empty());

    // With a batch interval far away, only the stop sends the queue.
    let spans = Spans::start(Settings {
        interval: Duration::from_secs(3600),
        ..Settings::new(format!("{}/v1/traces", c.endpoint()), "edge-eu")
    })
    .expect("exporter");
    for n in 10..20 {
        spans.record(span(n, true));
    }
    spans.shutdown(Duration::from_secs(30));
    for n in 10..20 {
        assert!(
            c.spans().iter().any(|s| s.span_id == hex(n, 8)),
            "span {n} not flushed at stop"
        );
    }
    // After the stop, spans are dropped, not queued forever.
    let dropped = tollgate_telemetry::spans_dropped().get();
    spans.record(span(30, true));
    // (Other tests drop spans at the same time: at least this one.)
    assert!(tollgate_telemetry::spans_dropped().get() > dropped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_collector_never_blocks_record_and_the_overflow_is_counted() {
    let hang = Hanging::start().await;
    let spans = Spans::start(Settings {
        queue: 4,
        batch: 1,
        interval: Duration::from_millis(1),
        export_timeout: Duration::from_secs(600),
        ..Settings::new(format!("{}/v1/traces", hang.endpoint()), "t")
    })
    .expect("exporter");
    let dropped = tollgate_telemetry::spans_dropped().get();
    let started = Instant::now();
    for n in 1..=21 {
        spans.record(span(n, true));
    }
    let took = started.elapsed();
    // One span in the stuck export at most, four queued: the rest dropped.
    assert!(
        tollgate_telemetry::spans_dropped().get() - dropped >= 16,
        "dropped {}",
        tollgate_telemetry::spans_dropped().get() - dropped
    );
    // try_send only: far below the export timeout even on a loaded box.
    assert!(took < Duration::from_secs(30), "record waited {took:?}");
    // A stop gives up after its own bound instead of waiting for the export.
    let started = Instant::now();
    spans.shutdown(Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_collector_counts_failed_exports() {
    // A port bound but not listening: connections are refused.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let port = socket.local_addr().expect("addr").port();
    let failed = tollgate_telemetry::spans_failed().get();
    let spans = Spans::start(Settings {
        interval: Duration::from_millis(10),
        ..Settings::new(format!("http://127.0.0.1:{port}/v1/traces"), "t")
    })
    .expect("exporter");
    spans.record(span(1, true));
    let deadline = Instant::now() + Duration::from_secs(60);
    while tollgate_telemetry::spans_failed().get() == failed {
        assert!(
            Instant::now() < deadline,
            "the failed export was not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    spans.shutdown(Duration::from_secs(10));
}
