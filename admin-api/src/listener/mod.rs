//! The admin API's listener: what `axum::serve` does, plus what an exposed
//! admin port needs.
//!
//! - `admin.header_timeout`: a client must send a whole request header in
//!   time (slowloris); the first one counts from accept, so a connection
//!   that sends nothing is closed then too ([`idle`]).
//! - `admin.idle_timeout`: a connection with nothing received or sent for
//!   that long is closed (silent and half-sent connections).
//! - `admin.max_connections`: connections beyond it are closed at accept, so
//!   idle sockets cannot use up the process's file descriptors.
//! - `admin.max_connections_per_ip`: one client address (IPv6: /64) holds at
//!   most that many of them, so it cannot lock everyone else out
//!   ([`per_ip`]); more are closed at accept.
//! - `Host` allow-list: a browser tricked by DNS rebinding sends the
//!   attacker's host name, so only `localhost`, IP literals (which cannot be
//!   rebound) and the names in `admin.allowed_hosts` are answered; anything
//!   else is 421 `host-not-allowed`.

mod idle;
mod per_ip;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tollgate_core::config::AdminConfig;
use tower::ServiceExt;

use crate::error::ApiError;

/// The hosts a request's `Host` may name.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    /// Lower case, `host` (any port) or `host:port`.
    names: Vec<String>,
}

impl AllowedHosts {
    pub fn new(configured: &[String]) -> Self {
        let mut names: Vec<String> = configured.iter().map(|h| h.to_ascii_lowercase()).collect();
        names.push("localhost".into());
        Self { names }
    }

    /// Whether `host` (a `Host` header value or URI authority) is answered.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return false;
        }
        let (name, has_port) = split_port(&host);
        // IP literals cannot be the target of DNS rebinding.
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<std::net::IpAddr>().is_ok() {
            return true;
        }
        let name = name.trim_end_matches('.');
        self.names.iter().any(|allowed| {
            let (a_name, a_port) = split_port(allowed);
            if a_port {
                allowed == &host || (has_port && host.trim_end_matches('.') == allowed.as_str())
            } else {
                a_name == name
            }
        })
    }
}

/// (`host` without port, whether a port was given).
fn split_port(h: &str) -> (&str, bool) {
    if let Some(rest) = h.strip_prefix('[') {
        return match rest.find(']') {
            Some(i) => (&h[..i + 2], h.len() > i + 2),
            None => (h, false),
        };
    }
    match h.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            (name, true)
        }
        _ => (h, false),
    }
}

/// Middleware: refuse requests whose `Host` or target authority (absolute-form
/// HTTP/1 target, HTTP/2 `:authority`) is not allowed by the current
/// `admin.allowed_hosts`. Every name the request carries must pass; more
/// than one `Host` header is 400.
pub async fn check_host(State(live): State<Live>, req: Request, next: Next) -> Response {
    let hosts = &live.load().hosts;
    let mut host_headers = req.headers().get_all(axum::http::header::HOST).iter();
    let header = host_headers.next();
    if host_headers.next().is_some() {
        crate::metrics::host_refused();
        return ApiError::malformed(Some("Host"), "the request has more than one Host header")
            .into_response();
    }
    let header = match header.map(|v| v.to_str()) {
        Some(Ok(h)) => Some(h.to_string()),
        Some(Err(_)) => {
            crate::metrics::host_refused();
            return ApiError::malformed(Some("Host"), "the Host header is not visible ASCII")
                .into_response();
        }
        None => None,
    };
    let authority = req.uri().authority().map(|a| a.to_string());
    let names: Vec<String> = header.into_iter().chain(authority).collect();
    if names.is_empty() {
        crate::metrics::host_refused();
        return ApiError::malformed(Some("Host"), "the request has no Host header").into_response();
    }
    if let Some(h) = names.iter().find(|h| !hosts.allows(h)) {
        crate::metrics::host_refused();
        let shown: String = h.chars().take(100).collect();
        return ApiError::HostNotAllowed(format!(
            "this admin API does not answer for host {shown:?}; add it to admin.allowed_hosts"
        ))
        .into_response();
    }
    next.run(req).await
}

/// The listener's options as the config now says: read at each accept and
/// each request, swapped by a reload (`AppState::set_config`).
pub type Live = Arc<ArcSwap<Options>>;

/// What the listener enforces.
#[derive(Debug, Clone)]
pub struct Options {
    pub hosts: AllowedHosts,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// 0: no cap.
    pub max_connections_per_ip: u32,
}

impl Options {
    pub fn from_config(c: &AdminConfig) -> Self {
        Self {
            hosts: AllowedHosts::new(&c.allowed_hosts),
            header_timeout: c.header_timeout,
            idle_timeout: c.idle_timeout,
            max_connections: c.max_connections,
            max_connections_per_ip: c.max_connections_per_ip,
        }
    }
}

/// Open connections, against `admin.max_connections` as it is at accept.
#[derive(Debug, Default)]
struct Open(AtomicUsize);

/// One open connection, given back when dropped.
struct Counted(Arc<Open>);

impl Open {
    fn admit(self: &Arc<Self>, max: usize) -> Option<Counted> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max.max(1)).then_some(n + 1)
            })
            .ok()
            .map(|_| Counted(self.clone()))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serve `app` until `shutdown`, then let the connections in flight finish
/// (at most 10 s). The options are read at each accept (a reload applies to
/// the connections accepted after it).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    live: Live,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open = Arc::new(Open::default());
    let per_ip = per_ip::PerIp::new(live.load().max_connections_per_ip);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "admin API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let opts = live.load_full();
        per_ip.set_cap(opts.max_connections_per_ip);
        // The address's own cap first: a client at it takes no global slot.
        let Some(ip_slot) = per_ip.admit(peer.ip()) else {
            crate::metrics::connection_refused("per_ip_cap");
            drop(stream);
            continue;
        };
        let Some(permit) = open.admit(opts.max_connections) else {
            crate::metrics::connection_refused("max_connections");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Set when the first request header is in: the end of the header
        // deadline counted from accept (`idle::IdleIo`).
        let header_done = Arc::new(AtomicBool::new(false));
        let done = header_done.clone();
        let svc =
            app.clone()
                .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    done.store(true, Ordering::Release);
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                });
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let header_timeout = opts.header_timeout;
        let io = TokioIo::new(idle::IdleIo::new(
            stream,
            opts.idle_timeout,
            header_timeout,
            header_done,
        ));
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slots = (permit, ip_slot);
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            builder.http2().timer(TokioTimer::new());
            let conn = builder.serve_connection_with_upgrades(io, svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, %peer, "admin API connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("admin API connections still open after 10 s; closing them");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let h = AllowedHosts::new(&["admin.example.com".into(), "ops.example:8443".into()]);
        for ok in [
            "localhost",
            "localhost:8081",
            "LOCALHOST:1",
            "127.0.0.1:8081",
            "10.1.2.3",
            "[::1]:8081",
            "admin.example.com",
            "admin.example.com:443",
            "ops.example:8443",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8081",
            "localhost.evil.example",
            "ops.example:9999",
            "ops.example",
            "",
            "user@localhost",
            "127.0.0.1.nip.io",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
    }
}
