//! Client addresses behind load balancers: trusted proxies, `X-Forwarded-For`,
//! and the address a per-IP limit or throttle keys on.
//!
//! The rule: the client is the PROXY-protocol source if the listener takes
//! one (the caller passes it as `peer`), else — when the peer is a trusted
//! proxy — the right-most `X-Forwarded-For` entry that is not itself a trusted
//! proxy, else the peer. A client that is not a trusted proxy cannot choose
//! its address: its own `X-Forwarded-For` is ignored and not passed on.
//!
//! By concern: [`cidr`] (networks, matching, per-IP buckets), [`forwarded`]
//! (`X-Forwarded-*`, `Host`), [`proxy_protocol`] (the PROXY header).

mod cidr;
mod forwarded;
mod proxy_protocol;
#[doc(hidden)]
pub mod test_hosts;
#[cfg(test)]
mod test_util;

pub use cidr::{
    any_matches, bucket_key, canonical, canonical_net, matches, parse_cidr, TrustedProxies,
};
pub use forwarded::{
    forwarded_proto, ip_text, is_host, resolve, resolve_with, ClientAddress, MAX_FORWARDED_HOPS,
};
pub use proxy_protocol::{parse_proxy_header, ProxyHeader, MAX_PROXY_HEADER};
