//! `proxy.work_stealing`, `listener_tasks`, `upstream_keepalive_pool`,
//! `downstream_keepalive_requests`: defaults, values, hostile values.

use super::{parse, ServerTuning};

fn tuning(yaml: &str) -> ServerTuning {
    match parse(yaml, "t.yaml") {
        Ok(c) => c.proxy.tuning,
        Err(e) => panic!("{yaml:?} should parse: {e}"),
    }
}

fn error(yaml: &str) -> String {
    match parse(yaml, "t.yaml") {
        Ok(c) => panic!("{yaml:?} should be refused, got {:?}", c.proxy.tuning),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_are_pingoras_but_no_stealing_and_the_request_limit() {
    let t = tuning("");
    assert_eq!(t, ServerTuning::default());
    assert!(!t.work_stealing);
    assert_eq!(t.listener_tasks, 1);
    assert_eq!(t.upstream_keepalive_pool, 128);
    assert_eq!(t.downstream_keepalive_requests, 10_000);
}

#[test]
fn every_setting_is_read() {
    let t = tuning(
        "proxy:\n  work_stealing: true\n  listener_tasks: 2\n  upstream_keepalive_pool: 0\n  downstream_keepalive_requests: 1\n",
    );
    assert_eq!(
        t,
        ServerTuning {
            work_stealing: true,
            listener_tasks: 2,
            upstream_keepalive_pool: 0,
            downstream_keepalive_requests: 1,
        }
    );
}

#[test]
fn hostile_values_are_refused_with_their_line() {
    for (yaml, want) in [
        (
            "proxy:\n  work_stealing: yes\n",
            "t.yaml:2:18: proxy.work_stealing: expected true or false, got \"yes\"",
        ),
        (
            "proxy:\n  work_stealing: 1\n",
            "proxy.work_stealing: expected true or false, got 1",
        ),
        (
            "proxy:\n  listener_tasks: 0\n",
            "proxy.listener_tasks: must be greater than 0, got 0",
        ),
        (
            "proxy:\n  listener_tasks: 65\n",
            "proxy.listener_tasks: must be at most 64",
        ),
        (
            "proxy:\n  listener_tasks: -1\n",
            "proxy.listener_tasks: must be greater than 0",
        ),
        (
            "proxy:\n  listener_tasks: 1.5\n",
            "proxy.listener_tasks: expected a whole number",
        ),
        (
            "proxy:\n  upstream_keepalive_pool: 1000001\n",
            "proxy.upstream_keepalive_pool: must be at most 1000000",
        ),
        (
            "proxy:\n  upstream_keepalive_pool: -1\n",
            "proxy.upstream_keepalive_pool: must be at least 0",
        ),
        (
            "proxy:\n  downstream_keepalive_requests: 0\n",
            "proxy.downstream_keepalive_requests: must be greater than 0",
        ),
        (
            "proxy:\n  downstream_keepalive_requests: 4294967296\n",
            "proxy.downstream_keepalive_requests: must be at most 4294967295",
        ),
        (
            "proxy:\n  downstream_keepalive_requests: 99999999999999999999999\n",
            "proxy.downstream_keepalive_requests: must be at most 4294967295",
        ),
        (
            "proxy:\n  listener_task: 2\n",
            "unknown field `listener_task`",
        ),
    ] {
        let e = error(yaml);
        assert!(e.contains(want), "{yaml:?}: {e}");
    }
}
