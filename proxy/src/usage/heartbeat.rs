//! This instance's row in `instances`: its id, address, version, own figures
//! since start and what its health checks see (taken from the upstream
//! pools by [`ConfigState::upstream_health`](crate::state::ConfigState::upstream_health)),
//! written by the flusher at every tick (an upsert of absolute values: a
//! retry never counts twice).

use std::time::{Duration, Instant};

use tollgate_core::db::instances::Heartbeat;

use super::recorder::UsageRecorder;
use crate::state::State;

/// This process's identity in `instances`: its id and start time, made
/// once (the start-up claim of a local proxy's name and the flusher's
/// heartbeats write the same row).
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub started_at: i64,
}

impl Instance {
    pub fn new() -> Self {
        Self {
            id: instance_id(),
            started_at: tollgate_core::now_ms(),
        }
    }

    /// The first heartbeat, before the proxy listens: it claims `counter`;
    /// `beat_every`: its heartbeat period (`usage.flush_interval`).
    pub fn claim(&self, counter: &str, address: &str, beat_every: Duration) -> Heartbeat {
        Heartbeat {
            id: self.id.clone(),
            address: address.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.started_at,
            stats: serde_json::json!({}),
            upstream_health: Vec::new(),
            counter: Some(counter.to_string()),
            beat_every,
        }
    }
}

impl Default for Instance {
    fn default() -> Self {
        Self::new()
    }
}

/// A process-stable instance id: `host-pid-random`.
pub fn instance_id() -> String {
    let host = host_name();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..8])
}

/// This machine's host name (`proxy` if it has none).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "proxy".to_string())
}

/// Requests per second between two heartbeats.
#[derive(Debug)]
pub struct RequestRate {
    at: Instant,
    requests: u64,
}

impl RequestRate {
    pub fn new() -> Self {
        Self {
            at: Instant::now(),
            requests: 0,
        }
    }

    /// The rate since the last call, given the total now.
    pub fn update(&mut self, requests: u64) -> f64 {
        let now = Instant::now();
        let secs = now.duration_since(self.at).as_secs_f64();
        let rate = if secs > 0.0 {
            requests.saturating_sub(self.requests) as f64 / secs
        } else {
            0.0
        };
        self.at = now;
        self.requests = requests;
        rate
    }
}

impl Default for RequestRate {
    fn default() -> Self {
        Self::new()
    }
}

/// The heartbeat of instance `id`; `counter`: the name its local quota
/// counts are written under, if it writes any.
#[allow(clippy::too_many_arguments)]
pub fn heartbeat(
    id: &str,
    counter: Option<&str>,
    address: &str,
    started_at: i64,
    recorder: &UsageRecorder,
    state: &State,
    rate: f64,
    held_rows: usize,
) -> Heartbeat {
    let t = recorder.totals();
    let config = state.config.load();
    let upstream_health = config.upstream_health();
    Heartbeat {
        id: id.to_string(),
        address: address.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at,
        stats: serde_json::json!({
            "requests": t.requests,
            "allowed": t.allowed,
            "limited": t.limited,
            "unauthorized": t.unauthorized,
            "forbidden": t.forbidden,
            "upstream_errors": t.upstream_errors,
            "requests_per_second": (rate * 100.0).round() / 100.0,
            "usage_rows_buffered": held_rows + recorder.held_rows(),
        }),
        upstream_health,
        counter: counter.map(str::to_string),
        beat_every: config.config.usage.flush_interval,
    }
}
