//! `tollgate dev --demo-traffic`: a realistic trickle of requests through the
//! proxy so the dashboard has something to show on a first look.
//!
//! About 1–2 requests a second with jittered pauses: mostly the demo key
//! (users, products, orders), a second key `demo-partner` with tighter limits
//! (also via `Authorization: Bearer`), some requests without a key (401) or
//! with an unknown key (403), the public health route, and every 15–40 s a
//! burst that runs into the limits (429); one 200, 401 and 403 come first,
//! so that a first look shows each. Plain HTTP/1.1 over a socket, one
//! connection per request, never faster than the limits make interesting.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_core::config::Config;
use tollgate_core::db::{Db, KeyFilter, NewApiKey};
use tollgate_core::limits::Limit;

/// The second key the traffic uses, created (or re-issued) at start.
pub const PARTNER_KEY: &str = "demo-partner";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Create the second key, then send traffic on `rt` until the process ends.
pub fn start(rt: &tokio::runtime::Runtime, config: &Config, demo_key: &str) -> anyhow::Result<()> {
    let partner = rt
        .block_on(partner_key(&config.storage.database_url))
        .context("demo traffic: cannot create the demo-partner key")?;
    let mut proxy = config.proxy.listen;
    if proxy.ip().is_unspecified() {
        proxy.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let traffic = Traffic {
        proxy,
        key_header: config.proxy.key_header.clone(),
        demo: demo_key.to_string(),
        partner,
        unknown: tollgate_core::keys::generate()
            .map(|k| k.plain)
            .unwrap_or_else(|_| "tg_unknown".into()),
        rng: Rng::seeded(),
    };
    println!("demo traffic: on (keys \"demo\" and \"{PARTNER_KEY}\", with some 401, 403 and 429)");
    rt.spawn(traffic.run());
    Ok(())
}

/// The `demo-partner` key's secret: created on first start with its own
/// limits (40/min, burst 8), re-issued (rotated) on later starts.
async fn partner_key(database_url: &str) -> anyhow::Result<String> {
    let db = Db::connect(database_url).await?;
    let filter = KeyFilter {
        name: Some(PARTNER_KEY.into()),
        limit: 100,
        ..KeyFilter::default()
    };
    let (existing, _) = db.list_keys(&filter).await?;
    let rotated = match existing.iter().find(|k| k.name == PARTNER_KEY) {
        Some(k) => db
            .rotate_key(k.id, Duration::ZERO)
            .await?
            .map(|(_, plain)| plain),
        None => None,
    };
    let key = match rotated {
        Some(k) => k,
        None => {
            let new = NewApiKey {
                name: PARTNER_KEY.into(),
                owner: Some("tollgate dev --demo-traffic".into()),
                limits: Some(vec![Limit {
                    name: "minute".into(),
                    rate: 40,
                    per: Duration::from_secs(60),
                    burst: Some(8),
                    cost: None,
                    quota: None,
                    scope: Default::default(),
                }]),
                ..NewApiKey::default()
            };
            db.create_key(&new).await?.1
        }
    };
    db.close().await;
    Ok(key)
}

struct Traffic {
    proxy: SocketAddr,
    key_header: String,
    demo: String,
    partner: String,
    unknown: String,
    rng: Rng,
}

enum Auth<'a> {
    None,
    Header(&'a str),
    Bearer(&'a str),
}

impl Traffic {
    async fn run(mut self) {
        // Let the proxy start and load the partner key.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // One of each answer first (200, 401, 403), so that a first look at
        // the dashboard shows every kind; the random mix follows.
        for auth in [
            Auth::Header(&self.demo),
            Auth::None,
            Auth::Header(&self.unknown),
        ] {
            self.send("GET", "/api/products", &auth).await;
        }
        let mut next_burst = Instant::now() + Duration::from_secs(self.rng.range(8, 15));
        let mut burst_no = 0u32;
        loop {
            if Instant::now() >= next_burst {
                self.burst(burst_no).await;
                burst_no = burst_no.wrapping_add(1);
                next_burst = Instant::now() + Duration::from_secs(self.rng.range(15, 40));
            }
            self.one().await;
            let pause = self.rng.range(250, 900);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    /// One request from the everyday mix.
    async fn one(&mut self) {
        let roll = self.rng.below(100);
        let id = self.rng.range(1, 5);
        let (method, path, auth) = match roll {
            0..=44 => {
                let path = match self.rng.below(6) {
                    0 | 1 => "/api/products".to_string(),
                    2 => format!("/api/products/{}", id.min(3)),
                    3 => "/api/users".to_string(),
                    4 => format!("/api/users/{id}"),
                    _ => "/api/orders".to_string(),
                };
                ("GET", path, Auth::Header(&self.demo))
            }
            45..=64 => {
                let path = if self.rng.below(3) == 0 {
                    format!("/api/orders/{}", id.min(2))
                } else {
                    "/api/orders".to_string()
                };
                ("GET", path, Auth::Header(&self.partner))
            }
            65..=69 => ("POST", "/api/orders".into(), Auth::Header(&self.partner)),
            70..=75 => ("GET", "/api/products".into(), Auth::Bearer(&self.partner)),
            76..=83 => ("GET", "/api/users".into(), Auth::None),
            84..=89 => ("GET", "/api/products".into(), Auth::Header(&self.unknown)),
            _ => ("GET", "/health".into(), Auth::None),
        };
        self.send(method, &path, &auth).await;
    }

    /// A quick run of requests that exceeds a limit: the demo key on the
    /// users route (10/s) or the partner key's order writes (5/s).
    async fn burst(&mut self, n: u32) {
        let (method, path, key, count) = if n.is_multiple_of(2) {
            ("GET", "/api/users", self.demo.clone(), 16)
        } else {
            ("POST", "/api/orders", self.partner.clone(), 12)
        };
        for _ in 0..count {
            self.send(method, path, &Auth::Header(&key)).await;
        }
    }

    async fn send(&self, method: &str, path: &str, auth: &Auth<'_>) {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tollgate-demo-traffic\r\nAccept: application/json\r\nConnection: close\r\n",
            self.proxy
        );
        match auth {
            Auth::None => {}
            Auth::Header(k) => head.push_str(&format!("{}: {k}\r\n", self.key_header)),
            Auth::Bearer(k) => head.push_str(&format!("Authorization: Bearer {k}\r\n")),
        }
        if method == "POST" {
            head.push_str("Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
        } else {
            head.push_str("\r\n");
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange(self.proxy, head.as_bytes())).await {
            Ok(Ok(status)) => tracing::trace!(%method, %path, status, "demo request"),
            Ok(Err(e)) => tracing::debug!(error = %e, "demo request failed"),
            Err(_) => tracing::debug!("demo request timed out"),
        }
    }
}

/// Send a request on a new connection, read the whole answer, return its status.
async fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut response = Vec::with_capacity(2048);
    stream.read_to_end(&mut response).await?;
    parse_status(&response)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status line"))
}

fn parse_status(response: &[u8]) -> Option<u16> {
    let line = response.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// xorshift64*: plenty for jitter, no dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        Self(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// In `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(
            parse_status(b"HTTP/1.1 429 Too Many Requests\r\n\r\n"),
            Some(429)
        );
        assert_eq!(parse_status(b"HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"garbage"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[test]
    fn rng_stays_in_range() {
        let mut r = Rng::seeded();
        for _ in 0..1000 {
            let v = r.range(250, 900);
            assert!((250..900).contains(&v));
        }
    }
}
