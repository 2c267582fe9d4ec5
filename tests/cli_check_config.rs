//! `tollgate check-config` (and the proxy's own refusal of a TLS file it
//! cannot load), through the real binary.

use crate::common;

use crate::common::cli::{check_config, CERT, KEY, OTHER_KEY};
use crate::common::{tollgate, write_config, Ports};

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

/// Round 18 (black-box): a database a newer binary migrated is refused by
/// `check-config`, the CLI, the proxy and the admin API alike (it was run
/// against as if it were this binary's), naming what to do.
#[test]
fn a_database_from_a_newer_binary_is_refused_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &Ports::new(), &[]);
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let db = tollgate_core::db::Db::connect(&url).await.expect("migrate");
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES (99999, 'from the future', TRUE, X'00', 1)",
        )
        .execute(db.pool())
        .await
        .expect("a newer migration");
        db.close().await;
    });
    let newer = "the database was migrated by a newer Tollgate: it has migration 99999";
    let (ok, out, err) = check_config(&config, &[]);
    assert!(!ok, "check-config said ok: {out}");
    assert!(err.contains(newer), "{err}");
    let (ok, _, err) = crate::common::cli::keys(&config, &["list"]);
    assert!(!ok && err.contains(newer), "{err}");
    for role in ["proxy", "admin"] {
        let out = tollgate()
            .arg(role)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{role} started");
        assert!(err.contains(newer), "{role}: {err}");
    }
}
