//! TLS end to end, with real certificates made here (a throwaway CA and
//! leaves, rcgen; the PKI and the HTTPS proxy are `common/tls.rs`): the
//! proxy's HTTPS listener — HTTP/2 by ALPN and HTTP/1.1 with key checks and
//! limits, the certificate re-read without a restart, and unusable
//! certificate files refused at start with the setting named. `https://`
//! upstreams are `tls_upstream.rs`, hostile and slow TLS clients
//! `tls_clients.rs`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::tls::{client, eventually, header, problem, write, Ca, TlsProxy, BASE};
use common::{metric_value, named};
use reqwest::{StatusCode, Version};
use serde_json::Value;

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

fn reloads(metrics: &str, result: &str) -> f64 {
    metric_value(
        metrics,
        "tollgate_config_reloads_total",
        &[&format!("result=\"{result}\"")],
    )
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
