//! Running the real `tollgate` binary in tests: free ports, a temp config
//! derived from the shipped quick-start config, and `tollgate dev` as a child
//! process that is killed on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

pub fn tollgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
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
    pub lines: Vec<String>,
    pub ports: Ports,
    rx: Receiver<String>,
    pub dir: tempfile::TempDir,
}

impl Dev {
    /// Start `tollgate dev` with the quick-start config (plus `extra`
    /// replacements) and wait until it printed its `demo key:` line.
    pub fn start(extra: &[(&str, &str)], env: &[(&str, &str)]) -> Self {
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
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tollgate dev");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut dev = Self {
            child,
            lines: Vec::new(),
            ports,
            rx,
            dir,
        };
        let start = Instant::now();
        while dev.line("demo key: ").is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "dev printed {:?}",
                dev.lines
            );
            if let Ok(l) = dev.rx.recv_timeout(Duration::from_millis(200)) {
                dev.lines.push(l);
            }
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

    /// The rest of the first printed line starting with `prefix`.
    pub fn line(&self, prefix: &str) -> Option<String> {
        self.lines
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
