//! Raw HTTP/1 over TCP for tests that must send bytes a client library would
//! clean up (`..`, `%2e`, `//`, odd framing), optionally from a chosen local
//! address (`127.0.0.x`), and test upstreams that interpret paths the way
//! some real servers do.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A parsed response (the first one on the connection).
#[derive(Debug, Clone, Default)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Everything read, for messages.
    pub raw: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.raw))
    }
}

/// Connect to `to`, from `from` if given.
pub async fn connect(from: Option<IpAddr>, to: SocketAddr) -> TcpStream {
    match from {
        None => TcpStream::connect(to)
            .await
            .unwrap_or_else(|e| panic!("connect to {to}: {e}")),
        Some(ip) => {
            let s = TcpSocket::new_v4().expect("socket");
            s.bind(SocketAddr::new(ip, 0)).expect("bind local address");
            s.connect(to).await.expect("connect")
        }
    }
}

/// Send `bytes`, read until the peer closes (or `wait` passes).
pub async fn exchange(
    from: Option<IpAddr>,
    to: SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> String {
    let mut s = connect(from, to).await;
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// `Some(address)` for [`connect`]'s `from` (`127.0.0.x` on Linux).
pub fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().expect("ip"))
}

/// Send `bytes` and parse the first response (read for up to 5 s).
pub async fn send(from: Option<IpAddr>, to: SocketAddr, bytes: &[u8]) -> RawResponse {
    parse(&exchange(from, to, bytes, Duration::from_secs(5)).await)
}

/// Open connections from `from` that send `prefix` (a PROXY protocol
/// header, or nothing) and hold them in `held`, three at a time, until a
/// fourth one sending `prefix` and `req` gets no answer (the per-address cap
/// of 3 refused it). The proxy takes connections on several threads in no
/// fixed order, so a probe may be counted before a held one: then start
/// again, giving the proxy more time. `false` if it was always served.
pub async fn fill_connection_cap(
    from: Option<IpAddr>,
    to: SocketAddr,
    prefix: &[u8],
    req: &[u8],
    held: &mut Vec<TcpStream>,
) -> bool {
    let probe = [prefix, req].concat();
    for attempt in 1..=10u64 {
        held.clear();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..3 {
            let mut s = connect(from, to).await;
            if !prefix.is_empty() {
                s.write_all(prefix).await.expect("write");
            }
            held.push(s);
            tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
        }
        let resp = exchange(from, to, &probe, Duration::from_secs(5)).await;
        if statuses(&resp).is_empty() {
            return true;
        }
    }
    false
}

/// Parse the first response in `raw` (Content-Length framed, or to the end).
pub fn parse(raw: &str) -> RawResponse {
    let mut r = RawResponse {
        raw: raw.to_string(),
        ..RawResponse::default()
    };
    let Some((head, rest)) = raw.split_once("\r\n\r\n") else {
        return r;
    };
    let mut lines = head.split("\r\n");
    r.status = lines
        .next()
        .and_then(|l| l.get(9..12))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            r.headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    r.body = match r
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(n) => rest.get(..n).unwrap_or(rest).to_string(),
        None => rest.to_string(),
    };
    r
}

/// All status codes in a stream of responses.
pub fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.")
        .filter_map(|(i, _)| raw.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// `GET target` with `headers`, `Host: t` and `Connection: close`.
pub async fn get(
    from: Option<IpAddr>,
    to: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    parse(&exchange(from, to, req.as_bytes(), Duration::from_secs(10)).await)
}

/// `GET target` with `x-api-key: key` and `n` header fields in all (`Host`
/// and `Connection: close` among them).
pub fn with_fields(target: &str, key: &str, n: usize) -> String {
    let extra: String = (3..n).map(|i| format!("x-h{i}: v\r\n")).collect();
    format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nx-api-key: {key}\r\n{extra}Connection: close\r\n\r\n"
    )
}

/// A test upstream: reads one request head per connection, answers
/// `200` with `answer(raw target)` as the body, and closes.
pub async fn start_interpreting_upstream(answer: fn(&str) -> String) -> SocketAddr {
    let listener = super::listener();
    let addr = listener.local_addr().expect("addr");
    serve_heads(listener, answer);
    addr
}

/// On `listener`, in the background: read one request head per connection,
/// answer `200` with `answer(raw target)` as the body, and close.
pub fn serve_heads<F>(listener: tokio::net::TcpListener, answer: F)
where
    F: Fn(&str) -> String + Copy + Send + Sync + 'static,
{
    on_each_head(listener, move |mut s, buf| async move {
        let head = String::from_utf8_lossy(&buf).into_owned();
        let target = head.split(' ').nth(1).unwrap_or_default().to_string();
        let body = answer(&target);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(resp.as_bytes()).await;
    });
}

/// Percent-decode everything (as many frameworks do before routing).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resolve dot segments and merge slashes, treating `\` as `/`.
pub fn resolve_dots(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split(['/', '\\']) {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// On `listener`, in the background: each connection on a task of its own
/// reads one request head, then `serve` gets the connection and that head
/// (a connection closed before a whole head is dropped).
pub fn on_each_head<F, Fut>(listener: tokio::net::TcpListener, serve: F)
where
    F: Fn(TcpStream, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let serve = std::sync::Arc::new(serve);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let serve = serve.clone();
            tokio::spawn(async move {
                if let Some(head) = read_head(&mut s).await {
                    serve(s, head).await;
                }
            });
        }
    });
}

/// Read from `s` until a request head has ended (`\r\n\r\n`): what was
/// read, or `None` if the connection ended first.
pub async fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(buf)
}

/// A test upstream that answers every request head with `101 Switching
/// Protocols` and then `TUNNEL` on the raw connection, whatever was asked.
pub async fn start_switching_upstream() -> SocketAddr {
    let listener = super::listener();
    let addr = listener.local_addr().expect("addr");
    on_each_head(listener, |mut s, _| async move {
        let _ = s
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\n\r\nTUNNEL",
            )
            .await;
        // Held open, as a tunnel would be, until the proxy closes.
        let mut sink = [0u8; 1024];
        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    addr
}
