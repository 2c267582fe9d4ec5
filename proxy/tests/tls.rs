//! TLS end to end, with real certificates made here (a throwaway CA and
//! leaves, rcgen): the proxy's HTTPS listener (HTTP/2 by ALPN and HTTP/1.1,
//! certificate re-read without a restart) and `https://` upstreams (a real
//! TLS server that records the SNI it saw: verification against a configured
//! CA, SNI, Host, connection reuse, read timeout).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{free_port, metric_value, named, wait_listening, Store, TestProxy};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use reqwest::{StatusCode, Version};
use serde_json::{json, Value};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;

// ----- a throwaway PKI ------------------------------------------------------

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, PEM.
struct Leaf {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("ca cert"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write pem");
    path
}

// ----- an HTTPS upstream ------------------------------------------------------

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

// ----- clients ----------------------------------------------------------------

/// A client that trusts only `ca`; HTTP/2 is offered by ALPN unless `http1`.
fn client(ca: &Ca, http1: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("ca"))
        .tls_info(true)
        .timeout(Duration::from_secs(10));
    if http1 {
        b = b.http1_only();
    }
    b.build().expect("client")
}

/// A raw TLS client that trusts only `ca`, offering `alpn` (none if empty).
fn tls_connector(ca: &Ca, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.pem().as_bytes()) {
        roots.add(cert.expect("ca pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn problem(r: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(header(&r, "content-type"), Some("application/problem+json"));
    let body: Value = r.json().await.expect("problem json");
    assert!(
        body["type"].as_str().is_some_and(|t| t.ends_with(kind)),
        "expected {kind}: {body}"
    );
    body
}

/// The certificate the proxy's HTTPS listener serves now (a fresh connection).
async fn served_cert(ca: &Ca, addr: SocketAddr) -> Option<Vec<u8>> {
    let r = client(ca, true)
        .get(format!("https://{addr}/api/users"))
        .send()
        .await
        .ok()?;
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
}

// ----- the proxy ----------------------------------------------------------------

/// A proxy with an HTTPS listener (certificate by `ca` for 127.0.0.1 and
/// localhost) next to its plain one. `yaml` holds the sections after `proxy`.
struct TlsProxy {
    proxy: TestProxy,
    https: SocketAddr,
    dir: tempfile::TempDir,
}

impl TlsProxy {
    async fn start(ca: &Ca, yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let leaf = ca.leaf(&["127.0.0.1", "localhost"]);
        let cert = write(dir.path(), "server.pem", &leaf.cert);
        let key = write(dir.path(), "server.key", &leaf.key);
        let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let text = format!(
            "proxy:\n  listen: \"{{listen}}\"\n  metrics_listen: \"{{metrics}}\"\n  threads: 2\n  tls: {{ listen: \"{https}\", cert: \"{}\", key: \"{}\" }}\n{}",
            cert.display(),
            key.display(),
            yaml.replace("{dir}", &dir.path().display().to_string())
        );
        let proxy = TestProxy::start(&text, Store::Sqlite)
            .await
            .expect("sqlite proxy");
        wait_listening(https).await;
        Self { proxy, https, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.https)
    }

    /// Edit the config file in place (the proxy notices within a second or two).
    fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.proxy.config_path).expect("read config");
        let new = edit(text.clone());
        assert_ne!(new, text, "the edit changed nothing");
        std::fs::write(&self.proxy.config_path, new).expect("write config");
    }
}

/// Poll `probe` until it returns true.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !probe().await {
        assert!(start.elapsed() < Duration::from_secs(15), "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn reloads(metrics: &str, result: &str) -> f64 {
    metric_value(
        metrics,
        "tollgate_config_reloads_total",
        &[&format!("result=\"{result}\"")],
    )
}

const BASE: &str = r#"
plans:
  tight: { limits: [ { name: burst, rate: 1, per: 1m, burst: 3 } ] }
  big: { limits: [ { name: hour, rate: 10000, per: 1h } ] }
upstreams:
  demo: { targets: ["{upstream}"] }
routes:
  - name: users
    match: { path_prefix: /api/users }
    upstream: demo
    strip_prefix: /api
    default_plan: tight
"#;

// ----- the HTTPS listener ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_speaks_http2_and_http11_with_key_checks_and_limits() {
    let ca = Ca::new("client-facing CA");
    let p = TlsProxy::start(&ca, BASE).await;
    let (_, key) = p.proxy.key(named("h2")).await;
    let (_, key11) = p.proxy.key(named("h1")).await;
    let h2 = client(&ca, false);
    let h1 = client(&ca, true);

    for (c, version) in [(&h2, Version::HTTP_2), (&h1, Version::HTTP_11)] {
        let r = c.get(p.url("/api/users")).send().await.expect("no key");
        assert_eq!(r.version(), version);
        problem(r, 401, "missing-api-key").await;
        let r = c
            .get(p.url("/api/users"))
            .header("x-api-key", "tg_nope")
            .send()
            .await
            .expect("bad key");
        assert_eq!(r.version(), version);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = c.get(p.url("/nowhere")).send().await.expect("no route");
        problem(r, 404, "no-route").await;
    }

    // HTTP/2: burst 3 (one taken by `key()` when it waited for the key), then
    // 429 — the same buckets as over plain HTTP.
    for i in 0..2 {
        let r = h2
            .get(p.url("/api/users"))
            .header("x-api-key", &key)
            .send()
            .await
            .expect("h2 request");
        assert_eq!(r.status(), StatusCode::OK, "request {i}");
        assert_eq!(r.version(), Version::HTTP_2);
        assert!(
            header(&r, "ratelimit-policy").is_some_and(|v| v.starts_with("\"burst\";q=")),
            "RateLimit headers over HTTP/2"
        );
        assert!(header(&r, "ratelimit").is_some());
        let body: Value = r.json().await.expect("json");
        let seen = &body["request"]["headers"];
        assert!(
            seen.get("x-api-key").is_none(),
            "the key reached the upstream"
        );
        assert!(seen["x-tollgate-key-id"].is_string());
        assert_eq!(body["request"]["path"], "/users");
    }
    let r = h2
        .get(p.url("/api/users"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("limited");
    assert_eq!(r.version(), Version::HTTP_2);
    assert!(header(&r, "retry-after").is_some());
    problem(r, 429, "quota-exceeded").await;

    // HTTP/1.1 over TLS, and a Bearer key; the plain listener still serves.
    let r = h1
        .get(p.url("/api/users/1"))
        .bearer_auth(&key11)
        .send()
        .await
        .expect("h1 request");
    assert_eq!(r.version(), Version::HTTP_11);
    assert_eq!(r.status(), StatusCode::OK);
    let r = reqwest::Client::new()
        .get(p.proxy.url("/api/users"))
        .header("x-api-key", &key11)
        .send()
        .await
        .expect("plain request");
    assert_eq!(r.status(), StatusCode::OK);

    // A client that does not trust the CA gets no answer at all.
    let stranger = client(&Ca::new("someone else"), false);
    assert!(stranger.get(p.url("/api/users")).send().await.is_err());

    let m = p.proxy.metrics_text().await;
    assert!(metric_value(&m, "tollgate_requests_total", &["outcome=\"allowed\""]) >= 5.0);
    assert!(metric_value(&m, "tollgate_requests_total", &["outcome=\"limited\""]) >= 1.0);
    assert!(metric_value(&m, "tollgate_tls_certificate_expiry_timestamp_seconds", &[]) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_certificate_is_reread_when_its_files_change_and_on_reload() {
    let ca = Ca::new("client-facing CA");
    let p = TlsProxy::start(&ca, BASE).await;
    let cert_path = p.dir.path().join("server.pem");
    let key_path = p.dir.path().join("server.key");
    let first = served_cert(&ca, p.https).await.expect("first cert");

    // Renewal in place (e.g. certbot): served within a couple of seconds.
    let renewed = ca.leaf(&["127.0.0.1", "localhost"]);
    assert_ne!(renewed.der, first);
    std::fs::write(&key_path, &renewed.key).expect("write key");
    std::fs::write(&cert_path, &renewed.cert).expect("write cert");
    eventually("the renewed certificate is served", || async {
        served_cert(&ca, p.https).await.as_deref() == Some(&renewed.der[..])
    })
    .await;

    // Garbage in the files: refused, counted, the renewed certificate stays.
    // (The metric is shared by every proxy of this test binary: also give
    // this one's watcher two rounds.)
    let before = reloads(&p.proxy.metrics_text().await, "failed");
    let written = Instant::now();
    std::fs::write(
        &cert_path,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write garbage");
    eventually("the garbage is noticed", || async {
        reloads(&p.proxy.metrics_text().await, "failed") > before
            && written.elapsed() > Duration::from_secs(2)
    })
    .await;
    assert_eq!(served_cert(&ca, p.https).await, Some(renewed.der.clone()));

    // A config edit pointing at new files: re-read with the reload.
    let next = ca.leaf(&["127.0.0.1", "localhost"]);
    let next_cert = write(p.dir.path(), "next.pem", &next.cert);
    let next_key = write(p.dir.path(), "next.key", &next.key);
    let (old_cert, old_key) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    p.edit_config(|t| {
        t.replace(&old_cert, &next_cert.display().to_string())
            .replace(&old_key, &next_key.display().to_string())
    });
    eventually("the reloaded certificate is served", || async {
        served_cert(&ca, p.https).await.as_deref() == Some(&next.der[..])
    })
    .await;

    // An edit naming a missing key is refused as a whole: the certificate and
    // the running config stay.
    let next_key_text = next_key.display().to_string();
    let before = reloads(&p.proxy.metrics_text().await, "failed");
    let written = Instant::now();
    p.edit_config(|t| {
        t.replace(&next_key_text, "/nonexistent/server.key")
            .replace("path_prefix: /api/users", "path_prefix: /v2/users")
    });
    eventually("the edit is refused", || async {
        reloads(&p.proxy.metrics_text().await, "failed") > before
            && written.elapsed() > Duration::from_secs(2)
    })
    .await;
    assert_eq!(served_cert(&ca, p.https).await, Some(next.der.clone()));
    let r = client(&ca, false)
        .get(p.url("/v2/users"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "the refused config took effect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_tls_files_stop_the_start_with_the_setting_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    let ca = Ca::new("ca");
    let leaf = ca.leaf(&["localhost"]);
    let cert = write(dir.path(), "c.pem", &leaf.cert);
    let other = ca.leaf(&["localhost"]);
    let wrong_key = write(dir.path(), "wrong.key", &other.key);
    let cases = [
        (
            format!(
                "proxy:\n  tls: {{ listen: \"127.0.0.1:1\", cert: \"{}\", key: \"{}\" }}\n",
                dir.path().join("missing.pem").display(),
                wrong_key.display()
            ),
            "proxy.tls.cert",
        ),
        (
            format!(
                "proxy:\n  tls: {{ listen: \"127.0.0.1:1\", cert: \"{}\", key: \"{}\" }}\n",
                cert.display(),
                wrong_key.display()
            ),
            "does not belong to the certificate",
        ),
        (
            format!(
                "upstreams:\n  u: {{ targets: [\"https://a.test\"], tls: {{ ca_file: \"{}\" }} }}\n",
                dir.path().join("nope-ca.pem").display()
            ),
            "upstreams.u.tls.ca_file",
        ),
    ];
    for (yaml, expected) in cases {
        let yaml = format!("storage: {{ database_url: \"{}\" }}\n{yaml}", db.url());
        let cfg = tollgate_core::config::parse(&yaml, "t.yaml").expect("valid config");
        match tollgate_proxy::Prepared::load(cfg).await {
            Ok(_) => panic!("started with {yaml}"),
            Err(e) => assert!(e.to_string().contains(expected), "{e}"),
        }
    }
}

// ----- HTTPS upstreams ----------------------------------------------------------

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

/// `proxy.proxy_protocol` on the HTTPS listener: the PROXY header comes
/// before the TLS handshake and its source is the client the upstream hears
/// of. Turned on by a hot reload (the listener reads the setting per
/// connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_before_the_tls_handshake() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("client-facing CA");
    let yaml = BASE.replace("    default_plan: tight\n", "    auth: none\n");
    let p = TlsProxy::start(&ca, &yaml).await;
    p.edit_config(|t| t.replace("  threads: 2\n", "  threads: 2\n  proxy_protocol: true\n"));
    let connector = tls_connector(&ca, &[]);
    let https = p.https;
    // What one connection got: the answer's text, or where it stopped.
    let attempt = move |proxy_header: bool| {
        let connector = connector.clone();
        async move {
            let mut tcp = tokio::net::TcpStream::connect(https)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            if proxy_header {
                tcp.write_all(b"PROXY TCP4 192.0.2.44 127.0.0.1 4444 443\r\n")
                    .await
                    .map_err(|e| format!("PROXY header: {e}"))?;
            }
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let mut tls =
                tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
                    .await
                    .map_err(|_| "handshake: no answer in 5 s".to_string())?
                    .map_err(|e| format!("handshake: {e}"))?;
            tls.write_all(
                b"GET /api/users HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            )
            .await
            .map_err(|e| format!("request: {e}"))?;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
            Ok::<String, String>(String::from_utf8_lossy(&out).into_owned())
        }
    };
    // The reload is noticed within ~1.5 s; a loaded machine may take longer.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = attempt(true).await;
        if got
            .as_ref()
            .is_ok_and(|resp| resp.contains("\"x-forwarded-for\":\"192.0.2.44\""))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the PROXY source never reached the upstream; last attempt: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Without the header the handshake never completes.
    let without = attempt(false).await;
    assert!(
        without.as_ref().is_err_and(|e| e.starts_with("handshake")),
        "a connection without the PROXY header got: {without:?}"
    );
}

/// Black-box round 13: over TLS too, more than 256 header fields get
/// `431` problem+json inside the TLS session and the connection is closed
/// (it was Pingora's bare `400`); 256 are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_header_fields_over_tls_are_431() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("client-facing CA");
    let p = TlsProxy::start(&ca, BASE).await;
    let (_, key) = p.proxy.key(named("fields")).await;
    let connector = tls_connector(&ca, &[]);
    for (n, status) in [(256, 200), (257, 431)] {
        let tcp = tokio::net::TcpStream::connect(p.https).await.expect("tcp");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        let request = common::raw::with_fields("/_tollgate/usage", &key, n);
        tls.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "{n} fields: still open after 10 s");
        let r = common::raw::parse(&String::from_utf8_lossy(&out));
        assert_eq!(r.status, status, "{n} fields: {}", r.raw);
        if status == 431 {
            assert_eq!(r.header("content-type"), Some("application/problem+json"));
            assert_eq!(r.header("connection"), Some("close"));
            assert_eq!(r.json()["max_header_fields"], 256, "{}", r.raw);
        }
    }
}

/// The TLS handshake and the request header are both bounded by
/// `proxy.header_timeout` (1 s here): a client that connects and sends
/// nothing, or half a ClientHello, is closed (Pingora's own handshake limit
/// is 60 s); one that completes the handshake and then trickles its header
/// gets `408 Request Timeout` inside TLS; a handshake that completes is
/// never cut afterwards (an idle keep-alive connection is served again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_tls_clients_are_bounded_by_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("client-facing CA");
    let yaml = format!(
        "  header_timeout: 1s\n{}",
        BASE.replace("    default_plan: tight\n", "    auth: none\n")
    );
    let p = TlsProxy::start(&ca, &yaml).await;
    // Closed: the time from `start` until the peer closes (EOF or reset).
    async fn closed_after(mut s: impl AsyncReadExt + Unpin, start: Instant) -> Duration {
        let mut buf = vec![0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
                Ok(Ok(_)) => {}
                Err(_) => panic!("still open after 30 s"),
            }
        }
    }
    // Bounds: never before the deadline; long before Pingora's 60 s.
    let within = |what: &str, took: Duration| {
        assert!(
            took >= Duration::from_millis(900),
            "{what}: cut early, {took:?}"
        );
        assert!(
            took < Duration::from_secs(8),
            "{what}: closed after {took:?}"
        );
    };

    let start = Instant::now();
    let silent = tokio::net::TcpStream::connect(p.https).await.expect("tcp");
    within("silent", closed_after(silent, start).await);

    let start = Instant::now();
    let mut half = tokio::net::TcpStream::connect(p.https).await.expect("tcp");
    // A handshake record announcing 512 bytes, of which 40 arrive.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    hello.extend_from_slice(&[7u8; 29]);
    half.write_all(&hello).await.expect("write");
    within("half a ClientHello", closed_after(half, start).await);

    let connector = tls_connector(&ca, &[]);
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(p.https).await.expect("tcp");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        connector.connect(name, tcp).await.expect("handshake")
    };

    // Handshake done, then half a header: 408 problem, then closed.
    let mut tls = connect().await;
    let start = Instant::now();
    tls.write_all(b"GET /api/users HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut out)).await;
    let took = start.elapsed();
    assert!(read.is_ok(), "still open after 30 s");
    within("slow header over TLS", took);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Content-Type: application/problem+json"),
        "{text}"
    );
    assert!(text.contains("Connection: close"), "{text}");
    assert!(text.contains("request-timeout"), "{text}");

    // A completed handshake is not cut by its deadline later: a keep-alive
    // connection idle past header_timeout is served again.
    let mut tls = connect().await;
    let request = b"GET /api/users HTTP/1.1\r\nHost: localhost\r\n\r\n";
    tls.write_all(request).await.expect("write");
    let mut buf = vec![0u8; 8192];
    let n = tls.read(&mut buf).await.expect("first response");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tls.write_all(b"GET /api/users HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    // The next request header on a kept-alive connection has the same
    // deadline from its first byte: trickled, it gets 408 inside TLS.
    let mut tls = connect().await;
    tls.write_all(request).await.expect("write");
    let n = tls.read(&mut buf).await.expect("first response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let start = Instant::now();
    let mut out = Vec::new();
    for b in b"GET /api/users HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
        .iter()
        .cycle()
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still open after 30 s"
        );
        if tls.write_all(&[*b]).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    within("slow second header over TLS", start.elapsed());
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text}"
    );
    let m = p.proxy.metrics_text().await;
    assert!(
        metric_value(&m, "tollgate_header_timeouts_total", &[]) >= 4.0,
        "{m}"
    );
}

/// F14: an HTTP/2 connection that only sends PINGs (no request) is closed
/// after `proxy.keepalive_timeout` (2 s here), as an idle HTTP/1 one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_connection_of_only_pings_closes_at_keepalive_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("client-facing CA");
    let yaml = format!(
        "  keepalive_timeout: 2s\n{}",
        BASE.replace("    default_plan: tight\n", "    auth: none\n")
    );
    let p = TlsProxy::start(&ca, &yaml).await;
    let connector = tls_connector(&ca, &[b"h2"]);
    let tcp = tokio::net::TcpStream::connect(p.https).await.expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // Preface and an empty SETTINGS frame, then a PING every 500 ms.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    let ping = b"\0\0\x08\x06\0\0\0\0\0tollgate";
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    let closed = loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "a PING-only h2 connection still open after 30 s"
        );
        if tls.write_all(ping).await.is_err() {
            break start.elapsed();
        }
        match tokio::time::timeout(Duration::from_millis(500), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break start.elapsed(),
            _ => {}
        }
    };
    assert!(
        closed >= Duration::from_millis(1800),
        "cut early: {closed:?}"
    );
    assert!(closed < Duration::from_secs(15), "closed after {closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_bodies_over_max_body_bytes_get_413() {
    let ca = Ca::new("client-facing CA");
    let yaml = format!(
        "{BASE}  - {{ name: orders, match: {{ path_prefix: /api/orders }}, upstream: demo, strip_prefix: /api, auth: none, max_body_bytes: 1KiB }}\n"
    );
    let p = TlsProxy::start(&ca, &yaml).await;
    let h2 = client(&ca, false);
    let r = h2
        .post(p.url("/api/orders"))
        .body(vec![b'a'; 1024])
        .send()
        .await
        .expect("within the cap");
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = h2
        .post(p.url("/api/orders"))
        .body(vec![b'a'; 1025])
        .send()
        .await
        .expect("over the cap");
    assert_eq!(r.version(), Version::HTTP_2);
    let body = problem(r, 413, "body-too-large").await;
    assert_eq!(body["max_body_bytes"], 1024);
}
