//! What the health checks and proxied requests saw of each target: the
//! check wrapped to keep when it last ran, its round trip and why it failed
//! ([`TimedCheck`]), and a small ring of recent response times per target
//! ([`LatencyWindow`]); read as [`TargetHealth`] by the Monitoring page.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
use pingora::lb::Backend;

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

/// Samples older than this do not count towards a target's latency.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(300);
/// At most this many recent samples are kept per target.
pub(super) const LATENCY_SAMPLES: usize = 256;

/// The most recent response times of one target: (Unix ms, µs).
#[derive(Debug, Default)]
pub(super) struct LatencyWindow {
    samples: VecDeque<(i64, u32)>,
}

impl LatencyWindow {
    pub(super) fn push(&mut self, at_ms: i64, elapsed: Duration) {
        if self.samples.len() >= LATENCY_SAMPLES {
            self.samples.pop_front();
        }
        let us = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
        self.samples.push_back((at_ms, us));
    }

    /// Median (ms) and count of the samples taken since `since` (Unix ms).
    pub(super) fn median_since(&self, since: i64) -> Option<(f64, u32)> {
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
pub(super) fn round_ms(us: f64) -> f64 {
    us.round() / 1e3
}

/// What the health checks of one backend saw.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CheckState {
    /// Unix ms of the last completed check.
    pub(super) checked_at: Option<i64>,
    /// Round trip of the last check, if it passed.
    pub(super) rtt: Option<Duration>,
    /// Why the last check failed.
    pub(super) error: Option<String>,
    /// Pingora's verdict (it starts healthy and flips after enough
    /// consecutive results).
    healthy: bool,
    /// Unix ms of the first passing check since the target was last seen
    /// down (or since the pool was built).
    pub(super) up_since: Option<i64>,
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
    pub(super) fn observe(&mut self, now: i64, rtt: Duration, error: Option<String>) {
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
    pub(super) fn flip(&mut self, healthy: bool, now: i64) {
        self.healthy = healthy;
        self.up_since = healthy.then_some(now);
    }
}

/// Pingora's HTTP health check, timed: every result lands in the pool's
/// [`CheckState`] of the backend.
pub(super) struct TimedCheck {
    pub(super) inner: HttpHealthCheck,
    pub(super) checks: Arc<HashMap<SocketAddr, Mutex<CheckState>>>,
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
pub(super) fn check_error(e: &pingora::Error) -> String {
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
