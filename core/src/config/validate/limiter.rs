//! `limiter:`.

use super::*;

impl Validator<'_> {
    pub(super) fn limiter(&mut self, l: &RawLimiter) -> LimiterConfig {
        let backend = self.choice_or(
            "limiter.backend",
            &l.backend,
            &[
                ("local", LimiterBackend::Local),
                ("redis", LimiterBackend::Redis),
            ],
            LimiterBackend::Local,
        );
        let redis_url = self.text(&l.redis_url);
        let parsed = match &redis_url {
            Some(url) => match crate::redis_url::parse(url) {
                Ok(parsed) => Some(parsed),
                Err(e) => {
                    self.error("limiter.redis_url", e);
                    None
                }
            },
            None if backend == LimiterBackend::Redis => {
                self.missing("limiter.redis_url", " (required when backend is redis)");
                None
            }
            None => None,
        };
        let redis_ca_file = given(&l.redis_ca_file)
            .and_then(|_| self.non_empty("limiter.redis_ca_file", &l.redis_ca_file))
            .map(PathBuf::from);
        if redis_ca_file.is_some() && parsed.as_ref().is_some_and(|u| !u.tls) {
            self.error(
                "limiter.redis_ca_file",
                "applies to rediss:// (TLS) URLs only, and redis_url is not one",
            );
        }
        let redis_timeout = self.duration_within(
            "limiter.redis_timeout",
            &l.redis_timeout,
            bounds::REDIS_TIMEOUT,
            DEFAULT_REDIS_TIMEOUT,
            "every request waits that long for a Redis that does not answer",
        );
        let on_redis_error = self.choice_or(
            "limiter.on_redis_error",
            &l.on_redis_error,
            &[
                ("local", OnRedisError::Local),
                ("allow", OnRedisError::Allow),
                ("deny", OnRedisError::Deny),
            ],
            OnRedisError::Local,
        );
        let concurrency_lease = self.duration_within(
            "limiter.concurrency_lease",
            &l.concurrency_lease,
            (Duration::from_millis(300), MAX_CONCURRENCY_LEASE),
            DEFAULT_CONCURRENCY_LEASE,
            "a stopped proxy's concurrency holds stay taken that long",
        );
        let lease_ttl = self.lease_ttl(&l.lease_ttl);
        LimiterConfig {
            backend,
            redis_url,
            redis_timeout,
            on_redis_error,
            redis_ca_file,
            concurrency_lease,
            lease_ttl,
        }
    }

    /// `limiter.lease_ttl`: `0` (or `0ms`, `0s`) turns leases off; otherwise
    /// within [`MIN_LEASE_TTL`, `MAX_LEASE_TTL`]: shorter leases would cost
    /// a Redis call per request anyway, longer ones keep tokens away from
    /// other proxies for too long.
    fn lease_ttl(&mut self, s: &Option<Scalar>) -> Duration {
        let path = "limiter.lease_ttl";
        let Some(s) = given(s) else {
            return DEFAULT_LEASE_TTL;
        };
        let text = s.text().unwrap_or_default();
        if text.trim() == "0" {
            return Duration::ZERO;
        }
        let Some(d) = self.duration(path, s, Duration::ZERO) else {
            return DEFAULT_LEASE_TTL;
        };
        if !d.is_zero() && d < MIN_LEASE_TTL {
            self.error(
                path,
                format!(
                    "must be 0 (no leases) or at least {}, got {text:?}",
                    duration::format(MIN_LEASE_TTL)
                ),
            );
            return DEFAULT_LEASE_TTL;
        }
        if d > MAX_LEASE_TTL {
            self.error(
                path,
                format!(
                    "must be at most {}, got {text:?}",
                    duration::format(MAX_LEASE_TTL)
                ),
            );
            return DEFAULT_LEASE_TTL;
        }
        d
    }
}
