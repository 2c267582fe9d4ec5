//! Plan `scopes`, route `ip_allow` / `ip_deny` (issue #21), and hostile
//! values of them: each refused at its field, never a panic.

use super::*;

const BASE: &str = "upstreams:\n  demo: { targets: [\"127.0.0.1:3001\"] }\n";

fn parse(extra: &str) -> Result<Config, ConfigErrors> {
    crate::config::parse(&format!("{BASE}{extra}"), "t.yaml")
}

fn refused(extra: &str, fragment: &str) {
    match parse(extra) {
        Ok(_) => panic!("accepted: {extra}"),
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains(fragment), "{fragment:?} not in:\n{text}");
        }
    }
}

#[test]
fn plan_scopes_and_route_ip_lists_are_read_and_normalised() {
    let cfg = parse(
        "plans:\n  r: { limits: [ { name: m, rate: 1, per: 1s } ], scopes: { routes: [users, \"bill*\", users], methods: [get, GET] } }\n\
         routes:\n  - { name: users, match: { path_prefix: /u }, upstream: demo, ip_allow: [10.1.2.3/8, \"2001:db8::1\"], ip_deny: [10.9.0.0/16] }\n",
    )
    .expect("valid");
    let scopes = cfg.plans["r"].scopes.clone().expect("scopes");
    assert_eq!(scopes.routes, Some(vec!["users".into(), "bill*".into()]));
    assert_eq!(scopes.methods, Some(vec!["GET".into()]));
    let r = &cfg.routes[0];
    assert_eq!(
        r.ip_allow
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["10.0.0.0/8", "2001:db8::1/128"]
    );
    assert_eq!(r.ip_deny.len(), 1);
    // Left out: nothing restricted.
    let cfg = parse(
        "plans:\n  r: {}\nroutes: [ { name: a, match: { path_prefix: /a }, upstream: demo } ]\n",
    )
    .expect("valid");
    assert_eq!(cfg.plans["r"].scopes, None);
    assert!(cfg.routes[0].ip_allow.is_empty() && cfg.routes[0].ip_deny.is_empty());
}

#[test]
fn hostile_scopes_and_networks_are_refused_at_their_field() {
    let route = |field: &str, list: &str| {
        format!("routes: [ {{ name: a, match: {{ path_prefix: /a }}, upstream: demo, {field}: {list} }} ]\n")
    };
    refused(
        &route("ip_allow", "[10.0.0.0/33]"),
        "routes[0].ip_allow[0]: invalid network",
    );
    refused(
        &route("ip_deny", "[\"not an ip\"]"),
        "routes[0].ip_deny[0]: invalid network",
    );
    refused(
        &route("ip_allow", "[]"),
        "routes[0].ip_allow: must not be empty",
    );
    refused(
        &route("ip_deny", "[~]"),
        "routes[0].ip_deny[0]: expected text",
    );
    refused(&route("ip_allow", "10.0.0.0/8"), "routes[0].ip_allow");
    let huge = format!("[{}]", vec!["10.0.0.1"; 257].join(", "));
    refused(
        &route("ip_allow", &huge),
        "routes[0].ip_allow: at most 256 entries",
    );

    let plan = |scopes: &str| format!("plans:\n  p: {{ scopes: {scopes} }}\n");
    refused(&plan("{ routes: [\"**\"] }"), "plans.p.scopes.routes[0]");
    refused(&plan("{ routes: [\"a*b*c*d*e*\"] }"), "at most 4 '*'");
    refused(
        &plan(&format!("{{ routes: [\"{}\"] }}", "x".repeat(129))),
        "plans.p.scopes.routes[0]: must be at most 128 characters",
    );
    refused(
        &plan("{ routes: [] }"),
        "plans.p.scopes.routes: must not be empty",
    );
    refused(
        &plan("{ methods: [\"GE T\"] }"),
        "plans.p.scopes.methods[0]: invalid HTTP method",
    );
    refused(
        &plan("{ methods: [\"G\\r\\nX: y\"] }"),
        "plans.p.scopes.methods[0]",
    );
    refused(
        &plan("{ routes: [a], verbs: [GET] }"),
        "unknown field `verbs`",
    );
    let many = format!("{{ routes: [{}] }}", vec!["r"; 65].join(", "));
    refused(&plan(&many), "plans.p.scopes.routes: at most 64 entries");
}

#[test]
fn usage_path_defaults_turns_off_and_refuses_non_paths() {
    assert_eq!(
        parse("").expect("valid").proxy.usage_path.as_deref(),
        Some("/_tollgate/usage")
    );
    assert_eq!(
        parse("proxy: { usage_path: \"\" }")
            .expect("valid")
            .proxy
            .usage_path,
        None
    );
    assert_eq!(
        parse("proxy: { usage_path: /me/limits }")
            .expect("valid")
            .proxy
            .usage_path
            .as_deref(),
        Some("/me/limits")
    );
    refused(
        "proxy: { usage_path: me }",
        "proxy.usage_path: must start with '/'",
    );
    refused("proxy: { usage_path: \"/a/../b\" }", "not a canonical path");
    refused("proxy: { usage_path: \"/a b\" }", "not a canonical path");
    refused("proxy: { usage_path: \"/a?x\" }", "not a canonical path");
    refused(
        &format!("proxy: {{ usage_path: \"/{}\" }}", "a".repeat(300)),
        "must be at most 256 bytes",
    );
}
