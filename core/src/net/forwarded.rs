//! `X-Forwarded-For`, `X-Forwarded-Proto` and `Host`: who the client is
//! behind trusted proxies, and what the upstream is told.

use std::net::IpAddr;

use super::{canonical, TrustedProxies};

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

#[cfg(test)]
mod tests {
    use super::super::test_util::{ip, trusted};
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

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

    proptest! {
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
