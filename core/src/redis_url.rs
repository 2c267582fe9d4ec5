//! Redis URLs: the one parser used by config validation (`check-config`),
//! the proxy's Redis limiter and the admin API's health check, and the one
//! [`redact`] that keeps passwords out of logs and error messages.
//!
//! Accepted shapes (scheme case-insensitive):
//!
//! - `redis://[user[:password]@]host[:port][/db]`: one node, plain TCP.
//! - `rediss://…`: one node over TLS (certificate and name verified against
//!   the system roots, or `limiter.redis_ca_file`).
//! - `redis+cluster://[user[:password]@]h1[:p1],h2[:p2],…[/0]`: Redis Cluster
//!   seed nodes; `rediss+cluster://` the same over TLS.
//!
//! `host` is a DNS name, an IPv4 address or a bracketed IPv6 address; the
//! port defaults to 6379; `db` to 0 (a cluster has only database 0). User
//! and password are percent-encoded as in any URL (`%40` for `@`). Query
//! strings and fragments (the redis crate's `?protocol=`, `#insecure`) are
//! refused: nothing may turn verification off or change the protocol
//! behind the operator's back.

use std::fmt;
use std::net::Ipv6Addr;

use percent_encoding::percent_decode_str;

/// Default Redis port.
pub const DEFAULT_PORT: u16 = 6379;

/// One `host:port` of a Redis URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisNode {
    /// A DNS name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for RedisNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A parsed Redis URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub tls: bool,
    pub cluster: bool,
    /// One node, or the cluster's seed nodes (at least one).
    pub nodes: Vec<RedisNode>,
    /// Decoded user name (ACL user), if given and not empty.
    pub username: Option<String>,
    /// Decoded password, if given.
    pub password: Option<String>,
    pub db: u32,
    /// The userinfo as written (still percent-encoded), for [`Self::node_urls`].
    raw_userinfo: Option<String>,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrl")
            .field("url", &self.redacted())
            .finish()
    }
}

/// Why a Redis URL was refused. Never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} in Redis URL {redacted:?}")]
pub struct RedisUrlError {
    pub redacted: String,
    pub reason: String,
}

fn fail<T>(url: &str, reason: impl Into<String>) -> Result<T, RedisUrlError> {
    Err(RedisUrlError {
        redacted: redact(url),
        reason: reason.into(),
    })
}

/// Parse a Redis URL (see the module docs for the shapes).
pub fn parse(url: &str) -> Result<RedisUrl, RedisUrlError> {
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return fail(url, "whitespace or control characters");
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return fail(
            url,
            "no scheme: expected redis://, rediss://, redis+cluster:// or rediss+cluster://",
        );
    };
    let (tls, cluster) = match scheme.to_ascii_lowercase().as_str() {
        "redis" => (false, false),
        "rediss" => (true, false),
        "redis+cluster" => (false, true),
        "rediss+cluster" => (true, true),
        other => {
            return fail(
                url,
                format!(
                    "unsupported scheme {other:?}: expected redis://, rediss:// (TLS), \
                     redis+cluster:// or rediss+cluster:// (Redis Cluster)"
                ),
            )
        }
    };
    if rest.contains(['?', '#']) {
        return fail(url, "query strings and fragments are not supported");
    }
    // The authority ends at the first '/' after the last '@' (a password
    // may hold a raw '/' only percent-encoded, like any URL).
    let (userinfo, after_at) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (hosts, path) = match after_at.split_once('/') {
        Some((h, p)) => (h, p),
        None => (after_at, ""),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pass) = match u.split_once(':') {
                Some((user, pass)) => (user, Some(pass)),
                None => (u, None),
            };
            let decode = |s: &str, what: &str| -> Result<String, RedisUrlError> {
                // Every `%` starts a `%XX` escape (round 16 re-check: `%ZZ`
                // was passed on as written).
                let b = s.as_bytes();
                let bad_escape = b.iter().enumerate().any(|(i, c)| {
                    *c == b'%'
                        && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                            && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                });
                if bad_escape {
                    return fail(
                        url,
                        format!("the {what} has a '%' that is not a %XX escape"),
                    );
                }
                match percent_decode_str(s).decode_utf8() {
                    Ok(d) if !d.chars().any(char::is_control) => Ok(d.into_owned()),
                    _ => fail(
                        url,
                        format!("the {what} is not valid percent-encoded UTF-8"),
                    ),
                }
            };
            if u.contains('/') {
                return fail(
                    url,
                    "a '/' in the user name or password must be percent-encoded (%2F)",
                );
            }
            let user = decode(user, "user name")?;
            let pass = pass.map(|p| decode(p, "password")).transpose()?;
            ((!user.is_empty()).then_some(user), pass)
        }
    };
    let mut nodes = Vec::new();
    for h in hosts.split(',') {
        nodes.push(parse_node(url, h)?);
    }
    if nodes.len() > 1 && !cluster {
        return fail(
            url,
            "several hosts: use redis+cluster:// (or rediss+cluster://) for Redis Cluster",
        );
    }
    let db = match path {
        "" => 0,
        p => match p.parse::<u32>() {
            Ok(n) if p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return fail(url, "the path must be a database number, e.g. /0"),
        },
    };
    if cluster && db != 0 {
        return fail(url, "Redis Cluster has only database 0");
    }
    Ok(RedisUrl {
        tls,
        cluster,
        nodes,
        username,
        password,
        db,
        raw_userinfo: userinfo.map(str::to_string),
    })
}

fn parse_node(url: &str, h: &str) -> Result<RedisNode, RedisUrlError> {
    if h.is_empty() {
        return fail(url, "empty host");
    }
    let (host, port) = if let Some(v6) = h.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return fail(url, "unclosed '[' in an IPv6 host");
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return fail(url, format!("invalid IPv6 address {addr:?}"));
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return fail(url, "expected :port after an IPv6 host"),
            },
        };
        (addr, port)
    } else {
        match h.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        }
    };
    let valid_name = !host.is_empty()
        && host.len() <= 253
        && (host.contains(':')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    if !valid_name {
        return fail(url, format!("invalid host {host:?}"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return fail(url, format!("invalid port {p:?} (1-65535)")),
        },
    };
    Ok(RedisNode {
        host: host.to_ascii_lowercase(),
        port,
    })
}

impl RedisUrl {
    /// One plain `redis://` or `rediss://` URL per node, with the user,
    /// password and database, as the redis crate's clients take them.
    pub fn node_urls(&self) -> Vec<String> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = self
            .raw_userinfo
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        self.nodes
            .iter()
            .map(|n| format!("{scheme}://{auth}{n}/{}", self.db))
            .collect()
    }

    /// The URL without credentials, for logs and health answers.
    pub fn redacted(&self) -> String {
        let scheme = match (self.tls, self.cluster) {
            (false, false) => "redis",
            (true, false) => "rediss",
            (false, true) => "redis+cluster",
            (true, true) => "rediss+cluster",
        };
        let auth = if self.raw_userinfo.is_some() {
            "***@"
        } else {
            ""
        };
        let hosts: Vec<String> = self.nodes.iter().map(ToString::to_string).collect();
        format!("{scheme}://{auth}{}/{}", hosts.join(","), self.db)
    }

    /// `redis` or `redis-cluster` (the health check's component kind).
    pub fn kind(&self) -> &'static str {
        if self.cluster {
            "redis-cluster"
        } else {
            "redis"
        }
    }
}

/// Any string that may be a Redis URL, with everything before the last `@`
/// of its authority (user and password) replaced by `***`. Safe on text
/// that does not parse.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let redacted = match rest.rsplit_once('@') {
        Some((_, hosts)) => format!("***@{hosts}"),
        None => rest.to_string(),
    };
    match scheme {
        Some(s) => format!("{s}://{redacted}"),
        None => redacted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: u16) -> RedisNode {
        RedisNode {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn every_shape() {
        let u = parse("redis://127.0.0.1:6390").expect("plain");
        assert_eq!((u.tls, u.cluster, u.db), (false, false, 0));
        assert_eq!(u.nodes, vec![node("127.0.0.1", 6390)]);
        assert_eq!(u.node_urls(), vec!["redis://127.0.0.1:6390/0"]);

        let u = parse("rediss://user:p%40ss@Cache.Example:6380/3").expect("tls");
        assert_eq!((u.tls, u.cluster, u.db), (true, false, 3));
        assert_eq!(u.username.as_deref(), Some("user"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(
            u.node_urls(),
            vec!["rediss://user:p%40ss@cache.example:6380/3"]
        );
        assert_eq!(u.redacted(), "rediss://***@cache.example:6380/3");
        assert_eq!(u.kind(), "redis");

        let u = parse("REDIS+CLUSTER://:pw@a:1,b,[::1]:3").expect("cluster");
        assert!(u.cluster && !u.tls);
        assert_eq!(u.username, None);
        assert_eq!(u.password.as_deref(), Some("pw"));
        assert_eq!(u.nodes, vec![node("a", 1), node("b", 6379), node("::1", 3)]);
        assert_eq!(
            u.node_urls(),
            vec![
                "redis://:pw@a:1/0",
                "redis://:pw@b:6379/0",
                "redis://:pw@[::1]:3/0"
            ]
        );
        assert_eq!(u.kind(), "redis-cluster");

        let u = parse("rediss+cluster://u:p@h1:7301,h2:7302/0").expect("tls cluster");
        assert!(u.cluster && u.tls);
        assert_eq!(u.node_urls()[1], "rediss://u:p@h2:7302/0");
        assert_eq!(u.redacted(), "rediss+cluster://***@h1:7301,h2:7302/0");

        let u = parse("redis://h/").expect("empty path");
        assert_eq!((u.db, u.nodes[0].port), (0, 6379));
        let u = parse("redis://admin@h").expect("user only");
        assert_eq!(u.username.as_deref(), Some("admin"));
        assert_eq!(u.password, None);
    }

    #[test]
    fn hostile_and_malformed_urls_are_refused_without_the_password() {
        for bad in [
            "",
            "nonsense",
            "http://h:1",
            "redis+unix:///tmp/r.sock",
            "unix:///tmp/r.sock",
            "redis://",
            "redis://:secret@",
            "redis://h:0",
            "redis://h:65536",
            "redis://h:-1",
            "redis://h:+1",
            "redis://h:1/x",
            "redis://h:1/-1",
            "redis://h:1/99999999999",
            "redis://h:1?protocol=resp3",
            "rediss://h:1#insecure",
            "redis://a:1,b:2",
            "redis+cluster://a:1,,b:2",
            "redis+cluster://a:1,b:2/1",
            "redis://[::1",
            "redis://[zz]:1",
            "redis://[::1]x",
            "redis://h h:1",
            "redis://h\n:1",
            "redis://:secret@ho$t:1",
            "redis://user:%ff@h:1",
            "redis://user:%00@h:1",
            "redis://u:pa/ss@h:1",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(!e.to_string().contains("secret"), "{e}");
        }
        let e = parse("redis://u:secret@a:1,b:2").expect_err("two hosts");
        assert_eq!(e.redacted, "redis://***@a:1,b:2");
        assert!(e.to_string().contains("redis+cluster://"), "{e}");
    }

    #[test]
    fn redact_hides_userinfo_of_anything() {
        assert_eq!(redact("redis://user:secret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert_eq!(redact("u:secret@h"), "***@h");
        assert_eq!(redact("redis://a:b@c@d:1"), "redis://***@d:1");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let u = parse("redis://u:secret@h:1").expect("ok");
        assert!(!format!("{u:?}").contains("secret"));
    }
}
