//! Upstream pools: round robin over an upstream's targets, with active health
//! checks run by the `health_checks` task in `crate::background`.
//!
//! `https://` targets are reached over TLS with SNI and certificate
//! verification, against the system roots or the upstream's `tls.ca_file`.
//! Pingora pools upstream connections by the peer's hash (address, scheme,
//! SNI, verification flags, group key): [`UpstreamPool::peer`] builds the same
//! peer for the same target every time, so connections are reused, and puts
//! the CA file's digest in the group key so that a changed CA never reuses a
//! connection verified against the old one.
//!
//! What the Monitoring page shows per target comes from here too
//! ([`UpstreamPool::health`]): the health check is wrapped ([`TimedCheck`]) to
//! keep, per backend, when it last ran, its round trip, why it failed and
//! since when the target has been up; and [`UpstreamPool::record_response`]
//! takes the time to the response header of every proxied request (a small
//! ring of recent samples per target, one short lock) for a median latency.

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pingora::lb::discovery::Static;
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::upstreams::peer::HttpPeer;
use tollgate_core::config::{Target, Upstream, UpstreamProtocol};

use crate::tls::{self, UpstreamCa};

mod health;

use health::{round_ms, CheckState, LatencyWindow, TimedCheck};
pub use health::{TargetHealth, LATENCY_WINDOW};

/// What `https://` targets of one upstream are verified against.
#[derive(Debug)]
enum Trust {
    /// The system's roots (Pingora's connector loads them once).
    System,
    /// `tls.ca_file`.
    Ca(UpstreamCa),
    /// `tls.ca_file` could not be read: every TLS connection is refused
    /// (fail closed, never fall back to the system roots).
    Unusable,
}

/// A configured target as the request path uses it, built once per config:
/// shared by every request sent to it (no copy per request).
#[derive(Debug)]
pub struct Picked {
    pub target: Target,
    /// Its place in `config.targets` (its latency window).
    index: usize,
    /// The `Host` the target is sent when the upstream does not preserve
    /// the client's: `host`, or `host:port` off the scheme's default port.
    /// `None` if that is no header value (the request then fails as before).
    pub host_header: Option<http::HeaderValue>,
}

impl Picked {
    fn new(target: &Target, index: usize) -> Self {
        let default_port = if target.tls { 443 } else { 80 };
        let host = if target.port == default_port {
            target.host.clone()
        } else {
            target.authority()
        };
        Self {
            target: target.clone(),
            index,
            host_header: http::HeaderValue::try_from(host).ok(),
        }
    }
}

pub struct UpstreamPool {
    pub config: Upstream,
    lb: LoadBalancer<RoundRobin>,
    /// Resolved address → the target it came from (for TLS/SNI and Host).
    targets: HashMap<SocketAddr, Arc<Picked>>,
    /// The one backend of a pool that has one (most): chosen without the
    /// balancer's iteration and hashing.
    single: Option<(Backend, Arc<Picked>)>,
    trust: Trust,
    /// What the health checks saw, per resolved address (shared with the
    /// [`TimedCheck`] Pingora runs).
    checks: Arc<HashMap<SocketAddr, Mutex<CheckState>>>,
    /// Response times of proxied requests, per configured target (same order
    /// as `config.targets`).
    latency: Vec<Mutex<LatencyWindow>>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("name", &self.config.name)
            .field("targets", &self.targets.len())
            .finish()
    }
}

impl UpstreamPool {
    /// Resolve targets and build the balancer. Unresolvable targets are logged
    /// and left out (a later reload retries them).
    pub fn build(config: &Upstream) -> Self {
        let mut backends = BTreeSet::new();
        let mut targets = HashMap::new();
        for (index, target) in config.targets.iter().enumerate() {
            match resolve_target(target) {
                Ok(addrs) => {
                    let picked = Arc::new(Picked::new(target, index));
                    for addr in addrs {
                        if let Ok(b) = Backend::new(&addr.to_string()) {
                            backends.insert(b);
                            targets.insert(addr, picked.clone());
                        }
                    }
                }
                Err(e) => tracing::error!(
                    upstream = %config.name, %target, "cannot resolve upstream target: {e}"
                ),
            }
        }
        let trust = match &config.tls.ca_file {
            None => Trust::System,
            Some(path) => {
                let setting = format!("upstreams.{}.tls.ca_file", config.name);
                match tls::load_ca_file(&setting, path) {
                    Ok(ca) => Trust::Ca(ca),
                    Err(e) => {
                        tracing::error!(
                            upstream = %config.name,
                            "TLS connections to this upstream are refused: {e}"
                        );
                        Trust::Unusable
                    }
                }
            }
        };
        let checks: Arc<HashMap<SocketAddr, Mutex<CheckState>>> = Arc::new(
            targets
                .keys()
                .map(|a| (*a, Mutex::new(CheckState::default())))
                .collect(),
        );
        let latency = config
            .targets
            .iter()
            .map(|_| Mutex::new(LatencyWindow::default()))
            .collect();
        let mut backends_set = Backends::new(Static::new(backends));
        if let Some(hc) = &config.health_check {
            let first = config.targets.first();
            let host = first.map(|t| t.host.clone()).unwrap_or_default();
            let tls = first.is_some_and(|t| t.tls);
            let mut check = HttpHealthCheck::new(&host, tls);
            if let Ok(req) = pingora::http::RequestHeader::build("GET", hc.path.as_bytes(), None) {
                let mut req = req;
                let _ = req.insert_header("Host", host.as_str());
                let _ = req.insert_header("User-Agent", "tollgate-health-check");
                check.req = req;
            }
            if tls {
                apply_tls(&mut check.peer_template, config, &trust, &host);
            }
            apply_protocol(&mut check.peer_template, config.protocol);
            check.peer_template.options.connection_timeout = Some(config.timeouts.connect);
            check.peer_template.options.read_timeout =
                Some(hc.interval.min(Duration::from_secs(2)));
            backends_set.set_health_check(Box::new(TimedCheck {
                inner: check,
                checks: checks.clone(),
            }));
        }
        let lb = LoadBalancer::from_backends(backends_set);
        // Static discovery never blocks or fails; a failure here only means no targets.
        if let Some(Err(e)) = futures_now(lb.update()) {
            tracing::error!(upstream = %config.name, "cannot initialise upstream: {e}");
        }
        let set = lb.backends().get_backend();
        let single = match (set.len(), set.iter().next()) {
            (1, Some(only)) => only
                .addr
                .as_inet()
                .and_then(|a| targets.get(a))
                .map(|p| (only.clone(), p.clone())),
            _ => None,
        };
        Self {
            config: config.clone(),
            lb,
            targets,
            single,
            trust,
            checks,
            latency,
        }
    }

    /// Whether the CA file (if any) still holds what was loaded.
    fn trust_is_current(&self) -> bool {
        match (&self.trust, &self.config.tls.ca_file) {
            (Trust::System, None) => true,
            (Trust::Ca(ca), Some(path)) => tls::file_sha(path) == Some(ca.sha),
            _ => false,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The addresses the targets resolved to when the pool was built.
    pub fn addresses(&self) -> BTreeSet<SocketAddr> {
        self.targets.keys().copied().collect()
    }

    /// Whether any target is a host name (not an IP address), i.e. worth
    /// resolving again every `resolve_interval`.
    pub fn has_host_names(&self) -> bool {
        self.config
            .targets
            .iter()
            .any(|t| t.host.parse::<std::net::IpAddr>().is_err())
    }

    /// The next healthy target, round robin.
    pub fn select(&self) -> Option<(Backend, &Arc<Picked>)> {
        if let Some((backend, picked)) = &self.single {
            // A health check can still take it out.
            let up = self.config.health_check.is_none() || self.lb.backends().ready(backend);
            return up.then(|| (backend.clone(), picked));
        }
        let backend = self.lb.select(b"", 256)?;
        let addr = backend.addr.as_inet()?;
        let target = self.targets.get(addr)?;
        Some((backend.clone(), target))
    }

    /// Build the peer for one selected target.
    pub fn peer(&self, backend: &Backend, target: &Target) -> HttpPeer {
        let mut peer = HttpPeer::new(backend.addr.clone(), target.tls, String::new());
        if target.tls {
            apply_tls(&mut peer, &self.config, &self.trust, &target.host);
        }
        apply_protocol(&mut peer, self.config.protocol);
        let t = &self.config.timeouts;
        peer.options.connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        peer
    }

    /// Note the time a proxied request to `target` took to its response
    /// header, at `at_ms` (called from the proxy's response filter; one
    /// short lock).
    pub fn record_response(&self, picked: &Picked, elapsed: Duration, at_ms: i64) {
        self.record_response_at(picked.index, elapsed, at_ms);
    }

    fn record_response_at(&self, index: usize, elapsed: Duration, at_ms: i64) {
        if let Some(window) = self.latency.get(index) {
            window.lock().push(at_ms, elapsed);
        }
    }

    pub async fn run_health_check(&self) {
        if self.config.health_check.is_some() {
            self.lb.backends().run_health_check(true).await;
        }
    }

    pub fn health(&self) -> Vec<TargetHealth> {
        self.health_at(tollgate_core::now_ms())
    }

    fn health_at(&self, now_ms: i64) -> Vec<TargetHealth> {
        let since = now_ms - i64::try_from(LATENCY_WINDOW.as_millis()).unwrap_or(i64::MAX);
        let latency: Vec<Option<(f64, u32)>> = self
            .latency
            .iter()
            .map(|w| w.lock().median_since(since))
            .collect();
        let backends = self.lb.backends();
        let mut out: Vec<TargetHealth> = backends
            .get_backend()
            .iter()
            .map(|b| {
                let addr = b.addr.as_inet();
                let target = addr.and_then(|a| self.targets.get(a));
                let check = addr
                    .and_then(|a| self.checks.get(a))
                    .map(|s| s.lock().clone())
                    .filter(|_| self.config.health_check.is_some())
                    .unwrap_or_default();
                let traffic = target.and_then(|t| latency.get(t.index).copied().flatten());
                TargetHealth {
                    target: target
                        .map(|t| t.target.to_string())
                        .unwrap_or_else(|| b.addr.to_string()),
                    healthy: backends.ready(b),
                    checked_at: check.checked_at,
                    error: check.error,
                    check_latency_ms: check.rtt.map(|d| round_ms(d.as_micros() as f64)),
                    up_since: check.up_since,
                    latency_ms: traffic.map(|(ms, _)| ms),
                    latency_samples: traffic.map_or(0, |(_, n)| n),
                }
            })
            .collect();
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }
}

/// SNI (the target's host unless `tls.sni` is set), verification and CA of a
/// TLS peer.
fn apply_tls(peer: &mut HttpPeer, config: &Upstream, trust: &Trust, host: &str) {
    peer.sni = config.tls.sni.clone().unwrap_or_else(|| host.to_string());
    peer.options.verify_cert = config.tls.verify;
    peer.options.verify_hostname = config.tls.verify;
    match trust {
        Trust::System => {}
        Trust::Ca(ca) => {
            peer.options.ca = Some(ca.certs.clone());
            peer.group_key = ca.group_key();
        }
        // Pingora refuses to connect with an empty CA list.
        Trust::Unusable => peer.options.ca = Some(Arc::from(Vec::new())),
    }
}

/// The HTTP version spoken to the targets: h2c is HTTP/2 by prior
/// knowledge (no TLS, so no ALPN: Pingora trusts the peer's minimum
/// version), h2 offers only `h2` in the TLS handshake (a target that does
/// not agree fails, never falls back to HTTP/1.1 that gRPC cannot use).
fn apply_protocol(peer: &mut HttpPeer, protocol: UpstreamProtocol) {
    match protocol {
        UpstreamProtocol::H1 => {}
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => peer.options.set_http_version(2, 2),
    }
}

/// The addresses one target resolves to (blocking: DNS), unless a test put
/// its host name in [`testing::set_host`]'s table.
fn resolve_target(target: &Target) -> std::io::Result<Vec<SocketAddr>> {
    if let Some(ips) = testing::lookup(&target.host) {
        return Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, target.port))
            .collect());
    }
    Ok(target.authority().to_socket_addrs()?.collect())
}

/// The tests' hosts table in front of DNS (`tollgate_core::net::test_hosts`).
#[doc(hidden)]
pub use tollgate_core::net::test_hosts as testing;

/// Resolve every target of an upstream (blocking: DNS). An error if any
/// target does not resolve, so that a DNS hiccup never shrinks a pool.
pub fn resolve(config: &Upstream) -> Result<BTreeSet<SocketAddr>, String> {
    let mut out = BTreeSet::new();
    for target in &config.targets {
        let addrs = resolve_target(target).map_err(|e| format!("{target}: {e}"))?;
        if addrs.is_empty() {
            return Err(format!("{target}: no address"));
        }
        out.extend(addrs);
    }
    Ok(out)
}

/// Poll a future once: static discovery resolves immediately.
fn futures_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Build pools for a new config, reusing unchanged ones (they keep their
/// health state). A pool whose CA file changed is rebuilt.
/// Pools named in `fresh` are rebuilt in any case (their addresses changed).
pub fn rebuild(
    upstreams: &std::collections::BTreeMap<String, Upstream>,
    previous: Option<&HashMap<String, Arc<UpstreamPool>>>,
    fresh: &BTreeSet<String>,
) -> HashMap<String, Arc<UpstreamPool>> {
    upstreams
        .iter()
        .map(|(name, cfg)| {
            let reused = previous
                .and_then(|p| p.get(name))
                .filter(|_| !fresh.contains(name))
                .filter(|pool| pool.config == *cfg && pool.trust_is_current())
                .cloned();
            (
                name.clone(),
                reused.unwrap_or_else(|| Arc::new(UpstreamPool::build(cfg))),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
