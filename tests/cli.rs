//! The `tollgate` binary: check-config, keys, dev.

use std::time::{Duration, Instant};

mod common;

use common::{tollgate, write_config, Dev, Ports};

#[test]
fn check_config_accepts_the_shipped_configs() {
    // The production example names certificate files of its own host.
    for (file, skip) in [
        ("config/tollgate.yaml", None),
        ("config/examples/production.yaml", Some("--skip-files")),
    ] {
        let out = tollgate()
            .args(["check-config", file])
            .args(skip)
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

    // A wildcard on another listener's port: one of the two could not bind
    // (black-box round 15).
    std::fs::write(
        &file,
        "proxy:\n  listen: \"127.0.0.1:41280\"\nverify:\n  listen: \"0.0.0.0:41280\"\n",
    )
    .expect("write");
    let (ok, out, err) = check_config(&file, &["--skip-files"]);
    assert!(!ok, "{out}");
    assert!(
        err.starts_with(&format!(
            "{f}:4:11: verify.listen: 0.0.0.0:41280 overlaps proxy.listen (127.0.0.1:41280)"
        )),
        "{err}"
    );
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
    // Each change enqueued its webhook event, once (enabling has none).
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let events = rt.block_on(async {
        let db = tollgate_core::db::Db::connect(&url).await.expect("db");
        let e = db.recent_webhook_events(10).await.expect("events");
        db.close().await;
        e
    });
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["key.disabled", "key.rotated", "key.deleted"]);
    assert_eq!(events[2].1, format!("key.deleted:{id}:"));
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

// A throwaway self-signed certificate (CN and SAN localhost, 127.0.0.1,
// valid for a century), its key, and an unrelated key.
const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBnDCCAUGgAwIBAgIUM16Ay965jszvnLgeq5stWXyl4MowCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNTA5MDMzN1oYDzIxMjYxMTAx
MDkwMzM3WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAR47KfKWjCoVY48guoSsGv2/mja24/X2O6LdmdNVOjIPhreUEiEkNHM
KMjeLy94z+ZNXbsuyqGgrlIyPD8t0BAPo28wbTAdBgNVHQ4EFgQUPaTkS0zuk3Df
gBvuEUZXTBCNEwAwHwYDVR0jBBgwFoAUPaTkS0zuk3DfgBvuEUZXTBCNEwAwDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI
zj0EAwIDSQAwRgIhAPJKo1+BYe3fAbCzyvw23tqJIdPUfaHrOUMCtk53jM1pAiEA
mfmfBSjtvkPwSOnm77m3Mw2sWWT7vLc4U1VOPrQvjVY=
-----END CERTIFICATE-----
";
const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQglr1dE0We9mE38Vru
1hA8pD1V0jc3RkOvpWVOxm9pTe2hRANCAAR47KfKWjCoVY48guoSsGv2/mja24/X
2O6LdmdNVOjIPhreUEiEkNHMKMjeLy94z+ZNXbsuyqGgrlIyPD8t0BAP
-----END PRIVATE KEY-----
";
const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg/QppSiDuVcFPA5+X
gby5hTnmZ8tZohFXJh9DjBS5UcWhRANCAARUIsGB/ZcHag0baYv7IfLJ8eaxK5BJ
OcemDDGjGc/jvkZqdhbog4BX5wMJHdu6G7lA4+8fPgofuzVKo5PGsFjG
-----END PRIVATE KEY-----
";

/// `check-config FILE` (plus `args`): success, stdout, stderr.
fn check_config(file: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = tollgate()
        .arg("check-config")
        .arg(file)
        .args(args)
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_reads_the_tls_files_and_reports_the_setting_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (cert, key, ca) = (d.join("cert.pem"), d.join("key.pem"), d.join("ca.pem"));
    let file = d.join("tls.yaml");
    let yaml = format!(
        "proxy:\n  listen: \"127.0.0.1:8080\"\n  tls:\n    listen: \"127.0.0.1:8443\"\n    cert: {}\n    key: \"{}\"\nupstreams:\n  demo: {{ targets: [\"127.0.0.1:3001\"] }}\n  private: {{ targets: [\"https://127.0.0.1:3443\"],\n             tls: {{ sni: api.internal, ca_file: {} }} }}\nroutes:\n  - name: a\n    match: {{ path_prefix: /a }}\n    upstream: demo\n\
         storage: {{ database_url: \"sqlite::memory:\" }}\n",
        cert.display(),
        key.display(),
        ca.display()
    );
    std::fs::write(&file, &yaml).expect("write");
    let f = file.display().to_string();

    // Nothing exists: one line per file, at the setting, in file order.
    let (ok, out, err) = check_config(&file, &[]);
    assert!(!ok, "{out}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with(&format!("{f}:5:11: proxy.tls.cert ({})", cert.display()))
            && lines[0].contains("cannot read"),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!("{f}:6:10: proxy.tls.key ({})", key.display())),
        "{err}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "{f}:10:49: upstreams.private.tls.ca_file ({})",
            ca.display()
        )),
        "{err}"
    );
    // --skip-files: the YAML alone is fine.
    let (ok, out, _) = check_config(&file, &["--skip-files"]);
    assert!(ok && out.contains("ok:"), "{out}");

    // Files that are there but are not what they should be.
    std::fs::write(&cert, "not a certificate").expect("write");
    std::fs::write(&key, KEY).expect("write");
    std::fs::write(&ca, KEY).expect("write");
    let (ok, _, err) = check_config(&file, &[]);
    assert!(!ok);
    assert!(
        err.contains(":5:11: proxy.tls.cert") && err.contains("no certificate found"),
        "{err}"
    );
    assert!(
        err.contains(":10:49: upstreams.private.tls.ca_file"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 2, "{err}");

    // A key of another certificate.
    std::fs::write(&cert, CERT).expect("write");
    std::fs::write(&key, OTHER_KEY).expect("write");
    std::fs::write(&ca, CERT).expect("write");
    let (ok, _, err) = check_config(&file, &[]);
    assert!(!ok);
    assert!(
        err.starts_with(&format!("{f}:6:10: proxy.tls.key")) && err.contains("does not belong"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // All good.
    std::fs::write(&key, KEY).expect("write");
    let (ok, out, err) = check_config(&file, &[]);
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("{f}: ok:")), "{out}");
}

#[test]
fn proxy_names_the_tls_file_it_cannot_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing-cert.pem");
    let config = write_config(
        dir.path(),
        &Ports::new(),
        &[(
            "  threads: 2\n",
            &format!(
                "  threads: 2\n  tls: {{ listen: \"127.0.0.1:{}\", cert: \"{}\", key: \"{}\" }}\n",
                common::free_port(),
                missing.display(),
                missing.display()
            ),
        )],
    );
    let out = tollgate()
        .arg("proxy")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot load a TLS certificate, private key or CA file")
            && err.contains("proxy.tls.cert")
            && err.contains("missing-cert.pem"),
        "{err}"
    );
    assert!(!err.contains("database"), "{err}");
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

/// Round 10 (black-box): values that could never work as written are
/// refused by `check-config` at their position: a HEAD route beside a GET
/// route on one prefix (HEAD rides on GET), a prefix with a trailing '/',
/// a key header with another meaning, a burst no limiter can count.
#[test]
fn check_config_refuses_values_that_could_never_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "proxy:\n  key_header: host\nupstreams:\n  demo: { targets: [\"127.0.0.1:3001\"] }\nplans:\n  big: { limits: [ { name: m, rate: 1000000000, per: 1s, burst: 9223372036854775807 } ] }\nroutes:\n  - { name: get, match: { path_prefix: /api/products, methods: [GET] }, upstream: demo, auth: none }\n  - { name: head, match: { path_prefix: /api/products, methods: [HEAD] }, upstream: demo }\n  - { name: slash, match: { path_prefix: /api/orders/ }, upstream: demo }\n",
    )
    .expect("write");
    let (ok, _, stderr) = check_config(&file, &[]);
    assert!(!ok);
    let f = file.display().to_string();
    for (at, what) in [
        ("2:15", "proxy.key_header: \"host\" is a hop-by-hop or framing header"),
        ("6:65", "plans.big.limits[0].burst: burst 9223372036854775807 at rate 1000000000 per 1s is more than a bucket can count: at most 1125899906842624"),
        ("9:41", "routes[1].match.path_prefix: \"/api/products\" with these methods is also matched by routes[0] (HEAD is taken wherever GET is)"),
        ("10:42", "routes[2].match.path_prefix: \"/api/orders/\" ends with '/'"),
    ] {
        assert!(
            stderr.contains(&format!("{f}:{at}: {what}")),
            "{at} {what}:\n{stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 4, "{stderr}");
}

/// Round 13 (black-box): a duration with no maximum turned a stop or a
/// deadline off (`grace_period: 106751991167d`: SIGTERM never finished);
/// each is refused at its position, with its maximum and what it would do.
#[test]
fn check_config_refuses_durations_beyond_their_maximum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("long.yaml");
    std::fs::write(
        &file,
        "proxy:\n  grace_period: 106751991167d\n  header_timeout: 6m\nlimiter:\n  redis_timeout: 11s\nupstreams:\n  demo: { targets: [\"127.0.0.1:3001\"], timeouts: { read: 2h } }\nroutes:\n  - { name: api, match: { path_prefix: /api }, upstream: demo, auth: none }\n",
    )
    .expect("write");
    let (ok, _, stderr) = check_config(&file, &[]);
    assert!(!ok);
    let f = file.display().to_string();
    for (at, what) in [
        ("2:17", "proxy.grace_period: must be at most 1h, got \"106751991167d\" (a graceful stop (SIGTERM) waits that long"),
        ("3:19", "proxy.header_timeout: must be at most 5m, got \"6m\" (a client sending its header slowly"),
        ("5:18", "limiter.redis_timeout: must be at most 10s, got \"11s\""),
        ("7:58", "upstreams.demo.timeouts.read: must be at most 1h, got \"2h\""),
    ] {
        assert!(
            stderr.contains(&format!("{f}:{at}: {what}")),
            "{at} {what}:\n{stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 4, "{stderr}");
}

#[test]
fn check_config_refuses_a_config_without_routes_unless_it_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("t.yaml");
    for src in ["", "# nothing\n", "proxy: {}\nroutes:\n", "upstreams: {}\n"] {
        std::fs::write(&file, src).expect("write");
        let (ok, out, err) = check_config(&file, &[]);
        assert!(!ok, "{src:?}: {out}");
        assert!(
            err.contains("has no routes") && err.contains("routes: []"),
            "{err}"
        );
        assert!(err.starts_with(&format!("{}:", file.display())), "{err}");
    }
    std::fs::write(&file, "routes: []\n").expect("write");
    let (ok, out, err) = check_config(&file, &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok: 0 routes"), "{out}");
}

/// Round 12 (black-box): a UTF-8 byte order mark was refused as "several
/// documents". It is accepted, and positions are those of the text without it.
#[test]
fn check_config_accepts_a_leading_byte_order_mark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bom.yaml");
    let storage = format!(
        "storage: {{ database_url: \"sqlite://{}\" }}\n",
        dir.path().join("t.db").display()
    );
    std::fs::write(&file, format!("\u{feff}routes: []\n{storage}")).expect("write");
    let (ok, out, err) = check_config(&file, &["--skip-files"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok: 0 routes"), "{out}");
    let bad = format!("proxy: {{ key_header: host }}\nroutes: []\n{storage}");
    std::fs::write(&file, &bad).expect("write");
    let (_, _, without) = check_config(&file, &["--skip-files"]);
    std::fs::write(&file, format!("\u{feff}{bad}")).expect("write");
    let (ok, _, with) = check_config(&file, &["--skip-files"]);
    assert!(!ok && with.contains(":1:22: proxy.key_header"), "{with}");
    assert_eq!(with, without);
}

#[test]
fn keys_create_refuses_a_plan_that_exists_nowhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sqlite_config(dir.path());
    let (ok, out, err) = keys(&config, &["create", "--name", "k", "--plan", "gold"]);
    assert!(!ok, "{out}");
    assert!(err.contains("unknown plan \"gold\""), "{err}");
    assert!(
        err.contains("free") && err.contains("pro"),
        "names the known plans: {err}"
    );
    assert!(!out.contains("tg_"), "no key was created: {out}");
    let (ok, list, _) = keys(&config, &["list"]);
    assert!(ok && list.contains("no keys"), "{list}");
    let (ok, out, err) = keys(&config, &["create", "--name", "k", "--plan", "free"]);
    assert!(ok, "{out}{err}");
}

/// `keys create` and `keys rotate` refuse what the admin API refuses, with
/// its messages (both call `tollgate_core::rules::keys`), naming the flag.
#[test]
fn keys_cli_refuses_what_the_api_refuses() {
    use tollgate_core::rules::keys as rules;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sqlite_config(dir.path());
    let long = "x".repeat(201);
    let message = |r: Result<(), String>| r.expect_err("refused by the rule");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["create", "--name", "   "],
            format!("--name: {}", message(rules::check_text("   ", false))),
        ),
        (
            vec!["create", "--name", &long],
            format!("--name: {}", message(rules::check_text(&long, false))),
        ),
        (
            vec!["create", "--name", "a\u{1}b"],
            format!("--name: {}", message(rules::check_text("a\u{1}b", false))),
        ),
        (
            vec!["create", "--name", "k", "--owner", &long],
            format!("--owner: {}", message(rules::check_text(&long, true))),
        ),
        (
            vec!["rotate", "1", "--grace", "31d"],
            format!(
                "--grace: {}",
                message(rules::check_grace(std::time::Duration::from_secs(
                    31 * 86_400
                )))
            ),
        ),
    ];
    for (args, expected) in cases {
        let (ok, out, err) = keys(&config, &args);
        assert!(!ok, "{args:?} accepted: {out}");
        assert!(
            err.contains(&expected),
            "{args:?}: expected {expected:?} in {err}"
        );
        assert!(!out.contains("tg_"), "no key was created: {out}");
    }
    let (ok, list, _) = keys(&config, &["list"]);
    assert!(ok && list.contains("no keys"), "{list}");
    // Surrounding spaces are trimmed, as the API trims them.
    let (ok, out, err) = keys(&config, &["create", "--name", "  padded  "]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("name:    padded\n"), "{out}");
}

/// `tollgate audit list --limit 0` showed one event (the limit was clamped to
/// 1). The admin API refuses `per_page=0` (422 naming it), so the CLI
/// refuses `--limit 0` (and what is out of 1..=100000) with clap's error,
/// as any invalid flag value, instead of showing something else.
#[test]
fn audit_list_refuses_a_limit_the_api_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sqlite_config(dir.path());
    for name in ["a", "b", "c"] {
        let (ok, out, err) = keys(&config, &["create", "--name", name]);
        assert!(ok, "{out}{err}");
    }
    let audit = |limit: &str| {
        let out = tollgate()
            .args(["audit", "list", &format!("--limit={limit}"), "--config"])
            .arg(&config)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for bad in ["0", "-1", "100001", "x"] {
        let (code, out, err) = audit(bad);
        assert_eq!(code, Some(2), "--limit {bad} accepted: {out}{err}");
        assert!(out.is_empty(), "--limit {bad} showed events: {out}");
        assert!(
            err.contains(&format!("invalid value '{bad}' for '--limit <LIMIT>'")),
            "{err}"
        );
    }
    let (code, out, err) = audit("2");
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(err.contains("(2 of 3 shown; use --limit)"), "{err}");
    let (code, out, _) = audit("100000");
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 3, "{out}");
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

fn printed<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {lines:?}"))
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

#[test]
fn the_admin_role_reloads_its_config_like_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = Ports::new();
    let config = write_config(dir.path(), &ports, &[]);
    let _admin = KillOnDrop(
        tollgate()
            .arg("admin")
            .arg("--config")
            .arg(&config)
            .env("TOLLGATE_ADMIN_PASSWORD", "admin-pass-123")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn admin"),
    );
    let base = format!("http://127.0.0.1:{}", ports.admin);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(the_admin_api_follows_its_yaml(
        &base,
        &config,
        "admin-pass-123",
    ));
}

/// Round 10 (black-box): `tollgate dev` (proxy and admin API in one
/// process) reloads the admin side's config as `tollgate admin` does: a plan
/// added to the YAML is listed, usable for keys, and not creatable in the
/// database (which would make the proxy refuse every later reload).
#[test]
fn dev_reloads_the_admin_apis_config_like_the_admin_role() {
    let dev = Dev::start(&[], &[("TOLLGATE_ADMIN_PASSWORD", "dev-pass-1234")]);
    let config = dev.dir.path().join("tollgate.yaml");
    let base = dev.admin_url("");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(the_admin_api_follows_its_yaml(
        &base,
        &config,
        "dev-pass-1234",
    ));
}

/// Log in at `base`, add a plan `gold` to `config` (written whole, then
/// renamed into place), and check the admin API follows: `gold` is listed,
/// a key may name it, `POST /api/plans` of that name is a 409; an emptied
/// file is refused and the plan stays.
async fn the_admin_api_follows_its_yaml(base: &str, config: &std::path::Path, password: &str) {
    let client = reqwest::Client::new();
    let start = Instant::now();
    let token = loop {
        let r = client
            .post(format!("{base}/api/auth/login"))
            .json(&serde_json::json!({"username": "admin", "password": password}))
            .send()
            .await;
        if let Ok(r) = r {
            if r.status() == 200 {
                let v: serde_json::Value = r.json().await.expect("json");
                break v["token"].as_str().expect("token").to_string();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "admin not up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let plans = || async {
        let v: serde_json::Value = client
            .get(format!("{base}/api/plans"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("plans")
            .json()
            .await
            .expect("json");
        let items = v.get("items").cloned().unwrap_or(v);
        items
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["name"].as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let post = |path: &'static str, body: serde_json::Value| {
        let req = client
            .post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body);
        async move {
            let r = req.send().await.expect("post");
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
    };
    assert!(!plans().await.contains(&"gold".to_string()));
    let (status, body) = post(
        "/api/keys",
        serde_json::json!({"name": "g", "plan": "gold"}),
    )
    .await;
    assert_eq!(status, 422, "a plan defined nowhere yet: {body}");

    let text = std::fs::read_to_string(config).expect("config");
    let edited = text.replacen(
        "plans:\n",
        "plans:\n  gold: { limits: [ { name: m, rate: 5, per: 1m } ] }\n",
        1,
    );
    assert_ne!(edited, text);
    let next = config.with_extension("yaml.next");
    std::fs::write(&next, &edited).expect("write");
    std::fs::rename(&next, config).expect("rename");
    let start = Instant::now();
    while !plans().await.contains(&"gold".to_string()) {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "gold never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = post(
        "/api/plans",
        serde_json::json!({"name": "gold", "limits": [{"name": "m", "rate": 1, "per": "1s"}]}),
    )
    .await;
    assert_eq!(status, 409, "the YAML defines gold: {body}");
    assert!(body.contains("YAML"), "{body}");
    let (status, body) = post(
        "/api/keys",
        serde_json::json!({"name": "g", "plan": "gold"}),
    )
    .await;
    assert_eq!(status, 201, "a key on the YAML plan: {body}");

    // An emptied file is refused: the plans stay.
    std::fs::write(config, "").expect("truncate");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(plans().await.contains(&"gold".to_string()));
}

/// A child process killed when the test ends, even by a failed assertion.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

/// Issue #21: `keys create/update --routes --methods --allowed-ips`, stored
/// normalised, and refused with the admin API's messages.
#[test]
fn keys_cli_sets_scopes_and_networks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sqlite_config(dir.path());
    let (ok, out, err) = keys(
        &config,
        &[
            "create",
            "--name",
            "scoped",
            "--routes",
            "users,billing-*",
            "--methods",
            "get",
            "--methods",
            "head",
            "--allowed-ips",
            "10.1.2.3/8",
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("routes:  users,billing-*\n"), "{out}");
    assert!(out.contains("methods: GET,HEAD\n"), "{out}");
    assert!(out.contains("from:    10.0.0.0/8\n"), "{out}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("created key "))
        .expect("id")
        .trim()
        .to_string();
    let (ok, out, err) = keys(&config, &["update", &id, "--methods", "POST"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("routes:  users,billing-*\n") && out.contains("methods: POST\n"),
        "{out}"
    );
    let (ok, out, err) = keys(
        &config,
        &["update", &id, "--clear-scopes", "--clear-allowed-ips"],
    );
    assert!(ok, "{out}{err}");
    assert!(!out.contains("routes:") && !out.contains("from:"), "{out}");
    let (ok, json, _) = keys(&config, &["list", "--json"]);
    assert!(ok && json.contains("\"scopes\": null"), "{json}");

    for (args, expected) in [
        (
            vec!["create", "--name", "k", "--routes", "a**"],
            "--routes: ",
        ),
        (
            vec!["create", "--name", "k", "--methods", "GE T"],
            "--methods: invalid HTTP method",
        ),
        (
            vec!["create", "--name", "k", "--allowed-ips", "10.0.0.0/33"],
            "--allowed-ips: invalid network",
        ),
        (
            vec!["update", &id, "--allowed-ips", "nope"],
            "--allowed-ips: invalid network",
        ),
    ] {
        let (ok, out, err) = keys(&config, &args);
        assert!(!ok, "{args:?} accepted: {out}");
        assert!(
            err.contains(expected),
            "{args:?}: expected {expected:?} in {err}"
        );
    }
}

/// Black-box round 11: a YAML edit refused because the database holds a
/// plan of the same name stayed refused after that plan was deleted, until
/// the file was edited again. Both sides of `dev` now check a refused file
/// again every few seconds: once the database plan is gone, the YAML plan
/// is served (admin API: listed as the config's; proxy: a reload counted).
#[test]
fn a_reload_refused_for_a_database_plan_applies_once_that_plan_is_deleted() {
    let dev = Dev::start(&[], &[("TOLLGATE_ADMIN_PASSWORD", "dev-pass-1234")]);
    let config = dev.dir.path().join("tollgate.yaml");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::new();
        let start = Instant::now();
        while client.get(dev.admin_url("/healthz")).send().await.is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "admin not up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let token = dev.login(&client, "dev-pass-1234").await;
        let source_of_plat = || async {
            let v: serde_json::Value = client
                .get(dev.admin_url("/api/plans"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("plans")
                .json()
                .await
                .expect("json");
            let items = v.get("items").cloned().unwrap_or(v);
            items.as_array().and_then(|a| {
                a.iter()
                    .find(|p| p["name"] == "plat")
                    .map(|p| p["source"].as_str().unwrap_or_default().to_string())
            })
        };
        let r = client
            .post(dev.admin_url("/api/plans"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": "plat", "limits": [{"name": "m", "rate": 1, "per": "1s"}]}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 201);
        let text = std::fs::read_to_string(&config).expect("config");
        let edited = text.replacen(
            "plans:\n",
            "plans:\n  plat: { limits: [ { name: m, rate: 5, per: 1m } ] }\n",
            1,
        );
        let next = config.with_extension("yaml.next");
        std::fs::write(&next, &edited).expect("write");
        std::fs::rename(&next, &config).expect("rename");
        let metrics = format!("http://127.0.0.1:{}/metrics", dev.ports.metrics);
        let reloads = |result: &'static str| {
            let (client, metrics) = (client.clone(), metrics.clone());
            async move {
                let text = client
                    .get(&metrics)
                    .send()
                    .await
                    .expect("metrics")
                    .text()
                    .await
                    .expect("text");
                let line = format!("tollgate_config_reloads_total{{result=\"{result}\"}} ");
                text.lines()
                    .find_map(|l| l.strip_prefix(&line))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            }
        };
        // Refused on both sides: the proxy counts it, the plan stays the API's.
        let start = Instant::now();
        while reloads("failed").await == 0 {
            assert!(start.elapsed() < Duration::from_secs(15), "never refused");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(source_of_plat().await.as_deref(), Some("api"));
        // Round 12: check-config refuses it too, with the reload's message.
        let (ok, out, err) = check_config(&config, &[]);
        assert!(!ok, "{out}");
        assert!(
            err.contains(&format!(
                "{}: plan \"plat\" is defined both in the YAML config and in the database",
                config.display()
            )),
            "{err}"
        );
        let ok_before = reloads("ok").await;
        let r = client
            .delete(dev.admin_url("/api/plans/plat"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("delete");
        assert!(r.status().is_success(), "{}", r.status());
        // No edit of the file: within two retry intervals both sides apply it.
        let start = Instant::now();
        while source_of_plat().await.as_deref() != Some("config")
            || reloads("ok").await == ok_before
        {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the refused file was never applied: {:?}, {} ok reloads",
                source_of_plat().await,
                reloads("ok").await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (ok, out, err) = check_config(&config, &[]);
        assert!(ok && out.contains("ok:"), "{out}{err}");
        assert!(!err.contains("database not checked"), "{err}");
    });
}

/// Round 12: a database check-config cannot read is a warning, not a
/// failure, and looking creates nothing (`--skip-files`: not looked at).
#[test]
fn check_config_warns_when_the_database_cannot_be_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("missing.db");
    let file = dir.path().join("t.yaml");
    let yaml = format!(
        "storage: {{ database_url: \"sqlite://{}\" }}\nplans:\n  p: {{ limits: [] }}\nroutes: []\n",
        db.display()
    );
    std::fs::write(&file, yaml).expect("write");
    let (ok, out, err) = check_config(&file, &[]);
    assert!(ok && out.contains("ok:"), "{out}{err}");
    assert!(err.starts_with("warning: database not checked: "), "{err}");
    assert!(!db.exists(), "check-config created the database");
    let (ok, _, err) = check_config(&file, &["--skip-files"]);
    assert!(ok && err.is_empty(), "{err}");
}
