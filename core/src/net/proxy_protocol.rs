//! The PROXY protocol (v1 and v2) header at the start of a connection on a
//! listener that takes one.

use std::net::{IpAddr, Ipv6Addr};

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    }
}
