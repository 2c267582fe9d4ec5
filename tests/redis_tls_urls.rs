//! Redis and PostgreSQL over TLS, and every Redis URL shape, through the real
//! binary: a redis-server speaking only TLS (`--tls-port`) and a PostgreSQL
//! of the test's own with `ssl=on` and `hostssl`-only access, both with
//! certificates of a throwaway CA made here (rcgen). No URL that passes
//! `check-config` makes anything panic: one that cannot connect follows
//! `on_redis_error`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::proxy::Proxy;
use crate::common::redis::{OwnRedis, RedisTls};
use crate::common::tollgate;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tollgate_core::db::own_postgres::OwnPostgres;
use tollgate_core::db::{Db, NewApiKey};

/// A throwaway CA and one server certificate for 127.0.0.1 / localhost.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki() -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params
        .distinguished_name
        .push(DnType::CommonName, "tollgate test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer =
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("leaf key");
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("leaf params");
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &issuer).expect("leaf");
    Pki {
        ca: issuer.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

fn limiter_yaml(redis_url: &str, policy: &str, extra: &str, upstream: u16) -> String {
    format!(
        r#"limiter:
  backend: redis
  redis_url: "{redis_url}"
  redis_timeout: 200ms
  on_redis_error: {policy}
{extra}plans:
  p: {{ limits: [ {{ name: s, rate: 1000, per: 1s }} ] }}
upstreams:
  demo: {{ targets: ["127.0.0.1:{upstream}"] }}
routes:
  - name: users
    match: {{ path_prefix: /api/users }}
    upstream: demo
    strip_prefix: /api
    default_plan: p
"#
    )
}

/// `tollgate check-config` on `yaml` (with a proxy/storage head): (ok, stderr).
fn check_config(dir: &Path, db_url: &str, yaml: &str) -> (bool, String) {
    let text = format!(
        "proxy:\n  listen: \"127.0.0.1:1\"\nstorage:\n  database_url: \"{db_url}\"\n{yaml}"
    );
    let file = write(dir, "check.yaml", &text);
    let out = tollgate()
        .arg("check-config")
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .expect("run check-config");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tollgate proxy` on this config exits non-zero at once: its stderr.
fn proxy_refuses_to_start(dir: &Path, db_url: &str, yaml: &str) -> String {
    let text = format!(
        "proxy:\n  listen: \"127.0.0.1:1\"\nstorage:\n  database_url: \"{db_url}\"\n{yaml}"
    );
    let file = write(dir, "start.yaml", &text);
    let out = tollgate()
        .arg("proxy")
        .arg("--config")
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .expect("run proxy");
    assert!(!out.status.success(), "started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One route to `127.0.0.1:{up}`, for a config whose storage is the point.
fn routes_yaml(up: u16) -> String {
    format!(
        "plans:\n  p: {{ limits: [ {{ name: s, rate: 100, per: 1s }} ] }}\nupstreams:\n  demo: {{ targets: [\"127.0.0.1:{up}\"] }}\nroutes:\n  - name: users\n    match: {{ path_prefix: /api/users }}\n    upstream: demo\n    strip_prefix: /api\n    default_plan: p\n"
    )
}

/// A self-signed certificate for `name` marked CA:TRUE, as `openssl req
/// -x509 -subj /CN=NAME -addext subjectAltName=…` makes it: (cert, key).
fn self_signed_ca(name: &str) -> (String, String) {
    let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), key.serialize_pem())
}

async fn status(p: &Proxy, key: &str) -> u16 {
    reqwest::Client::new()
        .get(p.url("/api/users"))
        .header("x-api-key", key)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Poll until the proxy answers `want` (the key set loads first).
async fn wait_for(p: &Proxy, key: &str, want: u16) {
    let start = Instant::now();
    loop {
        let s = status(p, key).await;
        if s == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "status {s}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn key_db(dir: &Path) -> (Db, String) {
    let db = tollgate_core::db::testing::fresh_sqlite(dir).await;
    let (_, key) = db
        .create_key(&NewApiKey {
            name: "tls".into(),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    (db, key)
}

fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_the_ca_file_decides_in_redis_and_untrusted_follows_the_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    let tls = RedisTls {
        cert: write(dir.path(), "redis.crt", &pki.cert),
        key: write(dir.path(), "redis.key", &pki.key),
        ca: write(dir.path(), "ca.pem", &pki.ca),
    };
    let Some(redis) = OwnRedis::start_tls(tls.clone()) else {
        return;
    };
    let (db, key) = key_db(dir.path()).await;
    let up = common::demo_upstream().await;
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let ca_line = format!("  redis_ca_file: \"{}\"\n", tls.ca.display());

    // Trusted by the configured CA: decisions come from Redis.
    let y = limiter_yaml(&url, "deny", &ca_line, up);
    let (ok, err) = check_config(dir.path(), db.url(), &y);
    assert!(ok, "{err}");
    let p = Proxy::start(tempfile::tempdir().expect("dir"), db.url(), "", &y).await;
    wait_for(&p, &key, 200).await;
    let m = p.metrics().await;
    assert!(
        metric(
            &m,
            "tollgate_limiter_decision_duration_seconds_count",
            "backend=\"redis\""
        ) >= 1.0,
        "decided in Redis over TLS"
    );
    // With `deny`, the 200 `wait_for` saw can only be Redis' decision (a
    // round trip slower than redis_timeout on a busy machine falls back to
    // a 503, so fallbacks are not asserted to be zero).
    drop(p);

    // Not trusted (system roots only), and plain TCP to the TLS port:
    // refused by the `deny` policy with 503, never a panic or a hang.
    for y in [
        limiter_yaml(&url, "deny", "", up),
        limiter_yaml(&format!("redis://127.0.0.1:{}", redis.port), "deny", "", up),
    ] {
        let (ok, err) = check_config(dir.path(), db.url(), &y);
        assert!(ok, "{err}");
        let mut p = Proxy::start(tempfile::tempdir().expect("dir"), db.url(), "", &y).await;
        wait_for(&p, &key, 503).await;
        for _ in 0..5 {
            assert_eq!(status(&p, &key).await, 503);
        }
        assert!(p.child.try_wait().expect("wait").is_none(), "proxy alive");
    }

    // A CA file that vanished: check-config says so; a proxy started anyway
    // cannot create its Redis limiter and follows the policy (no panic).
    let gone = format!(
        "  redis_ca_file: \"{}\"\n",
        dir.path().join("gone.pem").display()
    );
    let y = limiter_yaml(&url, "deny", &gone, up);
    let (ok, err) = check_config(dir.path(), db.url(), &y);
    assert!(!ok && err.contains("limiter.redis_ca_file"), "{err}");
    let mut p = Proxy::start(tempfile::tempdir().expect("dir"), db.url(), "", &y).await;
    wait_for(&p, &key, 503).await;
    assert!(p.child.try_wait().expect("wait").is_none(), "proxy alive");
    let m = p.metrics().await;
    assert!(metric(&m, "tollgate_redis_errors_total", "kind=\"config\"") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redis_url_shape_passes_check_config_and_never_panics_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, key) = key_db(dir.path()).await;
    let up = common::demo_upstream().await;
    // Nothing listens on ports 1-3: every one follows on_redis_error (allow).
    for url in [
        "redis://127.0.0.1:1",
        "redis://user:secret@127.0.0.1:1/3",
        "rediss://127.0.0.1:1",
        "rediss://:secret@localhost:1/0",
        "redis+cluster://127.0.0.1:1,127.0.0.1:2",
        "rediss+cluster://user:secret@127.0.0.1:1,127.0.0.1:2,[::1]:3/0",
    ] {
        let y = limiter_yaml(url, "allow", "", up);
        let (ok, err) = check_config(dir.path(), db.url(), &y);
        assert!(ok, "{url}: {err}");
        let mut p = Proxy::start(tempfile::tempdir().expect("dir"), db.url(), "", &y).await;
        wait_for(&p, &key, 200).await;
        for _ in 0..3 {
            assert_eq!(status(&p, &key).await, 200, "{url}");
        }
        assert!(
            p.child.try_wait().expect("wait").is_none(),
            "{url}: proxy alive"
        );
    }
    // Refused by check-config, and the password never printed.
    for url in [
        "http://user:secret@127.0.0.1:1",
        "redis://user:secret@a:1,b:2",
        "rediss://user:secret@h:1#insecure",
        "redis://user:secret@h:1?protocol=resp3",
        "redis+cluster://user:secret@a:1/2",
        "redis://user:secret@h:99999",
        "redis+unix:///tmp/redis.sock",
    ] {
        let (ok, err) = check_config(dir.path(), db.url(), &limiter_yaml(url, "allow", "", up));
        assert!(!ok, "{url} accepted");
        assert!(err.contains("limiter.redis_url"), "{url}: {err}");
        assert!(!err.contains("secret"), "{url}: password printed: {err}");
    }
    // A CA file that is not a CA file is named at its setting.
    let junk = write(dir.path(), "junk.pem", "not a certificate\n");
    let y = limiter_yaml(
        "rediss://127.0.0.1:1",
        "allow",
        &format!("  redis_ca_file: \"{}\"\n", junk.display()),
        up,
    );
    let (ok, err) = check_config(dir.path(), db.url(), &y);
    assert!(!ok && err.contains("limiter.redis_ca_file"), "{err}");
    // A CA file for a plain redis:// URL is a mistake worth refusing.
    let y = limiter_yaml(
        "redis://127.0.0.1:1",
        "allow",
        "  redis_ca_file: ca.pem\n",
        up,
    );
    let (ok, err) = check_config(dir.path(), db.url(), &y);
    assert!(!ok && err.contains("limiter.redis_ca_file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_with_sslrootcert_and_refused_without_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = pki();
    let Some(pg) = OwnPostgres::start_tls(&certs.cert, &certs.key) else {
        return;
    };
    let ca = write(dir.path(), "pg-ca.pem", &certs.ca);
    let base = pg.url();
    let verified = format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display());

    // Verified TLS: migrations run, keys are created and read back.
    let db = Db::connect(&verified).await.expect("verify-full over TLS");
    let (_, key) = db
        .create_key(&NewApiKey {
            name: "pg-tls".into(),
            ..NewApiKey::default()
        })
        .await
        .expect("key");

    // The same URL in a config: check-config and the real proxy use it.
    let up = common::demo_upstream().await;
    let yaml = routes_yaml(up);
    let (ok, err) = check_config(dir.path(), &verified, &yaml);
    assert!(ok, "{err}");
    let p = Proxy::start(tempfile::tempdir().expect("dir"), &verified, "", &yaml).await;
    wait_for(&p, &key, 200).await;
    drop(p);
    db.close().await;

    // Without TLS the server refuses (hostssl only); with a CA that did not
    // sign the certificate, verification fails. Errors, never panics.
    assert!(Db::connect(&format!("{base}?sslmode=disable"))
        .await
        .is_err());
    // sslrootcert pins: only its certificates are trusted (sqlx alone would
    // add them to the system's roots). A CA that did not sign the server's
    // certificate is refused in every verifying mode, with the reason.
    let other = write(dir.path(), "other-ca.pem", &pki().ca);
    for mode in ["verify-full", "verify-ca", "require"] {
        let wrong = format!("{base}?sslmode={mode}&sslrootcert={}", other.display());
        let e = Db::connect(&wrong).await.expect_err(mode).to_string();
        assert!(
            e.contains("sslrootcert") && e.contains("other-ca.pem"),
            "{mode}: {e}"
        );
        let right = format!("{base}?sslmode={mode}&sslrootcert={}", ca.display());
        Db::connect(&right).await.expect(mode).close().await;
    }
    // A root file that is missing or not PEM is a config error at its
    // setting, for check-config and at start; the password is never printed.
    let junk = write(dir.path(), "junk.pem", "not a certificate\n");
    let missing = dir.path().join("missing.pem");
    let with_password = base.replacen("postgres@", "postgres:s3cret@", 1);
    for file in [&missing, &junk] {
        let url = format!(
            "{with_password}?sslmode=verify-full&sslrootcert={}",
            file.display()
        );
        let (ok, err) = check_config(dir.path(), &url, &yaml);
        assert!(!ok, "{file:?} accepted");
        assert!(
            err.contains("storage.database_url") && err.contains("sslrootcert"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "password printed: {err}");
        let err = proxy_refuses_to_start(dir.path(), &url, &yaml);
        assert!(
            err.contains("storage.database_url") && err.contains("sslrootcert"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "password printed: {err}");
    }
    // A bad sslmode is refused by check-config.
    let (ok, err) = check_config(dir.path(), &format!("{base}?sslmode=sometimes"), &yaml);
    assert!(!ok && err.contains("storage.database_url"), "{err}");
}

/// Round 18: the usual self-signed server certificate (`openssl req -x509`
/// marks it CA:TRUE), named as its own `sslrootcert`, connects as with libpq
/// (webpki alone refused it as `CaUsedAsEndEntity`). Under verify-full another
/// host name is still refused; a CA certificate that is not itself in the
/// file is refused in words, by start, and check-config's warning says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_with_its_self_signed_certificate_pinned_connects_as_with_libpq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed_ca("127.0.0.1");
    let Some(pg) = OwnPostgres::start_tls(&cert, &key) else {
        return;
    };
    let pinned = write(dir.path(), "ss.crt", &cert);
    let base = pg.url();
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = format!("{base}?sslmode={mode}&sslrootcert={}", pinned.display());
        Db::connect(&url).await.expect(mode).close().await;
    }
    let yaml = routes_yaml(1);
    let verified = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        pinned.display()
    );
    let (ok, err) = check_config(dir.path(), &verified, &yaml);
    assert!(ok && !err.contains("warning"), "{err}");

    // verify-full to another name of the same server: refused.
    let by_name = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        base.replacen("127.0.0.1", "localhost", 1),
        pinned.display()
    );
    let e = Db::connect(&by_name)
        .await
        .expect_err("localhost")
        .to_string();
    assert!(e.contains("not valid for name"), "{e}");

    // A CA certificate not itself in the file.
    let other = write(dir.path(), "other.crt", &self_signed_ca("127.0.0.1").0);
    let url = format!("{base}?sslmode=verify-full&sslrootcert={}", other.display());
    let e = Db::connect(&url).await.expect_err("unrelated").to_string();
    let words =
        "is a CA certificate (basicConstraints CA:TRUE) that is not itself in the sslrootcert file";
    assert!(e.contains(words), "{e}");
    let (ok, err) = check_config(dir.path(), &url, &yaml);
    assert!(
        ok && err.contains("warning: database not checked")
            && err.contains(words)
            && err.contains("start is refused"),
        "{err}"
    );
    let err = proxy_refuses_to_start(dir.path(), &url, &yaml);
    assert!(err.contains(words), "{err}");
}
