//! The operator kit in `deploy/` against a running proxy: every query of the
//! Grafana dashboard and every alert rule names metrics that `/metrics`
//! really exposes; the rules and the dashboard's queries are valid PromQL
//! (when `promtool` is installed: `scripts/services` installs it).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{free_port, wait_listening, Store, TestProxy};
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// PromQL words that are not metric names.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "limitk",
    "limit_ratio",
];
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];
/// Keywords followed by a list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Skip from an opening delimiter at `i` to just after its closing one
/// (quotes inside are honoured).
fn skip_block(c: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    while i < c.len() {
        match c[i] {
            '"' | '\'' | '`' => i = skip_string(c, i) - 1,
            x if x == open => depth += 1,
            x if x == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

fn skip_string(c: &[char], i: usize) -> usize {
    let quote = c[i];
    let mut j = i + 1;
    while j < c.len() && c[j] != quote {
        if c[j] == '\\' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// The metric names a PromQL expression selects (Grafana `$variables` allowed).
fn metric_names(expr: &str) -> Vec<String> {
    let c: Vec<char> = expr.chars().collect();
    let ident = |ch: char| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '"' | '\'' | '`' => i = skip_string(&c, i),
            '{' => i = skip_block(&c, i, '{', '}'),
            '[' => i = skip_block(&c, i, '[', ']'),
            '$' => {
                i += 1;
                while i < c.len() && ident(c[i]) {
                    i += 1;
                }
            }
            ch if ch.is_ascii_digit() || ch == '.' => {
                while i < c.len() && (ident(c[i]) || c[i] == '.') {
                    i += 1;
                }
            }
            ch if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' => {
                let start = i;
                while i < c.len() && ident(c[i]) {
                    i += 1;
                }
                let word: String = c[start..i].iter().collect();
                let mut next = i;
                while next < c.len() && c[next].is_whitespace() {
                    next += 1;
                }
                let followed_by_paren = c.get(next) == Some(&'(');
                if LABEL_LISTS.contains(&word.as_str()) {
                    if followed_by_paren {
                        i = skip_block(&c, next, '(', ')');
                    }
                } else if followed_by_paren
                    || AGGREGATIONS.contains(&word.as_str())
                    || KEYWORDS.contains(&word.as_str())
                {
                    // a function, an aggregation or an operator
                } else {
                    out.push(word);
                }
            }
            _ => i += 1,
        }
    }
    out
}

#[test]
fn the_promql_scanner_finds_metric_names_only() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.95, sum by (le, route) (rate(tollgate_request_duration_seconds_bucket{job="$job", route=~"a|b{"}[$__rate_interval])))"#
        ),
        ["tollgate_request_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names(
            "sum(rate(a_total[5m])) / on (instance) group_left max(b) > 0.25 and c offset 5m"
        ),
        ["a_total", "b", "c"]
    );
    assert_eq!(metric_names("x - time() < 14 * 86400"), ["x"]);
    assert_eq!(metric_names("up{job=\"tollgate-proxy\"} == 0"), ["up"]);
}

/// `# TYPE name kind` of a scrape.
fn exposed(scrape: &str) -> BTreeMap<String, String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

/// Whether a selected name is exposed (histogram series by their suffix).
fn is_exposed(name: &str, types: &BTreeMap<String, String>) -> bool {
    if types.contains_key(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .and_then(|base| types.get(base))
            .is_some_and(|kind| kind == "histogram" || (kind == "summary" && *suffix != "_bucket"))
    })
}

fn collect_exprs(v: &Value, path: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{path}.{k}");
                match (k.as_str(), child) {
                    ("expr", Value::String(e)) => out.push((p, e.clone())),
                    // Template variables: label_values(SELECTOR, label).
                    ("query" | "definition", Value::String(q))
                        if q.starts_with("label_values(") =>
                    {
                        let inner = q.trim_start_matches("label_values(").trim_end_matches(')');
                        let selector = inner.rsplit_once(',').map_or(inner, |(s, _)| s);
                        out.push((p, selector.to_string()));
                    }
                    _ => collect_exprs(child, p, out),
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_exprs(child, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// (where, PromQL) of the dashboard and of the alert rules.
fn deploy_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy_dir().join("grafana/tollgate.json"))
            .expect("read grafana/tollgate.json"),
    )
    .expect("grafana/tollgate.json is JSON");
    assert_eq!(dashboard["uid"], "tollgate-proxy");
    collect_exprs(&dashboard, "tollgate.json".into(), &mut out);
    let dashboard_queries = out.len();
    assert!(dashboard_queries >= 20, "only {dashboard_queries} queries");

    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(deploy_dir().join("prometheus/alerts.yml"))
            .expect("read prometheus/alerts.yml"),
    )
    .expect("alerts.yml is YAML");
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name");
            let expr = rule["expr"].as_str().expect("expr");
            out.push((format!("alerts.yml {name}"), expr.to_string()));
        }
    }
    assert!(out.len() - dashboard_queries >= 10, "too few alert rules");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_name_only_metrics_the_proxy_exposes() {
    // With an HTTPS listener, so that its certificate metric is there too.
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert_path = dir.path().join("c.pem");
    let key_path = dir.path().join("k.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write");
    let tls_port = free_port();
    let yaml = format!(
        r#"proxy:
  listen: "{{listen}}"
  metrics_listen: "{{metrics}}"
  threads: 1
  tls: {{ listen: "127.0.0.1:{tls_port}", cert: "{}", key: "{}" }}
limiter:
  backend: redis
  redis_url: "redis://127.0.0.1:1"
  redis_timeout: 50ms
  on_redis_error: local
upstreams:
  demo: {{ targets: ["{{upstream}}"], health_check: {{ path: /health, interval: 1s }} }}
routes:
  - name: users
    match: {{ path_prefix: /api/users }}
    upstream: demo
    strip_prefix: /api
    auth: none
    limits: [ {{ name: per-ip, rate: 100, per: 1s }} ]
"#,
        cert_path.display(),
        key_path.display()
    );
    let p = TestProxy::start(&yaml, Store::Sqlite).await.expect("proxy");
    wait_listening(format!("127.0.0.1:{tls_port}").parse().expect("addr")).await;
    // Labelled series appear with their first sample: a few requests through
    // a Redis limiter that cannot connect (Redis errors, fallback decisions,
    // limiter and request durations).
    for _ in 0..3 {
        let r = reqwest::get(p.url("/api/users")).await.expect("request");
        assert_eq!(r.status(), 200, "the local fallback admits");
    }
    let scrape = p.metrics_text().await;
    let types = exposed(&scrape);
    assert!(types.contains_key("tollgate_requests_total"), "{scrape}");

    let mut missing = Vec::new();
    for (at, expr) in deploy_queries() {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{at}: no metric in {expr:?}");
        for name in names {
            // `up` is Prometheus' own series for each scrape target.
            if name != "up" && !is_exposed(&name, &types) {
                missing.push(format!("{at}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not exposed by /metrics:\n{}\n\nexposed: {:?}",
        missing.join("\n"),
        types.keys().collect::<Vec<_>>()
    );
}

/// The dashboard's queries (Grafana variables filled in) and the alert
/// rules, checked by promtool. Skipped where promtool is not installed,
/// unless TOLLGATE_REQUIRE_SERVICES is set (scripts/test).
#[test]
fn queries_are_valid_promql() {
    let promtool = std::process::Command::new("promtool")
        .arg("--version")
        .output();
    if promtool.is_err() {
        assert!(
            std::env::var_os("TOLLGATE_REQUIRE_SERVICES").is_none(),
            "promtool is missing (scripts/services installs the prometheus package)"
        );
        eprintln!("promtool not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in deploy_queries().iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$job", "tollgate-proxy")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: q{i}\n        expr: {}\n",
            serde_json::to_string(&expr).expect("json string")
        ));
    }
    let file = dir.path().join("queries.yml");
    std::fs::write(&file, rules).expect("write");
    for args in [
        vec!["check", "rules", file.to_str().expect("path")],
        vec!["check", "rules", "prometheus/alerts.yml"],
        vec!["test", "rules", "prometheus/alerts_test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(&args)
            .current_dir(deploy_dir())
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
