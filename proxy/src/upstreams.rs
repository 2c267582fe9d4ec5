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

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::lb::discovery::Static;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::upstreams::peer::HttpPeer;
use tollgate_core::config::{Target, Upstream, UpstreamProtocol};

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

/// Samples older than this do not count towards a target's latency.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(300);
/// At most this many recent samples are kept per target.
const LATENCY_SAMPLES: usize = 256;

/// The most recent response times of one target: (Unix ms, µs).
#[derive(Debug, Default)]
struct LatencyWindow {
    samples: VecDeque<(i64, u32)>,
}

impl LatencyWindow {
    fn push(&mut self, at_ms: i64, elapsed: Duration) {
        if self.samples.len() >= LATENCY_SAMPLES {
            self.samples.pop_front();
        }
        let us = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
        self.samples.push_back((at_ms, us));
    }

    /// Median (ms) and count of the samples taken since `since` (Unix ms).
    fn median_since(&self, since: i64) -> Option<(f64, u32)> {
        let mut recent: Vec<u32> = self
            .samples
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, us)| *us)
            .collect();
        if recent.is_empty() {
            return None;
        }
        recent.sort_unstable();
        let n = recent.len();
        let median_us = if n % 2 == 1 {
            f64::from(recent[n / 2])
        } else {
            (f64::from(recent[n / 2 - 1]) + f64::from(recent[n / 2])) / 2.0
        };
        Some((round_ms(median_us), u32::try_from(n).unwrap_or(u32::MAX)))
    }
}

/// µs → ms with three decimals.
fn round_ms(us: f64) -> f64 {
    us.round() / 1e3
}

/// What the health checks of one backend saw.
#[derive(Debug, Clone, PartialEq)]
struct CheckState {
    /// Unix ms of the last completed check.
    checked_at: Option<i64>,
    /// Round trip of the last check, if it passed.
    rtt: Option<Duration>,
    /// Why the last check failed.
    error: Option<String>,
    /// Pingora's verdict (it starts healthy and flips after enough
    /// consecutive results).
    healthy: bool,
    /// Unix ms of the first passing check since the target was last seen
    /// down (or since the pool was built).
    up_since: Option<i64>,
}

impl Default for CheckState {
    fn default() -> Self {
        Self {
            checked_at: None,
            rtt: None,
            error: None,
            healthy: true,
            up_since: None,
        }
    }
}

impl CheckState {
    /// One check completed at `now` (Unix ms).
    fn observe(&mut self, now: i64, rtt: Duration, error: Option<String>) {
        self.checked_at = Some(now);
        match error {
            None => {
                self.rtt = Some(rtt);
                self.error = None;
                if self.healthy && self.up_since.is_none() {
                    self.up_since = Some(now);
                }
            }
            Some(e) => {
                self.rtt = None;
                self.error = Some(e);
            }
        }
    }

    /// Pingora flipped the backend's health at `now`.
    fn flip(&mut self, healthy: bool, now: i64) {
        self.healthy = healthy;
        self.up_since = healthy.then_some(now);
    }
}

/// Pingora's HTTP health check, timed: every result lands in the pool's
/// [`CheckState`] of the backend.
struct TimedCheck {
    inner: HttpHealthCheck,
    checks: Arc<HashMap<SocketAddr, Mutex<CheckState>>>,
}

impl TimedCheck {
    fn state(&self, backend: &Backend) -> Option<&Mutex<CheckState>> {
        backend.addr.as_inet().and_then(|a| self.checks.get(a))
    }
}

#[async_trait]
impl HealthCheck for TimedCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let start = Instant::now();
        let result = self.inner.check(target).await;
        let rtt = start.elapsed();
        if let Some(state) = self.state(target) {
            let error = result.as_ref().err().map(|e| check_error(e));
            state.lock().observe(tollgate_core::now_ms(), rtt, error);
        }
        result
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if let Some(state) = self.state(target) {
            state.lock().flip(healthy, tollgate_core::now_ms());
        }
        self.inner.health_status_change(target, healthy).await;
    }

    fn backend_summary(&self, target: &Backend) -> String {
        self.inner.backend_summary(target)
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}

/// A failed check in a few words: `answered HTTP 503`, `ConnectRefused: …`.
fn check_error(e: &pingora::Error) -> String {
    if let pingora::ErrorType::CustomCode(_, code) = e.etype() {
        return format!("answered HTTP {code}");
    }
    // `ConnectRefused: Connection refused (os error 111)` rather than the
    // whole chain of contexts.
    let kind = e.etype().as_str();
    let root = e.root_cause().to_string();
    let root = root.trim();
    let text = if root.is_empty() || root.contains(kind) {
        e.to_string().trim().to_string()
    } else {
        format!("{kind}: {root}")
    };
    const MAX: usize = 200;
    if text.len() <= MAX {
        return text;
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
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
#[derive(Debug, Clone, PartialEq)]
pub struct TargetHealth {
    pub target: String,
    pub healthy: bool,
    /// Unix ms of the last health check (`None`: none ran yet, or none configured).
    pub checked_at: Option<i64>,
    /// Why the last health check failed.
    pub error: Option<String>,
    /// Round trip of the last passing health check, ms.
    pub check_latency_ms: Option<f64>,
    /// Unix ms since which the checks have seen it up without interruption.
    pub up_since: Option<i64>,
    /// Median time to the response header of the proxied requests of the
    /// last [`LATENCY_WINDOW`], ms, and how many requests that is.
    pub latency_ms: Option<f64>,
    pub latency_samples: u32,
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
mod tests {
    use super::*;

    fn upstream(yaml_targets: &[&str], health_check: bool) -> Upstream {
        let targets = yaml_targets
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let hc = if health_check {
            ", health_check: { path: /health, interval: 1s }"
        } else {
            ""
        };
        let yaml = format!(
            "upstreams:\n  u: {{ targets: [{targets}]{hc} }}\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    upstream: u\n    auth: none\n"
        );
        let cfg = tollgate_core::config::parse(&yaml, "t.yaml").expect("valid config");
        cfg.upstreams["u"].clone()
    }

    #[test]
    fn latency_is_the_median_of_recent_requests_per_target() {
        let pool = UpstreamPool::build(&upstream(&["127.0.0.1:1", "127.0.0.1:2"], false));
        let (a, b) = (
            pool.config.targets[0].clone(),
            pool.config.targets[1].clone(),
        );
        let now = 10_000_000;
        let old = now - 301_000;
        pool.record_response_at(0, Duration::from_millis(900), old);
        for ms in [3, 1, 2, 10] {
            pool.record_response_at(0, Duration::from_millis(ms), now - 1_000);
        }
        let h = pool.health_at(now);
        let ha = h.iter().find(|t| t.target == a.to_string()).expect("a");
        assert_eq!((ha.latency_ms, ha.latency_samples), (Some(2.5), 4));
        let hb = h.iter().find(|t| t.target == b.to_string()).expect("b");
        assert_eq!((hb.latency_ms, hb.latency_samples), (None, 0));
        // Without health checks nothing claims a check or an up-time.
        assert!(h
            .iter()
            .all(|t| t.checked_at.is_none() && t.up_since.is_none()));

        // The ring keeps the most recent samples only.
        for _ in 0..LATENCY_SAMPLES {
            pool.record_response_at(1, Duration::from_micros(1_500), now);
        }
        pool.record_response_at(1, Duration::from_secs(5), now);
        let h = pool.health_at(now);
        let hb = h.iter().find(|t| t.target == b.to_string()).expect("b");
        assert_eq!(hb.latency_samples as usize, LATENCY_SAMPLES);
        assert_eq!(hb.latency_ms, Some(1.5));

        // An index past the pool's targets is ignored.
        pool.record_response_at(2, Duration::from_millis(1), now);
    }

    #[test]
    fn a_pool_of_one_target_selects_it_without_the_balancer() {
        let one = UpstreamPool::build(&upstream(&["127.0.0.1:8080"], false));
        assert!(one.single.is_some());
        let (backend, picked) = one.select().expect("the target");
        assert_eq!(backend.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(picked.target.port, 8080);
        let two = UpstreamPool::build(&upstream(&["127.0.0.1:8080", "127.0.0.1:8081"], false));
        assert!(two.single.is_none());
        let ports: std::collections::BTreeSet<u16> = (0..4)
            .map(|_| two.select().expect("a target").1.target.port)
            .collect();
        assert_eq!(ports.len(), 2, "round robin over both");
    }

    #[test]
    fn the_host_header_is_built_once_per_target() {
        let pool = UpstreamPool::build(&upstream(
            &[
                "127.0.0.1:80",
                "127.0.0.1:8080",
                "https://127.0.0.1:443",
                "https://127.0.0.1:8443",
            ],
            false,
        ));
        let hosts: Vec<(usize, String)> = pool
            .targets
            .values()
            .map(|p| {
                let h = p.host_header.as_ref().expect("a header value");
                (p.index, h.to_str().expect("text").to_string())
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            hosts,
            vec![
                (0, "127.0.0.1".to_string()),
                (1, "127.0.0.1:8080".to_string()),
                (2, "127.0.0.1".to_string()),
                (3, "127.0.0.1:8443".to_string()),
            ]
        );
        let (_, picked) = pool.select().expect("a target");
        assert!(pool.targets.values().any(|p| Arc::ptr_eq(p, picked)));
    }

    #[test]
    fn up_since_follows_the_health_checks() {
        let mut s = CheckState::default();
        // First passing check: up since then.
        s.observe(1_000, Duration::from_micros(2_500), None);
        assert_eq!(
            (s.up_since, s.rtt, s.checked_at),
            (Some(1_000), Some(Duration::from_micros(2_500)), Some(1_000))
        );
        s.observe(2_000, Duration::from_millis(1), None);
        assert_eq!(s.up_since, Some(1_000), "still up since the first check");
        // A failure flips it down: no up-time, the error is kept.
        s.observe(3_000, Duration::from_secs(1), Some("refused".into()));
        s.flip(false, 3_000);
        assert_eq!(
            (s.up_since, s.rtt, s.error.as_deref()),
            (None, None, Some("refused"))
        );
        // Passing checks again: up since the flip back.
        s.observe(4_000, Duration::from_millis(1), None);
        assert_eq!(s.up_since, None, "Pingora has not flipped it back yet");
        s.flip(true, 4_000);
        assert_eq!((s.up_since, s.error.as_deref()), (Some(4_000), None));
    }

    #[tokio::test]
    async fn health_checks_are_timed_and_remembered() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let up = listener.local_addr().expect("addr");
        tokio::spawn(crate::demo::serve(listener));
        let down = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let pool = UpstreamPool::build(&upstream(&[&up.to_string(), &down.to_string()], true));
        let before = tollgate_core::now_ms();
        pool.run_health_check().await;
        let h = pool.health();
        let hu = h
            .iter()
            .find(|t| t.target.ends_with(&up.to_string()))
            .expect("up");
        assert!(hu.healthy);
        assert!(hu.checked_at.is_some_and(|t| t >= before), "{hu:?}");
        assert!(hu.check_latency_ms.is_some_and(|ms| ms > 0.0), "{hu:?}");
        assert!(hu.up_since.is_some_and(|t| t >= before), "{hu:?}");
        assert_eq!(hu.error, None);
        let hd = h
            .iter()
            .find(|t| t.target.ends_with(&down.to_string()))
            .expect("down");
        assert!(!hd.healthy);
        assert!(hd.checked_at.is_some());
        assert_eq!((hd.up_since, hd.check_latency_ms), (None, None));
        assert!(
            hd.error
                .as_deref()
                .is_some_and(|e| e.starts_with("ConnectRefused: ") && !e.contains("context")),
            "{hd:?}"
        );
        let first_up = hu.up_since;
        pool.run_health_check().await;
        let h = pool.health();
        let hu = h
            .iter()
            .find(|t| t.target.ends_with(&up.to_string()))
            .expect("up");
        assert_eq!(hu.up_since, first_up);
    }

    #[test]
    fn host_names_are_resolved_again_on_request() {
        let named = upstream(&["localhost:3001"], false);
        let literal = upstream(&["127.0.0.1:3001"], false);
        assert_eq!(named.resolve_interval, Duration::from_secs(30));
        let addrs = resolve(&named).expect("localhost resolves");
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 3001));
        let pool = UpstreamPool::build(&named);
        assert!(pool.has_host_names());
        assert_eq!(pool.addresses(), addrs);
        assert!(!UpstreamPool::build(&literal).has_host_names());

        let configs = std::collections::BTreeMap::from([
            ("a".to_string(), named.clone()),
            ("b".to_string(), literal.clone()),
        ]);
        let first = rebuild(&configs, None, &BTreeSet::new());
        let same = rebuild(&configs, Some(&first), &BTreeSet::new());
        assert!(Arc::ptr_eq(&first["a"], &same["a"]));
        let fresh = rebuild(&configs, Some(&first), &BTreeSet::from(["a".to_string()]));
        assert!(!Arc::ptr_eq(&first["a"], &fresh["a"]));
        assert!(Arc::ptr_eq(&first["b"], &fresh["b"]));

        let mut broken = named;
        broken.targets[0].host = "no-such-host.invalid".into();
        assert!(resolve(&broken).is_err());
    }
}
