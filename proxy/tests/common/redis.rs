//! Real Redis servers for tests: the shared ones `scripts/services` starts
//! (by env var) and throw-away `redis-server`s a test owns.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tollgate_core::db::testing::services_required;

use super::free_port;

/// The URL in `var`, or `None` (with a notice) to skip; fails in CI.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                !services_required(),
                "{var} is not set (required because CI / TOLLGATE_REQUIRE_SERVICES is set); \
                 run `eval \"$(scripts/services)\"`"
            );
            eprintln!("notice: {var} not set, skipping (eval \"$(scripts/services)\" to run)");
            None
        }
    }
}

/// One request/response on a fresh connection (RESP inline command).
pub fn raw_command(port: u16, cmd: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("{cmd}\r\n").as_bytes())?;
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A redis-server of our own, killed on drop.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    /// `None` (skip) if redis-server is not installed; fails in CI.
    pub fn start() -> Option<Self> {
        let mut r = Self {
            port: free_port(),
            child: None,
        };
        if !r.spawn() {
            assert!(!services_required(), "redis-server is not installed");
            eprintln!("notice: redis-server not installed, skipping");
            return None;
        }
        Some(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--enable-debug-command", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if raw_command(self.port, "PING").is_ok_and(|r| r.starts_with("+PONG")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on {} did not start", self.port);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "restart redis-server");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
