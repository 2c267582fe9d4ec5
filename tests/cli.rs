//! The `tollgate` binary's `dev` role: start, Ctrl-C and SIGTERM, TLS, the
//! demo key and admin password, resets (`check-config`: `cli_check_config.rs`;
//! `keys` and `audit`: `cli_keys.rs`; config reloads: `cli_reload.rs`).

use std::time::{Duration, Instant};

use crate::common;

use crate::common::cli::{printed, KillOnDrop, CERT, KEY};
use crate::common::{tollgate, write_config, Dev, Ports};

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
    assert!(dev.line("metrics: http://").is_some(), "{:?}", dev.lines());
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
    // The route is served before the slow request is sent (a 404 here once,
    // on a loaded machine: the request must test the stop, not the start).
    let ready = dev.proxy_url("/slow/1");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let start = Instant::now();
    loop {
        let status = rt.block_on(async { reqwest::get(&ready).await.map(|r| r.status().as_u16()) });
        if status.as_ref().is_ok_and(|s| *s == 200) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "/slow never served: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(rt);
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

#[test]
fn dev_prints_the_https_url_when_tls_is_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, CERT).expect("write");
    std::fs::write(&key, KEY).expect("write");
    let tls_port = common::free_port();
    let tls = format!(
        "  threads: 2\n  tls: {{ listen: \"127.0.0.1:{tls_port}\", cert: \"{}\", key: \"{}\" }}\n",
        cert.display(),
        key.display()
    );
    let mut dev = Dev::start(&[("  threads: 2\n", &tls)], &[]);
    assert_eq!(
        dev.line("proxy: ").as_deref(),
        Some(format!("http://127.0.0.1:{}", dev.ports.proxy).as_str())
    );
    let https = format!("https://127.0.0.1:{tls_port}");
    assert_eq!(
        dev.line("proxy (https): ").as_deref(),
        Some(https.as_str()),
        "{:?}",
        dev.lines()
    );
    // It is the listener's address: the HTTPS proxy answers there.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let status = rt.block_on(async {
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .expect("client");
        let start = Instant::now();
        loop {
            match client.get(format!("{https}/api/products")).send().await {
                Ok(r) => break r.status().as_u16(),
                Err(e) => {
                    assert!(start.elapsed() < Duration::from_secs(10), "{e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    assert_eq!(status, 401, "no key: the proxy's own answer, over TLS");
    assert!(dev.interrupt().success());
}

/// Runs `tollgate dev` on `config` until it printed its `demo key:` line;
/// returns every line printed, then kills it.
fn dev_lines(config: &std::path::Path, args: &[&str]) -> Vec<String> {
    let (mut child, lines) = dev_running(config, args);
    let _ = child.0.kill();
    let _ = child.0.wait();
    lines
}

/// `tollgate dev --config <config> <args>` (without `TOLLGATE_ADMIN_PASSWORD`)
/// once it printed its `demo key:` line, still running, and what it printed.
fn dev_running(config: &std::path::Path, args: &[&str]) -> (KillOnDrop, Vec<String>) {
    use std::io::BufRead;
    let mut child = tollgate()
        .arg("dev")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("TOLLGATE_ADMIN_PASSWORD")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn dev");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let start = Instant::now();
    while !lines.iter().any(|l: &String| l.starts_with("demo key: ")) {
        let left = Duration::from_secs(30).saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => {
                let _ = child.kill();
                panic!("dev printed {lines:?}");
            }
        }
    }
    (KillOnDrop(child), lines)
}

#[test]
fn dev_leaves_a_database_it_did_not_create_alone_unless_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &Ports::new(), &[]);
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // Someone's database: an admin and a key named `demo` already there.
    let (key_id, hash) = rt.block_on(async {
        let db = tollgate_core::db::Db::connect(&url).await.expect("db");
        db.create_admin("admin", "someone's argon2 hash")
            .await
            .expect("admin");
        let (key, _) = db
            .create_key(&tollgate_core::db::NewApiKey {
                name: "demo".into(),
                ..Default::default()
            })
            .await
            .expect("key");
        let hash = db.load_key_records().await.expect("records")[0].hash;
        db.close().await;
        (key.id, hash)
    });
    let state = || {
        rt.block_on(async {
            let db = tollgate_core::db::Db::connect(&url).await.expect("db");
            let (_, pw) = db
                .get_admin_by_username("admin")
                .await
                .expect("query")
                .expect("admin");
            let records = db.load_key_records().await.expect("records");
            db.close().await;
            let key = records.iter().find(|r| r.key.id == key_id).map(|r| r.hash);
            (pw, key)
        })
    };

    let lines = dev_lines(&config, &[]);
    assert!(
        printed(&lines, "admin login: ").contains("unchanged"),
        "{lines:?}"
    );
    assert!(
        printed(&lines, "demo key: ").contains("unchanged"),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("tg_")), "{lines:?}");
    assert_eq!(state(), ("someone's argon2 hash".to_string(), Some(hash)));

    // Asked to: a new password and a new demo key secret.
    let lines = dev_lines(&config, &["--reset"]);
    let key = printed(&lines, "demo key: ");
    assert!(key.starts_with("tg_"), "{lines:?}");
    assert!(!printed(&lines, "admin login: ").contains("unchanged"));
    let (pw, now) = state();
    assert_ne!(pw, "someone's argon2 hash");
    assert_ne!(now, Some(hash));

    // A database dev created itself stays dev's: a fresh one every start.
    let fresh = tempfile::tempdir().expect("tempdir");
    let config = write_config(fresh.path(), &Ports::new(), &[]);
    let first = dev_lines(&config, &[]);
    let second = dev_lines(&config, &[]);
    let (a, b) = (
        printed(&first, "demo key: "),
        printed(&second, "demo key: "),
    );
    assert!(a.starts_with("tg_") && b.starts_with("tg_") && a != b);
}

/// `tollgate dev --reset` on a database it already used: the new admin
/// password ends the old sessions, and the reset and the demo key's rotation
/// are in the audit log as the CLI's.
#[test]
fn a_dev_password_reset_ends_old_sessions_and_is_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = Ports::new();
    let config = write_config(dir.path(), &ports, &[]);
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let base = format!("http://127.0.0.1:{}", ports.admin);
    let password = |lines: &[String]| {
        printed(lines, "admin login: ")
            .rsplit(" / ")
            .next()
            .expect("password")
            .to_string()
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = reqwest::Client::new();
    let login = |pw: String| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let start = Instant::now();
            loop {
                let r = client
                    .post(format!("{base}/api/auth/login"))
                    .json(&serde_json::json!({"username": "admin", "password": pw}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: serde_json::Value = r.json().await.expect("json");
                        return v["token"].as_str().expect("token").to_string();
                    }
                    Ok(r) if r.status() != 503 => panic!("login: {}", r.status()),
                    _ => {}
                }
                assert!(start.elapsed() < Duration::from_secs(30), "admin not up");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let admins = |token: String| {
        let client = client.clone();
        let base = base.clone();
        async move {
            client
                .get(format!("{base}/api/admins"))
                .bearer_auth(token)
                .send()
                .await
                .expect("admins")
                .status()
        }
    };

    let (first, lines) = dev_running(&config, &[]);
    let old_token = rt.block_on(login(password(&lines)));
    assert_eq!(rt.block_on(admins(old_token.clone())), 200);
    drop(first);

    let (_second, lines) = dev_running(&config, &["--reset"]);
    let new_token = rt.block_on(login(password(&lines)));
    assert_eq!(rt.block_on(admins(new_token)), 200);
    assert_eq!(
        rt.block_on(admins(old_token)),
        401,
        "a token from before the reset is still accepted"
    );

    let events = rt.block_on(async {
        let db = tollgate_core::db::Db::connect(&url).await.expect("db");
        let (events, _) = db
            .list_audit(&tollgate_core::db::audit::AuditFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("audit");
        db.close().await;
        events
    });
    for action in ["admin.password_reset", "key.rotate"] {
        let e = events
            .iter()
            .find(|e| e.action == action)
            .unwrap_or_else(|| panic!("no {action} in {events:?}"));
        assert_eq!(e.actor_kind, "cli", "{e:?}");
        assert!(e.actor.starts_with("cli:"), "{e:?}");
    }
}
