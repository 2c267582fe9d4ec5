//! Tollgate's core: what the proxy and the admin API share.
//!
//! No Pingora and no axum in here: configuration (raw YAML model, validation,
//! the validated model and its defaults), the rules every way of changing
//! the configuration shares ([`rules`]: plans, limits, key fields, which
//! limits apply to a key), the API key format, limit policies and
//! token-bucket arithmetic, usage counting ([`usage`]), problem details, and
//! the database layer. Test harnesses (`db::testing`, `db::own_postgres`,
//! `rules::cases`) exist only with the `testing` feature.

pub mod config;
pub mod cost;
pub mod credits;
pub mod db;
pub mod duration;
pub mod effective_limits;
pub mod files;
pub mod headers;
pub mod id_floor;
pub mod keys;
pub mod limit_scope;
pub mod limits;
pub mod net;
pub mod path;
pub mod problem;
pub mod quota;
pub mod quota_adjust;
pub mod redis_url;
pub mod refill;
pub mod rules;
pub mod secret_strength;
pub mod service_tokens;
pub mod trace;
pub mod usage;
pub mod webhooks;

/// Milliseconds since the Unix epoch: how every timestamp is stored.
/// Read straight from the system clock: it runs several times per request,
/// and going through a calendar type costs more than the read itself.
pub fn now_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        // A clock set before 1970: as chrono counts it, rounded down.
        Err(e) => {
            let before = e.duration();
            let ms = i64::try_from(before.as_millis()).unwrap_or(i64::MAX);
            if before.subsec_nanos() % 1_000_000 == 0 {
                -ms
            } else {
                -ms - 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_ms_reads_the_same_clock_as_chrono() {
        let before = chrono::Utc::now().timestamp_millis();
        let now = super::now_ms();
        let after = chrono::Utc::now().timestamp_millis();
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
    }
}
