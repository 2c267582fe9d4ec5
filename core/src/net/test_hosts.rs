//! A hosts table in front of DNS, for tests that change what a host name
//! resolves to while the product runs (as a DNS record changes, or to make
//! a name answer an address DNS cannot be made to answer on demand). Empty
//! unless a test fills it; only names in it are affected, so tests sharing a
//! process use names of their own (under `.test`). Read by the proxy's
//! upstream resolution and the webhook worker's resolver.

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
