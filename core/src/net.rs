//! Client addresses behind load balancers: trusted proxies, `X-Forwarded-For`,
//! and the address a per-IP limit or throttle keys on.
//!
//! The rule: the client is the PROXY-protocol source if the listener takes
//! one (the caller passes it as `peer`), else — when the peer is a trusted
//! proxy — the right-most `X-Forwarded-For` entry that is not itself a trusted
//! proxy, else the peer. A client that is not a trusted proxy cannot choose
//! its address: its own `X-Forwarded-For` is ignored and not passed on.

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

/// Who the client is, and what the upstream is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddress {
    pub client: IpAddr,
    /// Whether the peer is a trusted proxy (its forwarding headers are believed).
    pub peer_trusted: bool,
    /// The `X-Forwarded-For` value for the upstream: the chain the trusted
    /// peer sent, plus the peer; or just the peer.
    pub forwarded_for: String,
}

/// One `X-Forwarded-For` entry: an address, perhaps with a port
/// (`1.2.3.4:5678`, `[2001:db8::1]:443`) as some balancers send.
fn parse_entry(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    s.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| canonical(a.ip()))
}

/// An address as its `Display` writes it; IPv4 (nearly every request)
/// without the formatting machinery.
pub fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut out = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
            out
        }
        IpAddr::V6(_) => ip.to_string(),
    }
}

/// At most this many `X-Forwarded-For` entries are looked at (from the right).
pub const MAX_FORWARDED_HOPS: usize = 32;

/// Resolve the client address from the peer and the `X-Forwarded-For` header
/// values (in the order received).
pub fn resolve(peer: IpAddr, forwarded_for: &[&str], trusted: &TrustedProxies) -> ClientAddress {
    resolve_with(peer, trusted, || forwarded_for.to_vec())
}

/// [`resolve`], with the `X-Forwarded-For` values read only if the peer
/// is trusted (untrusted peers' are never looked at).
pub fn resolve_with<'a>(
    peer: IpAddr,
    trusted: &TrustedProxies,
    forwarded_for: impl FnOnce() -> Vec<&'a str>,
) -> ClientAddress {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return ClientAddress {
            client: peer,
            peer_trusted: false,
            forwarded_for: ip_text(peer),
        };
    }
    let entries: Vec<&str> = forwarded_for()
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev().take(MAX_FORWARDED_HOPS) {
        match parse_entry(entry) {
            // Garbage: stop at the last hop we could read.
            None => break,
            Some(ip) => {
                client = ip;
                if !trusted.contains(ip) {
                    break;
                }
            }
        }
    }
    // Black-box round 15: the received chain is passed on, so one carrying
    // a key (an entry no address parser reads) is dropped; the peer stays.
    let mut chain = if entries
        .iter()
        .any(|e| crate::keys::carries_key(e.as_bytes()))
    {
        String::new()
    } else {
        entries.join(", ")
    };
    if !chain.is_empty() {
        chain.push_str(", ");
    }
    chain.push_str(&ip_text(peer));
    ClientAddress {
        client,
        peer_trusted: true,
        forwarded_for: chain,
    }
}

/// `X-Forwarded-Proto` for the upstream: a trusted peer's `http`/`https`, else
/// the scheme of the listener the request came in on.
pub fn forwarded_proto(peer_trusted: bool, sent: Option<&str>, tls: bool) -> &'static str {
    if peer_trusted {
        match sent.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            Some("https") => return "https",
            Some("http") => return "http",
            _ => {}
        }
    }
    if tls {
        "https"
    } else {
        "http"
    }
}

/// A `Host` / `X-Forwarded-Host` value that is a plausible `host[:port]`.
pub fn is_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']' | b'_')
        })
}

/// What the start of a connection on a PROXY-protocol listener says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyHeader {
    /// Not enough bytes yet.
    Incomplete,
    /// Not a PROXY header (or a malformed one): close the connection.
    Invalid,
    /// `consumed` bytes were the header; `source` is the client (`None` for
    /// `LOCAL`/`UNKNOWN`: health checks from the balancer itself).
    Done {
        consumed: usize,
        source: Option<std::net::SocketAddr>,
    },
}

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest header read: a v1 line is at most 107 bytes; v2 addresses
/// plus TLVs are capped here.
pub const MAX_PROXY_HEADER: usize = 16 + 536;

/// Parse a PROXY protocol v1 or v2 header at the start of `buf`.
pub fn parse_proxy_header(buf: &[u8]) -> ProxyHeader {
    if buf.len() >= 12 && buf[..12] == V2_SIGNATURE {
        return parse_v2(buf);
    }
    if !V2_SIGNATURE.starts_with(&buf[..buf.len().min(12)]) || buf.is_empty() {
        if b"PROXY ".starts_with(&buf[..buf.len().min(6)]) {
            return parse_v1(buf);
        }
        return ProxyHeader::Invalid;
    }
    ProxyHeader::Incomplete
}

fn parse_v1(buf: &[u8]) -> ProxyHeader {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= 107 {
            ProxyHeader::Invalid
        } else {
            ProxyHeader::Incomplete
        };
    };
    if end > 105 {
        return ProxyHeader::Invalid;
    }
    let Ok(line) = std::str::from_utf8(&buf[..end]) else {
        return ProxyHeader::Invalid;
    };
    let parts: Vec<&str> = line.split(' ').collect();
    let consumed = end + 2;
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => ProxyHeader::Done {
            consumed,
            source: None,
        },
        ["PROXY", fam @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip = src.parse::<IpAddr>();
            let port = sport.parse::<u16>();
            match (ip, port) {
                (Ok(ip), Ok(port)) if (*fam == "TCP4") == ip.is_ipv4() => ProxyHeader::Done {
                    consumed,
                    source: Some(std::net::SocketAddr::new(ip, port)),
                },
                _ => ProxyHeader::Invalid,
            }
        }
        _ => ProxyHeader::Invalid,
    }
}

fn parse_v2(buf: &[u8]) -> ProxyHeader {
    if buf.len() < 16 {
        return ProxyHeader::Incomplete;
    }
    let ver_cmd = buf[12];
    let fam = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 || 16 + len > MAX_PROXY_HEADER {
        return ProxyHeader::Invalid;
    }
    if buf.len() < 16 + len {
        return ProxyHeader::Incomplete;
    }
    let consumed = 16 + len;
    let body = &buf[16..consumed];
    match ver_cmd & 0x0f {
        // LOCAL: the balancer itself (health checks).
        0x0 => {
            return ProxyHeader::Done {
                consumed,
                source: None,
            }
        }
        0x1 => {}
        _ => return ProxyHeader::Invalid,
    }
    let source = match fam >> 4 {
        0x1 if body.len() >= 12 => {
            let ip = std::net::Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            Some(std::net::SocketAddr::new(IpAddr::V4(ip), port))
        }
        0x2 if body.len() >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Some(std::net::SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(a)),
                port,
            ))
        }
        // UNSPEC (or a Unix socket): no address to use.
        0x0 | 0x3 => None,
        _ => return ProxyHeader::Invalid,
    };
    ProxyHeader::Done { consumed, source }
}

/// A hosts table in front of DNS, for tests that change what a host name
/// resolves to while the product runs (as a DNS record changes, or to make
/// a name answer an address DNS cannot be made to answer on demand). Empty
/// unless a test fills it; only names in it are affected, so tests sharing a
/// process use names of their own (under `.test`). Read by the proxy's
/// upstream resolution and the webhook worker's resolver.
#[doc(hidden)]
pub mod test_hosts {
    use std::collections::HashMap;
    use std::net::IpAddr;
    use std::sync::{LazyLock, RwLock};

    static HOSTS: LazyLock<RwLock<HashMap<String, Vec<IpAddr>>>> =
        LazyLock::new(|| RwLock::new(HashMap::new()));

    /// From now on `name` resolves to `ips` (none: the lookup fails).
    pub fn set_host(name: &str, ips: &[IpAddr]) {
        HOSTS
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_ascii_lowercase(), ips.to_vec());
    }

    /// `name` goes back to DNS.
    pub fn remove_host(name: &str) {
        HOSTS
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name.to_ascii_lowercase());
    }

    /// What `name` resolves to in the table; `None`: ask DNS.
    pub fn lookup(name: &str) -> Option<Vec<IpAddr>> {
        let hosts = HOSTS.read().unwrap_or_else(|e| e.into_inner());
        if hosts.is_empty() {
            return None;
        }
        hosts.get(&name.to_ascii_lowercase()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|s| parse_cidr(s).expect("cidr")).collect())
    }

    proptest! {
        #[test]
        fn ip_text_is_display(bits in any::<u32>(), v6 in any::<u128>()) {
            let v4 = IpAddr::V4(std::net::Ipv4Addr::from(bits));
            prop_assert_eq!(ip_text(v4), v4.to_string());
            let v6 = IpAddr::V6(Ipv6Addr::from(v6));
            prop_assert_eq!(ip_text(v6), v6.to_string());
        }
    }

    #[test]
    fn ip_text_edges() {
        for s in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "100.64.9.99",
            "1.20.199.200",
            "::1",
        ] {
            assert_eq!(ip_text(ip(s)), s);
        }
    }

    #[test]
    fn untrusted_peer_is_the_client_and_its_headers_are_dropped() {
        let t = trusted(&["10.0.0.0/8"]);
        let r = resolve(ip("6.6.6.6"), &["1.2.3.4"], &t);
        assert_eq!(r.client, ip("6.6.6.6"));
        assert!(!r.peer_trusted);
        assert_eq!(r.forwarded_for, "6.6.6.6");
        // No trusted proxies at all (the default): same.
        let r = resolve(ip("10.0.0.1"), &["1.2.3.4"], &TrustedProxies::default());
        assert_eq!(r.client, ip("10.0.0.1"));
        assert_eq!(r.forwarded_for, "10.0.0.1");
    }

    #[test]
    fn trusted_peer_gives_the_right_most_untrusted_entry() {
        let t = trusted(&["10.0.0.0/8", "192.168.1.1"]);
        // The client forged 6.6.6.6 in front; the balancer appended the real one.
        let r = resolve(ip("10.0.0.2"), &["6.6.6.6, 203.0.113.9", "192.168.1.1"], &t);
        assert_eq!(r.client, ip("203.0.113.9"));
        assert!(r.peer_trusted);
        assert_eq!(
            r.forwarded_for,
            "6.6.6.6, 203.0.113.9, 192.168.1.1, 10.0.0.2"
        );
        // All trusted: the left-most.
        let r = resolve(ip("10.0.0.2"), &["10.1.1.1, 10.2.2.2"], &t);
        assert_eq!(r.client, ip("10.1.1.1"));
        // None sent: the peer.
        let r = resolve(ip("10.0.0.2"), &[], &t);
        assert_eq!(r.client, ip("10.0.0.2"));
        assert_eq!(r.forwarded_for, "10.0.0.2");
        // Garbage stops the walk at the last readable hop.
        let r = resolve(ip("10.0.0.2"), &["1.1.1.1, junk, 10.9.9.9"], &t);
        assert_eq!(r.client, ip("10.9.9.9"));
        // Ports and brackets as some balancers send them.
        let r = resolve(ip("10.0.0.2"), &["[2001:db8::5]:443"], &t);
        assert_eq!(r.client, ip("2001:db8::5"));
        let r = resolve(ip("10.0.0.2"), &["198.51.100.7:5555"], &t);
        assert_eq!(r.client, ip("198.51.100.7"));
    }

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

    #[test]
    fn proto_and_host() {
        assert_eq!(forwarded_proto(true, Some("HTTPS"), false), "https");
        assert_eq!(forwarded_proto(false, Some("https"), false), "http");
        assert_eq!(forwarded_proto(true, Some("gopher"), true), "https");
        assert!(is_host("api.example.com:8443"));
        assert!(is_host("[::1]:80"));
        assert!(!is_host("evil.com/x"));
        assert!(!is_host("a b"));
        assert!(!is_host(""));
    }

    #[test]
    fn proxy_protocol_v1() {
        let h = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse_proxy_header(h),
            ProxyHeader::Done {
                consumed: 41,
                source: Some("203.0.113.7:5555".parse().expect("addr"))
            }
        );
        let h = b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n";
        assert!(matches!(
            parse_proxy_header(h),
            ProxyHeader::Done {
                source: Some(_),
                ..
            }
        ));
        assert_eq!(
            parse_proxy_header(b"PROXY UNKNOWN\r\n"),
            ProxyHeader::Done {
                consumed: 15,
                source: None
            }
        );
        assert_eq!(
            parse_proxy_header(b"PROXY TCP4 1.2"),
            ProxyHeader::Incomplete
        );
        assert_eq!(parse_proxy_header(b"PRO"), ProxyHeader::Incomplete);
        assert_eq!(parse_proxy_header(b""), ProxyHeader::Incomplete);
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 99999 2\r\n",
            b"PROXY TCP4 x y 1 2\r\n",
            &[b'P'; 200][..],
        ] {
            assert_eq!(parse_proxy_header(bad), ProxyHeader::Invalid, "{bad:?}");
        }
        let long = [b"PROXY ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(parse_proxy_header(&long), ProxyHeader::Invalid);
    }

    #[test]
    fn proxy_protocol_v2() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([
            0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0, 80,
        ]);
        h.extend(b"GET /");
        assert_eq!(
            parse_proxy_header(&h),
            ProxyHeader::Done {
                consumed: 28,
                source: Some("198.51.100.9:8080".parse().expect("addr"))
            }
        );
        assert_eq!(parse_proxy_header(&h[..20]), ProxyHeader::Incomplete);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(
            parse_proxy_header(&local),
            ProxyHeader::Done {
                consumed: 16,
                source: None
            }
        );
        let mut bad = V2_SIGNATURE.to_vec();
        bad.extend([0x31, 0x11, 0, 12]);
        assert_eq!(parse_proxy_header(&bad), ProxyHeader::Invalid);
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend([0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse_proxy_header(&huge), ProxyHeader::Invalid);
    }

    proptest! {
        #[test]
        fn proxy_header_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_proxy_header(&bytes);
            let mut v2 = V2_SIGNATURE.to_vec();
            v2.extend(&bytes);
            if let ProxyHeader::Done { consumed, .. } = parse_proxy_header(&v2) {
                prop_assert!(consumed <= v2.len());
            }
        }

        /// Whatever an untrusted client sends, it is the client and the
        /// upstream hears only its address.
        #[test]
        fn untrusted_clients_cannot_choose_their_address(
            xff in proptest::collection::vec("[0-9a-f.:, ]{0,40}", 0..4),
            last in any::<u8>(),
        ) {
            let t = trusted(&["10.0.0.0/8"]);
            let peer = IpAddr::from([198, 51, 100, last]);
            let refs: Vec<&str> = xff.iter().map(String::as_str).collect();
            let r = resolve(peer, &refs, &t);
            prop_assert_eq!(r.client, peer);
            prop_assert_eq!(r.forwarded_for, peer.to_string());
        }

        /// Behind a trusted peer the client is never a trusted address unless
        /// every hop is, and the chain always ends with the peer.
        #[test]
        fn trusted_chain_ends_with_the_peer(
            hops in proptest::collection::vec((any::<bool>(), any::<u8>()), 0..6),
        ) {
            let t = trusted(&["10.0.0.0/8"]);
            let peer = ip("10.0.0.1");
            let entries: Vec<String> = hops
                .iter()
                .map(|(inner, b)| if *inner { format!("10.0.0.{b}") } else { format!("203.0.113.{b}") })
                .collect();
            let joined = entries.join(",");
            let r = resolve(peer, &[joined.as_str()], &t);
            let peer_suffix = peer.to_string();
            prop_assert!(r.forwarded_for.ends_with(&peer_suffix));
            let expected = entries
                .iter()
                .rev()
                .find(|e| e.starts_with("203."))
                .map(|e| ip(e))
                .unwrap_or_else(|| entries.first().map(|e| ip(e)).unwrap_or(peer));
            prop_assert_eq!(r.client, expected);
        }
    }

    #[test]
    fn a_trusted_chain_carrying_a_key_is_not_passed_on() {
        let t = trusted(&["127.0.0.2"]);
        let key = crate::keys::generate().expect("rng").plain;
        let chain = format!("1.2.3.4, {key}");
        let r = resolve(ip("127.0.0.2"), &[chain.as_str()], &t);
        assert!(r.peer_trusted);
        assert_eq!(r.forwarded_for, "127.0.0.2");
        let r = resolve(ip("127.0.0.2"), &["1.2.3.4"], &t);
        assert_eq!(r.forwarded_for, "1.2.3.4, 127.0.0.2");
    }
}
