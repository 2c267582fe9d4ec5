//! What the TLS test files (`tls.rs`, `tls_upstream.rs`, `tls_clients.rs`)
//! share: a throwaway PKI (a CA and its leaves, rcgen, PEM files), a client
//! that trusts only that CA, problem-answer checks, and a proxy with an
//! HTTPS listener next to its plain one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{free_port, wait_listening, Store, TestProxy};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::Value;

pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
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

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn leaf(&self, names: &[&str]) -> Leaf {
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

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write pem");
    path
}

/// A client that trusts only `ca`; HTTP/2 is offered by ALPN unless `http1`.
pub fn client(ca: &Ca, http1: bool) -> reqwest::Client {
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

pub fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

pub async fn problem(r: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(header(&r, "content-type"), Some("application/problem+json"));
    let body: Value = r.json().await.expect("problem json");
    assert!(
        body["type"].as_str().is_some_and(|t| t.ends_with(kind)),
        "expected {kind}: {body}"
    );
    body
}

/// A proxy with an HTTPS listener (certificate by `ca` for 127.0.0.1 and
/// localhost) next to its plain one. `yaml` holds the sections after `proxy`.
pub struct TlsProxy {
    pub proxy: TestProxy,
    pub https: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TlsProxy {
    pub async fn start(ca: &Ca, yaml: &str) -> Self {
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

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.https)
    }

    /// Edit the config file in place (the proxy notices within a second or two).
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.proxy.config_path).expect("read config");
        let new = edit(text.clone());
        assert_ne!(new, text, "the edit changed nothing");
        std::fs::write(&self.proxy.config_path, new).expect("write config");
    }
}

/// Poll `probe` until it returns true.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !probe().await {
        assert!(start.elapsed() < Duration::from_secs(15), "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub const BASE: &str = r#"
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
