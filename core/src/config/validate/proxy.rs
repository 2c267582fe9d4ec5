//! `proxy:` and its request edge settings.

use super::*;
use crate::config::{DEFAULT_USAGE_PATH, MAX_INSTANCE_NAME, MAX_USAGE_PATH};

impl Validator<'_> {
    pub(super) fn proxy(&mut self, p: &RawProxy) -> ProxyConfig {
        let listen = self.addr_or("proxy.listen", &p.listen, DEFAULT_PROXY_LISTEN);
        let metrics_listen =
            given(&p.metrics_listen).and_then(|s| self.addr("proxy.metrics_listen", s));
        let threads = self.number_or("proxy.threads", &p.threads, 1, MAX_THREADS, DEFAULT_THREADS);
        let key_header = match self.text(&p.key_header) {
            None => DEFAULT_KEY_HEADER.to_string(),
            Some(h) if is_token(&h) => match crate::headers::key_header_problem(&h) {
                None => h.to_ascii_lowercase(),
                Some(problem) => {
                    self.error("proxy.key_header", problem);
                    DEFAULT_KEY_HEADER.to_string()
                }
            },
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
        let grace_period = self.duration_within(
            "proxy.grace_period",
            &p.grace_period,
            bounds::GRACE_PERIOD,
            DEFAULT_GRACE_PERIOD,
            "a graceful stop (SIGTERM) waits that long for requests in flight",
        );
        let keepalive_timeout = self.duration_within(
            "proxy.keepalive_timeout",
            &p.keepalive_timeout,
            bounds::KEEPALIVE_TIMEOUT,
            DEFAULT_KEEPALIVE_TIMEOUT,
            "an idle connection stays open that long",
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
        let edge = self.edge(p);
        let tuning = self.tuning(p);
        let usage_path = self.usage_path(&p.usage_path);
        let instance_name = self.instance_name(&p.instance_name);
        ProxyConfig {
            usage_path,
            instance_name,
            listen,
            metrics_listen,
            threads: usize::try_from(threads).unwrap_or(1),
            key_header,
            auth_failures_per_second: u32::try_from(auth_failures_per_second).unwrap_or(u32::MAX),
            grace_period,
            keepalive_timeout,
            tls,
            edge,
            tuning,
            h2c: self.flag_or("proxy.h2c", &p.h2c, false),
        }
    }

    /// `proxy.usage_path`: a canonical path of at most
    /// [`MAX_USAGE_PATH`] bytes; `""` turns it off.
    fn usage_path(&mut self, raw: &Option<Scalar>) -> Option<String> {
        let Some(p) = self.text(raw) else {
            return Some(DEFAULT_USAGE_PATH.to_string());
        };
        let problem = if p.is_empty() {
            return None;
        } else if p.len() > MAX_USAGE_PATH {
            format!("must be at most {MAX_USAGE_PATH} bytes")
        } else if !p.starts_with('/') {
            format!("must start with '/', got {p:?} (or \"\" to turn it off)")
        } else if p.contains(|c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
            || !crate::path::is_canonical(&p)
        {
            format!(
                "{p:?} is not a canonical path: no spaces, '?', '#', '.', '..' or empty segments"
            )
        } else {
            return Some(p);
        };
        self.error("proxy.usage_path", problem);
        None
    }

    /// `proxy.instance_name`: 1 to [`MAX_INSTANCE_NAME`] letters, digits
    /// and `.-_:@[]` (it names rows in the database and log lines).
    fn instance_name(&mut self, raw: &Option<Scalar>) -> Option<String> {
        let name = self.text(raw)?;
        let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_:@[]".contains(c);
        if (1..=MAX_INSTANCE_NAME).contains(&name.len()) && name.chars().all(allowed) {
            return Some(name);
        }
        self.error(
            "proxy.instance_name",
            format!(
                "{name:?}: 1 to {MAX_INSTANCE_NAME} letters, digits and . - _ : @ [ ] \
                 (a name per proxy replica, e.g. the pod name)"
            ),
        );
        None
    }

    /// Pingora's server settings under `proxy.*`.
    fn tuning(&mut self, p: &RawProxy) -> ServerTuning {
        let d = ServerTuning::default();
        ServerTuning {
            work_stealing: self.flag_or("proxy.work_stealing", &p.work_stealing, d.work_stealing),
            listener_tasks: self.count_or(
                "proxy.listener_tasks",
                &p.listener_tasks,
                1,
                MAX_LISTENER_TASKS,
                d.listener_tasks,
            ),
            upstream_keepalive_pool: self.count_or(
                "proxy.upstream_keepalive_pool",
                &p.upstream_keepalive_pool,
                0,
                MAX_UPSTREAM_KEEPALIVE_POOL,
                d.upstream_keepalive_pool,
            ),
            downstream_keepalive_requests: self.count_or(
                "proxy.downstream_keepalive_requests",
                &p.downstream_keepalive_requests,
                1,
                u64::from(u32::MAX),
                d.downstream_keepalive_requests,
            ),
        }
    }

    /// The request-edge settings under `proxy.*`.
    pub(super) fn edge(&mut self, p: &RawProxy) -> EdgeConfig {
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
        let header_timeout = self.duration_within(
            "proxy.header_timeout",
            &p.header_timeout,
            bounds::HEADER_TIMEOUT,
            d.header_timeout,
            SLOW_HEADER,
        );
        let body_timeout = self.duration_within(
            "proxy.body_timeout",
            &p.body_timeout,
            bounds::BODY_TIMEOUT,
            d.body_timeout,
            "a stalled request body holds its connection that long",
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
        // A revoked key's WebSockets close within this: a longer one would
        // quietly keep them open (black-box round 6, F3).
        let websocket_key_check = self.duration_within(
            "proxy.websocket_key_check",
            &p.websocket_key_check,
            (bounds::MIN_BACKGROUND_INTERVAL, MAX_WEBSOCKET_KEY_CHECK),
            d.websocket_key_check,
            "a revoked key's WebSockets stay open that long",
        );
        EdgeConfig {
            websocket_key_check,
            path_policy,
            trusted_proxies: crate::net::TrustedProxies::new(nets),
            proxy_protocol,
            header_timeout,
            body_timeout,
            max_header_bytes,
            max_connections_per_ip: u32::try_from(max_connections_per_ip).unwrap_or(u32::MAX),
        }
    }
}
