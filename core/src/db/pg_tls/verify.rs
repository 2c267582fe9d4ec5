//! The server-certificate check of a pinned `sslrootcert`, as libpq makes it.
//!
//! webpki (through rustls' [`WebPkiServerVerifier`]) checks the chain to the
//! pinned roots and, for `verify-full`, the name. It refuses a CA certificate
//! as the server's own (`CaUsedAsEndEntity`), where libpq (OpenSSL) accepts
//! the usual self-signed server certificate (`openssl req -x509` marks it
//! `CA:TRUE`) when that very certificate is in the root file. So does this
//! verifier, and only then: [`pinned_ca_leaf`] decides, byte for byte.

use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::{verify_server_name, WebPkiServerVerifier};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::ParsedCertificate;
use tokio_rustls::rustls::{
    CertificateError, DigitallySignedStruct, Error as TlsError, OtherError, SignatureScheme,
};
use x509_parser::prelude::{ASN1Time, FromDer, X509Certificate};

/// The server's certificate is a CA certificate and not one of the file's.
#[derive(Debug)]
pub(crate) struct CaNotPinned;

impl std::fmt::Display for CaNotPinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the server's certificate is a CA certificate (basicConstraints CA:TRUE) \
             that is not itself in the sslrootcert file",
        )
    }
}

impl std::error::Error for CaNotPinned {}

/// Only the pinned roots; `verify_host` (`verify-full`) checks the name too.
#[derive(Debug)]
pub(crate) struct PinnedVerifier {
    pub(crate) inner: Arc<WebPkiServerVerifier>,
    /// The certificates of the root file, as read.
    pub(crate) pinned: Vec<CertificateDer<'static>>,
    pub(crate) verify_host: bool,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let verified =
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(e) if is_ca_used_as_end_entity(&e) => {
                    let name = self.verify_host.then_some(server_name);
                    pinned_ca_leaf(end_entity, &self.pinned, name, now)
                        .map(|()| ServerCertVerified::assertion())
                }
                // `verify-ca`: the chain is checked, the name is not.
                Err(TlsError::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) if !self.verify_host => Ok(ServerCertVerified::assertion()),
                other => other,
            }?;
        key_usage_allows_a_server(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// webpki refused the server's certificate because it is a CA certificate.
fn is_ca_used_as_end_entity(e: &TlsError) -> bool {
    match e {
        TlsError::InvalidCertificate(CertificateError::Other(OtherError(inner))) => matches!(
            inner.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::CaUsedAsEndEntity)
        ),
        _ => false,
    }
}

/// Whether a CA certificate webpki refused as the server's own is accepted,
/// as libpq accepts it: only if it is byte for byte one of the `pinned`
/// certificates, valid at `now`, usable for a server (no extended key usage,
/// or one with serverAuth), and — with `name` (`verify-full`) — valid for
/// that name as webpki checks names. The handshake's signatures are checked
/// by the normal path, with this certificate's key.
pub(crate) fn pinned_ca_leaf(
    end_entity: &CertificateDer<'_>,
    pinned: &[CertificateDer<'_>],
    name: Option<&ServerName<'_>>,
    now: UnixTime,
) -> Result<(), TlsError> {
    if !pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) {
        return Err(CertificateError::Other(OtherError(Arc::new(CaNotPinned))).into());
    }
    let (_, cert) = X509Certificate::from_der(end_entity.as_ref())
        .map_err(|_| TlsError::InvalidCertificate(CertificateError::BadEncoding))?;
    let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let at = ASN1Time::from_timestamp(secs)
        .map_err(|_| TlsError::InvalidCertificate(CertificateError::Expired))?;
    if at < cert.validity().not_before {
        return Err(CertificateError::NotValidYet.into());
    }
    if !cert.validity().is_valid_at(at) {
        return Err(CertificateError::Expired.into());
    }
    match cert.extended_key_usage() {
        Ok(None) => {}
        Ok(Some(eku)) if eku.value.server_auth => {}
        Ok(Some(_)) | Err(_) => return Err(CertificateError::InvalidPurpose.into()),
    }
    if let Some(name) = name {
        verify_server_name(&ParsedCertificate::try_from(end_entity)?, name)?;
    }
    Ok(())
}

/// The check OpenSSL (so libpq) makes of a server certificate's key usage
/// and webpki does not: a certificate that states its key usage must allow
/// a TLS server's (digitalSignature, keyEncipherment or keyAgreement); one
/// limited to signing certificates or CRLs is not a server's (round 18
/// re-check).
pub(crate) fn key_usage_allows_a_server(end_entity: &CertificateDer<'_>) -> Result<(), TlsError> {
    let (_, cert) = X509Certificate::from_der(end_entity.as_ref())
        .map_err(|_| TlsError::InvalidCertificate(CertificateError::BadEncoding))?;
    match cert.key_usage() {
        Ok(None) => Ok(()),
        Ok(Some(ku))
            if ku.value.digital_signature()
                || ku.value.key_encipherment()
                || ku.value.key_agreement() =>
        {
            Ok(())
        }
        Ok(Some(_)) | Err(_) => Err(CertificateError::InvalidPurpose.into()),
    }
}

/// A failed TLS connection in words: rustls prints the reasons it has no
/// variant for as `Other(OtherError(…))`; this prints them as their text.
pub(crate) fn describe(e: &std::io::Error) -> String {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>());
    match tls {
        Some(TlsError::InvalidCertificate(CertificateError::Other(OtherError(inner)))) => {
            format!("invalid peer certificate: {inner}")
        }
        _ => e.to_string(),
    }
}
