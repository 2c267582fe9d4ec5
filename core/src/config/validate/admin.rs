//! `admin:`.

use super::*;

impl Validator<'_> {
    pub(super) fn admin(&mut self, a: &RawAdmin) -> AdminConfig {
        let listen = self.addr_or("admin.listen", &a.listen, DEFAULT_ADMIN_LISTEN);
        let jwt_secret_env = match self.text(&a.jwt_secret_env) {
            None => DEFAULT_JWT_SECRET_ENV.to_string(),
            Some(v)
                if !v.is_empty()
                    && !v.starts_with(|c: char| c.is_ascii_digit())
                    && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                v
            }
            Some(v) => {
                self.error(
                    "admin.jwt_secret_env",
                    format!(
                        "{v:?} is not an environment variable name (letters, digits and _, not starting with a digit); it names the variable that holds the secret, not the secret"
                    ),
                );
                DEFAULT_JWT_SECRET_ENV.to_string()
            }
        };
        let session_ttl = self.duration_within(
            "admin.session_ttl",
            &a.session_ttl,
            (Duration::from_secs(60), MAX_SESSION_TTL),
            DEFAULT_SESSION_TTL,
            "a stolen session token stays valid that long",
        );
        let mut allowed_hosts = Vec::new();
        for (i, h) in a.allowed_hosts.iter().flatten().enumerate() {
            let path = format!("admin.allowed_hosts[{i}]");
            let text = h.text().unwrap_or_default().trim().to_ascii_lowercase();
            if text.is_empty()
                || !text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
                || !port_is_valid(&text)
            {
                self.error(
                    &path,
                    format!("{h} is not a host name, host:port or IP address"),
                );
            } else {
                allowed_hosts.push(text);
            }
        }
        let header_timeout = self.duration_within(
            "admin.header_timeout",
            &a.header_timeout,
            bounds::HEADER_TIMEOUT,
            DEFAULT_ADMIN_HEADER_TIMEOUT,
            SLOW_HEADER,
        );
        let idle_timeout = self.duration_within(
            "admin.idle_timeout",
            &a.idle_timeout,
            bounds::ADMIN_IDLE_TIMEOUT,
            DEFAULT_ADMIN_IDLE_TIMEOUT,
            "an idle connection stays open that long",
        );
        let max_connections = self.number_or(
            "admin.max_connections",
            &a.max_connections,
            1,
            1_000_000,
            DEFAULT_ADMIN_MAX_CONNECTIONS,
        );
        // One client may not take every slot (black-box round 14).
        let max_connections_per_ip = self.count_or(
            "admin.max_connections_per_ip",
            &a.max_connections_per_ip,
            0,
            1_000_000,
            DEFAULT_ADMIN_MAX_CONNECTIONS_PER_IP,
        );
        let audit_retention = self.duration_within(
            "admin.audit_retention",
            &a.audit_retention,
            bounds::AUDIT_RETENTION,
            DEFAULT_AUDIT_RETENTION,
            "audit events are never deleted",
        );
        AdminConfig {
            listen,
            jwt_secret_env,
            session_ttl,
            allowed_hosts,
            header_timeout,
            idle_timeout,
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            max_connections_per_ip,
            audit_retention,
        }
    }
}

/// Whether the port of an allowed host (`name:port`, `[v6]:port`), if it
/// has one, is a TCP port (1–65535); an IPv6 literal without brackets has
/// none (round 16 re-check: `x.example:99999` was accepted).
fn port_is_valid(host: &str) -> bool {
    let port = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((_, "")) => return true,
            Some((_, tail)) => match tail.strip_prefix(':') {
                Some(p) => p,
                None => return false,
            },
            None => return false,
        },
        None if host.matches(':').count() == 1 => host.rsplit(':').next().unwrap_or_default(),
        None => return true,
    };
    port.parse::<u16>().is_ok_and(|p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::port_is_valid;

    #[test]
    fn allowed_host_ports_are_tcp_ports() {
        for ok in [
            "a.example",
            "a.example:8443",
            "[::1]",
            "[::1]:8081",
            "::1",
            "10.0.0.1:1",
        ] {
            assert!(port_is_valid(ok), "{ok}");
        }
        for bad in [
            "a.example:99999",
            "a.example:0",
            "a.example:",
            "[::1]:",
            "[::1]x",
            "[::1",
        ] {
            assert!(!port_is_valid(bad), "{bad}");
        }
    }
}
