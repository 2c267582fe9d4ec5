//! The path attack table (issues #15 item 1, #16 item 1): every spelling of a
//! nested keyed path (`..`, `%2e%2e`, `..%2f`, `//`, `/./`, `%73`, `;`, case,
//! backslash, double encoding, absolute form) sent through a real Pingora
//! listener to three upstreams that interpret paths differently: nginx
//! (decodes, merges slashes, resolves dots), an Express-like case-insensitive
//! one, and a Tomcat-like one that drops `;params`. No variant may reach the
//! keyed `/open/secret` without a key, and no variant may be served as the
//! limited `/v1/search` without being counted under that route's limit. Both
//! path policies are run.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::raw::{self, percent_decode, resolve_dots};
use common::{named, Store, TestProxy};
use tollgate_core::db::testing::services_required;

/// An nginx of our own, killed on drop.
struct OwnNginx {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for OwnNginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("TOLLGATE_TEST_NGINX").map(PathBuf::from),
        Some(PathBuf::from("/usr/sbin/nginx")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// nginx answering `SECRET` under `/n/open/secret`, `SEARCH` under
/// `/n/v1/search` and `other:$uri` elsewhere, after its own normalisation.
async fn start_nginx() -> Option<OwnNginx> {
    let Some(bin) = nginx_binary() else {
        assert!(
            !services_required(),
            "nginx is missing (scripts/services installs it)"
        );
        eprintln!("notice: nginx not installed, skipping");
        return None;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let d = dir.path().display();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location /n/open/secret {{ return 200 "SECRET"; }}
    location /n/v1/search {{ return 200 "SEARCH"; }}
    location / {{ return 200 "other:$uri"; }}
  }}
}}
"#
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let n = OwnNginx {
        child,
        addr,
        _dir: dir,
    };
    common::wait_listening(addr).await;
    Some(n)
}

/// What a server that routes on `path` would serve.
fn classify(prefix: &str, path: &str) -> String {
    if path.starts_with(&format!("/{prefix}/open/secret")) {
        "SECRET".into()
    } else if path.starts_with(&format!("/{prefix}/v1/search")) {
        "SEARCH".into()
    } else {
        format!("other:{path}")
    }
}

fn path_of(target: &str) -> &str {
    target.split(['?', '#']).next().unwrap_or(target)
}

/// Express-like: decodes, resolves dots, and matches in any case.
fn express(target: &str) -> String {
    let p = resolve_dots(&percent_decode(path_of(target))).to_ascii_lowercase();
    classify("e", &p)
}

/// Tomcat-like: drops `;params` from every segment, then decodes and resolves.
fn semicolon(target: &str) -> String {
    let p: Vec<&str> = path_of(target)
        .split('/')
        .map(|s| s.split(';').next().unwrap_or(""))
        .collect();
    let p = resolve_dots(&percent_decode(&p.join("/")));
    classify("s", &p)
}

fn config(policy: &str) -> String {
    let mut routes = String::new();
    for (x, upstream, ci) in [
        ("n", "nginx", false),
        ("e", "express", true),
        ("s", "semi", false),
    ] {
        routes.push_str(&format!(
            r#"
  - {{ name: {x}-open, match: {{ path_prefix: /{x}/open, case_insensitive: {ci} }}, upstream: {upstream}, auth: none }}
  - {{ name: {x}-secret, match: {{ path_prefix: /{x}/open/secret, case_insensitive: {ci} }}, upstream: {upstream}, default_plan: free }}
  - {{ name: {x}-v1, match: {{ path_prefix: /{x}/v1, case_insensitive: {ci} }}, upstream: {upstream}, default_plan: free }}
  - name: {x}-search
    match: {{ path_prefix: /{x}/v1/search, methods: [GET], case_insensitive: {ci} }}
    upstream: {upstream}
    default_plan: free
    limits: [ {{ name: {x}-search, rate: 1, per: 1h, burst: 1000 }} ]
"#
        ));
    }
    format!(
        r#"
proxy:
  listen: "{{listen}}"
  metrics_listen: "{{metrics}}"
  threads: 2
  path_policy: {policy}
  auth_failures_per_second: 1000000
plans:
  free: {{ limits: [ {{ name: minute, rate: 100000, per: 1m }} ] }}
upstreams:
  nginx: {{ targets: ["NGINX"] }}
  express: {{ targets: ["EXPRESS"] }}
  semi: {{ targets: ["SEMI"] }}
routes:{routes}"#
    )
}

/// Spellings of `/{x}/{a}/{b}` (the nested route) that some server may
/// resolve to it.
fn variants(x: &str, a: &str, b: &str) -> Vec<String> {
    let b1 = &b[..1];
    let brest = &b[1..];
    let b_hex = format!("%{:02x}{brest}", b1.as_bytes()[0]);
    [
        format!("/{x}/{a}//{b}"),
        format!("//{x}/{a}/{b}"),
        format!("/{x}/{a}/./{b}"),
        format!("/{x}/{a}/%2e/{b}"),
        format!("/{x}/{a}/z/../{b}"),
        format!("/{x}/{a}/z/%2e%2e/{b}"),
        format!("/{x}/{a}/z/%2E%2E/{b}"),
        format!("/{x}/{a}/z/.%2e/{b}"),
        format!("/{x}/{a}/z/..%2f{b}"),
        format!("/{x}/{a}/z/..%2F{b}"),
        format!("/{x}/{a}/z/..%5c{b}"),
        format!("/{x}/{a}/z/..\\{b}"),
        format!("/{x}/{a}%2f{b}"),
        format!("/{x}/{a}/{b_hex}"),
        format!("/{x}/{a}/%25{:02x}{brest}", b1.as_bytes()[0]),
        format!("/{x}/{a}/{b};"),
        format!("/{x}/{a}/{b};jsessionid=1"),
        format!("/{x}/{a};p/{b}"),
        format!("/{x}/{a}/{b}%3b"),
        format!("/{x}/{a}/{b}%3f/admin"),
        format!("/{x}/{a}/{b}%3F"),
        format!("/{x}/{a}/{b}%23"),
        format!("/{x}/{a}/{}", b.to_ascii_uppercase()),
        format!("/{x}/{}/{}", a.to_ascii_uppercase(), b.to_ascii_uppercase()),
        format!("/{}/{a}/{b}", x.to_ascii_uppercase()),
        format!("/{x}/{a}/{b}/"),
        format!("/{x}/{a}/{b}/."),
        format!("/{x}/{a}/{b}%00"),
        format!("/{x}/{a}/z/../../{a}/{b}"),
        format!("/{x}/{a}/../{a}/{b}"),
        format!("http://t/{x}/{a}/z/../{b}"),
        format!("http://t/{x}/{a}/%2e/{b}"),
        format!("/{x}/{a}/{b}#frag"),
    ]
    .into_iter()
    .collect()
}

async fn start(
    policy: &str,
    nginx: SocketAddr,
    express: SocketAddr,
    semi: SocketAddr,
) -> TestProxy {
    let yaml = config(policy)
        .replace("NGINX", &nginx.to_string())
        .replace("EXPRESS", &express.to_string())
        .replace("SEMI", &semi.to_string());
    TestProxy::start(&yaml, Store::Sqlite)
        .await
        .expect("sqlite")
}

async fn key(p: &TestProxy) -> String {
    let (_, plain) = p.create_key(named("edge")).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = raw::get(None, p.addr, "/n/open/secret", &[("x-api-key", &plain)]).await;
        if r.status == 200 {
            return plain;
        }
        assert!(
            Instant::now() < deadline,
            "key never became valid: {}",
            r.raw
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_table(policy: &str) {
    let Some(nginx) = start_nginx().await else {
        return;
    };
    let express_up = raw::start_interpreting_upstream(express).await;
    let semi_up = raw::start_interpreting_upstream(semicolon).await;
    let p = start(policy, nginx.addr, express_up, semi_up).await;
    let plain = key(&p).await;

    let mut checked = 0;
    for x in ["n", "e", "s"] {
        // Positive controls: the table can fail.
        let r = raw::get(None, p.addr, &format!("/{x}/open/secret"), &[]).await;
        assert_eq!(r.status, 401, "{x}: keyed route without key\n{}", r.raw);
        let r = raw::get(
            None,
            p.addr,
            &format!("/{x}/open/secret"),
            &[("x-api-key", &plain)],
        )
        .await;
        assert_eq!((r.status, r.body.as_str()), (200, "SECRET"), "{}", r.raw);
        let r = raw::get(None, p.addr, &format!("/{x}/open/other"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        assert!(r.body.starts_with("other:"), "{}", r.raw);
        let r = raw::get(
            None,
            p.addr,
            &format!("/{x}/v1/search"),
            &[("x-api-key", &plain)],
        )
        .await;
        assert_eq!(r.body, "SEARCH", "{}", r.raw);
        assert!(
            r.header("ratelimit-policy")
                .is_some_and(|v| v.contains(&format!("\"{x}-search\""))),
            "{}",
            r.raw
        );

        for v in variants(x, "open", "secret") {
            let r = raw::get(None, p.addr, &v, &[]).await;
            checked += 1;
            assert_ne!(
                r.body, "SECRET",
                "{policy}: {v} reached the keyed route without a key\n{}",
                r.raw
            );
            assert!(r.status < 500 && r.status != 0, "{policy}: {v}\n{}", r.raw);
            if r.status == 400 {
                assert_eq!(
                    r.header("content-type"),
                    Some("application/problem+json"),
                    "{v}: {}",
                    r.raw
                );
            }
        }
        for v in variants(x, "v1", "search") {
            let r = raw::get(None, p.addr, &v, &[("x-api-key", &plain)]).await;
            checked += 1;
            assert!(r.status < 500 && r.status != 0, "{policy}: {v}\n{}", r.raw);
            if r.body == "SEARCH" {
                assert!(
                    r.header("ratelimit-policy")
                        .is_some_and(|h| h.contains(&format!("\"{x}-search\""))),
                    "{policy}: {v} was served as /v1/search without that route's limit\n{}",
                    r.raw
                );
            }
        }
    }
    assert!(checked > 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_variant_bypasses_a_nested_keyed_route_reject() {
    run_table("reject").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_variant_bypasses_a_nested_keyed_route_normalize() {
    run_table("normalize").await;
}

/// Under `reject`, each kind of odd path is a 400 `bad-path` naming why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_are_400_problem_json_with_a_reason() {
    let yaml = r#"
upstreams:
  demo: { targets: ["{upstream}"] }
routes:
  - { name: all, match: { path_prefix: / }, upstream: demo, auth: none }
"#;
    let p = TestProxy::start(yaml, Store::Sqlite).await.expect("sqlite");
    for (target, reason) in [
        ("/a/../b", "dot-segment"),
        ("/a/%2E%2e/b", "dot-segment"),
        ("/a/./b", "dot-segment"),
        ("/a//b", "empty-segment"),
        ("/a%2fb", "encoded-slash"),
        ("/a%5Cb", "encoded-slash"),
        ("/a;b", "path-parameters"),
        ("/a%3Bb", "path-parameters"),
        ("/a%2573", "double-encoding"),
        ("/a%00", "control-byte"),
        ("/a%0d%0aX-Injected:%201", "control-byte"),
        ("/a%zz", "bad-escape"),
    ] {
        let r = raw::get(None, p.addr, target, &[]).await;
        assert_eq!(r.status, 400, "{target}: {}", r.raw);
        let body = r.json();
        assert!(
            body["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("/bad-path")),
            "{target}: {body}"
        );
        assert_eq!(body["reason"], reason, "{target}");
    }
    // Decoded unreserved characters are what the upstream receives.
    let r = raw::get(None, p.addr, "/users/%31?q=%2e%2E", &[]).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let body = r.json();
    assert_eq!(body["request"]["path"], "/users/1");
    assert_eq!(body["request"]["query"], "q=%2e%2E");
    let m = p.metrics_text().await;
    assert!(
        common::metric_value(&m, "tollgate_edge_refused_total", &["dot-segment"]) >= 3.0,
        "{m}"
    );
}

/// Under `normalize`, the upstream receives exactly the path routed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalize_forwards_the_resolved_path() {
    let yaml = r#"
proxy:
  listen: "{listen}"
  metrics_listen: "{metrics}"
  path_policy: normalize
upstreams:
  demo: { targets: ["{upstream}"] }
routes:
  - { name: users, match: { path_prefix: /api/users }, upstream: demo, strip_prefix: /api, auth: none }
  - { name: health, match: { path_prefix: /health }, upstream: demo, auth: none }
"#;
    let p = TestProxy::start(yaml, Store::Sqlite).await.expect("sqlite");
    for (target, seen) in [
        ("/health/../api/users/1", "/users/1"),
        ("/api//users/./%31", "/users/1"),
        ("/api/x/%2E%2E/users", "/users"),
    ] {
        let r = raw::get(None, p.addr, target, &[]).await;
        assert_eq!(r.status, 200, "{target}: {}", r.raw);
        assert_eq!(r.json()["request"]["path"], seen, "{target}");
    }
    // The always-refused cases stay refused.
    let r = raw::get(None, p.addr, "/health/..%2fapi/users", &[]).await;
    assert_eq!(r.status, 400, "{}", r.raw);
}
