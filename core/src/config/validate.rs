//! Raw model → validated model, collecting every problem with its position.
//!
//! Three passes over the text:
//!
//! 1. the whole document is parsed (into nothing), so that a syntax error is
//!    reported before anything else; then repeated keys are looked for;
//! 2. it is deserialized into the [`raw`] structs, which rejects unknown fields
//!    and collections where they do not belong (one error: serde stops there);
//! 3. the raw structs are checked field by field. This pass reports *every*
//!    problem, each at the position of the offending node, found through the
//!    [`PositionIndex`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::de::IgnoredAny;

use super::position::{child, item, Position, PositionIndex};
use super::raw::{
    self, OrderedMap, RawAdmin, RawConfig, RawLimit, RawLimiter, RawLog, RawPlan, RawProxy,
    RawRoute, RawStorage, RawUpstream, RawUsage, Scalar,
};
use super::{
    AdminConfig, Auth, Config, ConfigError, ConfigErrors, EdgeConfig, HealthCheck, LimiterBackend,
    LimiterConfig, LogConfig, LogFormat, OnRedisError, Plan, ProxyConfig, Route, StorageConfig,
    Target, Timeouts, TlsListener, Upstream, UpstreamTls, UsageConfig,
};
use crate::duration;
use crate::limits::Limit;
use crate::path::PathPolicy;

/// `proxy.listen` when the file does not say.
pub const DEFAULT_PROXY_LISTEN: &str = "127.0.0.1:8080";
/// `admin.listen` when the file does not say.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
pub const DEFAULT_THREADS: u64 = 2;
/// Upper bound for `proxy.threads`.
pub const MAX_THREADS: u64 = 1024;
pub const DEFAULT_KEY_HEADER: &str = "x-api-key";
pub const DEFAULT_AUTH_FAILURES_PER_SECOND: u64 = 20;
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_JWT_SECRET_ENV: &str = "TOLLGATE_JWT_SECRET";
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: u64 = 512;
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(365 * 86_400);
pub const DEFAULT_DATABASE_URL: &str = "sqlite://tollgate.db";
pub const DEFAULT_KEY_REFRESH: Duration = Duration::from_millis(500);
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(20);
pub const DEFAULT_CONCURRENCY_LEASE: Duration = Duration::from_secs(10);
pub const DEFAULT_LOG_LEVEL: &str = "info";
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_RETENTION_DAYS: u64 = 30;
pub const DEFAULT_BUFFER_ROWS: u64 = 100_000;
pub const DEFAULT_VIOLATION_RETENTION_DAYS: u64 = 7;
/// `upstreams.*.resolve_interval`: how often target host names are resolved again.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
/// `health_check.interval` when a health check gives only its path.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);

const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

pub(super) fn parse_and_validate(src: &str, file: &str) -> Result<Config, ConfigErrors> {
    let index = PositionIndex::build(src);
    let mut problems = match parse_raw(src, &index) {
        Ok(raw) => {
            let mut v = Validator {
                index: &index,
                problems: Vec::new(),
            };
            let config = v.config(&raw);
            if v.problems.is_empty() {
                return Ok(config);
            }
            v.problems
        }
        Err(problems) => problems,
    };
    // libyaml puts the end of a stream that lacks a final line break on a
    // line of its own: report it at the end of the last line.
    let lines = text_lines(src);
    for (pos, _) in &mut problems {
        *pos = within(&lines, *pos);
    }
    // Report in document order; problems at one place keep the order found.
    problems.sort_by_key(|(pos, _)| *pos);
    Err(ConfigErrors(
        problems
            .into_iter()
            .map(|(pos, message)| ConfigError {
                file: file.to_string(),
                line: pos.line,
                column: pos.column,
                message,
            })
            .collect(),
    ))
}

type Problems = Vec<(Position, String)>;

/// The width in characters of each line of `src`, lines broken as YAML
/// parsers break them: `\n`, `\r\n`, `\r`, and (libyaml) NEL, LS and PS.
fn text_lines(src: &str) -> Vec<usize> {
    let mut widths = vec![0];
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                widths.push(0);
            }
            '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => widths.push(0),
            _ => {
                if let Some(w) = widths.last_mut() {
                    *w += 1;
                }
            }
        }
    }
    widths
}

/// `pos`, or, for the end of a text without a final line break, which
/// libyaml places at column 1 of the line after the last, the end of the
/// last line.
fn within(lines: &[usize], pos: Position) -> Position {
    match lines.last() {
        Some(&width) if pos.line == lines.len() + 1 && pos.column == 1 => Position {
            line: lines.len(),
            column: width + 1,
        },
        _ => pos,
    }
}

/// Passes 1 and 2: YAML syntax, repeated keys, then the raw structs.
fn parse_raw(src: &str, index: &PositionIndex) -> Result<RawConfig, Problems> {
    // serde_yaml reports a syntax error only when deserialization gets that
    // far, possibly after a type error caused by it: check the syntax first.
    if let Err(e) = serde_yaml::from_str::<IgnoredAny>(src) {
        if e.to_string().contains("more than one document") {
            return Err(vec![(
                Position::START,
                "a config file holds a single YAML document, this one has several (separated by ---)"
                    .to_string(),
            )]);
        }
        let prefix = if e.location().is_some() {
            "invalid YAML: "
        } else {
            ""
        };
        return Err(vec![serde_problem(&e, prefix)]);
    }
    // A repeated key would silently override (or, for a section, fail with
    // no useful position): report every one.
    let repeated = index.duplicates();
    if !repeated.is_empty() {
        return Err(repeated
            .iter()
            .map(|d| {
                (
                    d.position,
                    format!(
                        "{}: key {:?} is repeated (first given at line {}, column {})",
                        d.path, d.key, d.first.line, d.first.column
                    ),
                )
            })
            .collect());
    }
    raw::from_str(src).map_err(|e| vec![serde_problem(&e, "")])
}

/// A serde_yaml error as a problem: its location, and its message without the
/// location (which the problem carries already).
fn serde_problem(e: &serde_yaml::Error, prefix: &str) -> (Position, String) {
    let mut message = e.to_string();
    let pos = match e.location() {
        Some(loc) => {
            let at = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(i) = message.find(&at) {
                message.replace_range(i..i + at.len(), "");
            }
            Position {
                line: loc.line().max(1),
                column: loc.column().max(1),
            }
        }
        None => Position::START,
    };
    (pos, format!("{prefix}{message}"))
}

/// `Some` only for a scalar that is present and not null: an option that is
/// omitted, empty or `~` takes its default.
fn given(s: &Option<Scalar>) -> Option<&Scalar> {
    match s {
        None | Some(Scalar::Null) => None,
        Some(s) => Some(s),
    }
}

/// An RFC 9110 token (`tchar`): header field names and methods.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Safe inside an HTTP structured-field string (`RateLimit-Policy: "name";…`).
fn is_sf_string_safe(s: &str) -> bool {
    s.chars()
        .all(|c| (' '..='~').contains(&c) && c != '"' && c != '\\')
}

fn known(names: &[&str], what: &str) -> String {
    if names.is_empty() {
        format!("no {what} are defined")
    } else {
        let mut sorted = names.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        format!("known: {}", sorted.join(", "))
    }
}

/// Parse an upstream target: `host:port`, `http://host[:port]` or
/// `https://host[:port]`, IPv6 hosts in brackets.
pub fn parse_target(input: &str) -> Result<Target, String> {
    let lower = input.to_ascii_lowercase();
    let (tls, rest, default_port) = if lower.starts_with("https://") {
        (true, &input["https://".len()..], Some(443))
    } else if lower.starts_with("http://") {
        (false, &input["http://".len()..], Some(80))
    } else if let Some(i) = input.find("://") {
        return Err(format!(
            "unsupported scheme {:?}: use http:// or https://",
            &input[..i]
        ));
    } else {
        (false, input, None)
    };
    // `https://api.example.com/` is fine; any other path is not.
    let rest = match default_port {
        Some(_) => rest.strip_suffix('/').unwrap_or(rest),
        None => rest,
    };
    if rest.contains(['/', '?', '#']) {
        return Err(
            "a target has no path, query or fragment (route paths are forwarded as they are)"
                .to_string(),
        );
    }
    if rest.contains('@') {
        return Err("a target has no user information".to_string());
    }
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (host, after) = r
            .split_once(']')
            .ok_or_else(|| "missing ']' after the IPv6 address".to_string())?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| "expected ':' and a port after ']'".to_string())?,
            ),
        };
        (host.to_string(), port)
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return Err("IPv6 addresses must be in brackets, e.g. [::1]:8080".to_string())
            }
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        if host.is_empty() {
            return Err("the host is missing".to_string());
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(format!("{host:?} is not a valid host name or IPv4 address"));
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match (port, default_port) {
        (Some(p), _) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("{p:?} is not a valid port (1-65535)")),
        },
        (None, Some(d)) => d,
        (None, None) => {
            return Err(
                "a port is required (host:port), or write http://host or https://host".to_string(),
            )
        }
    };
    Ok(Target { tls, host, port })
}

/// A DNS name usable as TLS server name (SNI): dot-separated labels of
/// letters, digits, `-` and `_`, not an IP address.
fn server_name_problem(name: &str) -> Option<String> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Some(format!(
            "{name:?} is an IP address: SNI carries DNS names only (leave sni out to verify the certificate against the target's address)"
        ));
    }
    let ok = name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        None
    } else {
        Some(format!(
            "{name:?} is not a valid server name (a DNS name such as api.example.com)"
        ))
    }
}

struct Validator<'a> {
    index: &'a PositionIndex,
    problems: Problems,
}

impl Validator<'_> {
    // ----- reporting -------------------------------------------------------

    /// A problem with the node at `path` (or its nearest written ancestor).
    fn error(&mut self, path: &str, message: impl Display) {
        let pos = self.index.locate(path);
        self.error_at(pos, path, message);
    }

    fn error_at(&mut self, pos: Position, path: &str, message: impl Display) {
        let message = if path.is_empty() {
            message.to_string()
        } else {
            format!("{path}: {message}")
        };
        self.problems.push((pos, message));
    }

    /// A required field that is absent (or written with no value).
    fn missing(&mut self, path: &str, why: &str) {
        let pos = self.index.missing(path);
        let what = if self.index.key(path).is_some() {
            "a value is required"
        } else {
            "missing required field"
        };
        self.error_at(pos, path, format!("{what}{why}"));
    }

    // ----- scalars ---------------------------------------------------------

    /// Text of an optional field.
    fn text(&self, s: &Option<Scalar>) -> Option<String> {
        given(s).and_then(Scalar::text)
    }

    /// Text of a required field.
    fn required_text(&mut self, path: &str, s: &Option<Scalar>) -> Option<String> {
        let t = self.text(s);
        if t.is_none() {
            self.missing(path, "");
        }
        t
    }

    /// Text that must not be empty.
    fn non_empty(&mut self, path: &str, s: &Option<Scalar>) -> Option<String> {
        let t = self.required_text(path, s)?;
        if t.trim().is_empty() {
            self.error(path, "must not be empty");
            return None;
        }
        Some(t)
    }

    /// A whole number in `min..=max`.
    fn number(&mut self, path: &str, s: &Scalar, min: u64, max: u64) -> Option<u64> {
        let n = match s {
            Scalar::Int(i) => *i,
            other => {
                self.error(path, format!("expected a whole number, got {other}"));
                return None;
            }
        };
        if n < i128::from(min) {
            if min == 1 {
                self.error(path, format!("must be greater than 0, got {n}"));
            } else {
                self.error(path, format!("must be at least {min}, got {n}"));
            }
            return None;
        }
        if n > i128::from(max) {
            self.error(path, format!("must be at most {max}, got {n}"));
            return None;
        }
        u64::try_from(n).ok()
    }

    /// An optional whole number in `min..=max`, `default` if omitted.
    fn number_or(
        &mut self,
        path: &str,
        s: &Option<Scalar>,
        min: u64,
        max: u64,
        default: u64,
    ) -> u64 {
        match given(s) {
            Some(s) => self.number(path, s, min, max).unwrap_or(default),
            None => default,
        }
    }

    fn flag_or(&mut self, path: &str, s: &Option<Scalar>, default: bool) -> bool {
        match given(s) {
            None => default,
            Some(Scalar::Bool(b)) => *b,
            Some(other) => {
                self.error(path, format!("expected true or false, got {other}"));
                default
            }
        }
    }

    /// A duration of at least `min`.
    fn duration(&mut self, path: &str, s: &Scalar, min: Duration) -> Option<Duration> {
        let text = s.text().unwrap_or_default();
        match duration::parse(&text) {
            Ok(d) if d < min => {
                if min == Duration::from_millis(1) {
                    self.error(path, format!("must be at least 1ms, got {text:?}"));
                } else {
                    self.error(
                        path,
                        format!("must be at least {}, got {text:?}", duration::format(min)),
                    );
                }
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    fn duration_or(
        &mut self,
        path: &str,
        s: &Option<Scalar>,
        min: Duration,
        default: Duration,
    ) -> Duration {
        match given(s) {
            Some(s) => self.duration(path, s, min).unwrap_or(default),
            None => default,
        }
    }

    /// One of a fixed set of words.
    fn choice_or<T: Copy>(
        &mut self,
        path: &str,
        s: &Option<Scalar>,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(s) = given(s) else {
            return default;
        };
        let text = s.text().unwrap_or_default();
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == text) {
            return *v;
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let expected = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        };
        self.error(path, format!("expected {expected}, got {s}"));
        default
    }

    fn addr(&mut self, path: &str, s: &Scalar) -> Option<SocketAddr> {
        let text = s.text().unwrap_or_default();
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                let hint = match text.rsplit_once(':') {
                    Some((host, _))
                        if host.chars().any(|c| c.is_ascii_alphabetic())
                            && !host.contains(['[', ':']) =>
                    {
                        " (host names are not accepted here: use an IP address such as 127.0.0.1 or 0.0.0.0)"
                    }
                    _ => "",
                };
                self.error(
                    path,
                    format!(
                        "invalid address {s}: expected IP:PORT such as 127.0.0.1:8080 or [::1]:8080{hint}"
                    ),
                );
                None
            }
        }
    }

    fn addr_or(&mut self, path: &str, s: &Option<Scalar>, default: &str) -> SocketAddr {
        let fallback = default
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
        match given(s) {
            Some(s) => self.addr(path, s).unwrap_or(fallback),
            None => fallback,
        }
    }

    // ----- sections --------------------------------------------------------

    fn config(&mut self, raw: &RawConfig) -> Config {
        let proxy = self.proxy(raw.proxy.as_ref().unwrap_or(&RawProxy::default()));
        let admin = self.admin(raw.admin.as_ref().unwrap_or(&RawAdmin::default()));
        let storage = self.storage(raw.storage.as_ref().unwrap_or(&RawStorage::default()));
        let limiter = self.limiter(raw.limiter.as_ref().unwrap_or(&RawLimiter::default()));
        let log = self.log(raw.log.as_ref().unwrap_or(&RawLog::default()));
        let usage = self.usage(raw.usage.as_ref().unwrap_or(&RawUsage::default()));
        let empty_plans = OrderedMap::default();
        let raw_plans = raw.plans.as_ref().unwrap_or(&empty_plans);
        let plans = self.plans(raw_plans);
        let empty_upstreams = OrderedMap::default();
        let raw_upstreams = raw.upstreams.as_ref().unwrap_or(&empty_upstreams);
        let upstreams = self.upstreams(raw_upstreams);
        let plan_names: Vec<&str> = raw_plans.0.iter().map(|(n, _)| n.as_str()).collect();
        let upstream_names: Vec<&str> = raw_upstreams.0.iter().map(|(n, _)| n.as_str()).collect();
        let routes = self.routes(
            raw.routes.as_deref().unwrap_or_default(),
            &plan_names,
            &upstream_names,
        );
        Config {
            source: None,
            proxy,
            admin,
            storage,
            limiter,
            log,
            usage,
            plans,
            upstreams,
            routes,
        }
    }

    fn proxy(&mut self, p: &RawProxy) -> ProxyConfig {
        let listen = self.addr_or("proxy.listen", &p.listen, DEFAULT_PROXY_LISTEN);
        let metrics_listen =
            given(&p.metrics_listen).and_then(|s| self.addr("proxy.metrics_listen", s));
        let threads = self.number_or("proxy.threads", &p.threads, 1, MAX_THREADS, DEFAULT_THREADS);
        let key_header = match self.text(&p.key_header) {
            None => DEFAULT_KEY_HEADER.to_string(),
            Some(h) if is_token(&h) => h.to_ascii_lowercase(),
            Some(h) => {
                self.error(
                    "proxy.key_header",
                    format!(
                        "invalid header name {h:?}: use letters, digits and !#$%&'*+-.^_`|~ only"
                    ),
                );
                DEFAULT_KEY_HEADER.to_string()
            }
        };
        let auth_failures_per_second = self.number_or(
            "proxy.auth_failures_per_second",
            &p.auth_failures_per_second,
            1,
            u64::from(u32::MAX),
            DEFAULT_AUTH_FAILURES_PER_SECOND,
        );
        let grace_period = self.duration_or(
            "proxy.grace_period",
            &p.grace_period,
            Duration::ZERO,
            DEFAULT_GRACE_PERIOD,
        );
        let keepalive_timeout = self.duration_or(
            "proxy.keepalive_timeout",
            &p.keepalive_timeout,
            Duration::ZERO,
            DEFAULT_KEEPALIVE_TIMEOUT,
        );
        let tls = p.tls.as_ref().and_then(|t| {
            let listen = match given(&t.listen) {
                Some(s) => self.addr("proxy.tls.listen", s),
                None => {
                    self.missing("proxy.tls.listen", "");
                    None
                }
            };
            let cert = self.non_empty("proxy.tls.cert", &t.cert);
            let key = self.non_empty("proxy.tls.key", &t.key);
            Some(TlsListener {
                listen: listen?,
                cert: PathBuf::from(cert?),
                key: PathBuf::from(key?),
            })
        });
        // One process binds all three: they must differ.
        let mut bound = vec![("proxy.listen", listen)];
        if let Some(m) = metrics_listen {
            bound.push(("proxy.metrics_listen", m));
        }
        if let Some(t) = &tls {
            bound.push(("proxy.tls.listen", t.listen));
        }
        for (i, (path, addr)) in bound.iter().enumerate() {
            if let Some((other, _)) = bound[..i]
                .iter()
                .find(|(_, a)| a == addr && addr.port() != 0)
            {
                self.error(path, format!("{addr} is already used by {other}"));
            }
        }
        let edge = self.edge(p);
        ProxyConfig {
            listen,
            metrics_listen,
            threads: usize::try_from(threads).unwrap_or(1),
            key_header,
            auth_failures_per_second: u32::try_from(auth_failures_per_second).unwrap_or(u32::MAX),
            grace_period,
            keepalive_timeout,
            tls,
            edge,
        }
    }

    /// The request-edge settings under `proxy.*`.
    fn edge(&mut self, p: &RawProxy) -> EdgeConfig {
        let d = EdgeConfig::default();
        let path_policy = self.choice_or(
            "proxy.path_policy",
            &p.path_policy,
            &[
                ("reject", PathPolicy::Reject),
                ("normalize", PathPolicy::Normalize),
            ],
            d.path_policy,
        );
        let mut nets = Vec::new();
        for (i, s) in p.trusted_proxies.iter().flatten().enumerate() {
            let path = item("proxy.trusted_proxies", i);
            match s.text() {
                None => self.error(&path, "expected a CIDR such as 10.0.0.0/8, got null"),
                Some(t) => match crate::net::parse_cidr(&t) {
                    Ok(n) => nets.push(n),
                    Err(e) => self.error(&path, e),
                },
            }
        }
        let proxy_protocol = self.flag_or("proxy.proxy_protocol", &p.proxy_protocol, false);
        let header_timeout = self.duration_or(
            "proxy.header_timeout",
            &p.header_timeout,
            Duration::from_millis(100),
            d.header_timeout,
        );
        let body_timeout = self.duration_or(
            "proxy.body_timeout",
            &p.body_timeout,
            Duration::from_millis(100),
            d.body_timeout,
        );
        let max_header_bytes = match given(&p.max_header_bytes) {
            None => d.max_header_bytes,
            Some(s) => self
                .byte_size("proxy.max_header_bytes", s, 1024, 1024 * 1024)
                .unwrap_or(d.max_header_bytes),
        };
        let max_connections_per_ip = self.number_or(
            "proxy.max_connections_per_ip",
            &p.max_connections_per_ip,
            0,
            u64::from(u32::MAX),
            u64::from(d.max_connections_per_ip),
        );
        EdgeConfig {
            path_policy,
            trusted_proxies: crate::net::TrustedProxies::new(nets),
            proxy_protocol,
            header_timeout,
            body_timeout,
            max_header_bytes,
            max_connections_per_ip: u32::try_from(max_connections_per_ip).unwrap_or(u32::MAX),
        }
    }

    /// A size in bytes: a whole number, or with `KiB`/`MiB` (`KB`/`MB`, `k`,
    /// `m` mean the same), within `min..=max`.
    fn byte_size(&mut self, path: &str, s: &Scalar, min: usize, max: usize) -> Option<usize> {
        let text = s.text().unwrap_or_default();
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1024,
            "m" | "mb" | "mib" => 1024 * 1024,
            _ => 0,
        };
        let n = digits
            .parse::<usize>()
            .ok()
            .filter(|_| factor > 0)
            .and_then(|n| n.checked_mul(factor));
        match n {
            None => {
                self.error(
                    path,
                    format!("expected a size such as 32768, 32KiB or 1MiB, got {s}"),
                );
                None
            }
            Some(n) if n < min || n > max => {
                self.error(
                    path,
                    format!("must be between {min} and {max} bytes, got {text:?}"),
                );
                None
            }
            Some(n) => Some(n),
        }
    }

    fn admin(&mut self, a: &RawAdmin) -> AdminConfig {
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
        let session_ttl = self.duration_or(
            "admin.session_ttl",
            &a.session_ttl,
            Duration::from_secs(60),
            DEFAULT_SESSION_TTL,
        );
        if session_ttl > Duration::from_secs(30 * 86_400) {
            self.error("admin.session_ttl", "must be at most 30d");
        }
        let mut allowed_hosts = Vec::new();
        for (i, h) in a.allowed_hosts.iter().flatten().enumerate() {
            let path = format!("admin.allowed_hosts[{i}]");
            let text = h.text().unwrap_or_default().trim().to_ascii_lowercase();
            if text.is_empty()
                || !text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
            {
                self.error(
                    &path,
                    format!("{h} is not a host name, host:port or IP address"),
                );
            } else {
                allowed_hosts.push(text);
            }
        }
        let header_timeout = self.duration_or(
            "admin.header_timeout",
            &a.header_timeout,
            Duration::from_millis(100),
            DEFAULT_ADMIN_HEADER_TIMEOUT,
        );
        let idle_timeout = self.duration_or(
            "admin.idle_timeout",
            &a.idle_timeout,
            Duration::from_secs(1),
            DEFAULT_ADMIN_IDLE_TIMEOUT,
        );
        let max_connections = self.number_or(
            "admin.max_connections",
            &a.max_connections,
            1,
            1_000_000,
            DEFAULT_ADMIN_MAX_CONNECTIONS,
        );
        let audit_retention = self.duration_or(
            "admin.audit_retention",
            &a.audit_retention,
            Duration::from_secs(86_400),
            DEFAULT_AUDIT_RETENTION,
        );
        AdminConfig {
            listen,
            jwt_secret_env,
            session_ttl,
            allowed_hosts,
            header_timeout,
            idle_timeout,
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            audit_retention,
        }
    }

    fn storage(&mut self, s: &RawStorage) -> StorageConfig {
        let database_url = match self.text(&s.database_url) {
            None => DEFAULT_DATABASE_URL.to_string(),
            Some(url) if url.starts_with("sqlite:") => url,
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                // As the driver will read it: sslmode, sslrootcert, … are
                // checked here, not at the first connection.
                if let Err(e) = url.parse::<sqlx::postgres::PgConnectOptions>() {
                    self.error(
                        "storage.database_url",
                        format!("invalid PostgreSQL URL: {e}"),
                    );
                }
                url
            }
            Some(url) => {
                self.error(
                    "storage.database_url",
                    format!(
                        "unsupported database URL {url:?}: expected sqlite:… (e.g. sqlite://tollgate.db) or postgres://…"
                    ),
                );
                DEFAULT_DATABASE_URL.to_string()
            }
        };
        let key_refresh = self.duration_or(
            "storage.key_refresh",
            &s.key_refresh,
            Duration::from_millis(1),
            DEFAULT_KEY_REFRESH,
        );
        StorageConfig {
            database_url,
            key_refresh,
        }
    }

    fn limiter(&mut self, l: &RawLimiter) -> LimiterConfig {
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
        let redis_timeout = self.duration_or(
            "limiter.redis_timeout",
            &l.redis_timeout,
            Duration::from_millis(1),
            DEFAULT_REDIS_TIMEOUT,
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
        let concurrency_lease = self.duration_or(
            "limiter.concurrency_lease",
            &l.concurrency_lease,
            Duration::from_millis(300),
            DEFAULT_CONCURRENCY_LEASE,
        );
        LimiterConfig {
            backend,
            redis_url,
            redis_timeout,
            on_redis_error,
            redis_ca_file,
            concurrency_lease,
        }
    }

    fn log(&mut self, l: &RawLog) -> LogConfig {
        let levels: Vec<(&str, &str)> = LOG_LEVELS.iter().map(|l| (*l, *l)).collect();
        let level = self
            .choice_or("log.level", &l.level, &levels, DEFAULT_LOG_LEVEL)
            .to_string();
        let format = self.choice_or(
            "log.format",
            &l.format,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            LogFormat::Text,
        );
        let access_log = self.flag_or("log.access_log", &l.access_log, true);
        LogConfig {
            level,
            format,
            access_log,
        }
    }

    fn usage(&mut self, u: &RawUsage) -> UsageConfig {
        let flush_interval = self.duration_or(
            "usage.flush_interval",
            &u.flush_interval,
            Duration::from_millis(1),
            DEFAULT_FLUSH_INTERVAL,
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

    /// Check the names of a `plans` or `upstreams` mapping: non-empty and
    /// unique. Returns, per entry, whether its name is usable.
    fn names<T>(&mut self, section: &str, what: &str, map: &OrderedMap<T>) -> Vec<bool> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        map.0
            .iter()
            .map(|(name, _)| {
                let path = child(section, name);
                let n = seen.entry(name.as_str()).or_insert(0);
                let occurrence = *n;
                *n += 1;
                let pos = self
                    .index
                    .key_occurrence(&path, occurrence)
                    .unwrap_or_else(|| self.index.locate(section));
                if name.trim().is_empty() {
                    self.error_at(pos, section, format!("{what} name must not be empty"));
                    false
                } else if occurrence > 0 {
                    self.error_at(pos, &path, format!("duplicate {what} name {name:?}"));
                    false
                } else {
                    true
                }
            })
            .collect()
    }

    fn plans(&mut self, raw: &OrderedMap<RawPlan>) -> BTreeMap<String, Plan> {
        let ok = self.names("plans", "plan", raw);
        let mut plans = BTreeMap::new();
        for ((name, p), ok) in raw.0.iter().zip(ok) {
            let path = child("plans", name);
            let limits = self.limits(&child(&path, "limits"), p.limits.as_deref());
            let concurrency = given(&p.concurrency)
                .and_then(|s| self.number(&child(&path, "concurrency"), s, 1, u64::from(u32::MAX)));
            if ok {
                plans.insert(
                    name.clone(),
                    Plan {
                        name: name.clone(),
                        limits,
                        concurrency: concurrency.and_then(|c| u32::try_from(c).ok()),
                    },
                );
            }
        }
        plans
    }

    /// A list of limits (a plan's or a route's).
    fn limits(&mut self, path: &str, raw: Option<&[RawLimit]>) -> Vec<Limit> {
        let mut out = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, l) in raw.unwrap_or_default().iter().enumerate() {
            let lp = item(path, i);
            let name_path = child(&lp, "name");
            let name = self.non_empty(&name_path, &l.name).filter(|name| {
                if !is_sf_string_safe(name) {
                    self.error(
                        &name_path,
                        format!(
                            "invalid limit name {name:?}: use printable ASCII characters other than \" and \\ (the name is sent in RateLimit headers)"
                        ),
                    );
                    return false;
                }
                if let Some(first) = names.get(name) {
                    self.error(
                        &name_path,
                        format!("duplicate limit name {name:?} (also {})", item(path, *first)),
                    );
                    return false;
                }
                names.insert(name.clone(), i);
                true
            });
            let rate = match given(&l.rate) {
                Some(s) => self.number(&child(&lp, "rate"), s, 1, u64::MAX),
                None => {
                    self.missing(&child(&lp, "rate"), "");
                    None
                }
            };
            let per = match given(&l.per) {
                Some(s) => self.duration(&child(&lp, "per"), s, Duration::from_millis(1)),
                None => {
                    self.missing(&child(&lp, "per"), "");
                    None
                }
            };
            // `Some(None)`: omitted; `None`: invalid (and reported).
            let burst = match given(&l.burst) {
                None => Some(None),
                Some(s) => self.number(&child(&lp, "burst"), s, 1, u64::MAX).map(Some),
            };
            let cost = match given(&l.cost) {
                None => Some(None),
                Some(s) => self.number(&child(&lp, "cost"), s, 1, u64::MAX).map(Some),
            };
            let (Some(name), Some(rate), Some(per), Some(burst), Some(cost)) =
                (name, rate, per, burst, cost)
            else {
                continue;
            };
            let limit = Limit {
                name,
                rate,
                per,
                burst,
                cost,
            };
            if limit.cost() > limit.burst() {
                let of = if burst.is_some() {
                    format!("burst {}", limit.burst())
                } else {
                    format!("burst {} (the rate, as burst is not set)", limit.burst())
                };
                self.error(
                    &child(&lp, "cost"),
                    format!(
                        "cost {} is more than {of}: no request could ever be admitted",
                        limit.cost()
                    ),
                );
                continue;
            }
            out.push(limit);
        }
        out
    }

    fn upstreams(&mut self, raw: &OrderedMap<RawUpstream>) -> BTreeMap<String, Upstream> {
        let ok = self.names("upstreams", "upstream", raw);
        let mut upstreams = BTreeMap::new();
        for ((name, u), ok) in raw.0.iter().zip(ok) {
            let path = child("upstreams", name);
            let targets_path = child(&path, "targets");
            let mut targets = Vec::new();
            match &u.targets {
                None => self.missing(&targets_path, ""),
                Some(list) if list.is_empty() => {
                    self.error(&targets_path, "at least one target is required");
                }
                Some(list) => {
                    for (i, t) in list.iter().enumerate() {
                        let tp = item(&targets_path, i);
                        let Some(text) = t.text() else {
                            self.error(&tp, "expected a target such as 127.0.0.1:3001, got null");
                            continue;
                        };
                        match parse_target(&text) {
                            Ok(target) => targets.push(target),
                            Err(why) => self.error(&tp, format!("invalid target {t}: {why}")),
                        }
                    }
                }
            }
            let health_check = u.health_check.as_ref().and_then(|h| {
                let hp = child(&path, "health_check");
                let pp = child(&hp, "path");
                let hc_path = self.required_text(&pp, &h.path).filter(|p| {
                    let ok = p.starts_with('/');
                    if !ok {
                        self.error(&pp, format!("must start with '/', got {p:?}"));
                    }
                    ok
                });
                let interval = self.duration_or(
                    &child(&hp, "interval"),
                    &h.interval,
                    Duration::from_millis(1),
                    DEFAULT_HEALTH_CHECK_INTERVAL,
                );
                Some(HealthCheck {
                    path: hc_path?,
                    interval,
                })
            });
            let defaults = Timeouts::default();
            let timeouts = match &u.timeouts {
                None => defaults,
                Some(t) => {
                    let tp = child(&path, "timeouts");
                    let min = Duration::from_millis(1);
                    Timeouts {
                        connect: self.duration_or(
                            &child(&tp, "connect"),
                            &t.connect,
                            min,
                            defaults.connect,
                        ),
                        read: self.duration_or(&child(&tp, "read"), &t.read, min, defaults.read),
                        write: self.duration_or(
                            &child(&tp, "write"),
                            &t.write,
                            min,
                            defaults.write,
                        ),
                        idle: self.duration_or(&child(&tp, "idle"), &t.idle, min, defaults.idle),
                    }
                }
            };
            let preserve_host =
                self.flag_or(&child(&path, "preserve_host"), &u.preserve_host, false);
            let resolve_interval = self.duration_or(
                &child(&path, "resolve_interval"),
                &u.resolve_interval,
                Duration::from_secs(1),
                DEFAULT_RESOLVE_INTERVAL,
            );
            let tls = match &u.tls {
                None => UpstreamTls::default(),
                Some(t) => {
                    let tp = child(&path, "tls");
                    let ca_path = child(&tp, "ca_file");
                    let ca_file = given(&t.ca_file)
                        .and_then(|_| self.non_empty(&ca_path, &t.ca_file))
                        .map(PathBuf::from);
                    let verify = self.flag_or(&child(&tp, "verify"), &t.verify, true);
                    let sni_path = child(&tp, "sni");
                    let sni = self.text(&t.sni).and_then(|name| {
                        let name = name.to_ascii_lowercase();
                        match server_name_problem(&name) {
                            None => Some(name),
                            Some(why) => {
                                self.error(&sni_path, why);
                                None
                            }
                        }
                    });
                    if !verify && ca_file.is_some() {
                        self.error(
                            &ca_path,
                            "has no effect with verify: false (remove one of them)",
                        );
                    }
                    if !targets.is_empty() && !targets.iter().any(|t| t.tls) {
                        self.error(
                            &tp,
                            "applies to https:// targets only, and this upstream has none",
                        );
                    }
                    UpstreamTls {
                        ca_file,
                        verify,
                        sni,
                    }
                }
            };
            if ok {
                upstreams.insert(
                    name.clone(),
                    Upstream {
                        name: name.clone(),
                        targets,
                        health_check,
                        timeouts,
                        preserve_host,
                        tls,
                        resolve_interval,
                    },
                );
            }
        }
        upstreams
    }

    fn routes(&mut self, raw: &[RawRoute], plans: &[&str], upstreams: &[&str]) -> Vec<Route> {
        let mut routes = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        // (index, prefix, methods, case_insensitive) of the routes so far.
        let mut matchers: Vec<(usize, String, Option<Vec<String>>, bool)> = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let path = item("routes", i);
            let name_path = child(&path, "name");
            let name = self.non_empty(&name_path, &r.name).filter(|name| {
                if let Some(first) = names.get(name) {
                    self.error(
                        &name_path,
                        format!("duplicate route name {name:?} (also routes[{first}])"),
                    );
                    return false;
                }
                names.insert(name.clone(), i);
                true
            });

            let match_path = child(&path, "match");
            let (path_prefix, methods, case_insensitive) = match &r.match_ {
                None => {
                    self.missing(&match_path, "");
                    (None, None, false)
                }
                Some(m) => {
                    let pp = child(&match_path, "path_prefix");
                    let prefix = self.required_text(&pp, &m.path_prefix).filter(|p| {
                        if !p.starts_with('/') {
                            self.error(&pp, format!("must start with '/', got {p:?}"));
                            return false;
                        }
                        if p.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
                            self.error(&pp, format!("{p:?} is not a path: no spaces, '?' or '#'"));
                            return false;
                        }
                        if !crate::path::is_canonical(p) {
                            let hint = crate::path::canonicalize(p.as_bytes(), PathPolicy::Normalize)
                                .map(|c| format!(" (write {:?})", c.path))
                                .unwrap_or_default();
                            self.error(
                                &pp,
                                format!(
                                    "{p:?} is not a canonical path: no '.', '..' or empty segments, ';', '\\', encoded '/' or escapes of plain characters{hint}"
                                ),
                            );
                            return false;
                        }
                        true
                    });
                    let methods = m
                        .methods
                        .as_ref()
                        .map(|list| self.methods(&child(&match_path, "methods"), list));
                    let ci = self.flag_or(
                        &child(&match_path, "case_insensitive"),
                        &m.case_insensitive,
                        false,
                    );
                    (prefix, methods, ci)
                }
            };

            let upstream_path = child(&path, "upstream");
            let upstream = self.required_text(&upstream_path, &r.upstream).filter(|u| {
                let ok = upstreams.contains(&u.as_str());
                if !ok {
                    self.error(
                        &upstream_path,
                        format!("unknown upstream {u:?} ({})", known(upstreams, "upstreams")),
                    );
                }
                ok
            });

            if let Some(prefix) = &path_prefix {
                let own = methods.clone().flatten();
                let clash = matchers.iter().find(|(_, p, m, ci)| {
                    let same = if *ci || case_insensitive {
                        p.eq_ignore_ascii_case(prefix)
                    } else {
                        p == prefix
                    };
                    same && methods_overlap(m.as_deref(), own.as_deref())
                });
                if let Some((first, ..)) = clash {
                    self.error(
                        &child(&match_path, "path_prefix"),
                        format!(
                            "{prefix:?} with these methods is also matched by routes[{first}]; \
                             only one of them could ever be chosen"
                        ),
                    );
                }
                matchers.push((i, prefix.clone(), own, case_insensitive));
            }

            let strip_path = child(&path, "strip_prefix");
            let strip_prefix = self.text(&r.strip_prefix);
            if let Some(s) = &strip_prefix {
                if !s.starts_with('/') {
                    self.error(&strip_path, format!("must start with '/', got {s:?}"));
                } else if let Some(p) = &path_prefix {
                    if !p.starts_with(s.as_str()) {
                        self.error(
                            &strip_path,
                            format!("{s:?} is not a prefix of match.path_prefix {p:?}"),
                        );
                    }
                }
            }

            let auth = self.choice_or(
                &child(&path, "auth"),
                &r.auth,
                &[("api_key", Auth::ApiKey), ("none", Auth::None)],
                Auth::ApiKey,
            );

            let plan_path = child(&path, "default_plan");
            let default_plan = self.text(&r.default_plan);
            if let Some(p) = &default_plan {
                if !plans.contains(&p.as_str()) {
                    self.error(
                        &plan_path,
                        format!("unknown plan {p:?} ({})", known(plans, "plans")),
                    );
                }
            }

            let limits = self.limits(&child(&path, "limits"), r.limits.as_deref());
            let shadow = self.flag_or(&child(&path, "shadow"), &r.shadow, false);
            let allow_method_override = self.flag_or(
                &child(&path, "allow_method_override"),
                &r.allow_method_override,
                false,
            );

            if let (Some(name), Some(path_prefix), Some(upstream)) = (name, path_prefix, upstream) {
                routes.push(Route {
                    name,
                    path_prefix,
                    methods: methods.flatten(),
                    upstream,
                    strip_prefix,
                    auth,
                    default_plan,
                    limits,
                    shadow,
                    case_insensitive,
                    allow_method_override,
                });
            }
        }
        routes
    }

    /// `match.methods`: upper-cased, deduplicated, in file order.
    fn methods(&mut self, path: &str, list: &[Scalar]) -> Option<Vec<String>> {
        if list.is_empty() {
            self.error(
                path,
                "must not be empty (leave methods out to match every method)",
            );
            return None;
        }
        let mut out: Vec<String> = Vec::new();
        for (i, m) in list.iter().enumerate() {
            let mp = item(path, i);
            let Some(text) = m.text() else {
                self.error(&mp, "expected an HTTP method such as GET, got null");
                continue;
            };
            let upper = text.to_ascii_uppercase();
            if !is_token(&upper) {
                self.error(&mp, format!("invalid HTTP method {m}"));
                continue;
            }
            if !out.contains(&upper) {
                out.push(upper);
            }
        }
        Some(out)
    }
}

/// Whether two routes' method lists (`None`: every method) share a method.
fn methods_overlap(a: Option<&[String]>, b: Option<&[String]>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK_START: &str = include_str!("../../../config/tollgate.yaml");
    const PRODUCTION: &str = include_str!("../../../config/examples/production.yaml");

    /// Upstream `demo` and plan `free`, for routes to refer to.
    const BASE: &str = "\
upstreams:
  demo: { targets: [\"127.0.0.1:3001\"] }
plans:
  free: { limits: [ { name: minute, rate: 60, per: 1m } ] }
";

    fn errors(src: &str) -> Vec<ConfigError> {
        match parse_and_validate(src, "test.yaml") {
            Ok(c) => panic!("accepted:\n{src}\nas {c:?}"),
            Err(e) => {
                assert!(!e.0.is_empty(), "empty error list");
                e.0
            }
        }
    }

    fn ok(src: &str) -> Config {
        match parse_and_validate(src, "test.yaml") {
            Ok(c) => c,
            Err(e) => panic!("refused:\n{src}\n{e}"),
        }
    }

    #[test]
    fn edge_settings_have_defaults_and_parse() {
        let c = ok("");
        assert_eq!(c.proxy.edge, EdgeConfig::default());
        assert_eq!(c.proxy.edge.max_header_bytes, 32 * 1024);
        let c = ok("proxy:\n  path_policy: normalize\n  trusted_proxies: [10.0.0.0/8, \"::1\", 192.0.2.7]\n  proxy_protocol: true\n  header_timeout: 2s\n  body_timeout: 3s\n  max_header_bytes: 64KiB\n  max_connections_per_ip: 0\n");
        let e = &c.proxy.edge;
        assert_eq!(e.path_policy, PathPolicy::Normalize);
        assert_eq!(e.trusted_proxies.nets().len(), 3);
        assert!(e.trusted_proxies.contains("10.1.2.3".parse().expect("ip")));
        assert!(e.proxy_protocol);
        assert_eq!(e.header_timeout, Duration::from_secs(2));
        assert_eq!(e.body_timeout, Duration::from_secs(3));
        assert_eq!(e.max_header_bytes, 64 * 1024);
        assert_eq!(e.max_connections_per_ip, 0);
        assert_eq!(
            ok("proxy: { max_header_bytes: 4096 }")
                .proxy
                .edge
                .max_header_bytes,
            4096
        );
    }

    #[test]
    fn hostile_edge_settings_are_refused_at_their_position() {
        for (src, needle) in [
            (
                "proxy:\n  path_policy: lenient\n",
                "expected reject or normalize",
            ),
            (
                "proxy:\n  trusted_proxies: [10.0.0.0/33]\n",
                "invalid network",
            ),
            (
                "proxy:\n  trusted_proxies: [evil.example]\n",
                "invalid network",
            ),
            ("proxy:\n  trusted_proxies: [~]\n", "got null"),
            ("proxy:\n  trusted_proxies: 10.0.0.0/8\n", ""),
            ("proxy:\n  proxy_protocol: yes please\n", "true or false"),
            ("proxy:\n  header_timeout: 0s\n", "at least"),
            ("proxy:\n  body_timeout: 0s\n", "at least"),
            ("proxy:\n  body_timeout: soon\n", ""),
            ("proxy:\n  max_header_bytes: 10\n", "between"),
            ("proxy:\n  max_header_bytes: 2MiB\n", "between"),
            (
                "proxy:\n  max_header_bytes: 32 parsecs\n",
                "expected a size",
            ),
            (
                "proxy:\n  max_header_bytes: 99999999999999999999KiB\n",
                "expected a size",
            ),
            ("proxy:\n  max_connections_per_ip: -1\n", "at least 0"),
        ] {
            let errs = errors(src);
            assert!(
                errs.iter()
                    .any(|e| e.message.contains(needle) && e.line >= 1),
                "{src}: {errs:?}"
            );
        }
        for prefix in [
            "/a/../b", "/a//b", "/a/./b", "/%7euser", "/a;b", "/a%2fb", "/a\\\\b",
        ] {
            let src = format!(
                "{BASE}routes:\n  - {{ name: r, match: {{ path_prefix: \"{prefix}\" }}, upstream: demo }}\n"
            );
            let errs = errors(&src);
            assert!(
                errs.iter()
                    .any(|e| e.message.contains("not a canonical path") && e.line == 6),
                "{prefix}: {errs:?}"
            );
        }
        let src = format!(
            "{BASE}routes:\n  - {{ name: r, match: {{ path_prefix: /a, case_insensitive: maybe }}, upstream: demo, allow_method_override: 1 }}\n"
        );
        let errs = errors(&src);
        assert_eq!(errs.len(), 2, "{errs:?}");
        let c = ok(&format!(
            "{BASE}routes:\n  - {{ name: r, match: {{ path_prefix: /A, case_insensitive: true }}, upstream: demo, allow_method_override: true }}\n"
        ));
        assert!(c.routes[0].case_insensitive && c.routes[0].allow_method_override);
    }

    #[test]
    fn shipped_configs_validate() {
        let quick = ok(QUICK_START);
        assert_eq!(quick.routes.len(), 4);
        assert_eq!(quick.plans.len(), 2);
        assert_eq!(
            quick.upstreams["demo"].targets[0].authority(),
            "127.0.0.1:3001"
        );
        assert_eq!(quick.routes[3].auth, Auth::None);
        let prod = ok(PRODUCTION);
        assert_eq!(prod.limiter.backend, LimiterBackend::Redis);
        assert_eq!(prod.plans["pro"].concurrency, Some(20));
        assert_eq!(prod.upstreams["api"].targets.len(), 2);
        assert_eq!(prod.log.format, LogFormat::Json);
        assert!(prod.storage.database_url.starts_with("postgres://"));
        assert_eq!(prod.proxy.tls.as_ref().map(|t| t.listen.port()), Some(8443));
        let billing = &prod.upstreams["billing"];
        assert!(billing.targets.iter().all(|t| t.tls));
        assert_eq!(billing.tls.sni.as_deref(), Some("billing.internal.example"));
        assert!(billing.tls.ca_file.is_some());
        assert_eq!(prod.upstreams["partner"].targets[0].port, 443);
        // The embedded copy is the same file.
        assert_eq!(super::super::DEFAULT_YAML, QUICK_START);
    }

    #[test]
    fn empty_document_gives_the_defaults() {
        let expected = Config {
            source: None,
            proxy: ProxyConfig {
                listen: "127.0.0.1:8080".parse().expect("addr"),
                metrics_listen: None,
                threads: 2,
                key_header: "x-api-key".into(),
                auth_failures_per_second: 20,
                grace_period: Duration::from_secs(10),
                keepalive_timeout: Duration::from_secs(60),
                tls: None,
                edge: EdgeConfig::default(),
            },
            admin: AdminConfig {
                listen: "127.0.0.1:8081".parse().expect("addr"),
                jwt_secret_env: "TOLLGATE_JWT_SECRET".into(),
                session_ttl: Duration::from_secs(12 * 3600),
                allowed_hosts: Vec::new(),
                header_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
                max_connections: 512,
                audit_retention: Duration::from_secs(365 * 86_400),
            },
            storage: StorageConfig {
                database_url: "sqlite://tollgate.db".into(),
                key_refresh: Duration::from_millis(500),
            },
            limiter: LimiterConfig {
                backend: LimiterBackend::Local,
                redis_url: None,
                redis_timeout: Duration::from_millis(20),
                on_redis_error: OnRedisError::Local,
                redis_ca_file: None,
                concurrency_lease: DEFAULT_CONCURRENCY_LEASE,
            },
            log: LogConfig {
                level: "info".into(),
                format: LogFormat::Text,
                access_log: true,
            },
            usage: UsageConfig {
                flush_interval: Duration::from_secs(5),
                retention_days: 30,
                violation_retention_days: 7,
                buffer_rows: 100_000,
            },
            plans: BTreeMap::new(),
            upstreams: BTreeMap::new(),
            routes: Vec::new(),
        };
        for src in [
            "",
            "\n",
            "# only a comment\n",
            "---\n",
            "~\n",
            "proxy:\nadmin: ~\nroutes:\n",
        ] {
            assert_eq!(ok(src), expected, "{src:?}");
        }
    }

    #[test]
    fn minimal_file_fills_in_defaults() {
        let c = ok("\
upstreams:
  demo: { targets: [\"127.0.0.1:3001\"] }
routes:
  - name: all
    match: { path_prefix: / }
    upstream: demo
");
        let r = &c.routes[0];
        assert_eq!(r.methods, None);
        assert_eq!(r.auth, Auth::ApiKey);
        assert_eq!(r.default_plan, None);
        assert!(r.limits.is_empty());
        assert!(!r.shadow);
        assert_eq!(r.strip_prefix, None);
        let u = &c.upstreams["demo"];
        assert_eq!(u.timeouts, Timeouts::default());
        assert!(!u.preserve_host);
        assert_eq!(u.health_check, None);
        assert_eq!(u.tls, UpstreamTls::default());
        assert!(u.tls.verify);
    }

    #[test]
    fn upstream_tls_settings() {
        let c = ok("\
upstreams:
  private:
    targets: [\"https://10.0.0.5:8443\", \"https://10.0.0.6:8443\"]
    tls: { ca_file: certs/internal-ca.pem, sni: API.internal.example }
  lab:
    targets: [\"https://lab.example:443\"]
    tls: { verify: false }
  public:
    targets: [\"https://api.example.com\"]
    tls: {}
");
        let private = &c.upstreams["private"].tls;
        assert_eq!(
            private.ca_file.as_deref(),
            Some(std::path::Path::new("certs/internal-ca.pem"))
        );
        assert!(private.verify);
        assert_eq!(private.sni.as_deref(), Some("api.internal.example"));
        let lab = &c.upstreams["lab"].tls;
        assert!(!lab.verify);
        assert_eq!(lab.ca_file, None);
        assert_eq!(c.upstreams["public"].tls, UpstreamTls::default());
        for name in ["a", "api.example.com", "my_host-1.internal"] {
            assert_eq!(server_name_problem(name), None, "{name}");
        }
        for name in [
            "",
            "-a.example",
            "a..b",
            "a b",
            "10.0.0.1",
            "::1",
            "a.example-",
        ] {
            assert!(server_name_problem(name).is_some(), "{name:?} accepted");
        }
    }

    #[test]
    fn values_are_normalised() {
        let c = ok(&format!(
            "{BASE}proxy:
  key_header: X-Api-Key
  tls: {{ listen: \"0.0.0.0:8443\", cert: certs/server.pem, key: certs/server.key }}
upstreams2: ~
"
        )
        .replace("upstreams2: ~\n", "routes:\n  - { name: r, match: { path_prefix: /a, methods: [get, POST, Get] }, upstream: demo }\n"));
        assert_eq!(c.proxy.key_header, "x-api-key");
        assert_eq!(
            c.routes[0].methods,
            Some(vec!["GET".to_string(), "POST".to_string()])
        );
        let tls = c.proxy.tls.expect("tls");
        assert_eq!(tls.cert, PathBuf::from("certs/server.pem"));
        assert_eq!(tls.listen.port(), 8443);
    }

    #[test]
    fn limits_are_converted() {
        let c = ok("plans:
  p:
    limits:
      - { name: a, rate: 5, per: 20ms, burst: 7, cost: 7 }
      - name: b
        rate: 1
        per: 1d
    concurrency: 3
");
        let p = &c.plans["p"];
        assert_eq!(p.concurrency, Some(3));
        assert_eq!(
            p.limits,
            vec![
                Limit {
                    name: "a".into(),
                    rate: 5,
                    per: Duration::from_millis(20),
                    burst: Some(7),
                    cost: Some(7),
                },
                Limit {
                    name: "b".into(),
                    rate: 1,
                    per: Duration::from_secs(86_400),
                    burst: None,
                    cost: None,
                },
            ]
        );
    }

    #[test]
    fn targets() {
        let t = |s: &str| parse_target(s);
        let target = |tls, host: &str, port| Target {
            tls,
            host: host.into(),
            port,
        };
        assert_eq!(t("127.0.0.1:3001"), Ok(target(false, "127.0.0.1", 3001)));
        assert_eq!(t("backend:80"), Ok(target(false, "backend", 80)));
        assert_eq!(
            t("http://api.example.com"),
            Ok(target(false, "api.example.com", 80))
        );
        assert_eq!(
            t("https://api.example.com"),
            Ok(target(true, "api.example.com", 443))
        );
        assert_eq!(
            t("https://API.example.com:8443/"),
            Ok(target(true, "api.example.com", 8443))
        );
        assert_eq!(t("[::1]:8080"), Ok(target(false, "::1", 8080)));
        assert_eq!(
            t("https://[2001:db8::1]"),
            Ok(target(true, "2001:db8::1", 443))
        );
        assert_eq!(
            t("[::1]:8080").map(|t| t.authority()),
            Ok("[::1]:8080".to_string())
        );
        for bad in [
            "",
            "localhost",
            "127.0.0.1",
            "::1:8080",
            "[::1",
            "[nope]:80",
            "[::1]8080",
            "host:0",
            "host:65536",
            "host:http",
            ":8080",
            "ftp://host",
            "http://",
            "http://host/path",
            "http://user@host",
            "host name:80",
        ] {
            assert!(t(bad).is_err(), "{bad:?} accepted: {:?}", t(bad));
        }
    }

    /// (source, line, column, message fragment): each must be reported, at
    /// exactly that place.
    #[test]
    fn bad_inputs_are_reported_where_they_are() {
        let cases: &[(&str, usize, usize, &str)] = &[
            // Unknown fields, block and flow.
            (
                "proxy:\n  listen: \"127.0.0.1:8080\"\n  listne: x\n",
                3,
                3,
                "proxy: unknown field `listne`",
            ),
            (
                "routes:\n  - { name: a, match: { path_prefix: /a, method: [GET] }, upstream: demo }\n",
                2,
                42,
                "routes[0].match: unknown field `method`",
            ),
            ("prxy: {}\n", 1, 1, "unknown field `prxy`"),
            // Bad durations.
            (
                "plans:\n  free: { limits: [ { name: m, rate: 1, per: 1x } ] }\n",
                2,
                46,
                "plans.free.limits[0].per: invalid duration \"1x\"",
            ),
            ("storage:\n  key_refresh: 60\n", 2, 16, "storage.key_refresh: invalid duration \"60\""),
            ("limiter:\n  redis_timeout: 0ms\n", 2, 18, "limiter.redis_timeout: must be at least 1ms"),
            (
                "plans:\n  p:\n    limits:\n      - name: x\n        rate: 1\n        per: 0s\n",
                6,
                14,
                "plans.p.limits[0].per: must be at least 1ms",
            ),
            // References.
            (
                "upstreams:\n  demo: { targets: [\"127.0.0.1:3001\"] }\nroutes: [ { name: a, match: { path_prefix: /a }, upstream: dem } ]\n",
                3,
                60,
                "routes[0].upstream: unknown upstream \"dem\" (known: demo)",
            ),
            (
                "upstreams:\n  demo: { targets: [\"127.0.0.1:3001\"] }\nplans: { free: {}, pro: {} }\nroutes:\n  - name: a\n    match: { path_prefix: /a }\n    upstream: demo\n    default_plan: gold\n",
                8,
                19,
                "routes[0].default_plan: unknown plan \"gold\" (known: free, pro)",
            ),
            // Duplicates.
            (
                "upstreams:\n  demo: { targets: [\"127.0.0.1:3001\"] }\nroutes:\n  - { name: a, match: { path_prefix: /a }, upstream: demo }\n  - { name: a, match: { path_prefix: /b }, upstream: demo }\n",
                5,
                13,
                "routes[1].name: duplicate route name \"a\" (also routes[0])",
            ),
            (
                "upstreams:\n  demo: { targets: [\"127.0.0.1:3001\"] }\nroutes:\n  - { name: a, match: { path_prefix: /a, methods: [GET, POST] }, upstream: demo, auth: none }\n  - { name: b, match: { path_prefix: /a, methods: [POST] }, upstream: demo }\n",
                5,
                38,
                "routes[1].match.path_prefix: \"/a\" with these methods is also matched by routes[0]; only one of them could ever be chosen",
            ),
            (
                "plans:\n  p: { limits: [ { name: m, rate: 1, per: 1s }, { name: m, rate: 2, per: 1m } ] }\n",
                2,
                57,
                "plans.p.limits[1].name: duplicate limit name \"m\" (also plans.p.limits[0])",
            ),
            (
                "plans:\n  free: {}\n  pro: {}\n  free: {}\n",
                4,
                3,
                "plans.free: key \"free\" is repeated (first given at line 2, column 3)",
            ),
            ("plans:\n  1: {}\n  \"1\": {}\n", 3, 3, "plans.1: key \"1\" is repeated"),
            ("plans: { 1: {}, 0x1: {} }\n", 1, 8, "plans.1: duplicate plan name \"1\""),
            // cost > burst, with and without an explicit burst.
            (
                "plans:\n  p: { limits: [ { name: m, rate: 10, per: 1s, burst: 5, cost: 6 } ] }\n",
                2,
                64,
                "plans.p.limits[0].cost: cost 6 is more than burst 5",
            ),
            (
                "plans:\n  p:\n    limits:\n      - name: m\n        rate: 3\n        per: 1s\n        cost: 4\n",
                7,
                15,
                "cost 4 is more than burst 3 (the rate, as burst is not set)",
            ),
            // YAML syntax.
            (
                "proxy:\n  listen: [1, 2\n",
                3,
                1,
                "invalid YAML: did not find expected ',' or ']'",
            ),
            (
                "routes:\n  - name: a\n   upstream: b\n",
                3,
                4,
                "invalid YAML",
            ),
            ("proxy:\n\tlisten: x\n", 2, 1, "invalid YAML"),
            ("a: *nothing\n", 1, 4, "invalid YAML: unknown anchor"),
            // Wrong types: structural (serde) and scalar (validation).
            ("routes: { name: a }\n", 1, 9, "routes: invalid type: map, expected a sequence"),
            ("plans: [free]\n", 1, 8, "plans: invalid type: sequence, expected a mapping"),
            ("proxy:\n  listen: { ip: 1 }\n", 2, 11, "proxy.listen: invalid type: map"),
            ("proxy:\n  threads: two\n", 2, 12, "proxy.threads: expected a whole number, got \"two\""),
            ("proxy:\n  threads: 1.5\n", 2, 12, "expected a whole number, got 1.5"),
            ("proxy:\n  threads: 0\n", 2, 12, "proxy.threads: must be greater than 0, got 0"),
            ("proxy:\n  threads: -3\n", 2, 12, "must be greater than 0, got -3"),
            (
                "proxy:\n  threads: 99999999999999999999999999999\n",
                2,
                12,
                "proxy.threads: must be at most 1024",
            ),
            ("log:\n  access_log: yes\n", 2, 15, "log.access_log: expected true or false, got \"yes\""),
            ("routes:\n  - shadow: 1\n", 2, 13, "routes[0].shadow: expected true or false, got 1"),
            ("hello\n", 1, 1, "expected a mapping of config sections"),
            // Addresses, names, choices.
            (
                "proxy:\n  listen: localhost:8080\n",
                2,
                11,
                "host names are not accepted",
            ),
            ("admin:\n  listen: \"127.0.0.1\"\n", 2, 11, "admin.listen: invalid address \"127.0.0.1\""),
            (
                "proxy:\n  listen: 127.0.0.1:9000\n  metrics_listen: 127.0.0.1:9000\n",
                3,
                19,
                "proxy.metrics_listen: 127.0.0.1:9000 is already used by proxy.listen",
            ),
            ("proxy:\n  key_header: \"x api key\"\n", 2, 15, "proxy.key_header: invalid header name"),
            ("admin:\n  jwt_secret_env: \"s3cr3t!\"\n", 2, 19, "not an environment variable name"),
            ("admin:\n  session_ttl: 90d\n", 2, 16, "admin.session_ttl: must be at most 30d"),
            ("admin:\n  session_ttl: 1s\n", 2, 16, "admin.session_ttl: must be at least 1m"),
            ("admin:\n  allowed_hosts: [\"evil host/\"]\n", 2, 19, "admin.allowed_hosts[0]: \"evil host/\" is not a host name"),
            ("admin:\n  max_connections: 0\n", 2, 20, "admin.max_connections: must be greater than 0"),
            ("admin:\n  audit_retention: 1h\n", 2, 20, "admin.audit_retention: must be at least 1d"),
            ("limiter:\n  backend: memcached\n", 2, 12, "limiter.backend: expected local or redis, got \"memcached\""),
            ("limiter:\n  backend: redis\n", 2, 3, "limiter.redis_url: missing required field (required when backend is redis)"),
            ("limiter:\n  backend: redis\n  redis_url: \"http://r:6379\"\n", 3, 14, "unsupported scheme"),
            ("limiter:\n  backend: redis\n  redis_url: \"redis://u:hunter2@a:1,b:2\"\n", 3, 14, "several hosts: use redis+cluster:// (or rediss+cluster://) for Redis Cluster in Redis URL \"redis://***@a:1,b:2\""),
            ("limiter:\n  backend: redis\n  redis_url: \"rediss://h:1#insecure\"\n", 3, 14, "query strings and fragments are not supported"),
            ("limiter:\n  backend: redis\n  redis_url: \"redis://h:1\"\n  redis_ca_file: ca.pem\n", 4, 18, "applies to rediss:// (TLS) URLs only"),
            ("limiter:\n  redis_ca_file: \"\"\n", 2, 18, "must not be empty"),
            ("storage:\n  database_url: \"postgres://u:p@h/db?sslmode=sometimes\"\n", 2, 17, "storage.database_url: invalid PostgreSQL URL"),
            ("limiter:\n  concurrency_lease: 10ms\n", 2, 22, "limiter.concurrency_lease: must be at least 300ms"),
            ("limiter:\n  on_redis_error: ignore\n", 2, 19, "expected local, allow or deny"),
            ("log:\n  level: verbose\n", 2, 10, "log.level: expected trace, debug, info, warn or error"),
            ("log:\n  format: xml\n", 2, 11, "log.format: expected text or json"),
            ("storage:\n  database_url: mysql://db\n", 2, 17, "unsupported database URL \"mysql://db\""),
            ("usage:\n  retention_days: 0\n", 2, 19, "usage.retention_days: must be greater than 0"),
            ("proxy:\n  tls: { listen: \"0.0.0.0:8443\", cert: \"\" }\n", 2, 40, "proxy.tls.cert: must not be empty"),
            ("proxy:\n  tls: { listen: \"0.0.0.0:8443\", cert: a }\n", 2, 8, "proxy.tls.key: missing required field"),
            // Limits.
            ("plans:\n  p: { limits: [ { rate: 1, per: 1s } ] }\n", 2, 18, "plans.p.limits[0].name: missing required field"),
            ("plans:\n  p: { limits: [ { name: m, per: 1s } ] }\n", 2, 18, "plans.p.limits[0].rate: missing required field"),
            ("plans:\n  p: { limits: [ { name: m, rate: 0, per: 1s } ] }\n", 2, 35, "plans.p.limits[0].rate: must be greater than 0"),
            ("plans:\n  p: { limits: [ { name: \"a\\\"b\", rate: 1, per: 1s } ] }\n", 2, 26, "invalid limit name \"a\\\"b\""),
            ("plans:\n  p: { limits: [ { name: m, rate: 1, per: 1s, burst: 0 } ] }\n", 2, 54, "burst: must be greater than 0"),
            ("plans:\n  p: { concurrency: 0 }\n", 2, 21, "plans.p.concurrency: must be greater than 0"),
            ("plans:\n  \"\": {}\n", 2, 3, "plans: plan name must not be empty"),
            // Upstreams.
            ("upstreams:\n  u: {}\n", 2, 6, "upstreams.u.targets: missing required field"),
            ("upstreams:\n  u: { targets: [] }\n", 2, 17, "upstreams.u.targets: at least one target is required"),
            (
                "upstreams:\n  u: { targets: [\"a:1\", \"::1:80\"] }\n",
                2,
                25,
                "upstreams.u.targets[1]: invalid target \"::1:80\": IPv6 addresses must be in brackets",
            ),
            ("upstreams:\n  u:\n    targets: [a:1]\n    health_check: { path: health }\n", 4, 27, "upstreams.u.health_check.path: must start with '/'"),
            ("upstreams:\n  u:\n    targets: [a:1]\n    timeouts: { read: 0s }\n", 4, 23, "upstreams.u.timeouts.read: must be at least 1ms"),
            ("upstreams:\n  u:\n    targets: [a:1]\n    tls: { verify: false }\n", 4, 10, "upstreams.u.tls: applies to https:// targets only"),
            ("upstreams:\n  u:\n    targets: [\"https://a\"]\n    tls: { ca_file: \"\" }\n", 4, 21, "upstreams.u.tls.ca_file: must not be empty"),
            ("upstreams:\n  u:\n    targets: [\"https://a\"]\n    tls: { verify: no }\n", 4, 20, "upstreams.u.tls.verify: expected true or false"),
            ("upstreams:\n  u:\n    targets: [\"https://a\"]\n    tls: { ca_file: ca.pem, verify: false }\n", 4, 21, "upstreams.u.tls.ca_file: has no effect with verify: false"),
            ("upstreams:\n  u:\n    targets: [\"https://a\"]\n    tls: { sni: 10.0.0.1 }\n", 4, 17, "upstreams.u.tls.sni: \"10.0.0.1\" is an IP address"),
            ("upstreams:\n  u:\n    targets: [\"https://a\"]\n    tls: { sni: \"a b\" }\n", 4, 17, "upstreams.u.tls.sni: \"a b\" is not a valid server name"),
            // Routes.
            ("routes:\n  - name: \"\"\n", 2, 11, "routes[0].name: must not be empty"),
            ("routes:\n  - name: a\n", 2, 5, "routes[0].match: missing required field"),
            ("routes:\n  - name: a\n    match: { path_prefix: api }\n", 3, 27, "routes[0].match.path_prefix: must start with '/'"),
            ("routes:\n  - name: a\n    match: { methods: [GET] }\n", 3, 12, "routes[0].match.path_prefix: missing required field"),
            ("routes:\n  - name: a\n    match: { path_prefix: /a, methods: [] }\n", 3, 40, "routes[0].match.methods: must not be empty"),
            ("routes:\n  - name: a\n    match: { path_prefix: /a, methods: [GET, \"GE T\"] }\n", 3, 46, "routes[0].match.methods[1]: invalid HTTP method \"GE T\""),
            ("routes:\n  - name: a\n    match: { path_prefix: /api/users }\n    strip_prefix: /v1\n", 4, 19, "\"/v1\" is not a prefix of match.path_prefix \"/api/users\""),
            ("routes:\n  - name: a\n    match: { path_prefix: /api/users }\n    strip_prefix: api\n", 4, 19, "routes[0].strip_prefix: must start with '/'"),
            ("routes:\n  - name: a\n    auth: jwt\n", 3, 11, "routes[0].auth: expected api_key or none, got \"jwt\""),
            ("routes:\n  - name: a\n    upstream:\n", 3, 5, "routes[0].upstream: a value is required"),
            ("---\na: 1\n---\nb: 2\n", 1, 1, "a single YAML document"),
        ];
        let mut failures = Vec::new();
        for (src, line, column, fragment) in cases {
            let errs = match parse_and_validate(src, "test.yaml") {
                Ok(_) => {
                    failures.push(format!("{src:?}: accepted"));
                    continue;
                }
                Err(e) => e.0,
            };
            let found = errs
                .iter()
                .any(|e| e.line == *line && e.column == *column && e.message.contains(fragment));
            if !found {
                failures.push(format!(
                    "{src:?}: expected {line}:{column} {fragment:?}, got:\n  {}",
                    errs.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n  ")
                ));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn every_problem_is_reported_in_document_order() {
        let src = "\
proxy:
  listen: nowhere
  threads: 0
upstreams:
  demo: { targets: [\"127.0.0.1:3001\", \"bad\"] }
plans:
  free: { limits: [ { name: m, rate: 1, per: 1s, burst: 2, cost: 3 } ] }
routes:
  - name: a
    match: { path_prefix: /a }
    upstream: dem
  - name: a
    match: { path_prefix: b }
    upstream: demo
    default_plan: gold
limiter:
  backend: redis
  redis_timeout: soon
";
        let errs = errors(src);
        let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let expected = [
            "test.yaml:2:11: proxy.listen: invalid address \"nowhere\"",
            "test.yaml:3:12: proxy.threads: must be greater than 0",
            "test.yaml:5:39: upstreams.demo.targets[1]: invalid target \"bad\"",
            "test.yaml:7:66: plans.free.limits[0].cost: cost 3 is more than burst 2",
            "test.yaml:11:15: routes[0].upstream: unknown upstream \"dem\" (known: demo)",
            "test.yaml:12:11: routes[1].name: duplicate route name \"a\"",
            "test.yaml:13:27: routes[1].match.path_prefix: must start with '/'",
            "test.yaml:15:19: routes[1].default_plan: unknown plan \"gold\" (known: free)",
            "test.yaml:17:3: limiter.redis_url: missing required field",
            "test.yaml:18:18: limiter.redis_timeout: invalid duration \"soon\"",
        ];
        assert_eq!(got.len(), expected.len(), "{got:#?}");
        for (g, e) in got.iter().zip(expected) {
            assert!(g.starts_with(e), "got {g:?}, expected {e:?}…");
        }
    }

    #[test]
    fn every_repeated_key_is_reported() {
        let errs = errors("proxy: {}\nplans: { a: {}, a: {} }\nproxy: {}\n");
        let at: Vec<(usize, usize)> = errs.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(at, vec![(2, 17), (3, 1)], "{errs:?}");
    }

    /// A tiny deterministic generator, so the "fuzz" test is reproducible.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(self.0 >> 33).unwrap_or(0) % n.max(1)
        }
    }

    fn assert_sane(src: &str) {
        if let Err(errs) = parse_and_validate(src, "fuzz.yaml") {
            assert!(!errs.0.is_empty(), "no errors for a refused file: {src:?}");
            let lines = src.split('\n').count() + 1;
            for e in &errs.0 {
                assert!(e.line >= 1 && e.column >= 1, "{e} in {src:?}");
                assert!(e.line <= lines, "{e} beyond the end of {src:?}");
                assert!(!e.message.is_empty());
            }
        }
    }

    #[test]
    fn never_panics_on_garbage() {
        let nasty = [
            "\t",
            "\t\tproxy:\n\t listen: 1",
            "[[[",
            "]]]",
            "{{{",
            "}",
            ":",
            "- - - -",
            "? ? ?",
            "&a [*a]",
            "a: &a [*a, *a]",
            "*",
            "!!binary AAAA",
            "!tag {a: 1}",
            "proxy: !!str {a: 1}",
            "routes: [ {name: !!int x} ]",
            "rate: 184467440737095516160000000000000000000000000000",
            "plans: { p: { limits: [ { name: a, rate: 99999999999999999999999999999999999999999, per: 99999999999999999999d } ] } }",
            "plans: { p: { limits: [ { name: a, rate: 1e400, per: .inf } ] } }",
            "proxy: { threads: -99999999999999999999999999999999999999999 }",
            "\u{0}\u{1}\u{2}\u{7f}",
            "\u{feff}proxy: {}",
            "\u{fffd}\u{fffd}: \u{fffd}",
            "plans: { \"\u{1F600}\": { limits: [ { name: \"\u{e9}\", rate: 1, per: 1s } ] } }",
            "routes:\n  - name: \u{3042}\n    match: { path_prefix: /\u{3042} }\n    upstream: \u{3042}\n",
            "%YAML 1.2\n---\na: 1\n",
            "%FOO\n",
            "---\n...\n---\n",
            "'unterminated",
            "\"unterminated\\",
            "a: |\n  text\n b: 1",
            "? [a, b]\n: c\n",
            "plans: { ? [a] : {} }",
            "routes: [~, ~]",
            "upstreams: { u: { targets: [~, [], {}] } }",
            "\r\n\r\nproxy:\r\n  threads: 0\r\n",
            "proxy:\r  threads: x\r",
            "a:\n- b\n-c\n  - d",
        ];
        for src in nasty {
            assert_sane(src);
        }
        let deep = "[".repeat(10_000);
        assert_sane(&deep);
        let deep_map = "a: {".repeat(2_000);
        assert_sane(&deep_map);

        // Random edits of the shipped configs.
        let alphabet: Vec<char> = " \t\n:-[]{},\"'#&*!|>?%@`~0123456789abcxyz\u{e9}\u{0}\u{fffd}"
            .chars()
            .collect();
        let mut rng = Lcg(0x7011_6a7e);
        for base in [QUICK_START, PRODUCTION] {
            let chars: Vec<char> = base.chars().collect();
            for _ in 0..400 {
                let mut s = chars.clone();
                for _ in 0..1 + rng.next(4) {
                    let at = rng.next(s.len());
                    match rng.next(3) {
                        0 => {
                            s.remove(at);
                        }
                        1 => s.insert(at, alphabet[rng.next(alphabet.len())]),
                        _ => s[at] = alphabet[rng.next(alphabet.len())],
                    }
                }
                let s: String = s.into_iter().collect();
                assert_sane(&s);
            }
        }
    }
}
