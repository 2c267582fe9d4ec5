//! TLS: the certificate of the HTTPS listener (`proxy.tls`), swapped without
//! a restart, and the CA certificates trusted for `https://` upstreams
//! (`upstreams.NAME.tls.ca_file`).
//!
//! Pingora's rustls listener accepts a [`ResolvesServerCert`]; [`ListenerCert`]
//! is one whose certificate lives in an `ArcSwap`, so a renewed certificate
//! serves every new handshake as soon as it has been read (open connections
//! keep theirs). It is re-read on every config reload (a missing, garbled or
//! mismatched file refuses the reload, the running config and certificate
//! stay) and whenever its files change (checked every second, so a renewal
//! that only replaces the files needs no config edit).

use std::path::Path;
use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use pingora::listeners::tls::TlsSettings;
use pingora::protocols::tls::CaType;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{
    CertificateDer, ClientHello, CryptoProvider, PrivateKeyDer, ResolvesServerCert, RootCertStore,
    RusTlsError,
};
use pingora::utils::tls::WrappedX509;
use prometheus::IntGauge;
use rustls_pki_types::pem::{self, PemObject};
use sha2::{Digest, Sha256};
use tollgate_core::config::{Config, TlsListener};
use x509_parser::prelude::{FromDer, X509Certificate};

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} ({path}): {reason}")]
pub struct TlsError {
    /// The config field naming the file, e.g. `proxy.tls.cert`.
    pub setting: String,
    pub path: String,
    pub reason: String,
}

impl TlsError {
    fn new(setting: &str, path: &Path, reason: impl Into<String>) -> Self {
        Self {
            setting: setting.to_string(),
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}

type Sha = [u8; 32];

static CERT_EXPIRY: LazyLock<Option<IntGauge>> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "tollgate_tls_certificate_expiry_timestamp_seconds",
        "Unix time at which the certificate served by the HTTPS listener expires"
    )
    .ok()
});

fn read(setting: &str, path: &Path) -> Result<(Vec<u8>, Sha), TlsError> {
    let bytes = tollgate_core::files::read_regular(path, tollgate_core::files::DEFAULT_MAX_BYTES)
        .map_err(|e| TlsError::new(setting, path, format!("cannot read: {e}")))?;
    let sha = Sha256::digest(&bytes).into();
    Ok((bytes, sha))
}

fn certs_from_pem(
    setting: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(setting, path, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            setting,
            path,
            "no certificate found (expected PEM blocks -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn crypto_provider() -> Option<Arc<CryptoProvider>> {
    pingora::tls::install_default_crypto_provider();
    CryptoProvider::get_default().cloned()
}

/// A listener certificate read from its files, not yet serving.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    key: Arc<CertifiedKey>,
    /// What was read, to notice when the files change.
    files: (Sha, Sha),
    /// Unix time the leaf certificate expires.
    not_after: Option<i64>,
}

/// Every problem with the listener's files, each under its own setting: a
/// missing certificate does not hide a missing key (`tollgate check-config`).
pub fn check_listener_files(tls: &TlsListener) -> Vec<TlsError> {
    let cert = read("proxy.tls.cert", &tls.cert).and_then(|(pem, sha)| {
        certs_from_pem("proxy.tls.cert", &tls.cert, &pem).map(|_| (pem, sha))
    });
    let key = read("proxy.tls.key", &tls.key);
    match (cert, key) {
        (Ok((cert_pem, cert_sha)), Ok((key_pem, key_sha))) => {
            parse_listener_cert(tls, &cert_pem, &key_pem, (cert_sha, key_sha))
                .err()
                .into_iter()
                .collect()
        }
        (cert, key) => {
            let mut problems: Vec<TlsError> = cert.err().into_iter().collect();
            if let Err(e) = key {
                problems.push(e);
            }
            problems
        }
    }
}

/// Read and check the listener's certificate chain and private key.
pub fn load_listener_cert(tls: &TlsListener) -> Result<LoadedCert, TlsError> {
    let (cert_pem, cert_sha) = read("proxy.tls.cert", &tls.cert)?;
    let (key_pem, key_sha) = read("proxy.tls.key", &tls.key)?;
    parse_listener_cert(tls, &cert_pem, &key_pem, (cert_sha, key_sha))
}

fn parse_listener_cert(
    tls: &TlsListener,
    cert_pem: &[u8],
    key_pem: &[u8],
    files: (Sha, Sha),
) -> Result<LoadedCert, TlsError> {
    let chain = certs_from_pem("proxy.tls.cert", &tls.cert, cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        let reason = match e {
            pem::Error::NoItemsFound => {
                "no private key found (expected a PEM PKCS#8, PKCS#1 or SEC1 key)".to_string()
            }
            other => format!("invalid PEM: {other}"),
        };
        TlsError::new("proxy.tls.key", &tls.key, reason)
    })?;
    let provider = crypto_provider()
        .ok_or_else(|| TlsError::new("proxy.tls.key", &tls.key, "no TLS crypto provider"))?;
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        let reason = match e {
            RusTlsError::InconsistentKeys(_) => format!(
                "this key does not belong to the certificate in {}",
                tls.cert.display()
            ),
            other => format!("unusable private key: {other}"),
        };
        TlsError::new("proxy.tls.key", &tls.key, reason)
    })?;
    let not_after = key.cert.first().and_then(|leaf| {
        X509Certificate::from_der(leaf.as_ref())
            .ok()
            .map(|(_, c)| c.validity().not_after.timestamp())
    });
    Ok(LoadedCert {
        key: Arc::new(key),
        files,
        not_after,
    })
}

/// One way the files failed to load: which contents (if they could be read)
/// and why.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    files: Option<(Sha, Sha)>,
    error: TlsError,
}

#[derive(Debug)]
struct Seen {
    /// The files of the certificate being served.
    serving: (Sha, Sha),
    /// A problem seen once: a renewal may be half-written, look again.
    suspect: Option<Problem>,
    /// A problem reported already (not again until something changes).
    reported: Option<Problem>,
}

/// The HTTPS listener's certificate: what Pingora's rustls acceptor asks for
/// at every handshake, swappable at run time.
#[derive(Debug)]
pub struct ListenerCert {
    current: ArcSwap<CertifiedKey>,
    seen: Mutex<Seen>,
}

impl ResolvesServerCert for ListenerCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ListenerCert {
    pub fn new(loaded: LoadedCert) -> Arc<Self> {
        publish_expiry(&loaded);
        Arc::new(Self {
            current: ArcSwap::new(loaded.key),
            seen: Mutex::new(Seen {
                serving: loaded.files,
                suspect: None,
                reported: None,
            }),
        })
    }

    /// Read the certificate of `tls` (start-up).
    pub fn load(tls: &TlsListener) -> Result<Arc<Self>, TlsError> {
        load_listener_cert(tls).map(Self::new)
    }

    /// Listener settings for Pingora: this certificate, ALPN `h2` then `http/1.1`.
    pub fn settings(self: &Arc<Self>) -> Result<TlsSettings, TlsError> {
        // The paths are unused: the resolver provides the certificate.
        let mut settings = TlsSettings::intermediate("", "").map_err(|e| TlsError {
            setting: "proxy.tls".to_string(),
            path: String::new(),
            reason: e.to_string(),
        })?;
        settings.set_cert_resolver(self.clone());
        settings.enable_h2();
        Ok(settings)
    }

    /// Serve `loaded` from the next handshake on.
    pub fn install(&self, loaded: LoadedCert) {
        publish_expiry(&loaded);
        self.current.store(loaded.key);
        let mut seen = self.seen.lock();
        seen.serving = loaded.files;
        seen.suspect = None;
        seen.reported = None;
    }

    /// Re-read the files if they changed: `Ok(true)` when a new certificate
    /// now serves, `Ok(false)` when nothing changed, `Err` when the files
    /// cannot be used (the current certificate stays). A problem is reported
    /// only when it is seen twice in a row (a renewal that writes the
    /// certificate and the key one after the other is not an error) and only
    /// once.
    pub fn refresh(&self, tls: &TlsListener) -> Result<bool, TlsError> {
        let outcome = read("proxy.tls.cert", &tls.cert)
            .and_then(|cert| Ok((cert, read("proxy.tls.key", &tls.key)?)))
            .map_err(|error| Box::new(Problem { files: None, error }))
            .and_then(|((cert_pem, cert_sha), (key_pem, key_sha))| {
                let files = (cert_sha, key_sha);
                if self.seen.lock().serving == files {
                    return Ok(None);
                }
                parse_listener_cert(tls, &cert_pem, &key_pem, files)
                    .map(Some)
                    .map_err(|error| {
                        Box::new(Problem {
                            files: Some(files),
                            error,
                        })
                    })
            });
        let mut seen = self.seen.lock();
        match outcome {
            Ok(None) => {
                seen.suspect = None;
                seen.reported = None;
                Ok(false)
            }
            Ok(Some(loaded)) => {
                drop(seen);
                self.install(loaded);
                Ok(true)
            }
            Err(problem) => {
                let problem = *problem;
                if seen.reported.as_ref() == Some(&problem) {
                    Ok(false)
                } else if seen.suspect.as_ref() != Some(&problem) {
                    seen.suspect = Some(problem);
                    Ok(false)
                } else {
                    seen.suspect = None;
                    seen.reported = Some(problem.clone());
                    Err(problem.error)
                }
            }
        }
    }
}

fn publish_expiry(loaded: &LoadedCert) {
    if let (Some(gauge), Some(t)) = (CERT_EXPIRY.as_ref(), loaded.not_after) {
        gauge.set(t);
    }
    if let Some(t) = loaded.not_after {
        if t < tollgate_core::now_ms() / 1000 {
            tracing::warn!("the HTTPS listener's certificate has expired: clients will refuse it");
        }
    }
}

/// What a config reload has read before it is accepted.
#[derive(Debug)]
pub struct Reload {
    listener: Option<LoadedCert>,
}

impl Reload {
    /// Serve the re-read certificate (after the new config is in place).
    pub fn apply(self, listener: Option<&ListenerCert>) {
        if let (Some(cert), Some(loaded)) = (listener, self.listener) {
            cert.install(loaded);
        }
    }
}

/// Re-read every file a config names: the listener's certificate and key
/// and each upstream's CA file. An error refuses the whole config.
pub fn prepare_reload(config: &Config) -> Result<Reload, TlsError> {
    check_upstream_cas(config)?;
    let listener = config
        .proxy
        .tls
        .as_ref()
        .map(load_listener_cert)
        .transpose()?;
    Ok(Reload { listener })
}

/// Check that every upstream CA file can be used (start-up and reload).
pub fn check_upstream_cas(config: &Config) -> Result<(), TlsError> {
    for (name, upstream) in &config.upstreams {
        if let Some(path) = &upstream.tls.ca_file {
            load_ca_file(&format!("upstreams.{name}.tls.ca_file"), path)?;
        }
    }
    Ok(())
}

/// CA certificates trusted for one upstream instead of the system roots.
#[derive(Debug, Clone)]
pub struct UpstreamCa {
    pub certs: Arc<CaType>,
    /// SHA-256 of the file, to notice when it changes.
    pub sha: Sha,
}

impl UpstreamCa {
    /// Pingora's connection-pool key ignores the CA: a peer carries this as
    /// its group key so that connections verified against another CA (an
    /// earlier version of the file) are never reused.
    pub fn group_key(&self) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.sha[..8]);
        u64::from_le_bytes(first)
    }
}

/// Read a PEM file of CA certificates. Every certificate must parse (as
/// Pingora's rustls connector will parse it) and be usable as a trust anchor.
pub fn load_ca_file(setting: &str, path: &Path) -> Result<UpstreamCa, TlsError> {
    let (pem, sha) = read(setting, path)?;
    let ders = certs_from_pem(setting, path, &pem)?;
    let mut store = RootCertStore::empty();
    let mut certs = Vec::with_capacity(ders.len());
    for (i, der) in ders.into_iter().enumerate() {
        let n = i + 1;
        let wrapped = WrappedX509::try_new(der.to_vec(), |raw| {
            X509Certificate::from_der(raw).map(|(_, cert)| cert)
        })
        .map_err(|e| TlsError::new(setting, path, format!("certificate {n}: {e}")))?;
        store.add(der).map_err(|e| {
            TlsError::new(
                setting,
                path,
                format!("certificate {n} is not a usable CA certificate: {e}"),
            )
        })?;
        certs.push(wrapped);
    }
    Ok(UpstreamCa {
        certs: Arc::from(certs),
        sha,
    })
}

/// SHA-256 of a file, `None` if it cannot be read.
pub fn file_sha(path: &Path) -> Option<Sha> {
    tollgate_core::files::read_regular(path, tollgate_core::files::DEFAULT_MAX_BYTES)
        .ok()
        .map(|b| Sha256::digest(&b).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(dir: &Path) -> TlsListener {
        TlsListener {
            listen: "127.0.0.1:0".parse().expect("addr"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn listener_cert_errors_name_the_setting_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = tls(dir.path());
        let e = load_listener_cert(&t).expect_err("missing");
        assert_eq!(e.setting, "proxy.tls.cert");
        assert!(e.reason.starts_with("cannot read"), "{e}");

        let (cert, key) = self_signed("a.test");
        let (_, other_key) = self_signed("b.test");
        std::fs::write(&t.cert, "not pem").expect("write");
        std::fs::write(&t.key, &key).expect("write");
        let e = load_listener_cert(&t).expect_err("garbage");
        assert!(e.reason.contains("no certificate found"), "{e}");

        std::fs::write(&t.cert, &cert).expect("write");
        std::fs::write(&t.key, &cert).expect("write");
        let e = load_listener_cert(&t).expect_err("no key");
        assert_eq!(e.setting, "proxy.tls.key");
        assert!(e.reason.contains("no private key found"), "{e}");

        std::fs::write(&t.key, &other_key).expect("write");
        let e = load_listener_cert(&t).expect_err("mismatch");
        assert!(e.reason.contains("does not belong"), "{e}");

        std::fs::write(&t.key, &key).expect("write");
        let loaded = load_listener_cert(&t).expect("valid pair");
        assert!(loaded.not_after.is_some_and(|t| t > 0));
    }

    #[test]
    fn listener_file_check_reports_each_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = tls(dir.path());
        let settings = |t: &TlsListener| {
            check_listener_files(t)
                .into_iter()
                .map(|e| e.setting)
                .collect::<Vec<_>>()
        };
        assert_eq!(settings(&t), ["proxy.tls.cert", "proxy.tls.key"]);
        let (cert, key) = self_signed("a.test");
        let (_, other_key) = self_signed("b.test");
        std::fs::write(&t.key, &key).expect("write");
        std::fs::write(&t.cert, "not pem").expect("write");
        assert_eq!(settings(&t), ["proxy.tls.cert"]);
        std::fs::write(&t.cert, &cert).expect("write");
        assert!(check_listener_files(&t).is_empty());
        std::fs::write(&t.key, &other_key).expect("write");
        let problems = check_listener_files(&t);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].reason.contains("does not belong"),
            "{problems:?}"
        );
    }

    #[test]
    fn refresh_swaps_only_on_change_and_keeps_the_old_cert_on_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = tls(dir.path());
        let (cert, key) = self_signed("a.test");
        std::fs::write(&t.cert, &cert).expect("write");
        std::fs::write(&t.key, &key).expect("write");
        let lc = ListenerCert::load(&t).expect("load");
        let first = lc.current.load_full();
        assert_eq!(lc.refresh(&t), Ok(false));

        // A renewal caught half-written (new cert, old key) is looked at
        // again before it counts as a problem.
        let (cert2, key2) = self_signed("a.test");
        std::fs::write(&t.cert, &cert2).expect("write");
        assert_eq!(lc.refresh(&t), Ok(false));
        std::fs::write(&t.key, &key2).expect("write");
        assert_eq!(lc.refresh(&t), Ok(true));
        let second = lc.current.load_full();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_ne!(first.cert, second.cert);

        // A broken pair that stays: reported once, on the second look; the
        // served certificate stays.
        let (cert3, _) = self_signed("a.test");
        std::fs::write(&t.cert, &cert3).expect("write");
        assert_eq!(lc.refresh(&t), Ok(false));
        assert!(lc
            .refresh(&t)
            .is_err_and(|e| e.reason.contains("does not belong")));
        assert_eq!(lc.refresh(&t), Ok(false));
        // So is a missing file.
        std::fs::remove_file(&t.key).expect("rm");
        assert_eq!(lc.refresh(&t), Ok(false));
        assert!(lc
            .refresh(&t)
            .is_err_and(|e| e.reason.starts_with("cannot read")));
        assert_eq!(lc.refresh(&t), Ok(false));
        assert!(Arc::ptr_eq(&second, &lc.current.load_full()));
        // Back to the served files: all quiet, and a new breakage is reported again.
        std::fs::write(&t.cert, &cert2).expect("write");
        std::fs::write(&t.key, &key2).expect("write");
        assert_eq!(lc.refresh(&t), Ok(false));
        std::fs::write(&t.cert, &cert3).expect("write");
        assert_eq!(lc.refresh(&t), Ok(false));
        assert!(lc.refresh(&t).is_err());
    }

    #[test]
    fn ca_files_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        let e = load_ca_file("upstreams.u.tls.ca_file", &path).expect_err("missing");
        assert!(
            e.to_string().starts_with("upstreams.u.tls.ca_file ("),
            "{e}"
        );
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        assert!(load_ca_file("s", &path).is_err());

        let (a, _) = self_signed("ca-a");
        let (b, _) = self_signed("ca-b");
        std::fs::write(&path, format!("{a}{b}")).expect("write");
        let ca = load_ca_file("s", &path).expect("two CAs");
        assert_eq!(ca.certs.len(), 2);
        assert_eq!(file_sha(&path), Some(ca.sha));
        std::fs::write(&path, &a).expect("write");
        let one = load_ca_file("s", &path).expect("one CA");
        assert_ne!(one.group_key(), ca.group_key());
    }
}
