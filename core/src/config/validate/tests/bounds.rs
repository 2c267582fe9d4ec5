//! Every duration setting has a range (`config::bounds`, black-box round
//! 13; background periods: round 12, `background_periods_are_bounded`): the
//! maximum is accepted, one millisecond more (or `106751991167d`) is refused
//! at its field with the maximum and what it would do, and so is one
//! millisecond under the minimum. Background periods are at least
//! 100ms: `usage.flush_interval: 1ms` kept an idle proxy at ~20 % CPU.

use super::*;
use crate::config::bounds;
use crate::duration;

type Get = fn(&Config) -> Duration;

const UPSTREAM: &str = "upstreams:\n  u: { targets: [\"127.0.0.1:1\"], timeouts: { FIELD: V } }\n";

/// `(field, YAML with its value as V, where the model keeps it, range)`.
fn fields() -> Vec<(&'static str, String, Get, (Duration, Duration))> {
    let at = |section: &str, field: &str| format!("{section}:\n  {field}: V\n");
    let up = |field: &str| UPSTREAM.replace("FIELD", field);
    vec![
        (
            "proxy.grace_period",
            at("proxy", "grace_period"),
            |c| c.proxy.grace_period,
            bounds::GRACE_PERIOD,
        ),
        (
            "proxy.keepalive_timeout",
            at("proxy", "keepalive_timeout"),
            |c| c.proxy.keepalive_timeout,
            bounds::KEEPALIVE_TIMEOUT,
        ),
        (
            "proxy.header_timeout",
            at("proxy", "header_timeout"),
            |c| c.proxy.edge.header_timeout,
            bounds::HEADER_TIMEOUT,
        ),
        (
            "proxy.body_timeout",
            at("proxy", "body_timeout"),
            |c| c.proxy.edge.body_timeout,
            bounds::BODY_TIMEOUT,
        ),
        (
            "admin.header_timeout",
            at("admin", "header_timeout"),
            |c| c.admin.header_timeout,
            bounds::HEADER_TIMEOUT,
        ),
        (
            "admin.idle_timeout",
            at("admin", "idle_timeout"),
            |c| c.admin.idle_timeout,
            bounds::ADMIN_IDLE_TIMEOUT,
        ),
        (
            "admin.audit_retention",
            at("admin", "audit_retention"),
            |c| c.admin.audit_retention,
            bounds::AUDIT_RETENTION,
        ),
        (
            "limiter.redis_timeout",
            at("limiter", "redis_timeout"),
            |c| c.limiter.redis_timeout,
            bounds::REDIS_TIMEOUT,
        ),
        (
            "upstreams.u.timeouts.connect",
            up("connect"),
            |c| c.upstreams["u"].timeouts.connect,
            bounds::CONNECT_TIMEOUT,
        ),
        (
            "upstreams.u.timeouts.read",
            up("read"),
            |c| c.upstreams["u"].timeouts.read,
            bounds::UPSTREAM_IO_TIMEOUT,
        ),
        (
            "upstreams.u.timeouts.write",
            up("write"),
            |c| c.upstreams["u"].timeouts.write,
            bounds::UPSTREAM_IO_TIMEOUT,
        ),
        (
            "upstreams.u.timeouts.idle",
            up("idle"),
            |c| c.upstreams["u"].timeouts.idle,
            bounds::UPSTREAM_IO_TIMEOUT,
        ),
        (
            "storage.key_refresh",
            at("storage", "key_refresh"),
            |c| c.storage.key_refresh,
            (bounds::MIN_BACKGROUND_INTERVAL, MAX_KEY_REFRESH),
        ),
        (
            "usage.flush_interval",
            at("usage", "flush_interval"),
            |c| c.usage.flush_interval,
            (bounds::MIN_BACKGROUND_INTERVAL, MAX_FLUSH_INTERVAL),
        ),
        (
            "proxy.websocket_key_check",
            at("proxy", "websocket_key_check"),
            |c| c.proxy.edge.websocket_key_check,
            (bounds::MIN_BACKGROUND_INTERVAL, MAX_WEBSOCKET_KEY_CHECK),
        ),
        (
            "upstreams.u.health_check.interval",
            UPSTREAM.replace(
                "timeouts: { FIELD: V }",
                "health_check: { path: /h, interval: V }",
            ),
            |c| {
                c.upstreams["u"]
                    .health_check
                    .as_ref()
                    .map_or(Duration::ZERO, |h| h.interval)
            },
            (bounds::MIN_BACKGROUND_INTERVAL, MAX_HEALTH_CHECK_INTERVAL),
        ),
    ]
}

fn refused(src: &str, want: &str) {
    let e = errors(src);
    assert!(
        e.iter().any(|e| e.to_string().contains(want) && e.line > 0),
        "{src}: wanted {want:?} in {e:?}"
    );
}

#[test]
fn every_duration_setting_has_a_range() {
    for (path, yaml, get, (min, max)) in fields() {
        let with = |v: &str| yaml.replace('V', v);
        assert_eq!(get(&ok(&with(&duration::format(max)))), max, "{path}");
        assert_eq!(get(&ok(&with(&duration::format(min)))), min, "{path}");
        let over = format!("{}ms", max.as_millis() + 1);
        for v in [over.as_str(), "106751991167d"] {
            refused(
                &with(v),
                &format!("{path}: must be at most {}, got", duration::format(max)),
            );
        }
        if let Some(under) = min.as_millis().checked_sub(1) {
            refused(
                &with(&format!("{under}ms")),
                &format!("{path}: must be at least {}", duration::format(min)),
            );
        }
    }
}

/// The ranges an operator would expect (README's config reference).
#[test]
fn the_ranges_are_the_documented_ones() {
    let h = |n: u64| Duration::from_secs(n * 3600);
    assert_eq!(bounds::GRACE_PERIOD.1, h(1));
    assert_eq!(bounds::HEADER_TIMEOUT.1, Duration::from_secs(300));
    assert_eq!(bounds::REDIS_TIMEOUT.1, Duration::from_secs(10));
    assert_eq!(bounds::AUDIT_RETENTION.1, h(24 * 3650));
    assert_eq!(bounds::KEEPALIVE_TIMEOUT.0, Duration::from_secs(1));
}
