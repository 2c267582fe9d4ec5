//! Upstream pools: round robin over an upstream's targets, with active health
//! checks run by [`crate::background::HealthChecker`].
//!
//! `https://` targets are reached over TLS with SNI and certificate
//! verification, against the system roots or the upstream's `tls.ca_file`.
//! Pingora pools upstream connections by the peer's hash (address, scheme,
//! SNI, verification flags, group key): [`UpstreamPool::peer`] builds the same
//! peer for the same target every time, so connections are reused, and puts
//! the CA file's digest in the group key so that a changed CA never reuses a
//! connection verified against the old one.

use std::collections::{BTreeSet, HashMap};
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use pingora::lb::discovery::Static;
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::upstreams::peer::HttpPeer;
use tollgate_core::config::{Target, Upstream};

use crate::tls::{self, UpstreamCa};

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

pub struct UpstreamPool {
    pub config: Upstream,
    lb: LoadBalancer<RoundRobin>,
    /// Resolved address → the target it came from (for TLS/SNI and Host).
    targets: HashMap<std::net::SocketAddr, Target>,
    trust: Trust,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("name", &self.config.name)
            .field("targets", &self.targets.len())
            .finish()
    }
}

/// Health of one target as the proxy last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    pub target: String,
    pub healthy: bool,
}

impl UpstreamPool {
    /// Resolve targets and build the balancer. Unresolvable targets are logged
    /// and left out (a later reload retries them).
    pub fn build(config: &Upstream) -> Self {
        let mut backends = BTreeSet::new();
        let mut targets = HashMap::new();
        for target in &config.targets {
            match target.authority().to_socket_addrs() {
                Ok(addrs) => {
                    for addr in addrs {
                        if let Ok(b) = Backend::new(&addr.to_string()) {
                            backends.insert(b);
                            targets.insert(addr, target.clone());
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
            check.peer_template.options.connection_timeout = Some(config.timeouts.connect);
            check.peer_template.options.read_timeout =
                Some(hc.interval.min(Duration::from_secs(2)));
            backends_set.set_health_check(Box::new(check));
        }
        let lb = LoadBalancer::from_backends(backends_set);
        // Static discovery never blocks or fails; a failure here only means no targets.
        if let Some(Err(e)) = futures_now(lb.update()) {
            tracing::error!(upstream = %config.name, "cannot initialise upstream: {e}");
        }
        Self {
            config: config.clone(),
            lb,
            targets,
            trust,
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

    /// The next healthy target, round robin.
    pub fn select(&self) -> Option<(Backend, &Target)> {
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
        let t = &self.config.timeouts;
        peer.options.connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        peer
    }

    pub async fn run_health_check(&self) {
        if self.config.health_check.is_some() {
            self.lb.backends().run_health_check(true).await;
        }
    }

    pub fn health(&self) -> Vec<TargetHealth> {
        let backends = self.lb.backends();
        let mut out: Vec<TargetHealth> = backends
            .get_backend()
            .iter()
            .map(|b| TargetHealth {
                target: b
                    .addr
                    .as_inet()
                    .and_then(|a| self.targets.get(a))
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| b.addr.to_string()),
                healthy: backends.ready(b),
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
pub fn rebuild(
    upstreams: &std::collections::BTreeMap<String, Upstream>,
    previous: Option<&HashMap<String, Arc<UpstreamPool>>>,
) -> HashMap<String, Arc<UpstreamPool>> {
    upstreams
        .iter()
        .map(|(name, cfg)| {
            let reused = previous
                .and_then(|p| p.get(name))
                .filter(|pool| pool.config == *cfg && pool.trust_is_current())
                .cloned();
            (
                name.clone(),
                reused.unwrap_or_else(|| Arc::new(UpstreamPool::build(cfg))),
            )
        })
        .collect()
}
