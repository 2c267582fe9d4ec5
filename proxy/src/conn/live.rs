//! An accepted socket the edge may have to end from outside the task that
//! serves it: a TLS handshake past its deadline ([`super::HandshakeWatch`]),
//! or every connection still open when a SIGINT cuts a graceful stop short
//! ([`super::ConnTable::shut_down_live`]): shut down, Pingora's pending
//! reads and writes fail, its requests end and their contexts record their
//! usage (`usage::open`).
//!
//! A socket is named by its file descriptor plus its two addresses, taken
//! once when it is noted: a descriptor closed and reused by another socket
//! in the meantime (another connection, an upstream one) has other
//! addresses and is left alone. (A `dup` would pin the socket itself, but
//! Pingora's streams lend no `AsFd`, and this workspace forbids `unsafe`.)

use std::net::SocketAddr;
use std::os::fd::RawFd;

use nix::sys::socket::{getpeername, getsockname, shutdown, Shutdown, SockaddrStorage};

/// One TCP socket: its descriptor and its two addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    fd: RawFd,
    local: SocketAddr,
    peer: SocketAddr,
}

/// `a` as a std address (TCP sockets only).
fn inet(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

impl Socket {
    /// The socket on `fd` now, or `None` if `fd` is not a connected TCP
    /// socket (two system calls).
    pub fn of(fd: RawFd) -> Option<Self> {
        let local = inet(&getsockname::<SockaddrStorage>(fd).ok()?)?;
        let peer = inet(&getpeername::<SockaddrStorage>(fd).ok()?)?;
        Some(Self { fd, local, peer })
    }

    /// The descriptor it was noted on.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Shut both directions down if its descriptor still names this socket;
    /// whether it did.
    pub fn shut_down(&self) -> bool {
        if Self::of(self.fd) != Some(*self) {
            return false;
        }
        shutdown(self.fd, Shutdown::Both).is_ok()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    /// A connected pair: (accepted, client).
    pub(crate) fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = l.accept().expect("accept");
        (accepted, client)
    }

    #[test]
    fn a_socket_is_shut_down_only_while_its_descriptor_names_it() {
        let (accepted, mut client) = pair();
        let s = Socket::of(accepted.as_raw_fd()).expect("a TCP socket");
        assert_eq!(s.fd(), accepted.as_raw_fd());
        assert!(s.shut_down());
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).expect("read"), 0, "EOF at the peer");

        // The descriptor now names another socket: left alone.
        let (other, mut other_client) = pair();
        let moved = Socket {
            fd: other.as_raw_fd(),
            ..s
        };
        assert!(!moved.shut_down());
        other_client.set_nonblocking(true).expect("nonblocking");
        let still = other_client.read(&mut buf);
        assert!(
            still.is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "the other socket is still open"
        );
        assert!(Socket::of(-1).is_none());
    }
}
