//! gRPC through the proxy with a real tonic server and client: h2c and h2
//! over TLS upstreams, unary and server-streaming calls whose trailers
//! (status, message, custom metadata) reach the client, refusals answered
//! as gRPC status with the RateLimit headers kept, and the W3C trace context
//! the upstream sees. The messages are written by hand (prost derive), the
//! service by hand on tonic's server plumbing: no protoc.
// `Result<_, tonic::Status>` is tonic's own API (its streams carry it).
#![allow(clippy::result_large_err)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{free_port, wait_listening, TestProxy};
use tollgate_core::db::NewApiKey;
use tonic::codec::ProstCodec;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};

#[derive(Clone, PartialEq, prost::Message)]
struct Ask {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Reply {
    #[prost(string, tag = "1")]
    text: String,
    /// The `traceparent` the upstream saw ("" if none).
    #[prost(string, tag = "2")]
    traceparent: String,
    #[prost(string, tag = "3")]
    key_header: String,
}

fn reply_to<T>(req: &Request<T>, text: String) -> Reply {
    let md = req.metadata();
    let get = |n: &str| {
        md.get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    Reply {
        text,
        traceparent: get("traceparent"),
        key_header: get("x-api-key"),
    }
}

struct Unary;
impl tonic::server::UnaryService<Ask> for Unary {
    type Response = Reply;
    type Future = BoxFuture<Response<Reply>, Status>;
    fn call(&mut self, req: Request<Ask>) -> Self::Future {
        Box::pin(async move {
            let text = format!("echo: {}", req.get_ref().text);
            Ok(Response::new(reply_to(&req, text)))
        })
    }
}

type ReplyStream = tonic::codegen::BoxStream<Reply>;

/// `count` replies, then ends with ABORTED and custom trailing metadata:
/// the client can only see both if the trailers passed through.
struct Streaming;
impl tonic::server::ServerStreamingService<Ask> for Streaming {
    type Response = Reply;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<Response<ReplyStream>, Status>;
    fn call(&mut self, req: Request<Ask>) -> Self::Future {
        Box::pin(async move {
            let n = req.get_ref().count;
            let mut items: Vec<Result<Reply, Status>> = (0..n)
                .map(|i| Ok(reply_to(&req, format!("part {i}"))))
                .collect();
            let mut end = Status::aborted("stream over: 100% done");
            end.metadata_mut()
                .insert("x-upstream-trailer", MetadataValue::from_static("kept"));
            items.push(Err(end));
            let s: ReplyStream = Box::pin(tonic::codegen::tokio_stream::iter(items));
            Ok(Response::new(s))
        })
    }
}

/// The service `test.Echo`, routed by hand as generated code would.
#[derive(Clone)]
struct Echo;

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

impl<B> Service<http::Request<B>> for Echo
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Reply, Ask>::default());
            Ok(match req.uri().path() {
                "/test.Echo/Unary" => grpc.unary(Unary, req).await,
                "/test.Echo/Stream" => grpc.server_streaming(Streaming, req).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// A tonic server on a fresh port, plain (h2c) or TLS (h2 by ALPN).
async fn start_grpc_upstream(tls: Option<tonic::transport::Identity>) -> SocketAddr {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut builder = Server::builder();
    if let Some(id) = tls {
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(id))
            .expect("server tls");
    }
    let router = builder.add_service(Echo);
    tokio::spawn(async move {
        if let Err(e) = router.serve(addr).await {
            eprintln!("grpc upstream stopped: {e}");
        }
    });
    wait_listening(addr).await;
    addr
}

fn config(upstream: &str, protocol: &str, tls: &str) -> String {
    format!(
        r#"
proxy:
  listen: "{{listen}}"
  metrics_listen: "{{metrics}}"
  threads: 2
  h2c: true
telemetry: {{ trace_context: true }}
plans:
  tight: {{ limits: [ {{ name: burst, rate: 1, per: 1m, burst: 2 }} ] }}
upstreams:
  grpc: {{ targets: ["{upstream}"], protocol: {protocol}{tls} }}
  demo: {{ targets: ["{{upstream}}"] }}
routes:
  - name: echo
    match: {{ path_prefix: /test.Echo }}
    upstream: grpc
    default_plan: tight
    max_body_bytes: 4096
  - name: users
    match: {{ path_prefix: /api/users }}
    upstream: demo
    strip_prefix: /api
"#
    )
}

async fn client(proxy: &TestProxy) -> tonic::client::Grpc<Channel> {
    let channel = Channel::from_shared(format!("http://{}", proxy.addr))
        .expect("uri")
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect to the proxy over h2c");
    tonic::client::Grpc::new(channel)
}

fn ask(text: &str, count: u32, key: Option<&str>, traceparent: Option<&str>) -> Request<Ask> {
    let mut r = Request::new(Ask {
        text: text.into(),
        count,
    });
    if let Some(k) = key {
        r.metadata_mut()
            .insert("x-api-key", k.parse().expect("key metadata"));
    }
    if let Some(t) = traceparent {
        r.metadata_mut()
            .insert("traceparent", t.parse().expect("traceparent metadata"));
    }
    r
}

async fn unary(
    c: &mut tonic::client::Grpc<Channel>,
    req: Request<Ask>,
) -> Result<Response<Reply>, Status> {
    c.ready().await.expect("channel ready");
    c.unary(
        req,
        http::uri::PathAndQuery::from_static("/test.Echo/Unary"),
        ProstCodec::<Ask, Reply>::default(),
    )
    .await
}

/// A gRPC upstream over h2c behind a proxy on SQLite, a key named `name`,
/// and a client connected to the proxy.
async fn h2c_proxy(name: &str) -> (TestProxy, String, tonic::client::Grpc<Channel>) {
    let up = start_grpc_upstream(None).await;
    let proxy = TestProxy::start(&config(&up.to_string(), "h2c", ""), common::Store::Sqlite)
        .await
        .expect("sqlite proxy");
    let (_, key) = proxy
        .key(NewApiKey {
            name: name.into(),
            ..NewApiKey::default()
        })
        .await;
    let c = client(&proxy).await;
    (proxy, key, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_h2c_passes_calls_and_trailers_and_refuses_as_grpc_status() {
    let (proxy, key, mut c) = h2c_proxy("grpc").await;

    // Unary: through, the key not forwarded, a fresh trace started.
    let r = unary(&mut c, ask("hi", 0, Some(&key), None))
        .await
        .expect("unary call");
    let reply = r.get_ref();
    assert_eq!(reply.text, "echo: hi");
    assert_eq!(reply.key_header, "", "the key reached the upstream");
    let tp = tollgate_core::trace::parse_traceparent(&reply.traceparent)
        .unwrap_or_else(|| panic!("upstream saw no valid traceparent: {reply:?}"));
    assert!(
        r.metadata().get("ratelimit").is_some(),
        "{:?}",
        r.metadata()
    );

    // A valid incoming traceparent is the parent: same trace, new span.
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = unary(&mut c, ask("traced", 0, Some(&key), Some(parent)))
        .await
        .expect("traced call");
    let seen = tollgate_core::trace::parse_traceparent(&r.get_ref().traceparent).expect("seen");
    assert_eq!(seen.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(seen.span_id_hex(), "00f067aa0ba902b7");
    assert_ne!(seen.trace_id, tp.trace_id);

    // The burst (2) is used up: RESOURCE_EXHAUSTED with the limit headers.
    let st = unary(&mut c, ask("third", 0, Some(&key), None))
        .await
        .expect_err("over the limit");
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert!(!st.message().is_empty(), "{st:?}");
    let md = st.metadata();
    assert!(md.get("ratelimit").is_some(), "{md:?}");
    assert!(md.get("retry-after").is_some(), "{md:?}");

    // No key: UNAUTHENTICATED, naming the header; a bad key: PERMISSION_DENIED.
    let st = unary(&mut c, ask("x", 0, None, None))
        .await
        .expect_err("no key");
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");
    assert!(st.message().contains("x-api-key"), "{st:?}");
    let st = unary(&mut c, ask("x", 0, Some("tg_not_a_real_key"), None))
        .await
        .expect_err("bad key");
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");

    // Server streaming, with a fresh key (own burst): every message, then
    // the upstream's status, message and trailing metadata.
    let (_, key2) = proxy
        .key(NewApiKey {
            name: "stream".into(),
            ..NewApiKey::default()
        })
        .await;
    c.ready().await.expect("ready");
    let resp = c
        .server_streaming(
            ask("s", 5, Some(&key2), None),
            http::uri::PathAndQuery::from_static("/test.Echo/Stream"),
            ProstCodec::<Ask, Reply>::default(),
        )
        .await
        .expect("stream call");
    let mut stream = resp.into_inner();
    let mut got = Vec::new();
    let end = loop {
        match stream.message().await {
            Ok(Some(m)) => got.push(m.text),
            Ok(None) => panic!("stream ended without the upstream's status"),
            Err(st) => break st,
        }
    };
    assert_eq!(got, (0..5).map(|i| format!("part {i}")).collect::<Vec<_>>());
    assert_eq!(end.code(), Code::Aborted, "{end:?}");
    assert_eq!(end.message(), "stream over: 100% done");
    assert_eq!(
        end.metadata()
            .get("x-upstream-trailer")
            .and_then(|v| v.to_str().ok()),
        Some("kept"),
        "{end:?}"
    );

    // HTTP/1 clients still work on the same listener with h2c on.
    let r = reqwest::Client::new()
        .get(proxy.url("/api/users"))
        .header("x-api-key", &key2)
        .send()
        .await
        .expect("http/1");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    // And a non-gRPC refusal stays problem+json.
    let r = reqwest::get(proxy.url("/api/users")).await.expect("no key");
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_over_max_body_bytes_is_resource_exhausted() {
    let (proxy, key, mut c) = h2c_proxy("big").await;
    // tonic streams the message without a content-length: the proxy finds
    // out while counting, and still answers as gRPC, not HTTP 413.
    let st = unary(&mut c, ask(&"x".repeat(64 * 1024), 0, Some(&key), None))
        .await
        .expect_err("over max_body_bytes");
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert!(st.message().contains("4096"), "{st:?}");
    // A call within the limit still goes through (on a new connection if
    // the proxy closed the old one).
    let mut c = client(&proxy).await;
    let r = unary(&mut c, ask("small", 0, Some(&key), None))
        .await
        .expect("small call");
    assert_eq!(r.get_ref().text, "echo: small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_trace_context_starts_a_fresh_trace() {
    let up = start_grpc_upstream(None).await;
    let proxy = TestProxy::start(&config(&up.to_string(), "h2c", ""), common::Store::Sqlite)
        .await
        .expect("sqlite proxy");
    let (_, key) = proxy
        .key(NewApiKey {
            name: "t".into(),
            limits: Some(vec![]),
            plan: None,
            ..NewApiKey::default()
        })
        .await;
    let mut c = client(&proxy).await;
    let long = format!("00-{}-00f067aa0ba902b7-01", "a".repeat(4000));
    for bad in [
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        long.as_str(),
    ] {
        // A fresh key per call: the plan's burst is 2.
        let (_, k) = proxy
            .key(NewApiKey {
                name: "h".into(),
                ..NewApiKey::default()
            })
            .await;
        let r = unary(&mut c, ask("x", 0, Some(&k), Some(bad)))
            .await
            .unwrap_or_else(|st| panic!("{bad:?}: {st:?}"));
        let seen = tollgate_core::trace::parse_traceparent(&r.get_ref().traceparent)
            .unwrap_or_else(|| panic!("{bad:?}: no valid traceparent upstream"));
        assert_ne!(
            seen.trace_id_hex(),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "{bad:?}"
        );
    }
    drop(key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_h2_tls_upstream() {
    let ca = rcgen_ca();
    let (cert, key_pem) = ca.leaf("localhost");
    let up = start_grpc_upstream(Some(tonic::transport::Identity::from_pem(cert, key_pem))).await;
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write ca");
    let tls = format!(", tls: {{ ca_file: \"{}\" }}", ca_file.display());
    let proxy = TestProxy::start(
        &config(&format!("https://localhost:{}", up.port()), "h2", &tls),
        common::Store::Sqlite,
    )
    .await
    .expect("sqlite proxy");
    let (_, key) = proxy
        .key(NewApiKey {
            name: "tls".into(),
            ..NewApiKey::default()
        })
        .await;
    let mut c = client(&proxy).await;
    let start = Instant::now();
    let r = unary(&mut c, ask("over tls", 0, Some(&key), None))
        .await
        .expect("unary over h2/TLS");
    assert_eq!(r.get_ref().text, "echo: over tls");
    assert!(start.elapsed() < Duration::from_secs(30));
    c.ready().await.expect("ready");
    let resp = c
        .server_streaming(
            ask("s", 3, Some(&key), None),
            http::uri::PathAndQuery::from_static("/test.Echo/Stream"),
            ProstCodec::<Ask, Reply>::default(),
        )
        .await
        .expect("stream over TLS");
    let mut stream = resp.into_inner();
    let mut n = 0;
    let end = loop {
        match stream.message().await {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("no status"),
            Err(st) => break st,
        }
    };
    assert_eq!((n, end.code()), (3, Code::Aborted), "{end:?}");
}

// ----- a throwaway CA ------------------------------------------------------------

struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

fn rcgen_ca() -> TestCa {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "grpc test CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate().expect("key");
    TestCa {
        issuer: rcgen::CertifiedIssuer::self_signed(params, key).expect("ca"),
    }
}

impl TestCa {
    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `name`: (cert PEM, key PEM).
    fn leaf(&self, name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        (cert.pem(), key.serialize_pem())
    }
}

/// With `proxy.h2c` on, a connection that stalls inside the HTTP/2 preface
/// (or sends 23 bytes of it) is closed by the header deadline, never held;
/// an HTTP/1 POST still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_listener_closes_a_stalled_preface_and_keeps_http1_posts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = start_grpc_upstream(None).await;
    let yaml = config(&up.to_string(), "h2c", "")
        .replace("  h2c: true\n", "  h2c: true\n  header_timeout: 1s\n");
    let proxy = TestProxy::start(&yaml, common::Store::Sqlite)
        .await
        .expect("sqlite proxy");
    for partial in [&b"P"[..], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r"] {
        let mut s = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        s.write_all(partial).await.expect("write");
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "{partial:?}: not closed: {read:?}"
        );
        // Closed by the 1 s header deadline, not by the 60 s keep-alive.
        assert!(start.elapsed() < Duration::from_secs(20), "{partial:?}");
    }
    // An HTTP/1 request cannot be the preface: its header deadline runs
    // from the first byte, however short the start (Pingora's own h2c check
    // would wait for 24 bytes).
    let mut s = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    s.write_all(b"GET /").await.expect("write");
    let start = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a stalled HTTP/1 start was held open");
    assert!(
        answer.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(start.elapsed() < Duration::from_secs(20));
    let (_, key) = proxy
        .key(NewApiKey {
            name: "post".into(),
            ..NewApiKey::default()
        })
        .await;
    let r = reqwest::Client::new()
        .post(proxy.url("/api/users"))
        .header("x-api-key", &key)
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_ne!(r.status().as_u16(), 400, "{r:?}");
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
}
