//! The YAML validation, end to end: shipped files, defaults, garbage.

use super::*;

mod access;
mod bounds;
mod problems;
mod protocols;
mod route_io;
mod sections;

const QUICK_START: &str = include_str!("../../../../../config/tollgate.yaml");
const PRODUCTION: &str = include_str!("../../../../../config/examples/production.yaml");

/// Upstream `demo` and plan `free`, for routes to refer to.
pub(super) const BASE: &str = "\
upstreams:
  demo: { targets: [\"127.0.0.1:3001\"] }
plans:
  free: { limits: [ { name: minute, rate: 60, per: 1m } ] }
";

pub(super) fn errors(src: &str) -> Vec<ConfigError> {
    match parse_and_validate(src, "test.yaml") {
        Ok(c) => panic!("accepted:\n{src}\nas {c:?}"),
        Err(e) => {
            assert!(!e.0.is_empty(), "empty error list");
            e.0
        }
    }
}

pub(super) fn ok(src: &str) -> Config {
    match parse_and_validate(src, "test.yaml") {
        Ok(c) => c,
        Err(e) => panic!("refused:\n{src}\n{e}"),
    }
}

#[test]
fn shipped_configs_validate() {
    let quick = ok(QUICK_START);
    assert_eq!(quick.routes.len(), 4);
    assert_eq!(quick.plans.len(), 2);
    assert_eq!(
        quick.upstreams["demo"].targets[0].authority(),
        "127.0.0.1:3001"
    );
    assert_eq!(quick.routes[3].auth, Auth::None);
    let prod = ok(PRODUCTION);
    assert_eq!(prod.limiter.backend, LimiterBackend::Redis);
    assert_eq!(prod.plans["pro"].concurrency, Some(20));
    assert_eq!(prod.upstreams["api"].targets.len(), 2);
    assert_eq!(prod.log.format, LogFormat::Json);
    assert!(prod.storage.database_url.starts_with("postgres://"));
    // A scheme in capitals is the same scheme (RFC 3986), read in lower case.
    let shouted = ok(&PRODUCTION.replacen("postgres://", "Postgres://", 1));
    assert_eq!(shouted.storage.database_url, prod.storage.database_url);
    assert_eq!(prod.proxy.tls.as_ref().map(|t| t.listen.port()), Some(8443));
    let billing = &prod.upstreams["billing"];
    assert!(billing.targets.iter().all(|t| t.tls));
    assert_eq!(billing.tls.sni.as_deref(), Some("billing.internal.example"));
    assert!(billing.tls.ca_file.is_some());
    assert_eq!(prod.upstreams["partner"].targets[0].port, 443);
    // The embedded copy is the same file.
    assert_eq!(super::super::DEFAULT_YAML, QUICK_START);
}

#[test]
fn empty_document_gives_the_defaults() {
    let expected = Config {
        source: None,
        proxy: ProxyConfig {
            listen: "127.0.0.1:8080".parse().expect("addr"),
            metrics_listen: None,
            threads: 2,
            key_header: "x-api-key".into(),
            auth_failures_per_second: 20,
            grace_period: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            tls: None,
            edge: EdgeConfig::default(),
            tuning: ServerTuning::default(),
            h2c: false,
            usage_path: Some("/_tollgate/usage".into()),
            instance_name: None,
        },
        admin: AdminConfig {
            listen: "127.0.0.1:8081".parse().expect("addr"),
            jwt_secret_env: "TOLLGATE_JWT_SECRET".into(),
            session_ttl: Duration::from_secs(12 * 3600),
            allowed_hosts: Vec::new(),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_connections_per_ip: 32,
            audit_retention: Duration::from_secs(365 * 86_400),
        },
        storage: StorageConfig {
            database_url: "sqlite://tollgate.db".into(),
            key_refresh: Duration::from_millis(500),
        },
        limiter: LimiterConfig {
            backend: LimiterBackend::Local,
            redis_url: None,
            redis_timeout: Duration::from_millis(20),
            on_redis_error: OnRedisError::Local,
            redis_ca_file: None,
            concurrency_lease: DEFAULT_CONCURRENCY_LEASE,
            lease_ttl: DEFAULT_LEASE_TTL,
        },
        log: LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
            access_log: true,
        },
        usage: UsageConfig {
            flush_interval: Duration::from_secs(5),
            retention_days: 30,
            violation_retention_days: 7,
            buffer_rows: 100_000,
        },
        telemetry: TelemetryConfig {
            otlp_endpoint: None,
            trace_context: false,
            service_name: "tollgate".into(),
        },
        verify: VerifyConfig::default(),
        plans: BTreeMap::new(),
        upstreams: BTreeMap::new(),
        routes: Vec::new(),
    };
    for src in [
        "",
        "\n",
        "# only a comment\n",
        "---\n",
        "~\n",
        "proxy:\nadmin: ~\nroutes:\n",
    ] {
        assert_eq!(ok(src), expected, "{src:?}");
    }
}

#[test]
fn minimal_file_fills_in_defaults() {
    let c = ok("\
upstreams:
  demo: { targets: [\"127.0.0.1:3001\"] }
routes:
  - name: all
    match: { path_prefix: / }
    upstream: demo
");
    let r = &c.routes[0];
    assert_eq!(r.methods, None);
    assert_eq!(r.auth, Auth::ApiKey);
    assert_eq!(r.default_plan, None);
    assert!(r.limits.is_empty());
    assert!(!r.shadow);
    assert_eq!(r.strip_prefix, None);
    let u = &c.upstreams["demo"];
    assert_eq!(u.timeouts, Timeouts::default());
    assert!(!u.preserve_host);
    assert_eq!(u.health_check, None);
    assert_eq!(u.tls, UpstreamTls::default());
    assert!(u.tls.verify);
}

#[test]
fn values_are_normalised() {
    let c = ok(&format!(
            "{BASE}proxy:
  key_header: X-Api-Key
  tls: {{ listen: \"0.0.0.0:8443\", cert: certs/server.pem, key: certs/server.key }}
upstreams2: ~
"
        )
        .replace("upstreams2: ~\n", "routes:\n  - { name: r, match: { path_prefix: /a, methods: [get, POST, Get] }, upstream: demo }\n"));
    assert_eq!(c.proxy.key_header, "x-api-key");
    assert_eq!(
        c.routes[0].methods,
        Some(vec!["GET".to_string(), "POST".to_string()])
    );
    let tls = c.proxy.tls.expect("tls");
    assert_eq!(tls.cert, PathBuf::from("certs/server.pem"));
    assert_eq!(tls.listen.port(), 8443);
}

/// A tiny deterministic generator, so the "fuzz" test is reproducible.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(self.0 >> 33).unwrap_or(0) % n.max(1)
    }
}

fn assert_sane(src: &str) {
    if let Err(errs) = parse_and_validate(src, "fuzz.yaml") {
        assert!(!errs.0.is_empty(), "no errors for a refused file: {src:?}");
        let lines = src.split('\n').count() + 1;
        for e in &errs.0 {
            assert!(e.line >= 1 && e.column >= 1, "{e} in {src:?}");
            assert!(e.line <= lines, "{e} beyond the end of {src:?}");
            assert!(!e.message.is_empty());
        }
    }
}

#[test]
fn never_panics_on_garbage() {
    let nasty = [
            "\t",
            "\t\tproxy:\n\t listen: 1",
            "[[[",
            "]]]",
            "{{{",
            "}",
            ":",
            "- - - -",
            "? ? ?",
            "&a [*a]",
            "a: &a [*a, *a]",
            "*",
            "!!binary AAAA",
            "!tag {a: 1}",
            "proxy: !!str {a: 1}",
            "routes: [ {name: !!int x} ]",
            "rate: 184467440737095516160000000000000000000000000000",
            "plans: { p: { limits: [ { name: a, rate: 99999999999999999999999999999999999999999, per: 99999999999999999999d } ] } }",
            "plans: { p: { limits: [ { name: a, rate: 1e400, per: .inf } ] } }",
            "proxy: { threads: -99999999999999999999999999999999999999999 }",
            "\u{0}\u{1}\u{2}\u{7f}",
            "\u{feff}proxy: {}",
            "\u{fffd}\u{fffd}: \u{fffd}",
            "plans: { \"\u{1F600}\": { limits: [ { name: \"\u{e9}\", rate: 1, per: 1s } ] } }",
            "routes:\n  - name: \u{3042}\n    match: { path_prefix: /\u{3042} }\n    upstream: \u{3042}\n",
            "%YAML 1.2\n---\na: 1\n",
            "%FOO\n",
            "---\n...\n---\n",
            "'unterminated",
            "\"unterminated\\",
            "a: |\n  text\n b: 1",
            "? [a, b]\n: c\n",
            "plans: { ? [a] : {} }",
            "routes: [~, ~]",
            "upstreams: { u: { targets: [~, [], {}] } }",
            "\r\n\r\nproxy:\r\n  threads: 0\r\n",
            "proxy:\r  threads: x\r",
            "a:\n- b\n-c\n  - d",
        ];
    for src in nasty {
        assert_sane(src);
    }
    let deep = "[".repeat(10_000);
    assert_sane(&deep);
    let deep_map = "a: {".repeat(2_000);
    assert_sane(&deep_map);

    // Random edits of the shipped configs.
    let alphabet: Vec<char> = " \t\n:-[]{},\"'#&*!|>?%@`~0123456789abcxyz\u{e9}\u{0}\u{fffd}"
        .chars()
        .collect();
    let mut rng = Lcg(0x7011_6a7e);
    for base in [QUICK_START, PRODUCTION] {
        let chars: Vec<char> = base.chars().collect();
        for _ in 0..400 {
            let mut s = chars.clone();
            for _ in 0..1 + rng.next(4) {
                let at = rng.next(s.len());
                match rng.next(3) {
                    0 => {
                        s.remove(at);
                    }
                    1 => s.insert(at, alphabet[rng.next(alphabet.len())]),
                    _ => s[at] = alphabet[rng.next(alphabet.len())],
                }
            }
            let s: String = s.into_iter().collect();
            assert_sane(&s);
        }
    }
}
