//! WebSockets (`routes[].websocket`): which requests are WebSocket
//! handshakes (RFC 6455 §4.1), and the registry of open upgraded
//! connections by key, so that a key disabled, expired or deleted, or whose
//! scopes or `allowed_ips` no longer allow the route or address, closes its
//! WebSockets (checked every `proxy.websocket_key_check`). The key, its
//! limits and its `concurrency` are checked on the upgrade request like on
//! any request; the concurrency hold lives as long as the connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use http::header::{CONNECTION, UPGRADE};
use parking_lot::Mutex;
use pingora::http::RequestHeader;
use prometheus::{register_int_counter, register_int_gauge, IntCounter, IntGauge};
use tollgate_core::keys::KeyHash;

use crate::conn_end::ConnEnd;

#[allow(clippy::expect_used)]
static OPEN: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tollgate_websockets_open",
        "Upgraded WebSocket connections open on keyed routes"
    )
    .expect("metric tollgate_websockets_open registers once")
});

#[allow(clippy::expect_used)]
static REVOKED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tollgate_websockets_revoked_total",
        "WebSocket connections closed because their key was disabled, expired, deleted or restricted"
    )
    .expect("metric tollgate_websockets_revoked_total registers once")
});

/// Whether a header's comma-separated tokens include `token` (any case).
fn has_token(req: &RequestHeader, name: http::header::HeaderName, token: &str) -> bool {
    req.headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// An HTTP/1.1 `GET` asking to become a WebSocket: `Upgrade: websocket`,
/// `Connection: upgrade`, a `Sec-WebSocket-Key` and version 13.
pub fn is_handshake(req: &RequestHeader) -> bool {
    req.version == http::Version::HTTP_11
        && req.method == http::Method::GET
        && has_token(req, UPGRADE, "websocket")
        && has_token(req, CONNECTION, "upgrade")
        && req
            .headers
            .get("sec-websocket-key")
            .is_some_and(|v| !v.is_empty())
        && req
            .headers
            .get("sec-websocket-version")
            .is_some_and(|v| v.as_bytes() == b"13")
}

/// One open WebSocket: what its upgrade was let through for.
pub struct Open {
    pub key: KeyHash,
    /// The route it was opened on (its name).
    pub route: String,
    /// The client address it was opened from.
    pub client: IpAddr,
    close: Arc<ConnEnd>,
}

/// The open WebSockets of keyed routes.
#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Open>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("open", &self.open.lock().len())
            .finish()
    }
}

/// One open WebSocket in the registry; dropping it (the connection ended)
/// takes it out.
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.registry.open.lock().remove(&self.id).is_some() {
            OPEN.dec();
        }
    }
}

impl Registry {
    /// Record a WebSocket opened with `key` on `route` from `client`;
    /// `close` ends its connection.
    pub fn register(
        self: &Arc<Self>,
        key: KeyHash,
        route: &str,
        client: IpAddr,
        close: Arc<ConnEnd>,
    ) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let open = Open {
            key,
            route: route.to_string(),
            client,
            close,
        };
        self.open.lock().insert(id, open);
        OPEN.inc();
        Registration {
            registry: self.clone(),
            id,
        }
    }

    /// Close every WebSocket `allowed` no longer lets through; how many.
    pub fn close_revoked(&self, allowed: impl Fn(&Open) -> bool) -> usize {
        let mut open = self.open.lock();
        let gone: Vec<u64> = open
            .iter()
            .filter(|(_, o)| !allowed(o))
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            if let Some(o) = open.remove(id) {
                // A flag: the connection ends even if its edge is not
                // waiting at this instant.
                o.close.end();
                OPEN.dec();
                REVOKED.inc();
            }
        }
        gone.len()
    }

    pub fn len(&self) -> usize {
        self.open.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/ws", None).expect("req");
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).expect("header");
        }
        r
    }

    const GOOD: [(&str, &str); 4] = [
        ("Upgrade", "websocket"),
        ("Connection", "keep-alive, Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];

    #[test]
    fn only_a_complete_websocket_handshake_counts() {
        assert!(is_handshake(&req(&GOOD)));
        assert!(is_handshake(&req(&[
            ("upgrade", "WebSocket"),
            ("connection", "upgrade"),
            ("sec-websocket-key", "x"),
            ("sec-websocket-version", "13"),
        ])));
        for (drop, without) in GOOD.iter().enumerate() {
            let partial: Vec<_> = GOOD
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, h)| *h)
                .collect();
            assert!(!is_handshake(&req(&partial)), "without {without:?}");
        }
        let mut h2c = GOOD;
        h2c[0] = ("Upgrade", "h2c");
        assert!(!is_handshake(&req(&h2c)));
        let mut v8 = GOOD;
        v8[3] = ("Sec-WebSocket-Version", "8");
        assert!(!is_handshake(&req(&v8)));
        let mut post = req(&GOOD);
        post.set_method(http::Method::POST);
        assert!(!is_handshake(&post));
        let mut h10 = req(&GOOD);
        h10.set_version(http::Version::HTTP_10);
        assert!(!is_handshake(&h10));
    }

    #[tokio::test]
    async fn revoked_keys_close_their_connections_and_drops_deregister() {
        let reg = Arc::new(Registry::default());
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let (ca, cb) = (Arc::new(ConnEnd::default()), Arc::new(ConnEnd::default()));
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let ra = reg.register(a, "chat", ip, ca.clone());
        let rb = reg.register(b, "feed", ip, cb.clone());
        assert_eq!(reg.len(), 2);
        // The check sees what each was opened for.
        assert_eq!(
            reg.close_revoked(|o| o.key != a && o.route == "feed" && o.client == ip),
            1
        );
        assert!(ca.is_ended() && !cb.is_ended());
        assert_eq!(reg.len(), 1);
        drop(ra);
        drop(rb);
        assert!(reg.is_empty());
        assert_eq!(reg.close_revoked(|_| false), 0);
    }
}
