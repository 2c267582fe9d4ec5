//! Open connections per client address (`proxy.max_connections_per_ip`,
//! a side listener's total cap), the HTTP/2 streams they carry, and on the
//! proxy listener each connection's socket ([`Socket`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use super::live::Socket;

/// Open connections per client address, and which address each open
/// connection (by its unique id, the file descriptor) was counted for, with
/// its socket where the edge keeps it (the proxy listener).
#[derive(Debug, Default)]
pub struct ConnTable {
    inner: Mutex<ConnInner>,
    /// The most connections open at once on the listener (0: no cap).
    total_cap: u32,
}

#[derive(Debug, Default)]
struct ConnInner {
    per_ip: HashMap<IpAddr, u32>,
    open: HashMap<i32, (IpAddr, Option<Socket>)>,
}

impl ConnTable {
    /// A table that also caps the listener's open connections at `total`.
    pub fn with_total_cap(total: u32) -> Self {
        Self {
            total_cap: total,
            ..Self::default()
        }
    }

    /// Whether `id` is already counted (a reused keep-alive connection).
    pub(super) fn is_open(&self, id: i32) -> bool {
        self.inner.lock().open.contains_key(&id)
    }

    /// Count a new connection; `Err(reason)` (not counted) when `ip` is at
    /// `cap` (`per_ip_cap`) or the listener at its total cap (`total_cap`).
    pub fn admit(&self, id: i32, ip: IpAddr, cap: u32) -> Result<(), &'static str> {
        self.admit_socket(id, ip, cap, None)
    }

    /// [`Self::admit`], keeping the connection's socket until it is
    /// released, for [`Self::shut_down_live`].
    pub fn admit_socket(
        &self,
        id: i32,
        ip: IpAddr,
        cap: u32,
        socket: Option<Socket>,
    ) -> Result<(), &'static str> {
        let mut g = self.inner.lock();
        if self.total_cap > 0 && g.open.len() >= self.total_cap as usize {
            return Err("total_cap");
        }
        let n = g.per_ip.entry(ip).or_insert(0);
        if cap > 0 && *n >= cap {
            if *n == 0 {
                g.per_ip.remove(&ip);
            }
            return Err("per_ip_cap");
        }
        *n += 1;
        g.open.insert(id, (ip, socket));
        Ok(())
    }

    /// The connection `id` is closed.
    pub fn release(&self, id: i32) {
        let open = self.inner.lock().open.remove(&id);
        if let Some((ip, _)) = open {
            self.release_ip(ip);
        }
    }

    /// Shut down the socket of every open connection kept with one (a
    /// SIGINT during a graceful stop): Pingora's reads and writes on them
    /// fail, their requests end and record their usage. How many were.
    pub fn shut_down_live(&self) -> usize {
        let sockets: Vec<Socket> = self
            .inner
            .lock()
            .open
            .values()
            .filter_map(|o| o.1)
            .collect();
        sockets.iter().filter(|s| s.shut_down()).count()
    }

    /// Open connections kept with their socket.
    pub fn live(&self) -> usize {
        self.inner
            .lock()
            .open
            .values()
            .filter(|o| o.1.is_some())
            .count()
    }

    pub fn count(&self, ip: IpAddr) -> u32 {
        self.inner.lock().per_ip.get(&ip).copied().unwrap_or(0)
    }

    /// Count an HTTP/2 stream in flight against `ip` (its connection is
    /// counted already): `None` when `ip` is at `cap` (0: no cap). Each
    /// stream may take an upstream connection of its own, so streams share
    /// the address's budget with connections; the slot is given back when
    /// dropped.
    pub fn admit_stream(self: &Arc<Self>, ip: IpAddr, cap: u32) -> Option<StreamSlot> {
        let mut g = self.inner.lock();
        let n = g.per_ip.entry(ip).or_insert(0);
        if cap > 0 && *n >= cap {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            table: self.clone(),
            ip,
        })
    }

    fn release_ip(&self, ip: IpAddr) {
        let mut g = self.inner.lock();
        if let Some(n) = g.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.per_ip.remove(&ip);
            }
        }
    }
}

/// An HTTP/2 stream counted against its client address
/// ([`ConnTable::admit_stream`]) until dropped.
#[derive(Debug)]
pub struct StreamSlot {
    table: Arc<ConnTable>,
    ip: IpAddr,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.table.release_ip(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_table_caps_and_releases() {
        let t = ConnTable::default();
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let b: IpAddr = "127.0.0.3".parse().expect("ip");
        assert!(t.admit(10, a, 2).is_ok());
        assert!(t.admit(11, a, 2).is_ok());
        assert_eq!(t.admit(12, a, 2), Err("per_ip_cap"));
        assert!(t.admit(13, b, 2).is_ok());
        t.release(10);
        assert_eq!(t.count(a), 1);
        assert!(t.admit(12, a, 2).is_ok());
        // 0 = no cap.
        for id in 100..400 {
            assert!(t.admit(id, b, 0).is_ok());
        }
        for id in 100..400 {
            t.release(id);
        }
        t.release(13);
        assert_eq!(t.count(b), 0);
        // Releasing twice is harmless.
        t.release(13);
        assert_eq!(t.count(b), 0);
    }

    #[test]
    fn streams_share_their_address_budget_with_connections() {
        let t = Arc::new(ConnTable::default());
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        assert!(t.admit(10, a, 3).is_ok());
        let s1 = t.admit_stream(a, 3).expect("a slot");
        let s2 = t.admit_stream(a, 3).expect("a slot");
        assert!(t.admit_stream(a, 3).is_none(), "over the cap");
        assert_eq!(
            t.admit(11, a, 3),
            Err("per_ip_cap"),
            "streams count for connections"
        );
        drop(s1);
        assert_eq!(t.count(a), 2);
        assert!(t.admit(11, a, 3).is_ok());
        drop(s2);
        t.release(10);
        t.release(11);
        assert_eq!(t.count(a), 0, "every slot given back");
        // 0 = no cap (a trusted proxy).
        let many: Vec<_> = (0..500).filter_map(|_| t.admit_stream(a, 0)).collect();
        assert_eq!(many.len(), 500);
        drop(many);
        assert_eq!(t.count(a), 0);
    }

    #[test]
    fn a_total_cap_holds_across_addresses() {
        let t = ConnTable::with_total_cap(3);
        for (id, ip) in [(1, "127.0.0.2"), (2, "127.0.0.3"), (3, "127.0.0.4")] {
            assert!(t.admit(id, ip.parse().expect("ip"), 0).is_ok());
        }
        let other: IpAddr = "127.0.0.5".parse().expect("ip");
        assert_eq!(t.admit(4, other, 0), Err("total_cap"));
        assert_eq!(t.count(other), 0);
        t.release(2);
        assert!(t.admit(4, other, 0).is_ok());
    }

    #[test]
    fn live_sockets_are_kept_until_released_and_shut_down_at_once() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let t = ConnTable::default();
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let (a, mut a_client) = super::super::live::tests::pair();
        let (b, mut b_client) = super::super::live::tests::pair();
        let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
        assert!(t.admit_socket(fa, ip, 0, Socket::of(fa)).is_ok());
        assert!(t.admit_socket(fb, ip, 0, Socket::of(fb)).is_ok());
        // A side listener's connection: counted, no socket kept.
        assert!(t.admit(-7, ip, 0).is_ok());
        assert_eq!(t.live(), 2);
        // Released (its guard dropped): forgotten, never shut down.
        t.release(fb);
        assert_eq!(t.live(), 1);
        assert_eq!(t.shut_down_live(), 1);
        let mut buf = [0u8; 1];
        assert_eq!(a_client.read(&mut buf).expect("read"), 0, "EOF at the peer");
        b_client.set_nonblocking(true).expect("nonblocking");
        assert!(
            b_client
                .read(&mut buf)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "a released connection is left alone"
        );
        t.release(fa);
        t.release(-7);
        assert_eq!((t.live(), t.count(ip)), (0, 0));
        assert_eq!(t.shut_down_live(), 0);
    }
}
