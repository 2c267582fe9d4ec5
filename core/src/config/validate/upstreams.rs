//! `upstreams:`: targets, TLS, health checks.

use super::*;

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
pub(super) fn server_name_problem(name: &str) -> Option<String> {
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

impl Validator<'_> {
    pub(super) fn upstreams(
        &mut self,
        raw: &OrderedMap<RawUpstream>,
    ) -> BTreeMap<String, Upstream> {
        let ok = self.names("upstreams", "upstream", raw, |n| {
            crate::rules::check_name("upstream", n)
        });
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
                let interval = self.duration_within(
                    &child(&hp, "interval"),
                    &h.interval,
                    (bounds::MIN_BACKGROUND_INTERVAL, MAX_HEALTH_CHECK_INTERVAL),
                    DEFAULT_HEALTH_CHECK_INTERVAL,
                    "a target that fails stays in use, or one back stays out, that long",
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
                    let io = bounds::UPSTREAM_IO_TIMEOUT;
                    let stalled = "a request waits that long for a stalled upstream";
                    Timeouts {
                        connect: self.duration_within(
                            &child(&tp, "connect"),
                            &t.connect,
                            bounds::CONNECT_TIMEOUT,
                            defaults.connect,
                            "a request waits that long for a target that does not answer",
                        ),
                        read: self.duration_within(
                            &child(&tp, "read"),
                            &t.read,
                            io,
                            defaults.read,
                            stalled,
                        ),
                        write: self.duration_within(
                            &child(&tp, "write"),
                            &t.write,
                            io,
                            defaults.write,
                            stalled,
                        ),
                        idle: self.duration_within(
                            &child(&tp, "idle"),
                            &t.idle,
                            io,
                            defaults.idle,
                            "an idle upstream connection is kept that long",
                        ),
                    }
                }
            };
            let preserve_host =
                self.flag_or(&child(&path, "preserve_host"), &u.preserve_host, false);
            let resolve_interval = self.duration_within(
                &child(&path, "resolve_interval"),
                &u.resolve_interval,
                (Duration::from_secs(1), MAX_RESOLVE_INTERVAL),
                DEFAULT_RESOLVE_INTERVAL,
                "moved targets are followed only that often",
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
            let protocol = self.upstream_protocol(&path, &u.protocol, &targets);
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
                        protocol,
                    },
                );
            }
        }
        upstreams
    }
}

impl Validator<'_> {
    /// `protocol: h1 | h2c | h2`; h2c talks to `http://` targets only (no
    /// TLS), h2 to `https://` ones only (ALPN needs the TLS handshake).
    fn upstream_protocol(
        &mut self,
        path: &str,
        raw: &Option<Scalar>,
        targets: &[Target],
    ) -> UpstreamProtocol {
        let pp = child(path, "protocol");
        let protocol = self.choice_or(
            &pp,
            raw,
            &[
                ("h1", UpstreamProtocol::H1),
                ("h2c", UpstreamProtocol::H2c),
                ("h2", UpstreamProtocol::H2),
            ],
            UpstreamProtocol::H1,
        );
        let wrong = match protocol {
            UpstreamProtocol::H1 => None,
            UpstreamProtocol::H2c => targets
                .iter()
                .find(|t| t.tls)
                .map(|t| format!("h2c is HTTP/2 without TLS, but target {t} is https:// (use h2)")),
            UpstreamProtocol::H2 => targets.iter().find(|t| !t.tls).map(|t| {
                format!("h2 is HTTP/2 over TLS, but target {t} is plain http:// (use h2c)")
            }),
        };
        if let Some(why) = wrong {
            self.error(&pp, why);
        }
        protocol
    }
}
