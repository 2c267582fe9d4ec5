//! Name resolution for webhook deliveries: a host name is resolved as the
//! system resolves it, and the link-local and cloud metadata addresses
//! among the answers (`tollgate_core::webhooks::is_refused_ip`) are
//! dropped before the client connects. The URL check at creation refuses
//! such literals; this closes the same door for a name that resolves there,
//! at the moment of each delivery (so a name re-pointed later is caught too,
//! and the address checked is the one connected to).

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tollgate_core::webhooks::is_refused_ip;

/// The resolver the delivery client uses.
#[derive(Debug, Default)]
pub struct GuardedResolver;

impl GuardedResolver {
    pub fn shared() -> Arc<Self> {
        Arc::new(Self)
    }
}

/// Why a delivery has nowhere to go.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to link-local or cloud metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254, 100.100.100.200): not delivered")]
pub struct OnlyLinkLocal(String);

/// What may be connected to of `addrs` (the refused ones dropped), or
/// why nothing may.
pub fn allowed(name: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, OnlyLinkLocal> {
    let kept: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| !is_refused_ip(a.ip()))
        .collect();
    if kept.is_empty() {
        return Err(OnlyLinkLocal(name.to_string()));
    }
    Ok(kept)
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = match testing::lookup(&host) {
                Some(ips) => ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect(),
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let kept = allowed(&host, found)?;
            let addrs: Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

/// Names the tests point at addresses of their choosing (a name that
/// resolves to the metadata service cannot be made on demand otherwise):
/// the shared table of `tollgate_core::net::test_hosts`, empty in
/// production (every name goes to the system resolver).
#[doc(hidden)]
pub use tollgate_core::net::test_hosts as testing;

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().expect("ip"), 0)
    }

    #[test]
    fn link_local_answers_are_dropped() {
        let kept = allowed(
            "mixed.example",
            vec![
                addr("169.254.169.254"),
                addr("203.0.113.7"),
                addr("fe80::1"),
                addr("::ffff:169.254.1.1"),
                addr("2001:db8::5"),
                addr("fd00:ec2::254"),
            ],
        )
        .expect("two usable");
        assert_eq!(kept, vec![addr("203.0.113.7"), addr("2001:db8::5")]);
    }

    #[test]
    fn a_name_with_only_link_local_answers_is_not_delivered() {
        let e = allowed(
            "metadata.example",
            vec![addr("169.254.169.254"), addr("fe80::a")],
        )
        .expect_err("nowhere to go");
        assert!(e.to_string().contains("metadata.example"), "{e}");
        assert!(e.to_string().contains("link-local"), "{e}");
        assert!(allowed("empty.example", Vec::new()).is_err());
    }
}
