//! Per-target health in the heartbeat, with real traffic through the real
//! proxy: the health checks' time, round trip, error and up-time, and the
//! median latency of the requests proxied to each target.

mod common;

use std::time::{Duration, Instant};

use common::{closed_port, Store, TestProxy};
use tollgate_core::db::instances::TargetHealth;
use tollgate_core::db::Db;

/// The demo upstream (up) and a port nobody listens on (down), checked
/// every 200 ms; a keyless route to the demo's `/slow/{ms}`.
fn yaml(down_port: u16) -> String {
    format!(
        r#"
usage:
  flush_interval: 100ms
upstreams:
  demo:
    targets: ["{{upstream}}", "127.0.0.1:{down_port}"]
    health_check: {{ path: /health, interval: 200ms }}
routes:
  - name: slow
    match: {{ path_prefix: /slow }}
    upstream: demo
    auth: none
"#
    )
}

/// The latest heartbeat's report of every target, once `ok` holds for it.
async fn reports_when(
    db: &Db,
    what: &str,
    ok: impl Fn(&[TargetHealth]) -> bool,
) -> Vec<TargetHealth> {
    let start = Instant::now();
    loop {
        let health = db
            .list_instances()
            .await
            .ok()
            .and_then(|l| l.into_iter().next())
            .map(|i| i.upstream_health)
            .unwrap_or_default();
        if ok(&health) {
            return health;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: not after 10 s; last report {health:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn find(health: &[TargetHealth], port: u16) -> Option<&TargetHealth> {
    health
        .iter()
        .find(|t| t.target.ends_with(&format!(":{port}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_traffic_gives_each_target_a_latency() {
    let (_held, down_port) = closed_port();
    let started = tollgate_core::now_ms();
    let Some(p) = TestProxy::start(&yaml(down_port), Store::Sqlite).await else {
        return;
    };

    // The health checks ran: the down target is out of the rotation. (They
    // run side by side: a report may come between the two, so both are
    // waited for.)
    let health = reports_when(&p.db, "both targets checked, the down one down", |h| {
        find(h, down_port).is_some_and(|t| !t.healthy)
            && h.len() == 2
            && h.iter().all(|t| t.checked_at.is_some())
    })
    .await;
    assert_eq!(health.len(), 2, "{health:#?}");
    let down = find(&health, down_port).expect("down target");
    assert!(
        down.error.as_deref().is_some_and(|e| !e.is_empty()),
        "{down:?}"
    );
    assert_eq!((down.up_since, down.check_latency_ms), (None, None));
    let up = health
        .iter()
        .find(|t| t.target != down.target)
        .expect("up target")
        .clone();
    assert!(up.healthy && up.error.is_none(), "{up:?}");
    assert!(up.checked_at.is_some_and(|t| t >= started), "{up:?}");
    assert!(up.check_latency_ms.is_some_and(|ms| ms > 0.0), "{up:?}");
    let up_since = up.up_since.expect("up since its first check");
    assert!(up_since >= started, "{up:?}");
    assert_eq!(
        (up.latency_ms, up.latency_samples),
        (None, 0),
        "no traffic yet"
    );

    // Requests that take the upstream 40 ms each: the median of what the
    // proxy saw is at least that, and every request counts.
    let client = reqwest::Client::new();
    for _ in 0..9 {
        let res = client.get(p.url("/slow/40")).send().await.expect("request");
        assert_eq!(res.status(), 200);
    }
    let health = reports_when(&p.db, "the latency of the traffic", |h| {
        h.iter().any(|t| t.latency_samples >= 9)
    })
    .await;
    let up_now = health
        .iter()
        .find(|t| t.target == up.target)
        .expect("up target");
    assert_eq!(up_now.latency_samples, 9, "{up_now:?}");
    let ms = up_now.latency_ms.expect("a latency");
    assert!((40.0..2_000.0).contains(&ms), "median {ms} ms");
    assert_eq!(up_now.up_since, Some(up_since), "still up since then");
    let down_now = find(&health, down_port).expect("down target");
    assert_eq!(
        (down_now.latency_ms, down_now.latency_samples),
        (None, 0),
        "no request went to the down target"
    );
}
