//! `tollgate proxy` (the real binary) as a child process, and signals.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, tollgate};

/// `tollgate proxy` as a child process, killed on drop.
pub struct Proxy {
    pub child: Child,
    pub port: u16,
    pub metrics: u16,
    /// The config file it runs (and reloads).
    pub config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Start on `yaml` (the sections after `proxy:`/`storage:`/`log:`);
    /// `proxy_extra` is added to the `proxy:` section.
    pub async fn start(
        dir: tempfile::TempDir,
        db_url: &str,
        proxy_extra: &str,
        yaml: &str,
    ) -> Self {
        Self::start_env(dir, db_url, proxy_extra, yaml, &[]).await
    }

    /// [`Proxy::start`] with extra environment variables.
    pub async fn start_env(
        dir: tempfile::TempDir,
        db_url: &str,
        proxy_extra: &str,
        yaml: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let (port, metrics) = (free_port(), free_port());
        let text = format!(
            "proxy:\n  listen: \"127.0.0.1:{port}\"\n  metrics_listen: \"127.0.0.1:{metrics}\"\n  threads: 2\n  auth_failures_per_second: 100000\n{proxy_extra}storage:\n  database_url: \"{db_url}\"\n  key_refresh: 100ms\nlog:\n  level: warn\n  access_log: false\n{yaml}"
        );
        let config = dir.path().join("tollgate.yaml");
        std::fs::write(&config, &text).expect("write config");
        let child = spawn(&config, dir.path(), env);
        let p = Self {
            child,
            port,
            metrics,
            config,
            _dir: dir,
        };
        p.until_listening().await;
        p
    }

    /// Run the same config again (the same ports and database), after
    /// this process exited: a restart.
    pub async fn start_again(mut self) -> Self {
        self.child = spawn(&self.config, self._dir.path(), &[]);
        self.until_listening().await;
        self
    }

    /// Until both the proxy and its metrics listener accept connections:
    /// Pingora starts its services side by side, so one may listen a moment
    /// before the other.
    async fn until_listening(&self) {
        let start = Instant::now();
        for port in [self.port, self.metrics] {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "tollgate proxy did not listen on {port}: {}",
                    std::fs::read_to_string(&self.config).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    pub fn signal(&self, name: &str) {
        signal(&self.child, name);
    }

    /// Wait for the exit status, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        wait_exit(&mut self.child, limit).await
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{name}");
}

pub async fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(start.elapsed() < limit, "still running after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn(config: &std::path::Path, dir: &std::path::Path, env: &[(&str, &str)]) -> Child {
    tollgate()
        .arg("proxy")
        .arg("--config")
        .arg(config)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tollgate proxy")
}
