//! Problems: each reported at its place, all of them, in document order.

use super::*;

/// (source, line, column, message fragment): each must be reported, at
/// exactly that place.
#[test]
fn bad_inputs_are_reported_where_they_are() {
    let cases: &[(&str, usize, usize, &str)] = &[
            // Unknown fields, block and flow.
            (
                "proxy:\n  listen: \"127.0.0.1:8080\"\n  listne: x\n",
                3,
                3,
                "proxy: unknown field `listne`",
            ),
            (
                "routes:\n  - { name: a, match: { path_prefix: /a, method: [GET] }, upstream: demo }\n",
                2,
                42,
                "routes[0].match: unknown field `method`",
            ),
            ("prxy: {}\n", 1, 1, "unknown field `prxy`"),
            // Bad durations.
            (
                "plans:\n  free: { limits: [ { name: m, rate: 1, per: 1x } ] }\n",
                2,
                46,
                "plans.free.limits[0].per: invalid duration \"1x\"",
            ),
            ("storage:\n  key_refresh: 60\n", 2, 16, "storage.key_refresh: invalid duration \"60\""),
            ("storage:\n  key_refresh: 18446744073709551615ms\n", 2, 16, "storage.key_refresh: must be at most 10m, got \"18446744073709551615ms\""),
            ("usage:\n  flush_interval: 99999999999d\n", 2, 19, "usage.flush_interval: must be at most 1h, got \"99999999999d\""),
            ("limiter:\n  redis_timeout: 0ms\n", 2, 18, "limiter.redis_timeout: must be at least 1ms"),
            (
                "plans:\n  p:\n    limits:\n      - name: x\n        rate: 1\n        per: 0s\n",
                6,
                14,
                "plans.p.limits[0].per: must be at least 1ms",
            ),
            // References.
            (
                "upstreams:\n  demo: { targets: [\"127.0.0.1:3001\"] }\nroutes: [ { name: a, match: { path_prefix: /a }, upstream: dem } ]\n",
                3,
                60,
                "routes[0].upstream: unknown upstream \"dem\" (known: demo)",
            ),
            (
                "upstreams:\n  demo: { targets: [\"127.0.0.1:3001\"] }\nplans: { free: {}, pro: {} }\nroutes:\n  - name: a\n    match: { path_prefix: /a }\n    upstream: demo\n    default_plan: gold\n",
                8,
                19,
                "routes[0].default_plan: unknown plan \"gold\" (known: free, pro)",
            ),
            // Duplicates.
            (
                "upstreams:\n  demo: { targets: [\"127.0.0.1:3001\"] }\nroutes:\n  - { name: a, match: { path_prefix: /a }, upstream: demo }\n  - { name: a, match: { path_prefix: /b }, upstream: demo }\n",
                5,
                13,
                "routes[1].name: duplicate route name \"a\" (also routes[0])",
            ),
            (
                "upstreams:\n  demo: { targets: [\"127.0.0.1:3001\"] }\nroutes:\n  - { name: a, match: { path_prefix: /a, methods: [GET, POST] }, upstream: demo, auth: none }\n  - { name: b, match: { path_prefix: /a, methods: [POST] }, upstream: demo }\n",
                5,
                38,
                "routes[1].match.path_prefix: \"/a\" with these methods is also matched by routes[0]; only one of them could ever be chosen",
            ),
            // Round 10 (black-box): HEAD rides on GET, so a HEAD route
            // beside a GET route on the same prefix overlaps it, in either order.
            (
                "upstreams:\n  demo: { targets: [\"127.0.0.1:3001\"] }\nroutes:\n  - { name: a, match: { path_prefix: /a, methods: [GET] }, upstream: demo, auth: none }\n  - { name: b, match: { path_prefix: /a, methods: [HEAD] }, upstream: demo }\n",
                5,
                38,
                "routes[1].match.path_prefix: \"/a\" with these methods is also matched by routes[0] (HEAD is taken wherever GET is); only one of them could ever be chosen",
            ),
            (
                "upstreams:\n  demo: { targets: [\"127.0.0.1:3001\"] }\nroutes:\n  - { name: a, match: { path_prefix: /a, methods: [head, PUT] } , upstream: demo }\n  - { name: b, match: { path_prefix: /a, methods: [POST, GET] }, upstream: demo, auth: none }\n",
                5,
                38,
                "routes[1].match.path_prefix: \"/a\" with these methods is also matched by routes[0] (HEAD is taken wherever GET is)",
            ),
            // A key header HTTP or the proxy gives another meaning.
            (
                "proxy:\n  key_header: host\n",
                2,
                15,
                "proxy.key_header: \"host\" is a hop-by-hop or framing header; the key header is read and removed before forwarding",
            ),
            // A trailing '/' would leave the bare path to another route.
            (
                "upstreams:\n  demo: { targets: [\"127.0.0.1:3001\"] }\nroutes:\n  - { name: a, match: { path_prefix: /api/products/ }, upstream: demo, auth: none }\n",
                4,
                38,
                "routes[0].match.path_prefix: \"/api/products/\" ends with '/': write \"/api/products\", which takes \"/api/products\" and everything below it",
            ),
            (
                "plans:\n  p: { limits: [ { name: m, rate: 1, per: 1s }, { name: m, rate: 2, per: 1m } ] }\n",
                2,
                57,
                "plans.p.limits[1].name: duplicate limit name \"m\" (also plans.p.limits[0])",
            ),
            (
                "plans:\n  free: {}\n  pro: {}\n  free: {}\n",
                4,
                3,
                "plans.free: key \"free\" is repeated (first given at line 2, column 3)",
            ),
            ("plans:\n  1: {}\n  \"1\": {}\n", 3, 3, "plans.1: key \"1\" is repeated"),
            ("plans: { 1: {}, 0x1: {} }\n", 1, 8, "plans.1: duplicate plan name \"1\""),
            // cost > burst, with and without an explicit burst.
            (
                "plans:\n  p: { limits: [ { name: m, rate: 10, per: 1s, burst: 5, cost: 6 } ] }\n",
                2,
                64,
                "plans.p.limits[0].cost: cost 6 is more than burst 5",
            ),
            (
                "plans:\n  p:\n    limits:\n      - name: m\n        rate: 3\n        per: 1s\n        cost: 4\n",
                7,
                15,
                "cost 4 is more than burst 3 (the rate, as burst is not set)",
            ),
            // YAML syntax.
            (
                "proxy:\n  listen: [1, 2\n",
                3,
                1,
                "invalid YAML: did not find expected ',' or ']'",
            ),
            (
                "routes:\n  - name: a\n   upstream: b\n",
                3,
                4,
                "invalid YAML",
            ),
            ("proxy:\n\tlisten: x\n", 2, 1, "invalid YAML"),
            ("a: *nothing\n", 1, 4, "invalid YAML: unknown anchor"),
            // Wrong types: structural (serde) and scalar (validation).
            ("routes: { name: a }\n", 1, 9, "routes: invalid type: map, expected a sequence"),
            ("plans: [free]\n", 1, 8, "plans: invalid type: sequence, expected a mapping"),
            ("proxy:\n  listen: { ip: 1 }\n", 2, 11, "proxy.listen: invalid type: map"),
            ("proxy:\n  threads: two\n", 2, 12, "proxy.threads: expected a whole number, got \"two\""),
            ("proxy:\n  threads: 1.5\n", 2, 12, "expected a whole number, got 1.5"),
            ("proxy:\n  threads: 0\n", 2, 12, "proxy.threads: must be greater than 0, got 0"),
            ("proxy:\n  threads: -3\n", 2, 12, "must be greater than 0, got -3"),
            (
                "proxy:\n  threads: 99999999999999999999999999999\n",
                2,
                12,
                "proxy.threads: must be at most 1024",
            ),
            ("log:\n  access_log: yes\n", 2, 15, "log.access_log: expected true or false, got \"yes\""),
            ("routes:\n  - shadow: 1\n", 2, 13, "routes[0].shadow: expected true or false, got 1"),
            ("hello\n", 1, 1, "expected a mapping of config sections"),
            // Addresses, names, choices.
            (
                "proxy:\n  listen: localhost:8080\n",
                2,
                11,
                "host names are not accepted",
            ),
            ("admin:\n  listen: \"127.0.0.1\"\n", 2, 11, "admin.listen: invalid address \"127.0.0.1\""),
            (
                "proxy:\n  listen: 127.0.0.1:9000\n  metrics_listen: 127.0.0.1:9000\n",
                3,
                19,
                "proxy.metrics_listen: 127.0.0.1:9000 is already used by proxy.listen",
            ),
            ("proxy:\n  key_header: \"x api key\"\n", 2, 15, "proxy.key_header: invalid header name"),
            ("admin:\n  jwt_secret_env: \"s3cr3t!\"\n", 2, 19, "not an environment variable name"),
            ("admin:\n  session_ttl: 90d\n", 2, 16, "admin.session_ttl: must be at most 30d"),
            ("admin:\n  session_ttl: 1s\n", 2, 16, "admin.session_ttl: must be at least 1m"),
            ("admin:\n  allowed_hosts: [\"evil host/\"]\n", 2, 19, "admin.allowed_hosts[0]: \"evil host/\" is not a host name"),
            // Round 16 re-check: a port is a TCP port.
            ("admin:\n  allowed_hosts: [ok.example, \"x.example:99999\"]\n", 2, 31, "admin.allowed_hosts[1]: \"x.example:99999\" is not a host name"),
            ("admin:\n  allowed_hosts: [\"[::1]:0\"]\n", 2, 19, "admin.allowed_hosts[0]"),
            ("admin:\n  max_connections: 0\n", 2, 20, "admin.max_connections: must be greater than 0"),
            ("admin:\n  max_connections_per_ip: -1\n", 2, 27, "admin.max_connections_per_ip: must be at least 0"),
            ("admin:\n  max_connections_per_ip: 2000000\n", 2, 27, "admin.max_connections_per_ip: must be"),
            ("admin:\n  audit_retention: 1h\n", 2, 20, "admin.audit_retention: must be at least 1d"),
            ("limiter:\n  backend: memcached\n", 2, 12, "limiter.backend: expected local or redis, got \"memcached\""),
            ("limiter:\n  backend: redis\n", 2, 3, "limiter.redis_url: missing required field (required when backend is redis)"),
            ("limiter:\n  backend: redis\n  redis_url: \"http://r:6379\"\n", 3, 14, "unsupported scheme"),
            ("limiter:\n  backend: redis\n  redis_url: \"redis://u:hunter2@a:1,b:2\"\n", 3, 14, "several hosts: use redis+cluster:// (or rediss+cluster://) for Redis Cluster in Redis URL \"redis://***@a:1,b:2\""),
            ("limiter:\n  backend: redis\n  redis_url: \"rediss://h:1#insecure\"\n", 3, 14, "query strings and fragments are not supported"),
            // Round 16 re-check: every `%` is an escape.
            ("limiter:\n  backend: redis\n  redis_url: \"redis://u:S3cret%ZZ@h:1\"\n", 3, 14, "the password has a '%' that is not a %XX escape in Redis URL \"redis://***@h:1\""),
            ("limiter:\n  backend: redis\n  redis_url: \"redis://h:1\"\n  redis_ca_file: ca.pem\n", 4, 18, "applies to rediss:// (TLS) URLs only"),
            ("limiter:\n  redis_ca_file: \"\"\n", 2, 18, "must not be empty"),
            ("storage:\n  database_url: \"postgres://u:p@h/db?sslmode=sometimes\"\n", 2, 17, "storage.database_url: invalid PostgreSQL URL"),
            ("limiter:\n  concurrency_lease: 10ms\n", 2, 22, "limiter.concurrency_lease: must be at least 300ms"),
            ("limiter:\n  lease_ttl: 5ms\n", 2, 14, "limiter.lease_ttl: must be 0 (no leases) or at least 10ms, got \"5ms\""),
            ("limiter:\n  lease_ttl: 6s\n", 2, 14, "limiter.lease_ttl: must be at most 5s, got \"6s\""),
            ("limiter:\n  lease_ttl: soon\n", 2, 14, "limiter.lease_ttl: invalid duration \"soon\""),
            ("limiter:\n  lease_ttl: -1ms\n", 2, 14, "limiter.lease_ttl: invalid duration"),
            ("limiter:\n  on_redis_error: ignore\n", 2, 19, "expected local, allow or deny"),
            ("log:\n  level: verbose\n", 2, 10, "log.level: expected trace, debug, info, warn or error"),
            ("log:\n  format: xml\n", 2, 11, "log.format: expected text or json"),
            ("storage:\n  database_url: mysql://db\n", 2, 17, "unsupported database URL \"mysql://db\""),
            // Round 16 re-check: the password is never printed.
            ("storage:\n  database_url: \"mysql://u:S3cretPW@db/prod\"\n", 2, 17, "unsupported database URL \"mysql://u:***@db/prod\""),
            ("usage:\n  retention_days: 0\n", 2, 19, "usage.retention_days: must be greater than 0"),
            ("proxy:\n  tls: { listen: \"0.0.0.0:8443\", cert: \"\" }\n", 2, 40, "proxy.tls.cert: must not be empty"),
            ("proxy:\n  tls: { listen: \"0.0.0.0:8443\", cert: a }\n", 2, 8, "proxy.tls.key: missing required field"),
            // Limits.
            ("plans:\n  p: { limits: [ { rate: 1, per: 1s } ] }\n", 2, 18, "plans.p.limits[0].name: missing required field"),
            ("plans:\n  p: { limits: [ { name: m, per: 1s } ] }\n", 2, 18, "plans.p.limits[0].rate: missing required field"),
            ("plans:\n  p: { limits: [ { name: m, rate: 0, per: 1s } ] }\n", 2, 35, "plans.p.limits[0].rate: must be greater than 0"),
            ("plans:\n  p: { limits: [ { name: \"a\\\"b\", rate: 1, per: 1s } ] }\n", 2, 26, "invalid limit name \"a\\\"b\""),
            ("plans:\n  p: { limits: [ { name: m, rate: 1, per: 1s, burst: 0 } ] }\n", 2, 54, "burst: must be greater than 0"),
            ("plans:\n  p: { concurrency: 0 }\n", 2, 21, "plans.p.concurrency: must be greater than 0"),
            ("plans:\n  \"\": {}\n", 2, 3, "plans: plan name must not be empty"),
            // Upstreams.
            ("upstreams:\n  u: {}\n", 2, 6, "upstreams.u.targets: missing required field"),
            ("upstreams:\n  u: { targets: [] }\n", 2, 17, "upstreams.u.targets: at least one target is required"),
            (
                "upstreams:\n  u: { targets: [\"a:1\", \"::1:80\"] }\n",
                2,
                25,
                "upstreams.u.targets[1]: invalid target \"::1:80\": IPv6 addresses must be in brackets",
            ),
            ("upstreams:\n  u:\n    targets: [a:1]\n    health_check: { path: health }\n", 4, 27, "upstreams.u.health_check.path: must start with '/'"),
            ("upstreams:\n  u:\n    targets: [a:1]\n    timeouts: { read: 0s }\n", 4, 23, "upstreams.u.timeouts.read: must be at least 1ms"),
            ("upstreams:\n  u:\n    targets: [a:1]\n    tls: { verify: false }\n", 4, 10, "upstreams.u.tls: applies to https:// targets only"),
            ("upstreams:\n  u:\n    targets: [\"https://a\"]\n    tls: { ca_file: \"\" }\n", 4, 21, "upstreams.u.tls.ca_file: must not be empty"),
            ("upstreams:\n  u:\n    targets: [\"https://a\"]\n    tls: { verify: no }\n", 4, 20, "upstreams.u.tls.verify: expected true or false"),
            ("upstreams:\n  u:\n    targets: [\"https://a\"]\n    tls: { ca_file: ca.pem, verify: false }\n", 4, 21, "upstreams.u.tls.ca_file: has no effect with verify: false"),
            ("upstreams:\n  u:\n    targets: [\"https://a\"]\n    tls: { sni: 10.0.0.1 }\n", 4, 17, "upstreams.u.tls.sni: \"10.0.0.1\" is an IP address"),
            ("upstreams:\n  u:\n    targets: [\"https://a\"]\n    tls: { sni: \"a b\" }\n", 4, 17, "upstreams.u.tls.sni: \"a b\" is not a valid server name"),
            // Routes.
            ("routes:\n  - name: \"\"\n", 2, 11, "routes[0].name: must not be empty"),
            ("routes:\n  - name: a\n", 2, 5, "routes[0].match: missing required field"),
            ("routes:\n  - name: a\n    match: { path_prefix: api }\n", 3, 27, "routes[0].match.path_prefix: must start with '/'"),
            ("routes:\n  - name: a\n    match: { methods: [GET] }\n", 3, 12, "routes[0].match.path_prefix: missing required field"),
            ("routes:\n  - name: a\n    match: { path_prefix: /a, methods: [] }\n", 3, 40, "routes[0].match.methods: must not be empty"),
            ("routes:\n  - name: a\n    match: { path_prefix: /a, methods: [GET, \"GE T\"] }\n", 3, 46, "routes[0].match.methods[1]: invalid HTTP method \"GE T\""),
            ("routes:\n  - name: a\n    match: { path_prefix: /api/users }\n    strip_prefix: /v1\n", 4, 19, "\"/v1\" is not a prefix of match.path_prefix \"/api/users\""),
            ("routes:\n  - name: a\n    match: { path_prefix: /api/users }\n    strip_prefix: api\n", 4, 19, "routes[0].strip_prefix: must start with '/'"),
            ("routes:\n  - name: a\n    auth: jwt\n", 3, 11, "routes[0].auth: expected api_key or none, got \"jwt\""),
            ("routes:\n  - name: a\n    upstream:\n", 3, 5, "routes[0].upstream: a value is required"),
            ("---\na: 1\n---\nb: 2\n", 1, 1, "a single YAML document"),
            // Round 12 (black-box): route and upstream names follow the one
            // name rule (they go into scopes, metrics labels, usage rows);
            // `credits` is the RateLimit member of a key's credits.
            ("routes:\n  - name: \"a b\"\n", 2, 11, "routes[0].name: invalid route name \"a b\": use only A-Z, a-z, 0-9, '.', '_' and '-'"),
            ("routes:\n  - name: \"users*\"\n", 2, 11, "routes[0].name: invalid route name \"users*\""),
            ("routes:\n  - { match: { path_prefix: /a }, name: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx }\n", 2, 41, "routes[0].name: must be at most 64 characters"),
            ("upstreams:\n  \"my api\": { targets: [\"a:1\"] }\n", 2, 3, "upstreams.my api: invalid upstream name \"my api\""),
            ("plans:\n  p: { limits: [ { name: credits, rate: 1, per: 1s } ] }\n", 2, 26, "plans.p.limits[0].name: \"credits\" is reserved"),
            ("routes:\n  - name: a\n    limits: [ { name: credits, rate: 1, per: 1s } ]\n", 3, 23, "routes[0].limits[0].name: \"credits\" is reserved"),
        ];
    let mut failures = Vec::new();
    for (src, line, column, fragment) in cases {
        let errs = match parse_and_validate(src, "test.yaml") {
            Ok(_) => {
                failures.push(format!("{src:?}: accepted"));
                continue;
            }
            Err(e) => e.0,
        };
        let found = errs
            .iter()
            .any(|e| e.line == *line && e.column == *column && e.message.contains(fragment));
        if !found {
            failures.push(format!(
                "{src:?}: expected {line}:{column} {fragment:?}, got:\n  {}",
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_problem_is_reported_in_document_order() {
    let src = "\
proxy:
  listen: nowhere
  threads: 0
upstreams:
  demo: { targets: [\"127.0.0.1:3001\", \"bad\"] }
plans:
  free: { limits: [ { name: m, rate: 1, per: 1s, burst: 2, cost: 3 } ] }
routes:
  - name: a
    match: { path_prefix: /a }
    upstream: dem
  - name: a
    match: { path_prefix: b }
    upstream: demo
    default_plan: gold
limiter:
  backend: redis
  redis_timeout: soon
";
    let errs = errors(src);
    let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let expected = [
        "test.yaml:2:11: proxy.listen: invalid address \"nowhere\"",
        "test.yaml:3:12: proxy.threads: must be greater than 0",
        "test.yaml:5:39: upstreams.demo.targets[1]: invalid target \"bad\"",
        "test.yaml:7:66: plans.free.limits[0].cost: cost 3 is more than burst 2",
        "test.yaml:11:15: routes[0].upstream: unknown upstream \"dem\" (known: demo)",
        "test.yaml:12:11: routes[1].name: duplicate route name \"a\"",
        "test.yaml:13:27: routes[1].match.path_prefix: must start with '/'",
        "test.yaml:15:19: routes[1].default_plan: unknown plan \"gold\" (known: free)",
        "test.yaml:17:3: limiter.redis_url: missing required field",
        "test.yaml:18:18: limiter.redis_timeout: invalid duration \"soon\"",
    ];
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (g, e) in got.iter().zip(expected) {
        assert!(g.starts_with(e), "got {g:?}, expected {e:?}…");
    }
}

#[test]
fn every_repeated_key_is_reported() {
    let errs = errors("proxy: {}\nplans: { a: {}, a: {} }\nproxy: {}\n");
    let at: Vec<(usize, usize)> = errs.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(at, vec![(2, 17), (3, 1)], "{errs:?}");
}
