//! Running the real `tollgate` binary in tests: free ports, a temp config
//! derived from the shipped quick-start config, and `tollgate dev` as a child
//! process that is killed on drop.
#![allow(dead_code)]

/// Headless Chromium for the dashboard tests.
pub mod browser;
pub mod cli;
pub mod credits;
pub mod faults;
/// Every port of the process from one registry.
#[path = "../../proxy/tests/common/ports.rs"]
pub mod ports;
pub mod proxy;
/// The throw-away `redis-server`s of the proxy tests, shared.
#[path = "../../proxy/tests/common/redis.rs"]
pub mod redis;

#[allow(unused_imports)]
pub use ports::{closed_port, free_port, listener};

use std::io::{BufRead, BufReader, Read};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn tollgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

/// Ports of one test instance.
pub struct Ports {
    pub proxy: u16,
    pub metrics: u16,
    pub admin: u16,
    pub upstream: u16,
}

impl Ports {
    pub fn new() -> Self {
        Self {
            proxy: free_port(),
            metrics: free_port(),
            admin: free_port(),
            upstream: free_port(),
        }
    }
}

/// The quick-start config with these ports, a SQLite file in `dir`, and
/// `extra` replacements applied.
pub fn write_config(dir: &Path, ports: &Ports, extra: &[(&str, &str)]) -> PathBuf {
    let file = dir.join("tollgate.yaml");
    let mut text = tollgate_core::config::DEFAULT_YAML
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", ports.proxy))
        .replace("127.0.0.1:9091", &format!("127.0.0.1:{}", ports.metrics))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", ports.admin))
        .replace("127.0.0.1:3001", &format!("127.0.0.1:{}", ports.upstream))
        .replace(
            "sqlite://tollgate.db",
            &format!("sqlite://{}", dir.join("t.db").display()),
        );
    for (from, to) in extra {
        assert!(text.contains(from), "config has no {from:?}");
        text = text.replace(from, to);
    }
    std::fs::write(&file, text).expect("write config");
    file
}

/// `tollgate dev` running as a child process.
pub struct Dev {
    pub child: Child,
    pub ports: Ports,
    /// Every line printed so far (stdout; stderr too if captured).
    output: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
}

/// Append every line of `stream` to `output`, on a thread of its own.
fn collect(stream: impl Read + Send + 'static, output: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            output.lock().expect("output").push(line);
        }
    });
}

impl Dev {
    /// Start `tollgate dev` with the quick-start config (plus `extra`
    /// replacements) and wait until it printed its `demo key:` line and the
    /// proxy listens. Its stderr (the logs) goes to the test's.
    pub fn start(extra: &[(&str, &str)], env: &[(&str, &str)]) -> Self {
        Self::start_with(extra, env, false)
    }

    /// [`Dev::start`], keeping the logs (stderr) in [`Dev::text`] too.
    pub fn start_with(extra: &[(&str, &str)], env: &[(&str, &str)], capture_logs: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = Ports::new();
        let config = write_config(dir.path(), &ports, extra);
        let mut cmd = tollgate();
        cmd.arg("dev")
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(if capture_logs {
                Stdio::piped()
            } else {
                Stdio::inherit()
            });
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tollgate dev");
        let output = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().expect("stdout"), output.clone());
        if let Some(stderr) = child.stderr.take() {
            collect(stderr, output.clone());
        }
        let dev = Self {
            child,
            ports,
            output,
            dir,
        };
        let start = Instant::now();
        while dev.line("demo key: ").is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "dev printed {:?}",
                dev.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Pingora binds its listeners when it starts running, just after the lines.
        while std::net::TcpStream::connect(("127.0.0.1", dev.ports.proxy)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "proxy never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        dev
    }

    /// The lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.output.lock().expect("output").clone()
    }

    /// Everything printed so far, one line per line.
    pub fn text(&self) -> String {
        self.output.lock().expect("output").join("\n")
    }

    /// The rest of the first printed line starting with `prefix`.
    pub fn line(&self, prefix: &str) -> Option<String> {
        self.output
            .lock()
            .expect("output")
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_string)
    }

    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.admin)
    }

    /// Log in to the admin API as `admin` with `password`: the session token.
    pub async fn login(&self, client: &reqwest::Client, password: &str) -> String {
        let r = client
            .post(self.admin_url("/api/auth/login"))
            .json(&serde_json::json!({"username": "admin", "password": password}))
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), 200, "login");
        let body: serde_json::Value = r.json().await.expect("json");
        body["token"].as_str().expect("token").to_string()
    }

    /// SIGINT, then wait for the exit status.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "dev did not stop on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo upstream in-process on a free port (for proxies the binary runs
/// in front of it); its port.
pub async fn demo_upstream() -> u16 {
    let listener = listener();
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(tollgate_proxy::demo::serve(listener));
    port
}

/// `/v1/complete/{status}/{cost}` (or `…/{cost}/{ms}`, after `ms`) answers `status` with
/// `X-Tollgate-Cost: {cost}` (the cost as written, even if invalid).
pub async fn cost_upstream() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = listener();
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                    let (status, cost) = match parts.as_slice() {
                        [_, _, status, cost] | [_, _, status, cost, _] => {
                            (status.to_string(), cost.to_string())
                        }
                        _ => ("200".into(), "1".into()),
                    };
                    // `/…/{status}/{cost}/{ms}`: answer after `ms`.
                    if let [_, _, _, _, ms] = parts.as_slice() {
                        let ms = ms.parse().unwrap_or(0);
                        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    }
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nX-Tollgate-Cost: {cost}\r\nContent-Length: 2\r\n\r\nok"
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}
