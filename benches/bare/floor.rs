//! `bare-pingora --floor KEY`: the least work any API-key gateway has to do
//! per request, written plainly on Pingora's own API, with nothing else —
//! no edge checks, routing, config snapshot, metrics, usage or structure.
//! It is the lower bound of what Tollgate's request path can cost over a
//! pass-through, so that the gap to bare Pingora can be split into work
//! every gateway does and work Tollgate adds (benches/RESULTS.md).
//!
//! Per request: the key header is read and hashed (SHA-256) and compared
//! with the one known key's hash (else 401); one token is taken from an
//! in-process bucket (else 429); the key header is removed and
//! `X-Forwarded-For`, `X-Request-Id` and a key id header are set on the way
//! up; a `RateLimit` header and `X-Request-Id` are set on the way down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use sha2::{Digest, Sha256};

/// A token bucket: `rate` tokens per second, at most `rate` stored.
struct Bucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Take one token: the tokens left, or `None` when there is none.
    fn take(&self) -> Option<u64> {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let tokens = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.rate);
        s.1 = now;
        if tokens < 1.0 {
            s.0 = tokens;
            return None;
        }
        s.0 = tokens - 1.0;
        Some(s.0 as u64)
    }
}

pub struct Floor {
    pub upstream: SocketAddr,
    pub timeouts: bool,
    key_hash: [u8; 32],
    bucket: Bucket,
    next_id: AtomicU64,
}

impl Floor {
    pub fn new(upstream: SocketAddr, timeouts: bool, key: &str) -> Self {
        Self {
            upstream,
            timeouts,
            key_hash: Sha256::digest(key.as_bytes()).into(),
            bucket: Bucket::new(1e9),
            next_id: AtomicU64::new(1),
        }
    }
}

#[derive(Default)]
pub struct Ctx {
    request_id: String,
    remaining: u64,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let known = session
            .req_header()
            .headers
            .get("x-api-key")
            .is_some_and(|v| <[u8; 32]>::from(Sha256::digest(v.as_bytes())) == self.key_hash);
        if !known {
            session.respond_error(401).await?;
            return Ok(true);
        }
        let Some(remaining) = self.bucket.take() else {
            session.respond_error(429).await?;
            return Ok(true);
        };
        ctx.remaining = remaining;
        ctx.request_id = format!("{:016x}", self.next_id.fetch_add(1, Ordering::Relaxed));
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        if self.timeouts {
            peer.options.connection_timeout = Some(Duration::from_secs(2));
            peer.options.read_timeout = Some(Duration::from_secs(30));
            peer.options.write_timeout = Some(Duration::from_secs(30));
            peer.options.idle_timeout = Some(Duration::from_secs(60));
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream_request.remove_header("x-api-key");
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        upstream_request.insert_header("X-Forwarded-For", client)?;
        upstream_request.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        upstream_request.insert_header("X-Key-Id", "1")?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream_response
            .insert_header("RateLimit", format!("\"second\";r={};t=1", ctx.remaining))?;
        upstream_response.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        Ok(())
    }
}
