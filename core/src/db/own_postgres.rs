//! A PostgreSQL server of a test's own, to stop and start (outage tests).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::testing::services_required;

/// A free local TCP port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A throw-away PostgreSQL cluster (initdb + pg_ctl, as the `postgres` user
/// when run as root) on a free port, for tests that stop and start their
/// database. Never the shared server on 5432: other tests use that one.
pub struct OwnPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    /// `ssl=on` with these PEM files (certificate, key), TCP only over TLS.
    tls: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl OwnPostgres {
    pub fn start() -> Option<Self> {
        Self::start_with(None)
    }

    /// A server with `ssl=on` serving `cert_pem` / `key_pem`, whose
    /// `pg_hba.conf` accepts TCP connections only over TLS (`hostssl`).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Option<Self> {
        Self::start_with(Some((cert_pem.to_string(), key_pem.to_string())))
    }

    fn start_with(tls: Option<(String, String)>) -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .filter(|(_, b)| b.join("initdb").exists())
            .max_by_key(|(v, _)| *v)
            .map(|(_, b)| b);
        let Some(bin) = bin else {
            assert!(
                !services_required(),
                "PostgreSQL server binaries (initdb) are not installed"
            );
            eprintln!("notice: initdb not found under /usr/lib/postgresql; skipping");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the PostgreSQL test directory");
        }
        let pg = Self {
            data: dir.path().join("data"),
            bin,
            port: free_port(),
            as_postgres,
            tls,
            _dir: dir,
        };
        let data = pg.data.display().to_string();
        pg.run(
            &pg.bin.join("initdb"),
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        if let Some((cert, key)) = &pg.tls {
            pg.write_tls_files(cert, key);
        }
        pg.start_server();
        Some(pg)
    }

    /// server.crt / server.key in the data directory (key 0600, owned by
    /// the server's user) and `hostssl` in place of `host`.
    fn write_tls_files(&self, cert: &str, key: &str) {
        use std::os::unix::fs::PermissionsExt;
        let write = |name: &str, text: &str, mode: u32| {
            let path = self.data.join(name);
            std::fs::write(&path, text).expect("write a PostgreSQL TLS file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .expect("chmod a PostgreSQL TLS file");
            if self.as_postgres {
                let ok = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&path)
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "chown {name}");
            }
        };
        write("server.crt", cert, 0o644);
        write("server.key", key, 0o600);
        let hba = self.data.join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        let text: String = text
            .lines()
            .map(|l| match l.strip_prefix("host ") {
                Some(rest) => format!("hostssl {rest}\n"),
                None => format!("{l}\n"),
            })
            .collect();
        std::fs::write(&hba, text).expect("write pg_hba.conf");
    }

    fn command(&self, program: &std::path::Path) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn run(&self, program: &std::path::Path, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .current_dir("/tmp")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{} {args:?} failed:\n{}\n{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data.display().to_string();
        let mut all = vec!["-D", data.as_str()];
        all.extend_from_slice(args);
        self.run(&self.bin.join("pg_ctl"), &all);
    }

    pub fn start_server(&self) {
        let socket_dir = self
            .data
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut opts = format!(
            "-p {} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port
        );
        if self.tls.is_some() {
            opts.push_str(" -c ssl=on");
        }
        let log = self.data.with_extension("log").display().to_string();
        self.pg_ctl(&["-l", &log, "-o", &opts, "-w", "-t", "30", "start"]);
    }

    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "stop"]);
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = self
            .command(&self.bin.join("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .current_dir("/tmp")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
