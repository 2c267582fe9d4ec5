//! Test harness (feature `testing`): a real OTLP/HTTP receiver that decodes
//! the protobuf export requests, and a collector that accepts connections
//! and never answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use prost::Message;

/// One span as the collector received it (ids in lower-case hex).
#[derive(Debug, Clone)]
pub struct Received {
    pub service_name: String,
    pub scope: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub kind: i32,
    /// Values as text; arrays joined with `,`.
    pub attributes: HashMap<String, String>,
    /// OTLP status code (0 unset, 1 ok, 2 error).
    pub status: i32,
}

impl Received {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attributes.get(k).map(String::as_str)
    }
}

/// A running OTLP/HTTP receiver on 127.0.0.1.
#[derive(Clone)]
pub struct Collector {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    /// Export requests that were not valid OTLP protobuf.
    pub bad_requests: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    /// Listen on a free port (in the current tokio runtime).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let c = Self {
            addr: listener.local_addr().expect("collector addr"),
            spans: Arc::default(),
            bad_requests: Arc::default(),
        };
        let me = c.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let me = me.clone();
                        async move { Ok::<_, std::convert::Infallible>(me.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        c
    }

    /// The endpoint to configure (`telemetry.otlp_endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path_ok = req.uri().path() == "/v1/traces" && req.method() == hyper::Method::POST;
        let ct = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return self.bad(format!("body: {e}")),
        };
        if !path_ok || ct != "application/x-protobuf" {
            return self.bad(format!(
                "unexpected request: path ok {path_ok}, type {ct:?}"
            ));
        }
        let export = match ExportTraceServiceRequest::decode(body) {
            Ok(e) => e,
            Err(e) => return self.bad(format!("not OTLP protobuf: {e}")),
        };
        let mut got = Vec::new();
        for rs in export.resource_spans {
            let service_name = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(text)
                .unwrap_or_default();
            for ss in rs.scope_spans {
                let scope = ss.scope.map(|s| s.name).unwrap_or_default();
                for s in ss.spans {
                    got.push(Received {
                        service_name: service_name.clone(),
                        scope: scope.clone(),
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        name: s.name,
                        kind: s.kind,
                        attributes: s
                            .attributes
                            .iter()
                            .map(|kv| {
                                (
                                    kv.key.clone(),
                                    kv.value.as_ref().map(text).unwrap_or_default(),
                                )
                            })
                            .collect(),
                        status: s.status.map(|st| st.code).unwrap_or(0),
                    });
                }
            }
        }
        self.spans.lock().expect("spans").extend(got);
        Response::builder()
            .header("content-type", "application/x-protobuf")
            .body(Full::new(
                ExportTraceServiceResponse::default().encode_to_vec().into(),
            ))
            .expect("response")
    }

    fn bad(&self, why: String) -> Response<Full<Bytes>> {
        self.bad_requests.lock().expect("bad").push(why);
        Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Full::new(Bytes::new()))
            .expect("response")
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().expect("spans").clone()
    }

    /// Wait (polling, at most `timeout`) for a span that `pred` accepts.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> Option<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.spans().into_iter().find(|s| pred(s)) {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A collector that accepts connections and never reads or answers them.
pub struct Hanging {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Hanging {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind hanging collector");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        Self { addr, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::ArrayValue(a)) => a.values.iter().map(text).collect::<Vec<_>>().join(","),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
