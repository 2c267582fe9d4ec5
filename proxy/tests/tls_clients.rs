//! Hostile and slow clients of the proxy's HTTPS listener, over raw TLS
//! connections: the PROXY protocol header before the handshake, too many
//! header fields (431), handshakes and headers trickled past
//! `header_timeout`, an HTTP/2 connection of only PINGs closed at
//! `keepalive_timeout`, and HTTP/2 bodies over `max_body_bytes` (413).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::{client, problem, Ca, TlsProxy, BASE};
use common::{metric_value, named};
use reqwest::{StatusCode, Version};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;

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
