//! PostgreSQL TLS as libpq reads the URL, where sqlx does otherwise.
//!
//! sqlx adds `sslrootcert=FILE` to the system's roots, so a server whose
//! certificate any system CA signed is still accepted: the operator's pin
//! would have no effect. Here, with `sslmode=verify-ca|verify-full` (or
//! `require`, which libpq verifies like `verify-ca` when a root file is
//! named) and `sslrootcert=FILE`, the certificates of FILE are the *only*
//! roots: a [`relay`] on a private Unix socket makes the TLS connection with rustls and
//! exactly those roots, and sqlx talks plain PostgreSQL to the relay. As
//! with libpq, a self-signed server certificate marked as a CA (`openssl req
//! -x509` makes such) is accepted when that very certificate is in FILE
//! ([`verify`]).
//! `sslrootcert=system` is the system's store (sqlx's default roots).
//!
//! [`check_url`] is the rule config validation and [`Db::connect`](super::Db)
//! share: a named root file must be a readable PEM file of certificates.

mod relay;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::any::AnyConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::files;

pub(crate) use relay::Relay;

/// The URL parameters naming the root file (sqlx's spellings).
const ROOT_KEYS: [&str; 3] = ["sslrootcert", "ssl-root-cert", "ssl-ca"];
const CERT_KEYS: [&str; 2] = ["sslcert", "ssl-cert"];
const KEY_KEYS: [&str; 2] = ["sslkey", "ssl-key"];

/// How the URL asks PostgreSQL's certificate to be trusted.
pub(crate) enum Trust {
    /// As sqlx does it (no `sslrootcert`, or a mode that verifies nothing).
    Driver,
    /// `sslrootcert=system`: the system's store (sqlx's own roots).
    System,
    /// `sslrootcert=FILE` with a verifying mode: only FILE's certificates.
    Pinned(Arc<Pin>),
}

/// A TLS connection to one server trusting only the certificates of one file.
pub(crate) struct Pin {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) root_file: PathBuf,
    /// How many roots are trusted: the file's certificates, nothing else.
    pub(crate) roots: usize,
    config: Arc<ClientConfig>,
}

/// `sslrootcert` (or a file it needs) is unusable: the message names it and
/// never the URL (which may hold a password).
pub fn check_url(url: &str) -> Result<(), String> {
    trust_of(url).map(|_| ())
}

fn param(opts: &AnyConnectOptions, keys: &[&str]) -> Option<String> {
    opts.database_url
        .query_pairs()
        .filter(|(k, _)| keys.contains(&k.as_ref()))
        .map(|(_, v)| v.into_owned())
        .last()
}

/// What `url` (a `postgres://` URL) asks for; an unusable root file, client
/// certificate or key is an error.
pub(crate) fn trust_of(url: &str) -> Result<Trust, String> {
    let any: AnyConnectOptions = url.parse().map_err(|e| format!("{e}"))?;
    // libpq's and sqlx's fallback: the variable, when the URL names none.
    let from_env = || {
        std::env::var("PGSSLROOTCERT")
            .ok()
            .filter(|v| !v.is_empty())
    };
    let Some(root) = param(&any, &ROOT_KEYS).or_else(from_env) else {
        return Ok(Trust::Driver);
    };
    if root == "system" {
        return Ok(Trust::System);
    }
    let root_file = PathBuf::from(&root);
    let roots = load_roots(&root_file)?;
    let pg: PgConnectOptions = url.parse().map_err(|e| format!("{e}"))?;
    let verify_host = match pg.get_ssl_mode() {
        PgSslMode::VerifyFull => true,
        PgSslMode::VerifyCa | PgSslMode::Require => false,
        PgSslMode::Disable | PgSslMode::Allow | PgSslMode::Prefer => return Ok(Trust::Driver),
    };
    if pg.get_socket().is_some() {
        return Ok(Trust::Driver);
    }
    let client = match (param(&any, &CERT_KEYS), param(&any, &KEY_KEYS)) {
        (Some(cert), Some(key)) => Some(load_client(Path::new(&cert), Path::new(&key))?),
        (None, None) => None,
        _ => return Err("sslcert and sslkey must be given together".into()),
    };
    let count = roots.len();
    let config = client_config(roots, verify_host, client)?;
    Ok(Trust::Pinned(Arc::new(Pin {
        host: pg.get_host().to_string(),
        port: pg.get_port(),
        root_file,
        roots: count,
        config,
    })))
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    files::read_regular(path, files::DEFAULT_MAX_BYTES)
        .map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// The certificates of a PEM file (the only roots), as read and as a store.
struct Roots {
    certs: Vec<CertificateDer<'static>>,
    store: RootCertStore,
}

impl Roots {
    fn len(&self) -> usize {
        self.certs.len()
    }
}

/// The certificates of a PEM file as the only roots.
fn load_roots(path: &Path) -> Result<Roots, String> {
    let pem = read("sslrootcert", path)?;
    let mut store = RootCertStore::empty();
    let mut certs = Vec::new();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert
            .map_err(|e| format!("sslrootcert {}: certificate {}: {e}", path.display(), i + 1))?;
        certs.push(cert.clone());
        store.add(cert).map_err(|e| {
            format!(
                "sslrootcert {}: certificate {} is not a usable CA certificate: {e}",
                path.display(),
                i + 1
            )
        })?;
    }
    if store.is_empty() {
        return Err(format!(
            "sslrootcert {}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(Roots { certs, store })
}

type ClientAuth = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn load_client(cert: &Path, key: &Path) -> Result<ClientAuth, String> {
    let pem = read("sslcert", cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("sslcert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("sslcert {}: no PEM certificate", cert.display()));
    }
    let pem = read("sslkey", key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("sslkey {}: {e}", key.display()))?;
    Ok((chain, key_der))
}

fn client_config(
    roots: Roots,
    verify_host: bool,
    client: Option<ClientAuth>,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(ring::default_provider());
    let verifier = pinned_verifier(roots, verify_host, provider.clone())?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("sslcert/sslkey: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// webpki's check against exactly `roots` (the name too if `verify_host`),
/// and libpq's acceptance of a pinned self-signed CA certificate.
fn pinned_verifier(
    roots: Roots,
    verify_host: bool,
    provider: Arc<CryptoProvider>,
) -> Result<verify::PinnedVerifier, String> {
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots.store), provider)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(verify::PinnedVerifier {
        inner,
        pinned: roots.certs,
        verify_host,
    })
}

/// The URL sqlx is given: for [`Trust::Pinned`], plain PostgreSQL to the
/// relay's Unix socket in `relay_dir` (user, password, database and the other
/// parameters kept); for [`Trust::System`], without `sslrootcert` (sqlx's
/// roots are the system's).
pub(crate) fn driver_options(
    url: &str,
    relay_dir: Option<&std::path::Path>,
) -> Result<AnyConnectOptions, String> {
    let mut opts: AnyConnectOptions = url.parse().map_err(|e| format!("{e}"))?;
    let drop_keys: &[&str] = if relay_dir.is_some() {
        &[
            "sslrootcert",
            "ssl-root-cert",
            "ssl-ca",
            "sslcert",
            "ssl-cert",
            "sslkey",
            "ssl-key",
            "sslmode",
            "ssl-mode",
            "host",
            "hostaddr",
            "port",
        ]
    } else {
        &ROOT_KEYS
    };
    let kept: Vec<(String, String)> = opts
        .database_url
        .query_pairs()
        .filter(|(k, _)| !drop_keys.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let u = &mut opts.database_url;
    if relay_dir.is_some() {
        u.set_host(Some("localhost")).map_err(|e| e.to_string())?;
        u.set_port(Some(relay::RELAY_PORT))
            .map_err(|()| "cannot set the relay port".to_string())?;
    }
    u.set_query(None);
    if !kept.is_empty() || relay_dir.is_some() {
        let mut q = u.query_pairs_mut();
        q.extend_pairs(kept);
        if let Some(dir) = relay_dir {
            q.append_pair("sslmode", "disable");
            q.append_pair("host", &dir.to_string_lossy());
        }
    }
    Ok(opts)
}

#[cfg(test)]
mod tests;
