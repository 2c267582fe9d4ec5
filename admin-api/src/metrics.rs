//! The admin API's own counters, in the process's default Prometheus
//! registry (served by `/metrics`).

use std::sync::OnceLock;

use prometheus::{IntCounterVec, Opts};

/// Count one in the counter `cell` holds, registering it on first use.
fn inc(
    cell: &OnceLock<Option<IntCounterVec>>,
    name: &str,
    help: &str,
    labels: &[&str],
    values: &[&str],
) {
    if let Some(c) = cell.get_or_init(|| counter(name, help, labels)) {
        c.with_label_values(values).inc();
    }
}

fn counter(name: &str, help: &str, labels: &[&str]) -> Option<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels).ok()?;
    if let Err(e) = prometheus::register(Box::new(c.clone())) {
        tracing::debug!(error = %e, "admin metric already registered");
    }
    Some(c)
}

/// `tollgate_admin_logins_total{outcome}`: success, failure, throttled (429)
/// and busy (503, too many password checks at once).
pub fn login(outcome: &str) {
    static C: OnceLock<Option<IntCounterVec>> = OnceLock::new();
    inc(
        &C,
        "tollgate_admin_logins_total",
        "Admin login attempts by outcome (success, failure, throttled, busy)",
        &["outcome"],
        &[outcome],
    );
}

/// `tollgate_admin_connections_refused_total{reason}`: connections closed at
/// accept (`max_connections`, `per_ip_cap`) or for a timeout (`header_timeout`:
/// no first request header within it of accept, `idle`, and `body_timeout`: a request body not received
/// in time, answered 408).
pub fn connection_refused(reason: &str) {
    static C: OnceLock<Option<IntCounterVec>> = OnceLock::new();
    inc(&C, "tollgate_admin_connections_refused_total", "Admin API connections closed by the listener, by reason (max_connections, per_ip_cap, header_timeout, idle, body_timeout)", &["reason"], &[reason]);
}

/// `tollgate_admin_host_refused_total`: requests refused for their `Host`.
pub fn host_refused() {
    static C: OnceLock<Option<IntCounterVec>> = OnceLock::new();
    inc(
        &C,
        "tollgate_admin_host_refused_total",
        "Admin API requests refused because their Host is not in admin.allowed_hosts",
        &[],
        &[],
    );
}

/// `tollgate_admin_audit_write_failures_total`.
pub fn audit_failed() {
    static C: OnceLock<Option<IntCounterVec>> = OnceLock::new();
    inc(
        &C,
        "tollgate_admin_audit_write_failures_total",
        "Audit events that could not be written",
        &[],
        &[],
    );
}

/// `tollgate_admin_config_reloads_total{result}`: the admin role's reloads
/// of its config file (`ok`, `failed`: refused, the running config stays;
/// `unreadable`), as the proxy counts its own in
/// `tollgate_config_reloads_total` (a `dev` process has both).
pub fn config_reload(result: &str) {
    static C: OnceLock<Option<IntCounterVec>> = OnceLock::new();
    inc(
        &C,
        "tollgate_admin_config_reloads_total",
        "Config file reloads of the admin role, by result (ok, failed, unreadable)",
        &["result"],
        &[result],
    );
}
