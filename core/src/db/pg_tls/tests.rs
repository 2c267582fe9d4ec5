use super::*;

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::pki_types::{ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, Error as TlsError, OtherError};

fn ca_pem() -> String {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, "pin CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    CertifiedIssuer::self_signed(params, key).expect("ca").pem()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

fn url(query: &str) -> String {
    format!("postgres://tg:s3cret@db.example:6543/tollgate?{query}")
}

#[test]
fn a_pinned_root_file_is_the_only_root() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = write(dir.path(), "ca.pem", &ca_pem());
    for mode in ["verify-full", "verify-ca", "require"] {
        let u = url(&format!("sslmode={mode}&sslrootcert={}", ca.display()));
        let Ok(Trust::Pinned(pin)) = trust_of(&u) else {
            panic!("{mode}: not pinned");
        };
        // One certificate in the file, one root: no system store added.
        assert_eq!(pin.roots, 1, "{mode}");
        assert_eq!((pin.host.as_str(), pin.port), ("db.example", 6543));
    }
}

#[test]
fn system_and_non_verifying_modes_are_left_to_the_driver() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = write(dir.path(), "ca.pem", &ca_pem());
    assert!(matches!(
        trust_of(&url("sslmode=verify-full&sslrootcert=system")),
        Ok(Trust::System)
    ));
    assert!(matches!(
        trust_of(&url("sslmode=verify-full")),
        Ok(Trust::Driver)
    ));
    let prefer = url(&format!("sslmode=prefer&sslrootcert={}", ca.display()));
    assert!(matches!(trust_of(&prefer), Ok(Trust::Driver)));
    // sqlx would read a file named "system": the parameter is dropped.
    let opts = driver_options(&url("sslmode=verify-full&sslrootcert=system"), None).expect("opts");
    let q = opts.database_url.query().unwrap_or_default().to_string();
    assert!(
        !q.contains("sslrootcert") && q.contains("sslmode=verify-full"),
        "{q}"
    );
}

#[test]
fn a_missing_or_non_pem_root_file_is_named_without_the_password() {
    let dir = tempfile::tempdir().expect("dir");
    let junk = write(dir.path(), "junk.pem", "not a certificate\n");
    let missing = dir.path().join("missing.pem");
    for (file, why) in [(&missing, "No such file"), (&junk, "no PEM certificate")] {
        let u = url(&format!(
            "sslmode=verify-full&sslrootcert={}",
            file.display()
        ));
        let e = check_url(&u).expect_err("refused");
        assert!(
            e.contains("sslrootcert") && e.contains(&*file.display().to_string()),
            "{e}"
        );
        assert!(e.contains(why), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }
    // Even where the mode would not use it: a named file is checked.
    let u = url(&format!("sslmode=prefer&sslrootcert={}", missing.display()));
    assert!(check_url(&u).is_err());
}

#[test]
fn the_driver_talks_plain_postgres_to_the_relay() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = write(dir.path(), "ca.pem", &ca_pem());
    let u = url(&format!(
        "sslmode=verify-full&sslrootcert={}&application_name=tg",
        ca.display()
    ));
    let relay = tempfile::tempdir().expect("relay dir");
    let opts = driver_options(&u, Some(relay.path())).expect("opts");
    let d = &opts.database_url;
    assert_eq!((d.host_str(), d.port()), (Some("localhost"), Some(5432)));
    let host = d
        .query_pairs()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.into_owned());
    assert_eq!(host.as_deref(), Some(&*relay.path().to_string_lossy()));
    assert_eq!(
        (d.username(), d.password(), d.path()),
        ("tg", Some("s3cret"), "/tollgate")
    );
    let q = d.query().unwrap_or_default();
    assert!(
        q.contains("application_name=tg") && q.contains("sslmode=disable"),
        "{q}"
    );
    assert!(
        !q.contains("sslrootcert") && !q.contains("verify-full"),
        "{q}"
    );
}

/// The relay presents `sslcert` to the server for whoever connects to it:
/// its socket is in a directory only this user can enter, gone with it.
#[tokio::test]
async fn the_relay_socket_is_private_and_removed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let ca = write(dir.path(), "ca.pem", &ca_pem());
    let u = url(&format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    let Ok(Trust::Pinned(pin)) = trust_of(&u) else {
        panic!("not pinned");
    };
    let relay = Relay::start(pin).await.expect("relay");
    let at = relay.socket_dir().to_path_buf();
    let mode = std::fs::metadata(&at).expect("dir").permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{at:?}");
    assert!(at.join(".s.PGSQL.5432").exists());
    drop(relay);
    assert!(!at.exists(), "{at:?} left behind");
}

/// A self-signed certificate marked `CA:TRUE` for `name`, as
/// `openssl req -x509 … -subj /CN=NAME -addext subjectAltName=…` makes it.
fn self_signed_ca(name: &str, edit: impl FnOnce(&mut CertificateParams)) -> Certificate {
    let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    edit(&mut params);
    params
        .self_signed(&KeyPair::generate().expect("key"))
        .expect("self-signed")
}

fn ip() -> ServerName<'static> {
    ServerName::try_from("127.0.0.1").expect("name")
}

fn is_cert_error(e: &TlsError, want: fn(&CertificateError) -> bool) -> bool {
    matches!(e, TlsError::InvalidCertificate(c) if want(c))
}

/// Round 18: libpq accepts the usual self-signed server certificate (CA:TRUE)
/// when it is itself in `sslrootcert`; webpki alone refuses it.
#[test]
fn a_pinned_self_signed_ca_certificate_is_accepted_only_if_valid_and_named() {
    let now = UnixTime::now();
    let cert = self_signed_ca("127.0.0.1", |_| {});
    let other = self_signed_ca("127.0.0.1", |_| {});
    let file = [other.der().clone(), cert.der().clone()];
    verify::pinned_ca_leaf(cert.der(), &file, Some(&ip()), now).expect("verify-full");
    verify::pinned_ca_leaf(cert.der(), &file, None, now).expect("verify-ca");

    // Not in the file (another CA certificate is): refused, in words.
    let e = verify::pinned_ca_leaf(cert.der(), &file[..1], None, now).expect_err("not pinned");
    assert!(
        matches!(&e, TlsError::InvalidCertificate(CertificateError::Other(OtherError(o)))
            if o.to_string().contains("not itself in the sslrootcert file")),
        "{e}"
    );
    // Expired, or not valid yet.
    let expired = self_signed_ca("127.0.0.1", |p| {
        p.not_before = date_time_ymd(2000, 1, 1);
        p.not_after = date_time_ymd(2001, 1, 1);
    });
    let e = verify::pinned_ca_leaf(expired.der(), &[expired.der().clone()], None, now)
        .expect_err("expired");
    assert!(
        is_cert_error(&e, |c| matches!(c, CertificateError::Expired)),
        "{e}"
    );
    let later = self_signed_ca("127.0.0.1", |p| {
        p.not_before = date_time_ymd(2999, 1, 1);
        p.not_after = date_time_ymd(3000, 1, 1);
    });
    let e = verify::pinned_ca_leaf(later.der(), &[later.der().clone()], None, now)
        .expect_err("not valid yet");
    assert!(
        is_cert_error(&e, |c| matches!(c, CertificateError::NotValidYet)),
        "{e}"
    );
    // Another name: refused by verify-full, accepted by verify-ca.
    let named = self_signed_ca("db.example", |_| {});
    let pinned = [named.der().clone()];
    let e = verify::pinned_ca_leaf(named.der(), &pinned, Some(&ip()), now).expect_err("name");
    assert!(
        is_cert_error(&e, |c| matches!(
            c,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        )),
        "{e}"
    );
    verify::pinned_ca_leaf(named.der(), &pinned, None, now).expect("verify-ca: no name check");
    // A certificate for clients only is not a server's.
    let client = self_signed_ca("127.0.0.1", |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    });
    let e = verify::pinned_ca_leaf(client.der(), &[client.der().clone()], None, now)
        .expect_err("client only");
    assert!(
        is_cert_error(&e, |c| matches!(c, CertificateError::InvalidPurpose)),
        "{e}"
    );
}

/// The whole verifier (webpki first): the pinned self-signed CA certificate
/// passes; an unrelated CA certificate is refused with the reason in words.
#[test]
fn the_pinned_verifier_takes_the_pinned_ca_certificate_and_says_why_not_another() {
    let dir = tempfile::tempdir().expect("dir");
    let cert = self_signed_ca("127.0.0.1", |_| {});
    let file = write(dir.path(), "ss.crt", &cert.pem());
    let provider = Arc::new(ring::default_provider());
    let now = UnixTime::now();
    for verify_host in [true, false] {
        let roots = load_roots(&file).expect("roots");
        let v = pinned_verifier(roots, verify_host, provider.clone()).expect("verifier");
        v.verify_server_cert(cert.der(), &[], &ip(), &[], now)
            .expect("the pinned self-signed certificate");
        let unrelated = self_signed_ca("127.0.0.1", |_| {});
        let e = v
            .verify_server_cert(unrelated.der(), &[], &ip(), &[], now)
            .expect_err("an unrelated CA certificate");
        let said = verify::describe(&std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        assert!(
            said.contains("is a CA certificate")
                && said.contains("not itself in the sslrootcert file"),
            "{said}"
        );
    }
    // verify-full: the pinned certificate under another name is refused.
    let roots = load_roots(&file).expect("roots");
    let v = pinned_verifier(roots, true, provider).expect("verifier");
    let other = ServerName::try_from("db.example").expect("name");
    assert!(v
        .verify_server_cert(cert.der(), &[], &other, &[], now)
        .is_err());
}

/// Round 18 re-check: a certificate whose key usage allows only certificate
/// and CRL signing is no server's (libpq refuses it; webpki does not look):
/// refused whether pinned itself or issued by the pinned CA; one allowing
/// digitalSignature passes.
#[test]
fn a_server_certificate_must_allow_a_servers_key_usage() {
    let dir = tempfile::tempdir().expect("dir");
    let provider = Arc::new(ring::default_provider());
    let now = UnixTime::now();
    let signing_only = |p: &mut CertificateParams| {
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    };
    // Pinned itself (the self-signed CA:TRUE path).
    let own = self_signed_ca("127.0.0.1", signing_only);
    let file = write(dir.path(), "own.crt", &own.pem());
    let v = pinned_verifier(load_roots(&file).expect("roots"), true, provider.clone())
        .expect("verifier");
    let e = v
        .verify_server_cert(own.der(), &[], &ip(), &[], now)
        .expect_err("signing-only key usage");
    assert!(
        is_cert_error(&e, |c| matches!(c, CertificateError::InvalidPurpose)),
        "{e}"
    );
    let fine = self_signed_ca("127.0.0.1", |p| {
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
    });
    let file = write(dir.path(), "fine.crt", &fine.pem());
    let v = pinned_verifier(load_roots(&file).expect("roots"), true, provider.clone())
        .expect("verifier");
    v.verify_server_cert(fine.der(), &[], &ip(), &[], now)
        .expect("digitalSignature is a server's");
    // Issued by the pinned CA (webpki's own path), CA:FALSE.
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    signing_only(&mut leaf);
    let leaf = leaf
        .signed_by(&KeyPair::generate().expect("key"), &ca)
        .expect("leaf");
    let file = write(dir.path(), "ca.crt", &ca.pem());
    for verify_host in [true, false] {
        let v = pinned_verifier(
            load_roots(&file).expect("roots"),
            verify_host,
            provider.clone(),
        )
        .expect("verifier");
        let e = v
            .verify_server_cert(leaf.der(), &[], &ip(), &[], now)
            .expect_err("signing-only leaf");
        assert!(
            is_cert_error(&e, |c| matches!(c, CertificateError::InvalidPurpose)),
            "{e}"
        );
    }
}
