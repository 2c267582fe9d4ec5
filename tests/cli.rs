//! The `tollgate` binary: check-config, keys, dev.

use std::time::{Duration, Instant};

mod common;

use common::{tollgate, write_config, Dev, Ports};

#[test]
fn check_config_accepts_the_shipped_configs() {
    for file in ["config/tollgate.yaml", "config/examples/production.yaml"] {
        let out = tollgate()
            .args(["check-config", file])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("ok:"), "{stdout}");
    }
}

#[test]
fn check_config_reports_every_problem_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "upstreams:\n  demo: { targets: [\"127.0.0.1:3001\"] }\nroutes:\n  - name: a\n    match: { path_prefix: /a }\n    upstream: dem\n  - name: b\n    match: { path_prefix: b }\n    upstream: demo\n    limits: [ { name: x, rate: 0, per: 1s } ]\n",
    )
    .expect("write");
    let out = tollgate()
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let f = file.display().to_string();
    assert!(
        stderr.contains(&format!("{f}:6:15:")),
        "unknown upstream position:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("{f}:8:27:")),
        "path_prefix position:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("{f}:10:32:")),
        "rate position:\n{stderr}"
    );
    assert_eq!(stderr.lines().count(), 3, "{stderr}");

    std::fs::write(&file, "proxy:\n  listen: [\n").expect("write");
    let out = tollgate()
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with(&format!("{f}:")), "{stderr}");
}

fn sqlite_config(dir: &std::path::Path) -> std::path::PathBuf {
    write_config(dir, &Ports::new(), &[])
}

fn keys(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = tollgate()
        .arg("keys")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn keys_cli_manages_keys_in_the_configured_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sqlite_config(dir.path());
    let (ok, out, err) = keys(
        &config,
        &[
            "create",
            "--name",
            "cli-key",
            "--plan",
            "pro",
            "--expires-in",
            "30d",
        ],
    );
    assert!(ok, "{out}{err}");
    let key = out
        .split_whitespace()
        .find(|w| w.starts_with("tg_") && w.len() > 30)
        .expect("full key printed once");
    assert_eq!(tollgate_core::keys::validate(key), Ok(()));
    let (ok, list, _) = keys(&config, &["list"]);
    assert!(ok);
    assert!(list.contains("cli-key") && list.contains("pro"), "{list}");
    assert!(!list.contains(key), "listing shows only a prefix");
    let id = list
        .lines()
        .find(|l| l.contains("cli-key"))
        .and_then(|l| l.split_whitespace().next())
        .expect("id column")
        .to_string();
    assert!(keys(&config, &["disable", &id]).0);
    assert!(keys(&config, &["list"]).1.contains("disabled"));
    assert!(keys(&config, &["enable", &id]).0);
    let (ok, rotated, _) = keys(&config, &["rotate", &id]);
    assert!(ok && rotated.contains("tg_") && !rotated.contains(key));
    assert!(keys(&config, &["delete", &id]).0);
    let (ok, _, err) = keys(&config, &["delete", &id]);
    assert!(!ok && !err.is_empty(), "deleting twice is an error");
}

#[test]
fn dev_runs_everything_and_stops_on_ctrl_c() {
    let mut dev = Dev::start(&[], &[("TOLLGATE_ADMIN_PASSWORD", "dev-pass-123")]);
    let p = &dev.ports;
    assert_eq!(
        dev.line("proxy: ").as_deref(),
        Some(format!("http://127.0.0.1:{}", p.proxy).as_str())
    );
    assert_eq!(
        dev.line("admin: ").as_deref(),
        Some(format!("http://127.0.0.1:{}", p.admin).as_str())
    );
    assert_eq!(
        dev.line("admin login: ").as_deref(),
        Some("admin / dev-pass-123")
    );
    assert!(dev.line("metrics: http://").is_some(), "{:?}", dev.lines);
    let key = dev.line("demo key: ").expect("demo key");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::new();
        let url = dev.proxy_url("/api/products");
        let start = Instant::now();
        loop {
            match client.get(&url).header("x-api-key", &key).send().await {
                Ok(r) if r.status() == 200 => {
                    let body: serde_json::Value = r.json().await.expect("json");
                    assert!(body["data"].as_array().is_some_and(|a| !a.is_empty()));
                    break;
                }
                other => {
                    assert!(start.elapsed() < Duration::from_secs(10), "{other:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let r = client.get(&url).send().await.expect("request");
        assert_eq!(r.status(), 401);
        let r = client
            .post(dev.admin_url("/api/auth/login"))
            .json(&serde_json::json!({"username": "admin", "password": "dev-pass-123"}))
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), 200);
    });

    // Ctrl-C: a clean, prompt exit.
    let status = dev.interrupt();
    assert!(status.success(), "dev exited with {status}");
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits() {
    let mut dev = Dev::start(
        &[
            ("  threads: 2\n", "  threads: 2\n  grace_period: 2s\n"),
            (
                "routes:\n",
                "routes:\n  - name: slow\n    match: { path_prefix: /slow }\n    upstream: demo\n    auth: none\n",
            ),
        ],
        &[],
    );
    let url = dev.proxy_url("/slow/1500");
    let slow = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async { reqwest::get(&url).await.map(|r| r.status().as_u16()) })
    });
    std::thread::sleep(Duration::from_millis(400));
    let start = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &dev.child.id().to_string()])
        .status()
        .expect("kill");
    assert_eq!(
        slow.join().expect("thread").expect("slow request answered"),
        200,
        "the in-flight request finished"
    );
    let status = loop {
        if let Some(s) = dev.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "not stopped within grace + shutdown timeout"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    println!("stopped {:?} after SIGTERM", start.elapsed());
}
