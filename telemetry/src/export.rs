//! The bounded span queue and the thread that batches it to the collector.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, watch};

use crate::metrics;
use crate::span::Span;

/// Where and how spans are sent.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The OTLP/HTTP traces URL (validated: `telemetry.otlp_endpoint`).
    pub endpoint: String,
    /// `service.name` of the spans.
    pub service_name: String,
    /// The instrumentation scope (`tollgate-proxy`, `tollgate-admin`).
    pub scope: &'static str,
    /// Spans waiting to be sent; more are dropped (and counted).
    pub queue: usize,
    /// The most spans in one export request.
    pub batch: usize,
    /// How long a span waits for a batch to fill.
    pub interval: Duration,
    /// The most one export request may take (connect included).
    pub export_timeout: Duration,
}

impl Settings {
    /// The defaults for `endpoint` and `service_name`: a 4096-span queue,
    /// batches of up to 512 every second, 5 s per export.
    pub fn new(endpoint: impl Into<String>, service_name: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            service_name: service_name.into(),
            scope: "tollgate",
            queue: 4096,
            batch: 512,
            interval: Duration::from_secs(1),
            export_timeout: Duration::from_secs(5),
        }
    }
}

/// The exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build the OTLP HTTP client: {0}")]
    Client(String),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("cannot start the span export thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The handle the request paths use: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Spans {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Span>,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Spans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spans").finish_non_exhaustive()
    }
}

impl Spans {
    /// Build the exporter and start the export thread. No connection is
    /// made until the first batch.
    pub fn start(settings: Settings) -> Result<Self, StartError> {
        metrics::init();
        let client = reqwest::Client::builder()
            .timeout(settings.export_timeout)
            .connect_timeout(settings.export_timeout)
            .build()
            .map_err(|e| StartError::Client(e.to_string()))?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(settings.export_timeout)
            .build()
            .map_err(|e| StartError::Exporter(e.to_string()))?;
        exporter.set_resource(
            &Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        );
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let (stop, stop_rx) = watch::channel(false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let scope = InstrumentationScope::builder(settings.scope)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let thread = std::thread::Builder::new()
            .name("tollgate-otlp".into())
            .spawn(move || {
                rt.block_on(run(exporter, scope, rx, stop_rx, settings));
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                tx,
                stop,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Queue a finished span; dropped (and counted) when the queue is full
    /// or the exporter stopped. Unsampled spans are not sent.
    pub fn record(&self, span: Span) {
        if !span.context.sampled {
            return;
        }
        if self.inner.tx.try_send(span).is_err() {
            metrics::spans_dropped().inc();
        }
    }

    /// Send what is queued (at most `timeout`) and stop the export thread.
    /// Later spans are dropped. Blocking: call it off the async runtimes'
    /// worker threads, or from a `spawn_blocking`.
    pub fn shutdown(&self, timeout: Duration) {
        let _ = self.inner.stop.send(true);
        let taken = match self.inner.thread.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(thread) = taken else {
            return;
        };
        let deadline = std::time::Instant::now() + timeout;
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            tracing::warn!("span export did not finish within {timeout:?}; the rest is dropped");
        }
    }
}

/// The export loop: a batch goes when it is full or `interval` after its
/// first span; on stop, what is queued goes in a last round.
async fn run(
    exporter: opentelemetry_otlp::SpanExporter,
    scope: InstrumentationScope,
    mut rx: mpsc::Receiver<Span>,
    mut stop: watch::Receiver<bool>,
    settings: Settings,
) {
    let batch_size = settings.batch.max(1);
    let mut batch: Vec<SpanData> = Vec::with_capacity(batch_size);
    // The handle was dropped without a stop: end the same way.
    let mut orphaned = false;
    loop {
        if orphaned || *stop.borrow() {
            while let Ok(span) = rx.try_recv() {
                batch.push(span.into_data(&scope));
                if batch.len() >= batch_size {
                    send(&exporter, &mut batch, settings.export_timeout).await;
                }
            }
            send(&exporter, &mut batch, settings.export_timeout).await;
            return;
        }
        if batch.is_empty() {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(span) => batch.push(span.into_data(&scope)),
                    None => return,
                },
                changed = stop.changed() => {
                    orphaned = changed.is_err();
                    continue;
                }
            }
        }
        let window = tokio::time::sleep(settings.interval);
        tokio::pin!(window);
        while batch.len() < batch_size {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(span) => batch.push(span.into_data(&scope)),
                    None => break,
                },
                () = &mut window => break,
                changed = stop.changed() => {
                    orphaned = changed.is_err();
                    break;
                }
            }
        }
        send(&exporter, &mut batch, settings.export_timeout).await;
    }
}

/// One export request, at most `timeout`; the spans are counted either way.
async fn send(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<SpanData>,
    timeout: Duration,
) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::take(batch);
    let n = spans.len() as u64;
    match tokio::time::timeout(timeout, exporter.export(spans)).await {
        Ok(Ok(())) => metrics::spans_exported().inc_by(n),
        Ok(Err(e)) => {
            metrics::spans_failed().inc_by(n);
            tracing::debug!(error = %e, spans = n, "span export failed");
        }
        Err(_) => {
            metrics::spans_failed().inc_by(n);
            tracing::debug!(spans = n, "span export timed out");
        }
    }
}
