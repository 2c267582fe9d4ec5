//! `admin.max_connections_per_ip`: open admin connections per client
//! address, grouped as every per-address cap is ([`net::bucket_key`]: the
//! IPv4 address, the IPv6 /64), so one client cannot take every
//! `admin.max_connections` slot and lock everyone else out (black-box
//! round 14). The admin listener believes no forwarding header, so the
//! address is the TCP peer's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tollgate_core::net;

/// Open connections per client address.
#[derive(Debug)]
pub(super) struct PerIp {
    /// 0: no cap. Followed on reload ([`Self::set_cap`]): connections
    /// already open stay.
    cap: AtomicU32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

impl PerIp {
    pub(super) fn new(cap: u32) -> Arc<Self> {
        Arc::new(Self {
            cap: AtomicU32::new(cap),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Count a connection from `peer`, or `None` when its address is at the
    /// cap. The count is given back when the slot is dropped.
    pub(super) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        let key = net::bucket_key(peer);
        let mut open = self.open.lock();
        let n = open.entry(key).or_insert(0);
        let cap = self.cap.load(Ordering::Relaxed);
        if cap > 0 && *n >= cap {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: self.clone(),
            key,
        })
    }

    pub(super) fn set_cap(&self, cap: u32) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    #[cfg(test)]
    fn count(&self, peer: IpAddr) -> u32 {
        let key = net::bucket_key(peer);
        self.open.lock().get(&key).copied().unwrap_or(0)
    }
}

/// A connection counted against its address until dropped.
#[derive(Debug)]
pub(super) struct Slot {
    table: Arc<PerIp>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn caps_per_address_and_ipv6_per_64() {
        let t = PerIp::new(2);
        let a = [t.admit(ip("10.0.0.1")), t.admit(ip("10.0.0.1"))];
        assert!(a.iter().all(Option::is_some));
        assert!(t.admit(ip("10.0.0.1")).is_none());
        assert!(t.admit(ip("10.0.0.2")).is_some());
        // The same /64 is one client; a mapped IPv4 address is the IPv4 one.
        let v6 = [t.admit(ip("2001:db8::1")), t.admit(ip("2001:db8::ffff:2"))];
        assert!(v6.iter().all(Option::is_some));
        assert!(t.admit(ip("2001:db8::9")).is_none());
        assert!(t.admit(ip("2001:db8:0:1::1")).is_some());
        assert!(t.admit(ip("::ffff:10.0.0.1")).is_none());
        drop(a);
        assert_eq!(t.count(ip("10.0.0.1")), 0);
        assert!(t.open.lock().get(&ip("10.0.0.1")).is_none());
        assert!(t.admit(ip("10.0.0.1")).is_some());
    }

    #[test]
    fn zero_is_no_cap() {
        let t = PerIp::new(0);
        let held: Vec<_> = (0..1000).filter_map(|_| t.admit(ip("10.0.0.1"))).collect();
        assert_eq!(held.len(), 1000);
    }
}
