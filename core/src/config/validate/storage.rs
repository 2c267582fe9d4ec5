//! `storage:` and `usage:`.

use super::*;

impl Validator<'_> {
    pub(super) fn storage(&mut self, s: &RawStorage) -> StorageConfig {
        let database_url = match self.text(&s.database_url) {
            None => DEFAULT_DATABASE_URL.to_string(),
            // The scheme in any case, as URLs allow (RFC 3986 §3.1).
            Some(url) if scheme_is(&url, &["sqlite"]) => lower_scheme(url),
            Some(url) if scheme_is(&url, &["postgres", "postgresql"]) && url.contains("://") => {
                let url = lower_scheme(url);
                // As the driver will read it: sslmode, sslrootcert, … are
                // checked here, not at the first connection.
                if let Err(e) = url.parse::<sqlx::postgres::PgConnectOptions>() {
                    self.error(
                        "storage.database_url",
                        format!("invalid PostgreSQL URL: {e}"),
                    );
                } else if let Err(e) = crate::db::pg_tls::check_url(&url) {
                    // The root file (and client certificate) as a connection
                    // will read them: missing, unreadable or not PEM.
                    self.error("storage.database_url", e);
                }
                url
            }
            Some(url) => {
                self.error(
                    "storage.database_url",
                    format!(
                        "unsupported database URL {:?}: expected sqlite:… (e.g. sqlite://tollgate.db) or postgres://…",
                        crate::db::redact(&url)
                    ),
                );
                DEFAULT_DATABASE_URL.to_string()
            }
        };
        let key_refresh = self.duration_within(
            "storage.key_refresh",
            &s.key_refresh,
            (bounds::MIN_BACKGROUND_INTERVAL, MAX_KEY_REFRESH),
            DEFAULT_KEY_REFRESH,
            "key, plan and credit changes, revocations included, reach the proxies only that often",
        );
        StorageConfig {
            database_url,
            key_refresh,
        }
    }

    pub(super) fn usage(&mut self, u: &RawUsage) -> UsageConfig {
        let flush_interval = self.duration_within(
            "usage.flush_interval",
            &u.flush_interval,
            (bounds::MIN_BACKGROUND_INTERVAL, MAX_FLUSH_INTERVAL),
            DEFAULT_FLUSH_INTERVAL,
            "usage, heartbeats, quota counts and credit spends are written only that often",
        );
        let retention_days = self.number_or(
            "usage.retention_days",
            &u.retention_days,
            1,
            u64::from(u32::MAX),
            DEFAULT_RETENTION_DAYS,
        );
        let violation_retention_days = self.number_or(
            "usage.violation_retention_days",
            &u.violation_retention_days,
            1,
            u64::from(u32::MAX),
            DEFAULT_VIOLATION_RETENTION_DAYS,
        );
        let buffer_rows = self.number_or(
            "usage.buffer_rows",
            &u.buffer_rows,
            1,
            u64::try_from(usize::MAX).unwrap_or(u64::MAX),
            DEFAULT_BUFFER_ROWS,
        );
        UsageConfig {
            flush_interval,
            retention_days: u32::try_from(retention_days).unwrap_or(u32::MAX),
            violation_retention_days: u32::try_from(violation_retention_days).unwrap_or(u32::MAX),
            buffer_rows: usize::try_from(buffer_rows).unwrap_or(usize::MAX),
        }
    }
}

/// Whether `url`'s scheme (before the first `:`) is one of `schemes`, in
/// any case.
fn scheme_is(url: &str, schemes: &[&str]) -> bool {
    url.split_once(':')
        .is_some_and(|(s, _)| schemes.iter().any(|x| s.eq_ignore_ascii_case(x)))
}

/// `url` with its scheme in lower case (what the drivers match).
fn lower_scheme(url: String) -> String {
    match url.split_once(':') {
        Some((s, rest)) if s.bytes().any(|b| b.is_ascii_uppercase()) => {
            format!("{}:{rest}", s.to_ascii_lowercase())
        }
        _ => url,
    }
}
