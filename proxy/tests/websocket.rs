//! WebSockets (issue #22 item 1), through a real Pingora listener in front of
//! a real WebSocket peer (tokio-tungstenite): the key and limits are checked
//! on the upgrade request, the connection is proxied both ways, an open
//! WebSocket holds its key's `concurrency` until it closes, and disabling
//! the key closes it.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::streams::wait_until;
use common::TestProxy;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tollgate_core::db::NewApiKey;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket echo server that greets each connection with `welcome`;
/// counts its open connections.
async fn ws_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = common::listener();
    let addr = listener.local_addr().expect("addr");
    let open = Arc::new(AtomicUsize::new(0));
    let count = open.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                if ws.send(Message::text("welcome")).await.is_ok() {
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_close() {
                            break;
                        }
                        if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                            break;
                        }
                    }
                }
                count.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

fn config(ws: SocketAddr) -> String {
    format!(
        r#"
proxy:
  listen: "{{listen}}"
  metrics_listen: "{{metrics}}"
  threads: 2
  body_timeout: 300ms
  websocket_key_check: 200ms
plans:
  free: {{ limits: [ {{ name: minute, rate: 100000, per: 1m }} ] }}
  single: {{ limits: [ {{ name: minute, rate: 100000, per: 1m }} ], concurrency: 1 }}
upstreams:
  demo: {{ targets: ["{{upstream}}"] }}
  ws: {{ targets: ["{ws}"], timeouts: {{ read: 300ms }} }}
routes:
  - {{ name: users, match: {{ path_prefix: /api/users }}, upstream: demo, strip_prefix: /api, default_plan: free }}
  - {{ name: ws, match: {{ path_prefix: /ws }}, upstream: ws, default_plan: free, websocket: true }}
  - {{ name: tight, match: {{ path_prefix: /tight }}, upstream: ws, default_plan: free, websocket: true, limits: [ {{ name: route, rate: 1, per: 1m }} ] }}
  - {{ name: plain, match: {{ path_prefix: /plain }}, upstream: ws, default_plan: free }}
"#
    )
}

async fn connect(p: &TestProxy, path: &str, key: Option<&str>) -> Result<Ws, WsError> {
    let mut req = format!("ws://{}{path}", p.addr)
        .into_client_request()
        .expect("request");
    if let Some(k) = key {
        req.headers_mut()
            .insert("x-api-key", k.parse().expect("header value"));
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("handshake hung")
    .map(|(ws, _)| ws)
}

fn status(r: Result<Ws, WsError>) -> u16 {
    match r {
        Ok(_) => 101,
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("not an HTTP refusal: {e}"),
    }
}

async fn next_text(ws: &mut Ws) -> String {
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(m))) => m.to_text().expect("text").to_string(),
        other => panic!("no message: {other:?}"),
    }
}

/// Whether the connection ended (closed, reset, or end of stream) within 10 s.
async fn ended(ws: &mut Ws) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(None) | Ok(Some(Err(_))) => return true,
            Ok(Some(Ok(m))) if m.is_close() => return true,
            Ok(Some(Ok(_))) => continue,
            Err(_) => return false,
        }
    }
    false
}

async fn setup(keys: &[(&str, Option<&str>)]) -> (TestProxy, Vec<(i64, String)>, Arc<AtomicUsize>) {
    let (ws, open) = ws_upstream().await;
    let p = TestProxy::start(&config(ws), common::Store::Sqlite)
        .await
        .expect("sqlite");
    let mut out = Vec::new();
    for (name, plan) in keys {
        let (k, plain) = p
            .key(NewApiKey {
                name: name.to_string(),
                plan: plan.map(str::to_string),
                ..NewApiKey::default()
            })
            .await;
        out.push((k.id, plain));
    }
    (p, out, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_websocket_is_proxied_both_ways() {
    let (p, keys, open) = setup(&[("ws", None)]).await;
    let key = &keys[0].1;
    let mut ws = connect(&p, "/ws/chat", Some(key)).await.expect("upgrade");
    assert_eq!(next_text(&mut ws).await, "welcome");
    for i in 0..20 {
        let m = format!("message {i}");
        ws.send(Message::text(m.clone())).await.expect("send");
        assert_eq!(next_text(&mut ws).await, m);
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send binary");
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(&b[..], [0u8, 1, 2, 255]),
        other => panic!("no binary echo: {other:?}"),
    }
    // Quiet for longer than body_timeout and the upstream read timeout
    // (300 ms each): an upgraded connection has neither.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ws.send(Message::text("still there")).await.expect("send");
    assert_eq!(next_text(&mut ws).await, "still there");
    ws.close(None).await.expect("close");
    assert!(
        wait_until(Duration::from_secs(10), || open.load(Ordering::SeqCst) == 0).await,
        "the upstream side stayed open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_and_limits_are_checked_on_the_upgrade() {
    let (p, keys, open) = setup(&[("ws", None)]).await;
    let key = &keys[0].1;
    assert_eq!(status(connect(&p, "/ws", None).await), 401);
    assert_eq!(
        status(connect(&p, "/ws", Some("tg_notakeyatall")).await),
        403
    );
    // One upgrade a minute on /tight: the second is refused before the
    // upstream is asked.
    let first = connect(&p, "/tight", Some(key)).await.expect("upgrade");
    assert_eq!(status(connect(&p, "/tight", Some(key)).await), 429);
    drop(first);
    // A route without `websocket: true` never forwards the upgrade: the
    // upstream sees a plain GET and no tunnel opens.
    assert_ne!(status(connect(&p, "/plain", Some(key)).await), 101);
    assert!(
        wait_until(Duration::from_secs(10), || open.load(Ordering::SeqCst) == 0).await,
        "a connection stayed open upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_holds_its_keys_concurrency() {
    let (p, keys, _open) = setup(&[("single", Some("single"))]).await;
    let key = &keys[0].1;
    let mut first = connect(&p, "/ws", Some(key)).await.expect("upgrade");
    assert_eq!(next_text(&mut first).await, "welcome");
    // Still open (and idle): the key's one slot is taken.
    for _ in 0..3 {
        assert_eq!(status(connect(&p, "/ws", Some(key)).await), 429);
        let r = reqwest::Client::new()
            .get(p.url("/api/users"))
            .header("x-api-key", key)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 429);
    }
    first.close(None).await.expect("close");
    drop(first);
    // Closed: the slot comes back.
    let start = Instant::now();
    let second = loop {
        match connect(&p, "/ws", Some(key)).await {
            Ok(ws) => break ws,
            Err(WsError::Http(r)) if r.status() == 429 => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_the_key_closes_its_websockets() {
    let (p, keys, open) = setup(&[("doomed", None), ("other", None)]).await;
    let (doomed_id, doomed) = (&keys[0].0, &keys[0].1);
    let other = &keys[1].1;
    let mut a = connect(&p, "/ws", Some(doomed)).await.expect("upgrade");
    let mut b = connect(&p, "/ws", Some(doomed)).await.expect("upgrade");
    let mut c = connect(&p, "/ws", Some(other)).await.expect("upgrade");
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(next_text(ws).await, "welcome");
    }
    let start = Instant::now();
    p.db.set_key_enabled(*doomed_id, false)
        .await
        .expect("disable");
    assert!(
        ended(&mut a).await,
        "the disabled key's WebSocket stayed open"
    );
    assert!(
        ended(&mut b).await,
        "the disabled key's WebSocket stayed open"
    );
    // key_refresh (100 ms in tests) + websocket_key_check (200 ms), with
    // room for a busy machine.
    let took = start.elapsed();
    assert!(took < Duration::from_secs(8), "closed after {took:?}");
    // The other key's connection is untouched, and the upstream side of
    // the closed ones is gone too.
    c.send(Message::text("alive")).await.expect("send");
    assert_eq!(next_text(&mut c).await, "alive");
    assert!(
        wait_until(Duration::from_secs(10), || open.load(Ordering::SeqCst) == 1).await,
        "upstream connections open: {}",
        open.load(Ordering::SeqCst)
    );
    // And the key cannot open a new one.
    assert_eq!(status(connect(&p, "/ws", Some(doomed)).await), 403);
    let text = p.metrics_text().await;
    assert!(
        common::metric_value(&text, "tollgate_websockets_revoked_total", &[]) >= 2.0,
        "{text}"
    );
}

/// Restricting a key (scopes that leave the route out, or `allowed_ips`
/// that leave the client out) closes its open WebSockets at the next check,
/// like disabling it; a change that still allows them leaves them open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricting_the_key_closes_its_websockets() {
    use tollgate_core::db::KeyPatch;
    use tollgate_core::keys::Scopes;
    let (p, keys, _open) = setup(&[("scoped", None), ("fenced", None), ("kept", None)]).await;
    let mut ws = Vec::new();
    for (_, key) in &keys {
        let mut c = connect(&p, "/ws", Some(key)).await.expect("upgrade");
        assert_eq!(next_text(&mut c).await, "welcome");
        ws.push(c);
    }
    let patch = |scopes: Option<Scopes>, ips: Option<Vec<String>>| KeyPatch {
        scopes: scopes.map(Some),
        allowed_ips: ips.map(Some),
        ..KeyPatch::default()
    };
    let only = |routes: &[&str]| Scopes {
        routes: Some(routes.iter().map(|r| r.to_string()).collect()),
        methods: None,
    };
    let updates = [
        patch(Some(only(&["users"])), None),
        patch(None, Some(vec!["192.0.2.0/24".to_string()])),
        // Still allowed: the route by pattern, the client's own address.
        patch(Some(only(&["w*"])), Some(vec!["127.0.0.1".to_string()])),
    ];
    let start = Instant::now();
    for ((id, _), u) in keys.iter().zip(&updates) {
        p.db.update_key(*id, u).await.expect("update").expect("key");
    }
    let mut kept = ws.pop().expect("kept");
    for (i, mut c) in ws.into_iter().enumerate() {
        assert!(
            ended(&mut c).await,
            "restricted key {i}: its WebSocket stayed open"
        );
    }
    let took = start.elapsed();
    assert!(took < Duration::from_secs(8), "closed after {took:?}");
    // Several checks later the allowed one is still open and served.
    tokio::time::sleep(Duration::from_millis(600)).await;
    kept.send(Message::text("alive")).await.expect("send");
    assert_eq!(next_text(&mut kept).await, "alive");
    // The restricted keys cannot open a new one.
    for (_, key) in &keys[..2] {
        assert_eq!(status(connect(&p, "/ws", Some(key)).await), 403);
    }
}

/// A config reload that would refuse the upgrade now (the route's address
/// rules deny the client; the route is no longer a WebSocket route) closes
/// the open WebSockets at the next check, as a key change does (black-box
/// round 6: they stayed open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_would_refuse_the_upgrade_closes_its_websockets() {
    let (p, keys, _open) = setup(&[("a", None)]).await;
    let key = &keys[0].1;
    let mut on_ws = connect(&p, "/ws", Some(key)).await.expect("upgrade");
    let mut on_tight = connect(&p, "/tight", Some(key)).await.expect("upgrade");
    for ws in [&mut on_ws, &mut on_tight] {
        assert_eq!(next_text(ws).await, "welcome");
    }
    let text = std::fs::read_to_string(&p.config_path).expect("config");
    let edited = text
        .replace(
            "upstream: ws, default_plan: free, websocket: true }",
            "upstream: ws, default_plan: free, websocket: true, ip_deny: [127.0.0.0/8] }",
        )
        .replace(
            "upstream: ws, default_plan: free, websocket: true, limits:",
            "upstream: ws, default_plan: free, limits:",
        );
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(&p.config_path, edited).expect("write config");
    let start = Instant::now();
    assert!(
        ended(&mut on_ws).await,
        "an address-denied WebSocket stayed open"
    );
    assert!(
        ended(&mut on_tight).await,
        "a WebSocket of a plain route stayed open"
    );
    let took = start.elapsed();
    assert!(took < Duration::from_secs(12), "closed after {took:?}");
    assert_eq!(status(connect(&p, "/ws", Some(key)).await), 403);
}

/// An upstream that refuses every WebSocket handshake (the answer depends
/// on the path) and then keeps its side open; the request heads it got.
async fn refusing_upstream() -> (SocketAddr, Arc<parking_lot::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = common::listener();
    let addr = listener.local_addr().expect("addr");
    let heads = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let answer: &[u8] = if head.starts_with("GET /refuse/empty ") {
                    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
                } else if head.starts_with("GET /refuse/chunked ") {
                    b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nnope!\r\n0\r\n\r\n"
                } else {
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nnope!"
                };
                seen.lock().push(head);
                if s.write_all(answer).await.is_err() {
                    return;
                }
                // Keep the upstream side open until the proxy lets go.
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    (addr, heads)
}

/// A handshake the upstream refuses reaches the client whole, and the
/// proxy then closes the connection itself (the client here never does):
/// the held-open request half (see `ws_hold`) does not keep it waiting,
/// and the request counts as an allowed one, not an error. body_timeout is
/// long so that only the prompt end can close it within the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_is_answered_whole_and_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up, heads) = refusing_upstream().await;
    let yaml = format!(
        r#"
proxy:
  listen: "{{listen}}"
  metrics_listen: "{{metrics}}"
  threads: 2
  body_timeout: 60s
plans:
  free: {{ limits: [ {{ name: minute, rate: 100000, per: 1m }} ] }}
upstreams:
  demo: {{ targets: ["{{upstream}}"] }}
  refuser: {{ targets: ["{up}"] }}
routes:
  - {{ name: users, match: {{ path_prefix: /api/users }}, upstream: demo, strip_prefix: /api, default_plan: free }}
  - {{ name: refuse, match: {{ path_prefix: /refuse }}, upstream: refuser, default_plan: free, websocket: true }}
"#
    );
    let p = TestProxy::start(&yaml, common::Store::Sqlite)
        .await
        .expect("sqlite");
    let (_, key) = p
        .key(NewApiKey {
            name: "refused".into(),
            ..NewApiKey::default()
        })
        .await;
    for (path, status, body) in [
        ("/refuse/body", "400", "nope!"),
        ("/refuse/empty", "403", ""),
        ("/refuse/chunked", "404", "nope!"),
    ] {
        let mut s = TcpStream::connect(p.addr).await.expect("connect");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             x-api-key: {key}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("send");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{path}: the connection stayed open; got {:?}",
                    String::from_utf8_lossy(&got)
                )
            })
            .expect("read");
        let got = String::from_utf8_lossy(&got).to_string();
        assert!(
            got.starts_with(&format!("HTTP/1.1 {status} ")),
            "{path}: {got}"
        );
        assert!(
            got.to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "{path}: {got}"
        );
        let payload = match got.split_once("\r\n\r\n") {
            Some((head, rest))
                if head
                    .to_ascii_lowercase()
                    .contains("transfer-encoding: chunked") =>
            {
                rest.replace("5\r\n", "").replace("\r\n0\r\n\r\n", "")
            }
            Some((_, rest)) => rest.to_string(),
            None => panic!("{path}: no header end: {got}"),
        };
        assert_eq!(payload, body, "{path}: {got}");
    }
    // The upstream got a body-less GET: the held-open framing is the
    // proxy's own.
    let heads = heads.lock().clone();
    assert_eq!(heads.len(), 3, "{heads:?}");
    for h in &heads {
        let lower = h.to_ascii_lowercase();
        assert!(!lower.contains("transfer-encoding"), "{h}");
        assert!(lower.contains("\r\ncontent-length: 0\r\n"), "{h}");
        assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{h}");
    }
    let counted = |outcome: &'static str| {
        let p = &p;
        async move {
            let text = p.metrics_text().await;
            common::metric_value(
                &text,
                "tollgate_requests_total",
                &["route=\"refuse\"", outcome],
            )
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while counted("outcome=\"allowed\"").await < 3.0 {
        assert!(Instant::now() < deadline, "the refusals were not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counted("outcome=\"upstream_error\"").await, 0.0);
}

/// Hostile: frames sent with the handshake, before the `101` (RFC 6455
/// §4.1 says to wait). While the handshake is held open (see `ws_hold`)
/// they are not a request body: the answer is a refusal (4xx, connection
/// closed) or, if the upstream switched first, the tunnel; never a hang or
/// a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_before_the_101_are_refused_or_tunnelled() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (p, keys, _open) = setup(&[("eager", None)]).await;
    let key = &keys[0].1;
    for extra in [
        &b"\x81\x85\x01\x02\x03\x04iagmn"[..],
        b"0\r\n\r\n",
        b"5\r\nhello\r\n",
    ] {
        let mut s = TcpStream::connect(p.addr).await.expect("connect");
        let mut req = format!(
            "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             x-api-key: {key}\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(extra);
        s.write_all(&req).await.expect("send");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(10);
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, s.read(&mut buf)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Err(_)) => break,
                Err(_) => panic!("{extra:?}: no answer: {:?}", String::from_utf8_lossy(&got)),
            }
        }
        let text = String::from_utf8_lossy(&got).to_string();
        let status: u16 = text
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{extra:?}: no status line: {text:?}"));
        assert!(
            status == 101 || (400..500).contains(&status),
            "{extra:?}: {text}"
        );
        if status != 101 {
            let closed = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(
                closed.is_ok(),
                "{extra:?}: the connection stayed open after {text}"
            );
        }
    }
}

/// Round 14 (black-box): an upstream answering `101` to a request whose
/// upgrade was not forwarded (no `Upgrade` asked, or not a `websocket`
/// route) had its `101` passed to the client, then the connection failed.
/// Now a 502 problem (an upstream failure, counted `upstream_error`), the
/// connection closed, and nothing of the would-be tunnel reaches the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unasked_for_101_is_a_bad_gateway() {
    use common::raw;
    let up = raw::start_switching_upstream().await;
    let yaml = format!(
        r#"
plans:
  free: {{ limits: [ {{ name: minute, rate: 100000, per: 1m }} ] }}
upstreams:
  demo: {{ targets: ["{{upstream}}"] }}
  switcher: {{ targets: ["{up}"] }}
routes:
  - {{ name: users, match: {{ path_prefix: /api/users }}, upstream: demo, strip_prefix: /api, default_plan: free }}
  - {{ name: switch, match: {{ path_prefix: /switch }}, upstream: switcher, default_plan: free }}
  - {{ name: wsswitch, match: {{ path_prefix: /wsswitch }}, upstream: switcher, default_plan: free, websocket: true }}
"#
    );
    let p = TestProxy::start(&yaml, common::Store::Sqlite)
        .await
        .expect("sqlite");
    let (_, key) = p.key(common::named("switch")).await;
    let upgrade = [
        ("x-api-key", key.as_str()),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    for (path, headers) in [
        ("/switch/a", &upgrade[..1]),
        ("/wsswitch/a", &upgrade[..1]),
        // An upgrade on a route without `websocket` is not forwarded.
        ("/switch/a", &upgrade[..]),
    ] {
        let r = raw::get(None, p.addr, path, headers).await;
        assert_eq!(r.status, 502, "{path} {headers:?}: {}", r.raw);
        assert_eq!(raw::statuses(&r.raw), [502], "{path}: {}", r.raw);
        assert_eq!(
            r.json()["type"],
            "https://tollgate.dev/problems/upstream-error",
            "{}",
            r.raw
        );
        assert_eq!(r.header("connection"), Some("close"), "{}", r.raw);
        assert!(!r.raw.contains("TUNNEL"), "{path}: {}", r.raw);
    }
    let m = p.metrics_text().await;
    assert_eq!(
        common::metric_value(
            &m,
            "tollgate_requests_total",
            &["\"switch\"", "upstream_error"]
        ),
        2.0,
        "{m}"
    );
}
