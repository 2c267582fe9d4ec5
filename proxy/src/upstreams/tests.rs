use super::health::LATENCY_SAMPLES;
use super::*;

fn upstream(yaml_targets: &[&str], health_check: bool) -> Upstream {
    let targets = yaml_targets
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let hc = if health_check {
        ", health_check: { path: /health, interval: 1s }"
    } else {
        ""
    };
    let yaml = format!(
        "upstreams:\n  u: {{ targets: [{targets}]{hc} }}\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    upstream: u\n    auth: none\n"
    );
    let cfg = tollgate_core::config::parse(&yaml, "t.yaml").expect("valid config");
    cfg.upstreams["u"].clone()
}

#[test]
fn latency_is_the_median_of_recent_requests_per_target() {
    let pool = UpstreamPool::build(&upstream(&["127.0.0.1:1", "127.0.0.1:2"], false));
    let (a, b) = (
        pool.config.targets[0].clone(),
        pool.config.targets[1].clone(),
    );
    let now = 10_000_000;
    let old = now - 301_000;
    pool.record_response_at(0, Duration::from_millis(900), old);
    for ms in [3, 1, 2, 10] {
        pool.record_response_at(0, Duration::from_millis(ms), now - 1_000);
    }
    let h = pool.health_at(now);
    let ha = h.iter().find(|t| t.target == a.to_string()).expect("a");
    assert_eq!((ha.latency_ms, ha.latency_samples), (Some(2.5), 4));
    let hb = h.iter().find(|t| t.target == b.to_string()).expect("b");
    assert_eq!((hb.latency_ms, hb.latency_samples), (None, 0));
    // Without health checks nothing claims a check or an up-time.
    assert!(h
        .iter()
        .all(|t| t.checked_at.is_none() && t.up_since.is_none()));

    // The ring keeps the most recent samples only.
    for _ in 0..LATENCY_SAMPLES {
        pool.record_response_at(1, Duration::from_micros(1_500), now);
    }
    pool.record_response_at(1, Duration::from_secs(5), now);
    let h = pool.health_at(now);
    let hb = h.iter().find(|t| t.target == b.to_string()).expect("b");
    assert_eq!(hb.latency_samples as usize, LATENCY_SAMPLES);
    assert_eq!(hb.latency_ms, Some(1.5));

    // An index past the pool's targets is ignored.
    pool.record_response_at(2, Duration::from_millis(1), now);
}

#[test]
fn a_pool_of_one_target_selects_it_without_the_balancer() {
    let one = UpstreamPool::build(&upstream(&["127.0.0.1:8080"], false));
    assert!(one.single.is_some());
    let (backend, picked) = one.select().expect("the target");
    assert_eq!(backend.addr.to_string(), "127.0.0.1:8080");
    assert_eq!(picked.target.port, 8080);
    let two = UpstreamPool::build(&upstream(&["127.0.0.1:8080", "127.0.0.1:8081"], false));
    assert!(two.single.is_none());
    let ports: std::collections::BTreeSet<u16> = (0..4)
        .map(|_| two.select().expect("a target").1.target.port)
        .collect();
    assert_eq!(ports.len(), 2, "round robin over both");
}

#[test]
fn the_host_header_is_built_once_per_target() {
    let pool = UpstreamPool::build(&upstream(
        &[
            "127.0.0.1:80",
            "127.0.0.1:8080",
            "https://127.0.0.1:443",
            "https://127.0.0.1:8443",
        ],
        false,
    ));
    let hosts: Vec<(usize, String)> = pool
        .targets
        .values()
        .map(|p| {
            let h = p.host_header.as_ref().expect("a header value");
            (p.index, h.to_str().expect("text").to_string())
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        hosts,
        vec![
            (0, "127.0.0.1".to_string()),
            (1, "127.0.0.1:8080".to_string()),
            (2, "127.0.0.1".to_string()),
            (3, "127.0.0.1:8443".to_string()),
        ]
    );
    let (_, picked) = pool.select().expect("a target");
    assert!(pool.targets.values().any(|p| Arc::ptr_eq(p, picked)));
}

#[test]
fn up_since_follows_the_health_checks() {
    let mut s = CheckState::default();
    // First passing check: up since then.
    s.observe(1_000, Duration::from_micros(2_500), None);
    assert_eq!(
        (s.up_since, s.rtt, s.checked_at),
        (Some(1_000), Some(Duration::from_micros(2_500)), Some(1_000))
    );
    s.observe(2_000, Duration::from_millis(1), None);
    assert_eq!(s.up_since, Some(1_000), "still up since the first check");
    // A failure flips it down: no up-time, the error is kept.
    s.observe(3_000, Duration::from_secs(1), Some("refused".into()));
    s.flip(false, 3_000);
    assert_eq!(
        (s.up_since, s.rtt, s.error.as_deref()),
        (None, None, Some("refused"))
    );
    // Passing checks again: up since the flip back.
    s.observe(4_000, Duration::from_millis(1), None);
    assert_eq!(s.up_since, None, "Pingora has not flipped it back yet");
    s.flip(true, 4_000);
    assert_eq!((s.up_since, s.error.as_deref()), (Some(4_000), None));
}

#[tokio::test]
async fn health_checks_are_timed_and_remembered() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up = listener.local_addr().expect("addr");
    tokio::spawn(crate::demo::serve(listener));
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let pool = UpstreamPool::build(&upstream(&[&up.to_string(), &down.to_string()], true));
    let before = tollgate_core::now_ms();
    pool.run_health_check().await;
    let h = pool.health();
    let hu = h
        .iter()
        .find(|t| t.target.ends_with(&up.to_string()))
        .expect("up");
    assert!(hu.healthy);
    assert!(hu.checked_at.is_some_and(|t| t >= before), "{hu:?}");
    assert!(hu.check_latency_ms.is_some_and(|ms| ms > 0.0), "{hu:?}");
    assert!(hu.up_since.is_some_and(|t| t >= before), "{hu:?}");
    assert_eq!(hu.error, None);
    let hd = h
        .iter()
        .find(|t| t.target.ends_with(&down.to_string()))
        .expect("down");
    assert!(!hd.healthy);
    assert!(hd.checked_at.is_some());
    assert_eq!((hd.up_since, hd.check_latency_ms), (None, None));
    assert!(
        hd.error
            .as_deref()
            .is_some_and(|e| e.starts_with("ConnectRefused: ") && !e.contains("context")),
        "{hd:?}"
    );
    let first_up = hu.up_since;
    pool.run_health_check().await;
    let h = pool.health();
    let hu = h
        .iter()
        .find(|t| t.target.ends_with(&up.to_string()))
        .expect("up");
    assert_eq!(hu.up_since, first_up);
}

#[test]
fn host_names_are_resolved_again_on_request() {
    let named = upstream(&["localhost:3001"], false);
    let literal = upstream(&["127.0.0.1:3001"], false);
    assert_eq!(named.resolve_interval, Duration::from_secs(30));
    let addrs = resolve(&named).expect("localhost resolves");
    assert!(addrs
        .iter()
        .all(|a| a.ip().is_loopback() && a.port() == 3001));
    let pool = UpstreamPool::build(&named);
    assert!(pool.has_host_names());
    assert_eq!(pool.addresses(), addrs);
    assert!(!UpstreamPool::build(&literal).has_host_names());

    let configs = std::collections::BTreeMap::from([
        ("a".to_string(), named.clone()),
        ("b".to_string(), literal.clone()),
    ]);
    let first = rebuild(&configs, None, &BTreeSet::new());
    let same = rebuild(&configs, Some(&first), &BTreeSet::new());
    assert!(Arc::ptr_eq(&first["a"], &same["a"]));
    let fresh = rebuild(&configs, Some(&first), &BTreeSet::from(["a".to_string()]));
    assert!(!Arc::ptr_eq(&first["a"], &fresh["a"]));
    assert!(Arc::ptr_eq(&first["b"], &fresh["b"]));

    let mut broken = named;
    broken.targets[0].host = "no-such-host.invalid".into();
    assert!(resolve(&broken).is_err());
}
