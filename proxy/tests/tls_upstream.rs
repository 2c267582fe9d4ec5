//! `https://` upstreams, against a real TLS server made here that records
//! the SNI it saw (a throwaway CA and leaves, rcgen): verification against a
//! configured CA (and `verify: false`), SNI, Host, connection reuse, health
//! checks over TLS, and the read timeout.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::tls::{client, eventually, problem, write, Ca, Leaf, TlsProxy, BASE};
use common::{metric_value, named};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest::{StatusCode, Version};
use serde_json::{json, Value};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;

/// A real TLS server (tokio-rustls + hyper, HTTP/1.1). Every answer echoes
/// the SNI of its connection, the connection's number, the Host header and
/// the path; `/slow/{ms}` answers after `ms` milliseconds.
struct TlsUpstream {
    port: u16,
    connections: Arc<AtomicU64>,
    /// `GET /health` requests seen (health checks), with their SNI.
    health_checks: Arc<parking_lot::Mutex<Vec<Option<String>>>>,
}

async fn start_tls_upstream(leaf: &Leaf) -> TlsUpstream {
    let certs = rustls::pki_types::CertificateDer::from(leaf.der.clone());
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![certs], key)
        .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let listener = common::listener();
    let port = listener.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicU64::new(0));
    let health_checks = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut listeners = vec![listener];
    // `localhost` may also resolve to ::1: serve there too when possible.
    if let Ok(v6) = tokio::net::TcpListener::bind(("::1", port)).await {
        listeners.push(v6);
    }
    for listener in listeners {
        let acceptor = acceptor.clone();
        let connections = connections.clone();
        let health_checks = health_checks.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let connections = connections.clone();
                let health_checks = health_checks.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return; // e.g. the proxy refused our certificate
                    };
                    let conn = connections.fetch_add(1, Ordering::SeqCst) + 1;
                    let sni = tls.get_ref().1.server_name().map(str::to_string);
                    let service = service_fn(move |req: Request<Incoming>| {
                        if req.uri().path() == "/health" {
                            health_checks.lock().push(sni.clone());
                        }
                        answer(req, sni.clone(), conn)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
    }
    TlsUpstream {
        port,
        connections,
        health_checks,
    }
}

async fn answer(
    req: Request<Incoming>,
    sni: Option<String>,
    conn: u64,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let _ = req.into_body().collect().await;
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms = ms.parse::<u64>().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = json!({ "path": path, "sni": sni, "conn": conn, "headers": headers }).to_string();
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("response"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_get_sni_host_verification_and_reused_connections() {
    let client_ca = Ca::new("client-facing CA");
    let private_ca = Ca::new("private upstream CA");
    let upstream = start_tls_upstream(&private_ca.leaf(&["localhost", "upstream.test"])).await;
    let port = upstream.port;
    let yaml = format!(
        r#"{BASE}  - {{ name: secure, match: {{ path_prefix: /secure }}, upstream: secure, strip_prefix: /secure, default_plan: big }}
  - {{ name: kept, match: {{ path_prefix: /kept }}, upstream: kept, strip_prefix: /kept, default_plan: big }}
  - {{ name: named, match: {{ path_prefix: /named }}, upstream: named, strip_prefix: /named, default_plan: big }}
  - {{ name: wrongname, match: {{ path_prefix: /wrongname }}, upstream: wrongname, default_plan: big }}
"#
    )
    .replace(
        "upstreams:\n",
        &format!(
            r#"upstreams:
  secure: {{ targets: ["https://localhost:{port}"], tls: {{ ca_file: "{{dir}}/private-ca.pem" }}, health_check: {{ path: /health, interval: 200ms }} }}
  kept: {{ targets: ["https://localhost:{port}"], preserve_host: true, tls: {{ ca_file: "{{dir}}/private-ca.pem" }} }}
  named: {{ targets: ["https://127.0.0.1:{port}"], tls: {{ ca_file: "{{dir}}/private-ca.pem", sni: upstream.test }} }}
  wrongname: {{ targets: ["https://127.0.0.1:{port}"], tls: {{ ca_file: "{{dir}}/private-ca.pem", sni: other.test }} }}
"#
        ),
    );
    // The CA file must exist before the proxy starts.
    let ca_dir = tempfile::tempdir().expect("tempdir");
    write(ca_dir.path(), "private-ca.pem", &private_ca.pem());
    let yaml = yaml.replace("{dir}", &ca_dir.path().display().to_string());
    let p = TlsProxy::start(&client_ca, &yaml).await;
    let (_, key) = p.proxy.key(named("k")).await;
    // HTTP/1.1 so that the client's Host is its own choice (HTTP/2 has :authority).
    let c = client(&client_ca, true);
    let get = |path: &str| {
        c.get(p.url(path))
            .header("x-api-key", &key)
            .header("host", "gateway.example")
            .send()
    };

    // SNI and Host are the target's host; the key never reaches the upstream.
    let r = get("/secure/things?x=1").await.expect("secure");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["sni"], "localhost");
    assert_eq!(body["path"], "/things");
    assert_eq!(body["headers"]["host"], format!("localhost:{port}"));
    assert!(body["headers"].get("x-api-key").is_none());
    assert!(body["headers"]["x-tollgate-key-id"].is_string());

    // preserve_host: the client's Host goes through, SNI stays the target's.
    let body: Value = get("/kept/a")
        .await
        .expect("kept")
        .json()
        .await
        .expect("json");
    assert_eq!(body["sni"], "localhost");
    assert_eq!(body["headers"]["host"], "gateway.example");
    // Over HTTP/2 the client's authority becomes the Host.
    let r = client(&client_ca, false)
        .get(p.url("/kept/b"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("kept over h2");
    assert_eq!(r.version(), Version::HTTP_2);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["headers"]["host"], p.https.to_string());

    // tls.sni: the configured name is sent and verified, for an IP target.
    let body: Value = get("/named/a")
        .await
        .expect("named")
        .json()
        .await
        .expect("json");
    assert_eq!(body["sni"], "upstream.test");
    // A name the certificate does not carry is refused.
    problem(
        get("/wrongname").await.expect("wrongname"),
        502,
        "upstream-error",
    )
    .await;

    // The health checks speak TLS with the same SNI and CA, and pass.
    eventually("a health check reached the upstream", || async {
        !upstream.health_checks.lock().is_empty()
    })
    .await;
    assert_eq!(
        upstream.health_checks.lock()[0].as_deref(),
        Some("localhost")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = get("/secure/still").await.expect("still healthy");
    assert_eq!(r.status(), StatusCode::OK);

    // Sequential requests reuse one upstream connection.
    // (Connection numbers: health checks open connections of their own.)
    let mut conns = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let body: Value = get("/secure/again")
            .await
            .expect("again")
            .json()
            .await
            .expect("json");
        conns.insert(body["conn"].as_u64().expect("conn"));
    }
    assert!(conns.len() <= 2, "6 requests used connections {conns:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_upstream_is_refused_until_its_ca_is_configured() {
    let client_ca = Ca::new("client-facing CA");
    let private_ca = Ca::new("private upstream CA");
    let upstream = start_tls_upstream(&private_ca.leaf(&["localhost"])).await;
    let yaml = format!(
        "{BASE}  - {{ name: private, match: {{ path_prefix: /private }}, upstream: private, strip_prefix: /private, default_plan: big }}\n"
    )
    .replace(
        "upstreams:\n",
        &format!(
            "upstreams:\n  private: {{ targets: [\"https://localhost:{}\"] }}\n  lab: {{ targets: [\"https://localhost:{}\"], tls: {{ verify: false }} }}\n",
            upstream.port, upstream.port
        ),
    )
    .replace(
        "routes:\n",
        "routes:\n  - { name: lab, match: { path_prefix: /lab }, upstream: lab, strip_prefix: /lab, default_plan: big }\n",
    );
    let p = TlsProxy::start(&client_ca, &yaml).await;
    let (_, key) = p.proxy.key(named("k")).await;
    let c = client(&client_ca, false);

    // Verified against the system roots, which do not know this CA.
    let r = c
        .get(p.url("/private/x"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("request");
    let body = problem(r, 502, "upstream-error").await;
    assert_eq!(body["status"], 502);
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 0);
    // `verify: false` (lab only) accepts it unchecked.
    let r = c
        .get(p.url("/lab/x"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);

    // Configure the CA (a config reload re-reads it): now it works.
    let ca_file = write(p.dir.path(), "private-ca.pem", &private_ca.pem());
    let upstream_line = format!(
        "private: {{ targets: [\"https://localhost:{}\"]",
        upstream.port
    );
    p.edit_config(|t| {
        t.replace(
            &upstream_line,
            &format!(
                "{upstream_line}, tls: {{ ca_file: \"{}\" }}",
                ca_file.display()
            ),
        )
    });
    let get = || c.get(p.url("/private/x")).header("x-api-key", &key).send();
    eventually("the upstream is trusted", || async {
        get().await.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    let body: Value = get().await.expect("request").json().await.expect("json");
    assert_eq!(body["sni"], "localhost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_slower_than_its_read_timeout_gives_504() {
    let client_ca = Ca::new("client-facing CA");
    let private_ca = Ca::new("private upstream CA");
    let upstream = start_tls_upstream(&private_ca.leaf(&["localhost"])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = write(dir.path(), "ca.pem", &private_ca.pem());
    let yaml = format!(
        "{BASE}  - {{ name: slow, match: {{ path_prefix: /slow }}, upstream: slow, default_plan: big }}\n"
    )
    .replace(
        "upstreams:\n",
        &format!(
            "upstreams:\n  slow: {{ targets: [\"https://localhost:{}\"], timeouts: {{ connect: 1s, read: 300ms }}, tls: {{ ca_file: \"{}\" }} }}\n",
            upstream.port,
            ca_file.display()
        ),
    );
    let p = TlsProxy::start(&client_ca, &yaml).await;
    let (_, key) = p.proxy.key(named("k")).await;
    let c = client(&client_ca, false);
    let get = |path: &str| c.get(p.url(path)).header("x-api-key", &key).send();

    let r = get("/slow/20").await.expect("fast enough");
    assert_eq!(r.status(), StatusCode::OK);
    let start = Instant::now();
    let r = get("/slow/3000").await.expect("too slow");
    let waited = start.elapsed();
    problem(r, 504, "upstream-timeout").await;
    assert!(waited < Duration::from_millis(2500), "504 after {waited:?}");
    let m = p.proxy.metrics_text().await;
    assert!(
        metric_value(
            &m,
            "tollgate_requests_total",
            &["route=\"slow\"", "outcome=\"upstream_error\""]
        ) >= 1.0
    );
}
