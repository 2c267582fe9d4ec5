//! The accepted range `(min, max)` of every duration setting that is not a
//! background period (those keep their `MAX_*` beside their default in
//! [`super::model`]). A value out of range is refused at its place, naming
//! the range and what it would do, on every way a config is read (start,
//! reload, `check-config`; the admin API sets none of these): a typo (`60h` for
//! `60s`) or a huge number (`106751991167d`) can no longer turn a stop, a
//! deadline or a defence off (black-box round 13).

use std::time::Duration;

const MS: Duration = Duration::from_millis(1);
const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `proxy.grace_period`: 0 stops at once; SIGTERM never waits longer.
pub const GRACE_PERIOD: (Duration, Duration) = (Duration::ZERO, secs(3600));
/// `proxy.keepalive_timeout`: below 1 s every new connection would close
/// before its first byte.
pub const KEEPALIVE_TIMEOUT: (Duration, Duration) = (secs(1), secs(3600));
/// `proxy.header_timeout` and `admin.header_timeout`: the slowloris bound.
pub const HEADER_TIMEOUT: (Duration, Duration) = (Duration::from_millis(100), secs(300));
/// `proxy.body_timeout`: each wait for the next piece of a request body.
pub const BODY_TIMEOUT: (Duration, Duration) = (Duration::from_millis(100), secs(3600));
/// `admin.idle_timeout`.
pub const ADMIN_IDLE_TIMEOUT: (Duration, Duration) = (secs(1), secs(3600));
/// `admin.audit_retention`: 1 day to 10 years.
pub const AUDIT_RETENTION: (Duration, Duration) = (secs(86_400), secs(3650 * 86_400));
/// `limiter.redis_timeout`: no request waits for Redis longer.
pub const REDIS_TIMEOUT: (Duration, Duration) = (MS, secs(10));
/// `upstreams.NAME.timeouts.connect`.
pub const CONNECT_TIMEOUT: (Duration, Duration) = (MS, secs(300));
/// `upstreams.NAME.timeouts.read`, `write` and `idle`.
pub const UPSTREAM_IO_TIMEOUT: (Duration, Duration) = (MS, secs(3600));
/// The shortest background period (`storage.key_refresh`,
/// `usage.flush_interval`, `health_check.interval`,
/// `proxy.websocket_key_check`): shorter ones spin an idle proxy's CPU.
pub const MIN_BACKGROUND_INTERVAL: Duration = Duration::from_millis(100);
