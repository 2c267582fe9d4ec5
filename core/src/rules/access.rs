//! Who may call what, from where: key scopes (routes and methods), a key's
//! `allowed_ips`, and a route's `ip_allow` / `ip_deny`. The admin API, the
//! CLI and the YAML validation check lists with these rules; the proxy
//! decides requests with [`check_route_ip`] and [`check_key`].
//!
//! - **Scopes.** `routes` lists route names, where `*` matches any run of
//!   characters (`billing-*`, `*`); `methods` lists HTTP methods. A list left
//!   out allows everything; a request must match both lists.
//! - **Precedence** ([`effective_scopes`]): per list, the key's own list if it
//!   has one, else that of the YAML plan the key names; a route's
//!   `default_plan` grants no scopes (it only supplies limits).
//! - **IP rules.** A key with `allowed_ips` is only accepted from an address
//!   in one of them (`ip-not-allowed`). On a route, `ip_deny` wins over
//!   `ip_allow`; with an `ip_allow` list, any address outside it is refused
//!   too. The address is the client as resolved through `proxy.trusted_proxies`.

use std::net::IpAddr;

use ipnet::IpNet;

use super::FieldError;

/// Most route patterns in one scope list.
pub const MAX_ROUTE_PATTERNS: usize = 64;
/// The longest route pattern, in characters.
pub const MAX_PATTERN_LEN: usize = 128;
/// Most `*` in one pattern.
pub const MAX_PATTERN_STARS: usize = 4;
/// Most methods in one scope list.
pub const MAX_METHODS: usize = 32;
/// The longest method name.
pub const MAX_METHOD_LEN: usize = 32;
/// Most networks in one IP list (a key's `allowed_ips`, a route's `ip_allow`/`ip_deny`).
pub const MAX_IP_RULES: usize = 256;

pub use crate::keys::Scopes;

/// An HTTP method token (RFC 9110 §5.6.2).
pub fn is_method_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether a list of methods takes a request's `method`: it names it
/// exactly (methods are case-sensitive, RFC 9110 §9.1: `get` is not `GET`),
/// or the method is HEAD and the list names GET (HEAD is GET without the
/// body). The one rule of the router, the scopes, the route overlap check
/// and `proxy.usage_path`.
pub fn takes_method<M: AsRef<str>>(methods: &[M], method: &str) -> bool {
    methods
        .iter()
        .map(AsRef::as_ref)
        .any(|m| m == method || (method == "HEAD" && m == "GET"))
}

/// One route pattern: 1..=[`MAX_PATTERN_LEN`] characters, no white space or
/// control characters, at most [`MAX_PATTERN_STARS`] `*`, never `**`.
pub fn check_route_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("must not be empty".into());
    }
    if p.chars().count() > MAX_PATTERN_LEN {
        return Err(format!("must be at most {MAX_PATTERN_LEN} characters"));
    }
    if p.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{p:?} must not contain white space or control characters"
        ));
    }
    if p.contains("**") {
        return Err(format!(
            "{p:?}: '**' is not allowed ('*' already matches any run of characters)"
        ));
    }
    if p.matches('*').count() > MAX_PATTERN_STARS {
        return Err(format!(
            "{p:?}: at most {MAX_PATTERN_STARS} '*' in a pattern"
        ));
    }
    Ok(())
}

/// Check and normalise scopes: patterns checked, methods upper-cased,
/// duplicates dropped; an empty list is refused (leave it out instead).
/// `field` names the object (`scopes`, `plans.pro.scopes`).
pub fn normalise_scopes(field: &str, s: &Scopes) -> Result<Scopes, FieldError> {
    let routes = match &s.routes {
        None => None,
        Some(list) => {
            let f = format!("{field}.routes");
            check_list_len(&f, list.len(), MAX_ROUTE_PATTERNS, "routes")?;
            let mut out: Vec<String> = Vec::with_capacity(list.len());
            for (i, p) in list.iter().enumerate() {
                check_route_pattern(p).map_err(|m| FieldError::new(format!("{f}[{i}]"), m))?;
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
            Some(out)
        }
    };
    let methods = match &s.methods {
        None => None,
        Some(list) => {
            let f = format!("{field}.methods");
            check_list_len(&f, list.len(), MAX_METHODS, "methods")?;
            let mut out: Vec<String> = Vec::with_capacity(list.len());
            for (i, m) in list.iter().enumerate() {
                let upper = m.to_ascii_uppercase();
                if upper.len() > MAX_METHOD_LEN || !is_method_token(&upper) {
                    return Err(FieldError::new(
                        format!("{f}[{i}]"),
                        format!(
                            "invalid HTTP method {:?}: a token of at most {MAX_METHOD_LEN} characters such as GET",
                            truncated(m)
                        ),
                    ));
                }
                if !out.contains(&upper) {
                    out.push(upper);
                }
            }
            Some(out)
        }
    };
    Ok(Scopes { routes, methods })
}

fn check_list_len(field: &str, n: usize, max: usize, what: &str) -> Result<(), FieldError> {
    if n == 0 {
        return Err(FieldError::new(
            field,
            format!("must not be empty (leave {what} out to allow every one)"),
        ));
    }
    if n > max {
        return Err(FieldError::new(
            field,
            format!("at most {max} entries, got {n}"),
        ));
    }
    Ok(())
}

/// At most 40 characters of a refused value, for messages.
fn truncated(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// Check and parse an IP list (`allowed_ips`, `ip_allow`, `ip_deny`): 1 to
/// [`MAX_IP_RULES`] CIDRs or bare addresses. Returns the canonical text
/// (`10.0.0.0/8`, `192.0.2.7/32`), de-duplicated.
pub fn normalise_ips(field: &str, list: &[String]) -> Result<Vec<String>, FieldError> {
    Ok(parse_ips(field, list)?
        .iter()
        .map(ToString::to_string)
        .collect())
}

/// [`normalise_ips`], parsed.
pub fn parse_ips(field: &str, list: &[String]) -> Result<Vec<IpNet>, FieldError> {
    check_list_len(field, list.len(), MAX_IP_RULES, "the list")?;
    let mut out: Vec<IpNet> = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let net = crate::net::parse_cidr(s).map_err(|_| {
            FieldError::new(
                format!("{field}[{i}]"),
                format!(
                    "invalid network {:?}: expected a CIDR such as 203.0.113.0/24 or an IP address",
                    truncated(s)
                ),
            )
        })?;
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

/// Whether `name` matches `pattern` (`*`: any run of characters, maybe
/// empty). Linear in practice; patterns are bounded by [`check_route_pattern`].
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0usize, 0usize);
    // Where the last `*` was and where the name stood then.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            // Let the last `*` take one more character.
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// The scope lists that apply: per list, the key's, else its plan's.
pub fn effective_scopes<'a>(
    key: Option<&'a Scopes>,
    plan: Option<&'a Scopes>,
) -> EffectiveScopes<'a> {
    let pick =
        |f: fn(&'a Scopes) -> Option<&'a [String]>| key.and_then(f).or_else(|| plan.and_then(f));
    EffectiveScopes {
        routes: pick(|s| s.routes.as_deref()),
        methods: pick(|s| s.methods.as_deref()),
    }
}

/// What [`effective_scopes`] returns; `None`: no restriction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EffectiveScopes<'a> {
    pub routes: Option<&'a [String]>,
    pub methods: Option<&'a [String]>,
}

/// Why a request is refused (403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The key's scopes do not include this route.
    RouteOutOfScope(String),
    /// The key's scopes do not include this method.
    MethodOutOfScope(String),
    /// The key has `allowed_ips` and the client is in none of them.
    KeyIpNotAllowed,
    /// The route's `ip_deny` holds the client.
    RouteIpDenied,
    /// The route has `ip_allow` and the client is in none of them.
    RouteIpNotAllowed,
}

impl Denial {
    /// The problem type: `scope-denied` or `ip-not-allowed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Denial::RouteOutOfScope(_) | Denial::MethodOutOfScope(_) => "scope-denied",
            _ => "ip-not-allowed",
        }
    }

    /// The problem detail (names no address: the caller knows its own).
    pub fn detail(&self) -> String {
        match self {
            Denial::RouteOutOfScope(r) => format!("this API key may not use route {r:?}"),
            Denial::MethodOutOfScope(m) => format!("this API key may not use method {m}"),
            Denial::KeyIpNotAllowed => {
                "this API key may not be used from the client's address".into()
            }
            Denial::RouteIpDenied | Denial::RouteIpNotAllowed => {
                "this route may not be called from the client's address".into()
            }
        }
    }
}

fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    crate::net::any_matches(nets, ip)
}

/// A route's IP rules (empty lists: none): deny wins, then allow.
pub fn check_route_ip(allow: &[IpNet], deny: &[IpNet], client: IpAddr) -> Result<(), Denial> {
    if contains(deny, client) {
        return Err(Denial::RouteIpDenied);
    }
    if !allow.is_empty() && !contains(allow, client) {
        return Err(Denial::RouteIpNotAllowed);
    }
    Ok(())
}

/// A key's own rules on a request: its address list, then its scopes.
pub fn check_key(
    scopes: EffectiveScopes<'_>,
    allowed_ips: Option<&[IpNet]>,
    route: &str,
    method: &str,
    client: IpAddr,
) -> Result<(), Denial> {
    if let Some(nets) = allowed_ips {
        if !contains(nets, client) {
            return Err(Denial::KeyIpNotAllowed);
        }
    }
    if let Some(patterns) = scopes.routes {
        if !patterns.iter().any(|p| glob_match(p, route)) {
            return Err(Denial::RouteOutOfScope(route.to_string()));
        }
    }
    if let Some(methods) = scopes.methods {
        // As the router sees it; scope lists are upper-cased on save.
        if !takes_method(methods, method) {
            // Named in the refusal: at most 32 bytes of a client's token.
            let shown = method.get(..32).unwrap_or(method);
            return Err(Denial::MethodOutOfScope(shown.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_scopes_are_case_sensitive_and_name_a_short_method() {
        let methods = vec!["GET".to_string()];
        let scopes = EffectiveScopes {
            routes: None,
            methods: Some(&methods),
        };
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(check_key(scopes, None, "r", "GET", ip), Ok(()));
        assert_eq!(check_key(scopes, None, "r", "HEAD", ip), Ok(()));
        for m in ["get", "Get", "head", "POST"] {
            assert_eq!(
                check_key(scopes, None, "r", m, ip),
                Err(Denial::MethodOutOfScope(m.into()))
            );
        }
        let long = "X".repeat(20_000);
        assert_eq!(
            check_key(scopes, None, "r", &long, ip),
            Err(Denial::MethodOutOfScope("X".repeat(32)))
        );
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "users"));
        assert!(glob_match("users", "users"));
        assert!(!glob_match("users", "users2"));
        assert!(glob_match("bill*", "billing"));
        assert!(glob_match("*-v2", "orders-v2"));
        assert!(!glob_match("*-v2", "orders-v3"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("*a*a*a*a", &"a".repeat(200)));
        assert!(!glob_match("*a*a*a*b", &"a".repeat(10_000)));
    }

    #[test]
    fn patterns_are_bounded() {
        assert!(check_route_pattern("billing-*").is_ok());
        assert!(check_route_pattern("").is_err());
        assert!(check_route_pattern("a**").is_err());
        assert!(check_route_pattern("*a*b*c*d*").is_err());
        assert!(check_route_pattern(&"x".repeat(MAX_PATTERN_LEN)).is_ok());
        assert!(check_route_pattern(&"x".repeat(MAX_PATTERN_LEN + 1)).is_err());
        assert!(check_route_pattern("a b").is_err());
        assert!(check_route_pattern("a\u{0}").is_err());
    }

    #[test]
    fn scopes_normalise_and_refuse() {
        let ok = normalise_scopes(
            "scopes",
            &Scopes {
                routes: Some(s(&["users", "users", "bill*"])),
                methods: Some(s(&["get", "GET", "post"])),
            },
        )
        .expect("valid");
        assert_eq!(ok.routes, Some(s(&["users", "bill*"])));
        assert_eq!(ok.methods, Some(s(&["GET", "POST"])));
        let bad = |sc: Scopes| normalise_scopes("scopes", &sc).map_err(|e| e.field);
        assert_eq!(
            bad(Scopes {
                routes: Some(vec![]),
                methods: None
            }),
            Err("scopes.routes".into())
        );
        assert_eq!(
            bad(Scopes {
                routes: Some(vec!["r".into(); MAX_ROUTE_PATTERNS + 1]),
                methods: None
            }),
            Err("scopes.routes".into())
        );
        assert_eq!(
            bad(Scopes {
                routes: Some(s(&["ok", "**"])),
                methods: None
            }),
            Err("scopes.routes[1]".into())
        );
        for m in [
            "GE T",
            "",
            "GET\r\n",
            "ÜBER",
            &"G".repeat(MAX_METHOD_LEN + 1),
        ] {
            assert_eq!(
                bad(Scopes {
                    routes: None,
                    methods: Some(vec![m.to_string()])
                }),
                Err("scopes.methods[0]".into()),
                "{m:?}"
            );
        }
    }

    #[test]
    fn ip_lists() {
        assert_eq!(
            normalise_ips(
                "allowed_ips",
                &s(&["10.1.2.3/8", "192.0.2.7", "10.0.0.0/8"])
            ),
            Ok(s(&["10.0.0.0/8", "192.0.2.7/32"]))
        );
        for bad in [
            s(&[]),
            s(&["10.0.0.0/33"]),
            s(&["not-an-ip"]),
            s(&["1.2.3.4/"]),
            vec!["10.0.0.1".to_string(); MAX_IP_RULES + 1],
        ] {
            assert!(normalise_ips("allowed_ips", &bad).is_err(), "{bad:?}");
        }
    }

    /// Black-box round 10: an IPv4-mapped network in `allowed_ips` is the
    /// IPv4 network, stored and matched (a key stored before, as sent, is
    /// parsed again by the key set through the same rule).
    #[test]
    fn ipv4_mapped_allowed_ips_admit_the_ipv4_client() {
        let list = vec!["::ffff:127.0.0.1/128".to_string(), "127.0.0.1".to_string()];
        assert_eq!(
            normalise_ips("allowed_ips", &list).expect("valid"),
            vec!["127.0.0.1/32".to_string()]
        );
        let nets = parse_ips("allowed_ips", &list).expect("valid");
        let open = EffectiveScopes::default();
        for client in ["127.0.0.1", "::ffff:127.0.0.1"] {
            let ip: IpAddr = client.parse().expect("ip");
            assert_eq!(check_key(open, Some(&nets), "r", "GET", ip), Ok(()));
            assert_eq!(check_route_ip(&[], &nets, ip), Err(Denial::RouteIpDenied));
        }
        let other: IpAddr = "127.0.0.2".parse().expect("ip");
        assert_eq!(
            check_key(open, Some(&nets), "r", "GET", other),
            Err(Denial::KeyIpNotAllowed)
        );
    }

    /// Black-box: `::/0` holds every IPv4 client (`::ffff:a.b.c.d`), in a
    /// key's `allowed_ips` and in a route's lists, as `::ffff:0:0/96` does.
    #[test]
    fn ipv6_networks_holding_the_mapped_range_hold_ipv4_clients() {
        let open = EffectiveScopes::default();
        for list in [s(&["::/0"]), s(&["::/80"]), s(&["::ffff:0:0/96"])] {
            let nets = parse_ips("allowed_ips", &list).expect("valid");
            for client in ["127.0.0.1", "::ffff:127.0.0.1", "203.0.113.9"] {
                let c = ip(client);
                assert_eq!(check_key(open, Some(&nets), "r", "GET", c), Ok(()));
                assert_eq!(check_route_ip(&nets, &[], c), Ok(()));
                assert_eq!(check_route_ip(&[], &nets, c), Err(Denial::RouteIpDenied));
            }
        }
        let nets = parse_ips("allowed_ips", &s(&["::/96", "2001:db8::/32"])).expect("valid");
        let c = ip("127.0.0.1");
        assert_eq!(
            check_key(open, Some(&nets), "r", "GET", c),
            Err(Denial::KeyIpNotAllowed)
        );
        assert_eq!(
            check_route_ip(&nets, &[], c),
            Err(Denial::RouteIpNotAllowed)
        );
        assert_eq!(check_route_ip(&[], &nets, c), Ok(()));
    }

    #[test]
    fn precedence_is_per_list() {
        let key = Scopes {
            routes: Some(s(&["a"])),
            methods: None,
        };
        let plan = Scopes {
            routes: Some(s(&["b"])),
            methods: Some(s(&["GET"])),
        };
        let e = effective_scopes(Some(&key), Some(&plan));
        assert_eq!(e.routes, Some(&s(&["a"])[..]));
        assert_eq!(e.methods, Some(&s(&["GET"])[..]));
        assert_eq!(effective_scopes(None, None), EffectiveScopes::default());
        assert_eq!(
            effective_scopes(None, Some(&plan)).routes,
            Some(&s(&["b"])[..])
        );
    }

    #[test]
    fn key_checks() {
        let routes = s(&["users", "bill*"]);
        let methods = s(&["GET"]);
        let sc = EffectiveScopes {
            routes: Some(&routes),
            methods: Some(&methods),
        };
        let nets = parse_ips("x", &s(&["203.0.113.0/24", "2001:db8::/32"])).expect("nets");
        let c = ip("203.0.113.9");
        assert_eq!(check_key(sc, Some(&nets), "users", "GET", c), Ok(()));
        assert_eq!(check_key(sc, Some(&nets), "billing", "GET", c), Ok(()));
        assert_eq!(
            check_key(sc, Some(&nets), "billing", "get", c),
            Err(Denial::MethodOutOfScope("get".into()))
        );
        assert_eq!(
            check_key(sc, Some(&nets), "orders", "GET", c),
            Err(Denial::RouteOutOfScope("orders".into()))
        );
        assert_eq!(
            check_key(sc, Some(&nets), "users", "POST", c),
            Err(Denial::MethodOutOfScope("POST".into()))
        );
        assert_eq!(
            check_key(sc, Some(&nets), "users", "GET", ip("198.51.100.1")),
            Err(Denial::KeyIpNotAllowed)
        );
        // IPv4-mapped IPv6 is the IPv4 address.
        assert_eq!(
            check_key(sc, Some(&nets), "users", "GET", ip("::ffff:203.0.113.9")),
            Ok(())
        );
        assert_eq!(
            check_key(EffectiveScopes::default(), None, "x", "DELETE", c),
            Ok(())
        );
        assert_eq!(Denial::KeyIpNotAllowed.kind(), "ip-not-allowed");
        assert_eq!(Denial::MethodOutOfScope("X".into()).kind(), "scope-denied");
    }

    #[test]
    fn route_ip_rules_deny_wins() {
        let allow = parse_ips("a", &s(&["10.0.0.0/8"])).expect("allow");
        let deny = parse_ips("d", &s(&["10.9.0.0/16"])).expect("deny");
        assert_eq!(check_route_ip(&allow, &deny, ip("10.1.1.1")), Ok(()));
        assert_eq!(
            check_route_ip(&allow, &deny, ip("10.9.1.1")),
            Err(Denial::RouteIpDenied)
        );
        assert_eq!(
            check_route_ip(&allow, &deny, ip("192.0.2.1")),
            Err(Denial::RouteIpNotAllowed)
        );
        assert_eq!(check_route_ip(&[], &deny, ip("192.0.2.1")), Ok(()));
        assert_eq!(check_route_ip(&[], &[], ip("10.9.1.1")), Ok(()));
    }
}
