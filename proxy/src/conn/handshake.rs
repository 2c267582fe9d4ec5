//! The TLS handshake deadline. Pingora gives a TLS handshake a fixed 60 s
//! and has no hook inside it, so [`HandshakeWatch`] bounds it from outside:
//! before the handshake (Pingora's pre-TLS callback, where the PROXY header
//! is read too) it notes the socket, and if the edge has not seen the
//! connection (its first request call, [`HandshakeWatch::finished`]) within
//! `proxy.header_timeout`, it shuts the socket down. The handshake's pending
//! read then ends and Pingora drops the connection.
//!
//! The socket is named by its file descriptor plus its two addresses
//! ([`Socket`]): a descriptor closed and reused by another connection in
//! the meantime has other addresses and is left alone.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::live::Socket;
use crate::edge_metrics;

/// Sockets in a TLS handshake, by descriptor.
#[derive(Debug, Default)]
pub struct HandshakeWatch {
    pending: Mutex<HashMap<RawFd, (u64, oneshot::Sender<()>)>>,
    next: AtomicU64,
}

impl HandshakeWatch {
    /// Watch the socket `fd`: shut it down after `timeout` unless
    /// [`Self::finished`] is called for it first. Needs a tokio runtime.
    pub fn start(self: &Arc<Self>, fd: RawFd, timeout: Duration) {
        let Some(socket) = Socket::of(fd) else {
            return;
        };
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        // A descriptor still listed belonged to a connection that is gone:
        // replacing it (dropping its sender) ends that watch.
        self.pending.lock().insert(fd, (generation, tx));
        let watch = self.clone();
        tokio::spawn(async move {
            // Ok or Err: `finished`, or replaced by a newer connection.
            if tokio::time::timeout(timeout, rx).await.is_ok() {
                return;
            }
            {
                let mut pending = watch.pending.lock();
                if pending.get(&fd).is_some_and(|(g, _)| *g == generation) {
                    pending.remove(&fd);
                }
            }
            if socket.shut_down() {
                edge_metrics::HEADER_TIMEOUTS.inc();
            }
        });
    }

    /// The connection on `fd` reached the edge: its handshake is done.
    pub fn finished(&self, fd: RawFd) {
        self.pending.lock().remove(&fd);
    }

    /// Sockets in a handshake now.
    pub fn len(&self) -> usize {
        self.pending.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
