//! The addresses a webhook is never sent to: link-local ones (the cloud
//! metadata service at `169.254.169.254`) and the other well-known
//! metadata services, also inside the IPv6 forms that carry an IPv4
//! address. The URL check refuses such literals; the delivery worker drops
//! such addresses from what a host name resolves to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Cloud metadata services outside the link-local ranges: AWS's IPv6
/// endpoint (Nitro instances).
pub const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

/// Cloud metadata services outside `169.254.0.0/16`: Alibaba Cloud's.
pub const METADATA_V4: [Ipv4Addr; 1] = [Ipv4Addr::new(100, 100, 100, 200)];

fn refused_v4(v4: Ipv4Addr) -> bool {
    v4.is_link_local() || METADATA_V4.contains(&v4)
}

/// Whether a webhook may never be sent to `ip`: a link-local address
/// (`169.254.0.0/16`, `fe80::/10`) or another cloud metadata service's
/// ([`METADATA_V6`], [`METADATA_V4`]), also inside an IPv6 address that
/// carries an IPv4 one and reaches it through a translator or tunnel:
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// IPv4-translated (`::ffff:0:a.b.c.d`), NAT64 with the well-known prefix
/// (`64:ff9b::a.b.c.d`) or the local-use one (`64:ff9b:1::/48`), 6to4
/// (`2002:aabb:ccdd::`) and Teredo (`2001:0::/32`). The URL check refuses
/// such literals; the delivery worker drops such addresses from what a host
/// name resolves to.
///
/// The rule is the same for every carrier: refused when an IPv4 address it
/// carries is link-local, not the carrier as a whole, so that the carriers
/// that reach ordinary IPv4 receivers keep working. This matters for the
/// local-use NAT64 prefix (RFC 8215): on an IPv6-only network whose DNS64
/// synthesises addresses from it, every IPv4-only receiver has such an
/// address, and refusing the /48 would leave none of them deliverable. The
/// operator's translator may use any prefix length inside the /48, so the
/// IPv4 address is looked for at each position RFC 6052 (§2.2) allows
/// there: after a /48, /56, /64 or /96 prefix (skipping bits 64..71, the
/// `u` octet); any of them link-local refuses the address. Teredo (RFC 4380)
/// carries two IPv4 addresses: the server's (bits 32..63) and the client's
/// (the last 32 bits, inverted); either link-local refuses it. A NAT64
/// network-specific prefix of the operator's own (any range) cannot be
/// told from an ordinary IPv6 address and is not recognised.
pub fn is_refused_ip(ip: std::net::IpAddr) -> bool {
    let v6 = match ip {
        IpAddr::V4(v4) => return refused_v4(v4),
        IpAddr::V6(v6) => v6,
    };
    let s = v6.segments();
    if s[0] & 0xffc0 == 0xfe80 || METADATA_V6.contains(&v6) {
        return true;
    }
    let b = v6.octets();
    let v4 = |o: [u8; 4]| Ipv4Addr::from(o);
    // The four bytes from byte `i` on.
    let at = |i: usize| v4([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    match s {
        // ::ffff:a.b.c.d, ::a.b.c.d (not :: or ::1), ::ffff:0:a.b.c.d
        [0, 0, 0, 0, 0, 0xffff, _, _]
        | [0, 0, 0, 0, 0, 0, _, _]
        | [0, 0, 0, 0, 0xffff, 0, _, _] => refused_v4(at(12)),
        // NAT64 well-known prefix 64:ff9b::/96
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => refused_v4(at(12)),
        // NAT64 local-use prefix 64:ff9b:1::/48: a /48, /56, /64 or /96
        // translator prefix (RFC 6052 §2.2; byte 8 is the `u` octet).
        [0x64, 0xff9b, 1, ..] => [
            v4([b[6], b[7], b[9], b[10]]),
            v4([b[7], b[9], b[10], b[11]]),
            at(9),
            at(12),
        ]
        .iter()
        .any(|a| refused_v4(*a)),
        // 6to4: 2002:AABB:CCDD::/48
        [0x2002, ..] => refused_v4(at(2)),
        // Teredo 2001:0::/32: the server, and the client inverted.
        [0x2001, 0, ..] => refused_v4(at(4)) || refused_v4(!at(12)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_and_metadata_addresses_in_every_ipv6_carrier() {
        for ip in [
            "169.254.169.254",
            "fe80::1",
            // Round 13: AWS's IPv6 metadata service, Alibaba's, and these
            // carried (IPv4-mapped, NAT64).
            "fd00:ec2::254",
            "fd00:0ec2:0:0:0:0:0:0254",
            "100.100.100.200",
            "::ffff:100.100.100.200",
            "64:ff9b::100.100.100.200",
            "febf::1",
            "::ffff:169.254.1.1",
            "::169.254.1.1",
            "::ffff:0:169.254.1.1",
            "64:ff9b::169.254.1.1",
            "2002:a9fe:0101::5",
            // NAT64 local-use prefix (RFC 8215): 169.254.169.254 after a /96
            // (twice), /64 and /56 translator prefix, 169.254.1.2 after a /48
            // (RFC 6052 §2.2: byte 8, the `u` octet, is skipped), each at one
            // position only.
            "64:ff9b:1::169.254.169.254",
            "64:ff9b:1:7:5:6:169.254.169.254",
            "64:ff9b:1:0:a9:fea9:fe00:0",
            "64:ff9b:1:7a9:fe:a9fe::",
            "64:ff9b:1:a9fe:1:200::",
            // Teredo (RFC 4380): a link-local server (bits 32..63), or a
            // link-local client (the last 32 bits, inverted: 0x56015601 is
            // 169.254.169.254).
            "2001:0:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:5601:5601",
        ] {
            assert!(is_refused_ip(ip.parse().expect(ip)), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.0.0.5",
            "::1",
            "::",
            "::ffff:10.0.0.1",
            "64:ff9b::10.0.0.1",
            "2002:0a00:0001::5",
            "2001:db8::169.254.1.1",
            "fec0::1",
            "fd00:ec2::253",
            "fd00::254",
            "100.100.100.201",
            // Local-use NAT64 of ordinary addresses, at every position, and
            // a link-local one just outside the /48.
            "64:ff9b:1::10.0.0.1",
            "64:ff9b:1:0:0a:0000:0100:0",
            "64:ff9b:1:0a00:0:0100::",
            "64:ff9b:2::169.254.169.254",
            "64:ff9b:0:1::169.254.169.254",
            // Teredo of ordinary addresses (RFC 4380's example: server
            // 65.54.227.120, client 192.0.2.45); a client written without the
            // inversion (169.254.169.254 inverted is 86.1.86.1); 169.254 in
            // the bits that carry the client's port and flags; and a
            // link-local server just outside 2001:0::/32.
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:0:4136:e378:8000:63bf:a9fe:a9fe",
            "2001:0:4136:e378:a9fe:a9fe:3fff:fdd2",
            "2001:1:a9fe:a9fe::1",
        ] {
            assert!(!is_refused_ip(ip.parse().expect(ip)), "{ip}");
        }
    }
}
