//! Real Redis servers for tests: the shared ones `scripts/services` starts
//! (by env var) and throw-away `redis-server`s a test owns.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tollgate_core::db::testing::services_required;

use super::free_port;

/// `single_and_cluster!(single: a, cluster: b, run)`: the test `single`
/// awaits `run(url, a)` with the Redis of `TOLLGATE_TEST_REDIS_URL`, the
/// test `cluster` awaits `run(url, b)` with the Redis Cluster of
/// `TOLLGATE_TEST_REDIS_CLUSTER_URL`; each is skipped (failed in CI)
/// without its service.
#[allow(unused_macros)]
macro_rules! single_and_cluster {
    ($single:ident: $a:expr, $cluster:ident: $b:expr, $run:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $single() {
            if let Some(url) = common::redis::service_url("TOLLGATE_TEST_REDIS_URL") {
                $run(&url, $a).await;
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $cluster() {
            if let Some(url) = common::redis::service_url("TOLLGATE_TEST_REDIS_CLUSTER_URL") {
                $run(&url, $b).await;
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use single_and_cluster;

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
    /// `Some`: TLS only (`--tls-port`), with these files.
    tls: Option<RedisTls>,
}

/// The certificate, key and CA files of a TLS redis-server.
#[derive(Clone)]
pub struct RedisTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
}

impl OwnRedis {
    /// `None` (skip) if redis-server is not installed; fails in CI.
    pub fn start() -> Option<Self> {
        Self::start_with(None)
    }

    /// A redis-server that speaks only TLS (`--port 0 --tls-port`), with the
    /// distro's TLS-enabled build.
    pub fn start_tls(tls: RedisTls) -> Option<Self> {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<RedisTls>) -> Option<Self> {
        let mut r = Self {
            port: free_port(),
            child: None,
            tls,
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

    /// Answers PING (over TLS with `redis-cli --tls` for a TLS server).
    fn ready(&self) -> bool {
        match &self.tls {
            None => raw_command(self.port, "PING").is_ok_and(|r| r.starts_with("+PONG")),
            Some(t) => Command::new("redis-cli")
                .args(["--tls", "--cacert"])
                .arg(&t.ca)
                .args(["-h", "localhost", "-p", &self.port.to_string(), "PING"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG")),
        }
    }

    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => {
                cmd.args(["--port", &self.port.to_string()]);
            }
            Some(t) => {
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&t.cert)
                    .arg("--tls-key-file")
                    .arg(&t.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&t.ca)
                    .args(["--tls-auth-clients", "no"]);
            }
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--enable-debug-command", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.ready() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on {} did not start", self.port);
    }

    /// Send `signal` (e.g. `TERM`, `STOP`, `CONT`) to the server.
    pub fn signal(&self, signal: &str) {
        let Some(c) = &self.child else { return };
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &c.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} redis-server");
    }

    /// SIGTERM (Redis' graceful shutdown) and wait for the exit.
    pub fn terminate(&mut self) {
        self.signal("TERM");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.signal("CONT");
        self.kill();
        assert!(self.spawn(), "restart redis-server");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
