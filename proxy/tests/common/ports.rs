//! Ports of one test process, from one registry.
//!
//! A proxy binds its ports some time after the test picked them. Anything
//! else in the process that binds `127.0.0.1:0` in that window (an upstream,
//! a webhook sink) could be handed the same port by the kernel and answer in
//! the proxy's place. So every port the tests take goes through `GIVEN`:
//! `free_port` never hands out a port twice, and `listener` never keeps a
//! port that `free_port` has handed out.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// True when `port` was not taken before; it is taken from now on.
fn take(port: u16) -> bool {
    GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port)
}

/// A port on 127.0.0.1 that was free a moment ago (bound, then released),
/// for a listener that binds it later. Never the same port twice in one
/// process: a port just closed is often handed out again by the next
/// `bind(0)`, and two proxies of one test on one port would both listen
/// (Pingora sets `SO_REUSEPORT`) and share its connections.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind port 0");
        if take(port) {
            return port;
        }
    }
}

/// Binds a fresh port with `bind` until it gets one no other test of this
/// process was given; the ports it refused stay bound until then, so the
/// kernel does not hand them out again meanwhile.
fn fresh<S>(mut bind: impl FnMut() -> S, port_of: impl Fn(&S) -> u16) -> (S, u16) {
    let mut refused = Vec::new();
    loop {
        let socket = bind();
        let port = port_of(&socket);
        if take(port) {
            return (socket, port);
        }
        refused.push(socket);
    }
}

/// A listener on 127.0.0.1 on a port no proxy of this process will bind.
pub fn std_listener() -> TcpListener {
    fresh(
        || TcpListener::bind("127.0.0.1:0").expect("bind port 0"),
        |l| l.local_addr().expect("addr").port(),
    )
    .0
}

/// `std_listener` for tokio.
pub fn listener() -> tokio::net::TcpListener {
    let listener = std_listener();
    listener.set_nonblocking(true).expect("nonblocking");
    tokio::net::TcpListener::from_std(listener).expect("tokio listener")
}

/// A bound socket that has not listened yet, on a port no proxy of this
/// process will bind: `listen` on it for a listener with its own backlog.
pub fn socket() -> (tokio::net::TcpSocket, u16) {
    fresh(
        || {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind("127.0.0.1:0".parse().expect("addr"))
                .expect("bind port 0");
            socket
        },
        |s| s.local_addr().expect("addr").port(),
    )
}

/// A port on which connections are refused, held for as long as the guard
/// lives: the socket is bound but never listens, so no test running beside
/// this one can take the port and answer on it.
pub fn closed_port() -> (tokio::net::TcpSocket, u16) {
    socket()
}
