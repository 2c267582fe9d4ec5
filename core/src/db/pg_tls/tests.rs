use super::*;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

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
