//! What the unit tests of `net`'s modules share.

use std::net::IpAddr;

use super::{parse_cidr, TrustedProxies};

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

pub(super) fn trusted(list: &[&str]) -> TrustedProxies {
    TrustedProxies::new(list.iter().map(|s| parse_cidr(s).expect("cidr")).collect())
}
