//! Networks and addresses: CIDR lists (a key's `allowed_ips`, a route's
//! `ip_allow`/`ip_deny`, `proxy.trusted_proxies`), how an address matches
//! one, and the address a per-IP limit keys on.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};

/// `proxy.trusted_proxies`: the networks whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        any_matches(&self.nets, ip)
    }
}

/// A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a bare address (one host),
/// canonical ([`canonical_net`]): every IP list (a key's `allowed_ips`, a
/// route's `ip_allow`/`ip_deny`, `proxy.trusted_proxies`) is read through
/// this, when stored and when matched.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(canonical_net(net.trunc()));
    }
    match s.parse::<IpAddr>() {
        Ok(ip) => Ok(IpNet::from(canonical(ip))),
        Err(_) => Err(format!(
            "invalid network {s:?}: expected a CIDR such as 10.0.0.0/8 or an IP address"
        )),
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// A network of IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1/128`,
/// `::ffff:10.0.0.0/104`) is the IPv4 network (`127.0.0.1/32`,
/// `10.0.0.0/8`), as a mapped address is the IPv4 address ([`canonical`]):
/// clients are matched by their canonical address, which a mapped network
/// would never contain. A network wider than the mapped range (prefix below
/// 96) stays as it is, and holds every IPv4 address ([`matches`]).
pub fn canonical_net(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net else {
        return net;
    };
    match (
        v6.network().to_ipv4_mapped(),
        v6.prefix_len().checked_sub(96),
    ) {
        (Some(v4), Some(len)) => Ipv4Net::new(v4, len).map_or(net, |n| IpNet::V4(n.trunc())),
        _ => net,
    }
}

/// Whether the client address `ip` is in `net`: the one rule every IP list
/// (a key's `allowed_ips`, a route's `ip_allow`/`ip_deny`,
/// `proxy.trusted_proxies`) is matched by. An address is in a network if
/// the network holds it in either of its forms: an IPv4 address `a.b.c.d`
/// is also `::ffff:a.b.c.d`, so an IPv6 network holding all of
/// `::ffff:0:0/96` (`::/0`, `::/64`, `::/80`...) holds every IPv4 address,
/// as `::ffff:0:0/96` itself (canonical: `0.0.0.0/0`) does.
///
/// Prefixes nest or are disjoint, so an IPv6 network either holds the whole
/// mapped range (prefix 96 or shorter), lies inside it (a mapped network,
/// which [`canonical_net`] makes IPv4 when parsed), or misses it; testing
/// the mapped form covers all three, even for a network not parsed by
/// [`parse_cidr`]. No allocation: on the request path.
pub fn matches(net: &IpNet, ip: IpAddr) -> bool {
    match (net, canonical(ip)) {
        (IpNet::V4(n), IpAddr::V4(a)) => n.contains(&a),
        (IpNet::V6(n), IpAddr::V4(a)) => n.contains(&a.to_ipv6_mapped()),
        (IpNet::V6(n), IpAddr::V6(a)) => n.contains(&a),
        (IpNet::V4(_), IpAddr::V6(_)) => false,
    }
}

/// Whether any of `nets` [`matches`] `ip`.
pub fn any_matches(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| matches(n, ip))
}

/// What a per-IP bucket, throttle or connection cap keys on: the IPv4 address,
/// or the IPv6 /64 (one subscriber typically holds a whole /64).
pub fn bucket_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ip, trusted};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ipv4_mapped_and_v6_buckets() {
        let t = trusted(&["127.0.0.1"]);
        assert!(t.contains(ip("::ffff:127.0.0.1")));
        assert_eq!(bucket_key(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(bucket_key(ip("1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(
            bucket_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            bucket_key(ip("2001:db8:1:2::1")),
            bucket_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            bucket_key(ip("2001:db8:1:2::1")),
            bucket_key(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.1.2.3/8").expect("cidr").to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_cidr("::1").expect("ip").to_string(), "::1/128");
        assert_eq!(
            parse_cidr(" 192.0.2.1 ").expect("ip").to_string(),
            "192.0.2.1/32"
        );
        for bad in ["", "10.0.0.0/33", "host", "1.2.3.4/-1", "::/129"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    /// Black-box round 10: `allowed_ips: ["::ffff:127.0.0.1/128"]` was kept
    /// as an IPv6 network, which the canonical client 127.0.0.1 is not in
    /// (while a bare `::ffff:127.0.0.1` was already 127.0.0.1/32).
    #[test]
    fn ipv4_mapped_networks_are_ipv4_networks() {
        let text = |s: &str| parse_cidr(s).expect("cidr").to_string();
        for (mapped, v4) in [
            ("::ffff:127.0.0.1/128", "127.0.0.1/32"),
            ("::ffff:127.0.0.1", "127.0.0.1/32"),
            ("::FFFF:7f00:1/128", "127.0.0.1/32"),
            ("::ffff:10.1.2.3/104", "10.0.0.0/8"),
            ("::ffff:0.0.0.0/96", "0.0.0.0/0"),
            ("::ffff:192.0.2.9/120", "192.0.2.0/24"),
        ] {
            assert_eq!(text(mapped), v4, "{mapped}");
        }
        // Not (only) mapped addresses: unchanged.
        for v6 in ["::/0", "::fffe:0:0/95", "2001:db8::/32", "::1/128", "::/96"] {
            assert_eq!(text(v6), v6);
        }
        let net = parse_cidr("::ffff:127.0.0.1/128").expect("cidr");
        assert!(net.contains(&canonical(ip("::ffff:127.0.0.1"))));
        assert!(net.contains(&ip("127.0.0.1")));
    }

    /// Black-box: `::/0` in a deny list did not deny IPv4 clients while
    /// `::ffff:0:0/96` did. An IPv6 network holding the whole mapped range
    /// holds every IPv4 address, in either form; one that does not, none.
    #[test]
    fn ipv6_networks_wider_than_the_mapped_range_hold_ipv4() {
        let net = |s: &str| parse_cidr(s).expect("cidr");
        let clients = [
            ip("127.0.0.1"),
            ip("::ffff:127.0.0.1"),
            ip("0.0.0.0"),
            ip("255.255.255.255"),
        ];
        for wide in [
            "::/0",
            "::/1",
            "::/64",
            "::/80",
            "::fffe:0:0/95",
            "::8000:0:0/81",
            "::ffff:0:0/96",
        ] {
            for c in clients {
                assert!(matches(&net(wide), c), "{wide} {c}");
                assert!(trusted(&[wide]).contains(c), "{wide} {c}");
            }
        }
        // IPv6 clients as before.
        assert!(matches(&net("::/0"), ip("2001:db8::1")));
        assert!(matches(&net("::/80"), ip("::1")));
        assert!(!matches(&net("::/64"), ip("2001:db8::1")));
        assert!(!matches(&net("::ffff:0:0/96"), ip("::1")));
        for narrow in [
            "::/96",
            "::/81",
            "::fffe:0:0/96",
            "2001:db8::/32",
            "::1/128",
        ] {
            for c in clients {
                assert!(!matches(&net(narrow), c), "{narrow} {c}");
            }
        }
        // Mapped networks (IPv4 once parsed, or not): their own addresses only.
        for mapped in ["::ffff:127.0.0.0/104", "127.0.0.0/8"] {
            let n = net(mapped);
            assert!(matches(&n, ip("127.0.0.1")) && matches(&n, ip("::ffff:127.0.0.1")));
            assert!(!matches(&n, ip("10.0.0.1")) && !matches(&n, ip("::1")));
        }
        let raw: IpNet = "::ffff:127.0.0.0/104".parse().expect("net");
        assert!(matches(&raw, ip("127.0.0.1")) && !matches(&raw, ip("10.0.0.1")));
        // An IPv4 network never holds a (non-mapped) IPv6 address.
        assert!(!matches(&net("0.0.0.0/0"), ip("::1")));
        assert!(any_matches(
            &[net("10.0.0.0/8"), net("::/0")],
            ip("192.0.2.1")
        ));
        assert!(!any_matches(&[], ip("192.0.2.1")));
    }

    /// An IPv6 network address: random, or near the mapped range (random
    /// networks hardly ever touch it).
    fn v6_bits() -> impl Strategy<Value = u128> {
        prop_oneof![
            any::<u128>(),
            any::<u32>().prop_map(|a| 0xffff_0000_0000 | u128::from(a)),
            any::<u64>().prop_map(u128::from),
        ]
    }

    proptest! {
        /// For any IPv4 address `a` and IPv6 network `n`: `a` (in either
        /// form) matches `n` exactly when `n` holds `::ffff:a`, whether `n`
        /// is taken as written or canonical ([`parse_cidr`]).
        #[test]
        fn ipv4_matches_an_ipv6_net_iff_it_holds_the_mapped_address(
            a in any::<u32>(),
            bits in v6_bits(),
            len in 0u8..=128,
        ) {
            let a = std::net::Ipv4Addr::from(a);
            let n = ipnet::Ipv6Net::new(Ipv6Addr::from(bits), len).expect("prefix").trunc();
            let want = n.contains(&a.to_ipv6_mapped());
            for net in [IpNet::V6(n), canonical_net(IpNet::V6(n))] {
                prop_assert_eq!(matches(&net, IpAddr::V4(a)), want);
                prop_assert_eq!(matches(&net, IpAddr::V6(a.to_ipv6_mapped())), want);
            }
        }

        /// Canonicalising a network changes no IPv6 client's match either.
        #[test]
        fn canonical_net_keeps_every_match(
            addr in v6_bits(),
            bits in v6_bits(),
            len in 0u8..=128,
        ) {
            let c = Ipv6Addr::from(addr);
            let n = ipnet::Ipv6Net::new(Ipv6Addr::from(bits), len).expect("prefix").trunc();
            let want = n.contains(&c);
            prop_assert_eq!(matches(&IpNet::V6(n), IpAddr::V6(c)), want);
            prop_assert_eq!(matches(&canonical_net(IpNet::V6(n)), IpAddr::V6(c)), want);
        }
    }
}
