//! A TCP relay to a service (PostgreSQL, Redis) that a test can break:
//! "stopped" (connections closed, new ones closed at once) or "partitioned"
//! (connections accepted and held silent).

use std::net::SocketAddr;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    /// Like a stopped server: open connections are reset, new ones closed.
    Stopped,
    /// Like a network partition: nothing answers, nothing is closed.
    Silent,
}

/// A TCP relay to the database that the test can break.
pub struct Relay {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_while(rx: &mut watch::Receiver<Mode>, mode: Mode) {
    while *rx.borrow_and_update() == mode {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (mode, rx) = watch::channel(Mode::Up);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let rx = rx.clone();
                tokio::spawn(relay(client, target, rx));
            }
        });
        Relay { addr, mode, task }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

async fn relay(mut client: TcpStream, target: SocketAddr, mut rx: watch::Receiver<Mode>) {
    let mode = *rx.borrow_and_update();
    match mode {
        Mode::Stopped => return,
        Mode::Silent => {
            wait_while(&mut rx, Mode::Silent).await;
            return;
        }
        Mode::Up => {}
    }
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => return,
        _ = wait_while(&mut rx, Mode::Up) => {}
    }
    // Partitioned: keep both sockets open and say nothing until it ends.
    if *rx.borrow() == Mode::Silent {
        wait_while(&mut rx, Mode::Silent).await;
    }
}
