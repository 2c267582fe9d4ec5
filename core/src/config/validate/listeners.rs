//! Listen addresses that cannot all be bound: the proxy's listeners
//! (`proxy.listen`, `proxy.metrics_listen`, `proxy.tls.listen`), the verify
//! API's and the admin API's (which `tollgate dev` binds in the same
//! process, and which shares a host with a proxy as often as not).
//!
//! Two addresses overlap when their ports are equal (and not 0, "any free
//! port") and either their IPs are equal or one is a wildcard covering the
//! other: `0.0.0.0` covers every IPv4 address, `::` every IPv6 address and —
//! a dual-stack socket, the Linux default — every IPv4 one too. Of two
//! overlapping listeners one fails to bind at start (black-box round 15).

use std::net::{IpAddr, SocketAddr};

use super::*;

/// Whether `a` and `b` cannot both be bound: the same port (not 0) and the
/// same IP, or a wildcard that covers the other ([`covers`]).
pub(crate) fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let (ia, ib) = (a.ip().to_canonical(), b.ip().to_canonical());
    a.port() == b.port() && a.port() != 0 && (ia == ib || covers(ia, ib) || covers(ib, ia))
}

/// Whether a socket bound to `wildcard` takes the port on `ip` too:
/// `0.0.0.0` covers IPv4, `::` covers IPv6 and IPv4 (dual stack).
fn covers(wildcard: IpAddr, ip: IpAddr) -> bool {
    match wildcard {
        IpAddr::V4(w) => w.is_unspecified() && ip.is_ipv4(),
        IpAddr::V6(w) => w.is_unspecified(),
    }
}

impl Validator<'_> {
    /// Every listener of `config` against those before it, reported at the
    /// later one.
    pub(super) fn listeners(
        &mut self,
        proxy: &ProxyConfig,
        admin: &AdminConfig,
        verify: &VerifyConfig,
    ) {
        let mut bound = vec![("proxy.listen", proxy.listen)];
        bound.extend(proxy.metrics_listen.map(|m| ("proxy.metrics_listen", m)));
        bound.extend(proxy.tls.as_ref().map(|t| ("proxy.tls.listen", t.listen)));
        bound.extend(verify.listen.map(|v| ("verify.listen", v)));
        bound.push(("admin.listen", admin.listen));
        for (i, &(path, addr)) in bound.iter().enumerate() {
            let Some(&(other, other_addr)) = bound[..i].iter().find(|(_, a)| overlap(*a, addr))
            else {
                continue;
            };
            let message = if other_addr == addr {
                format!("{addr} is already used by {other}")
            } else {
                format!(
                    "{addr} overlaps {other} ({other_addr}): on one port a wildcard address takes every address of its family (0.0.0.0 every IPv4 one, :: every IPv6 and IPv4 one), so one of the two could not bind; use another port"
                )
            };
            self.error(path, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::overlap;
    use crate::config::parse;

    fn a(s: &str) -> std::net::SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn wildcards_overlap_the_addresses_of_their_family_on_one_port() {
        for (x, y) in [
            ("127.0.0.1:80", "127.0.0.1:80"),
            ("0.0.0.0:80", "127.0.0.1:80"),
            ("0.0.0.0:80", "0.0.0.0:80"),
            ("[::]:80", "127.0.0.1:80"),
            ("[::]:80", "0.0.0.0:80"),
            ("[::]:80", "[::1]:80"),
            ("0.0.0.0:80", "[::ffff:10.0.0.1]:80"),
            ("127.0.0.1:80", "[::ffff:127.0.0.1]:80"),
        ] {
            assert!(overlap(a(x), a(y)), "{x} {y}");
            assert!(overlap(a(y), a(x)), "{y} {x}");
        }
        for (x, y) in [
            ("0.0.0.0:80", "127.0.0.1:81"),
            ("[::]:80", "0.0.0.0:81"),
            ("127.0.0.1:80", "127.0.0.2:80"),
            ("0.0.0.0:80", "[::1]:80"),
            ("[::1]:80", "[::2]:80"),
            ("0.0.0.0:0", "127.0.0.1:0"),
        ] {
            assert!(!overlap(a(x), a(y)), "{x} {y}");
            assert!(!overlap(a(y), a(x)), "{y} {x}");
        }
    }

    #[test]
    fn every_listener_is_checked_against_the_others() {
        for (bad, why) in [
            (
                "proxy: { listen: \"127.0.0.1:41280\" }\nverify: { listen: \"0.0.0.0:41280\" }\n",
                "verify.listen: 0.0.0.0:41280 overlaps proxy.listen (127.0.0.1:41280)",
            ),
            (
                "proxy: { listen: \"[::]:9\", metrics_listen: \"10.0.0.1:9\" }\n",
                "proxy.metrics_listen: 10.0.0.1:9 overlaps proxy.listen ([::]:9)",
            ),
            (
                "proxy: { tls: { listen: \"0.0.0.0:8080\", cert: c, key: k } }\n",
                "proxy.tls.listen: 0.0.0.0:8080 overlaps proxy.listen (127.0.0.1:8080)",
            ),
            (
                "admin: { listen: \"0.0.0.0:8080\" }\n",
                "admin.listen: 0.0.0.0:8080 overlaps proxy.listen",
            ),
            (
                "admin: { listen: \"127.0.0.1:8080\" }\n",
                "admin.listen: 127.0.0.1:8080 is already used by proxy.listen",
            ),
            (
                "verify: { listen: \"[::]:8081\" }\n",
                "admin.listen: 127.0.0.1:8081 overlaps verify.listen ([::]:8081)",
            ),
        ] {
            let e = parse(bad, "t.yaml").expect_err(bad).to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        for good in [
            "proxy: { listen: \"0.0.0.0:8080\" }\nverify: { listen: \"0.0.0.0:8082\" }\n",
            "proxy: { listen: \"0.0.0.0:8080\" }\nadmin: { listen: \"[::1]:8080\" }\n",
            "proxy: { listen: \"127.0.0.1:0\" }\nverify: { listen: \"0.0.0.0:0\" }\nadmin: { listen: \"[::]:0\" }\n",
        ] {
            parse(good, "t.yaml").expect(good);
        }
    }
}
