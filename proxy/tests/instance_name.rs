//! `proxy.instance_name` (black-box round 5, N1): a local-backend proxy
//! writes its quota counts under its name, and refuses to start beside a
//! live proxy of the same name on the same database (both would overwrite
//! the same rows). A row left by a crashed run of the same name does not
//! keep it from starting; a proxy of another name starts at once.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, render, start_upstream, Store, TestProxy};
use tollgate_core::config;
use tollgate_core::db::instances::Heartbeat;
use tollgate_proxy::server::{build, PrepareError, Prepared, ShutdownHandle};

fn yaml(name: &str) -> String {
    yaml_every(name, "200ms")
}

fn yaml_every(name: &str, flush_interval: &str) -> String {
    format!(
        r#"
proxy:
  listen: "{{listen}}"
  metrics_listen: "{{metrics}}"
  threads: 2
  instance_name: "{name}"
usage:
  flush_interval: {flush_interval}
plans:
  p: {{ limits: [ {{ name: daily, rate: 100, per: 1d }} ] }}
upstreams:
  demo: {{ targets: ["{{upstream}}"] }}
routes:
  - {{ name: users, match: {{ path_prefix: /api/users }}, upstream: demo, default_plan: p }}
"#
    )
}

/// Prepare (not run) a second proxy of `name` on `p`'s database.
async fn prepare_beside(p: &TestProxy, name: &str) -> Result<Prepared, PrepareError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = render(
        &yaml(name),
        format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        start_upstream().await,
        &common::db_url(&p.db),
    );
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, text).expect("config");
    Prepared::load(config::load(&path).expect("valid config")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_proxy_of_the_same_name_refuses_to_start() {
    let p = TestProxy::start(&yaml("gw-a"), Store::Sqlite)
        .await
        .expect("sqlite");
    // It holds the name (claimed at start, refreshed by its heartbeats).
    let start = Instant::now();
    while p.db.name_holder("gw-a").await.expect("read").is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "no claim");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match prepare_beside(&p, "gw-a").await {
        Err(PrepareError::Twin { name, .. }) => assert_eq!(name, "gw-a"),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a second live proxy named gw-a was prepared"),
    }
    // Another name starts at once, without waiting for anyone.
    let start = Instant::now();
    prepare_beside(&p, "gw-b").await.expect("another name");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

/// Black-box round 17 re-check: a holder beating every 3 s was taken over
/// by a proxy beating every 200 ms, which waited only its own period for
/// the holder's next beat. It waits the holder's period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_holder_with_a_longer_heartbeat_keeps_its_name() {
    let p = TestProxy::start(&yaml_every("gw-slow", "3s"), Store::Sqlite)
        .await
        .expect("sqlite");
    let start = Instant::now();
    while p.db.name_holder("gw-slow").await.expect("read").is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "no claim");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match prepare_beside(&p, "gw-slow").await {
        Err(PrepareError::Twin { name, .. }) => assert_eq!(name, "gw-slow"),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("the live holder's name was taken over"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_runs_row_does_not_keep_its_name_from_starting() {
    let p = TestProxy::start(&yaml("gw-c"), Store::Sqlite)
        .await
        .expect("sqlite");
    // A run of "gw-d" that crashed just now: it holds the name and never
    // beats again.
    p.db.upsert_instance(&Heartbeat {
        id: "crashed-1".into(),
        address: "127.0.0.1:1".into(),
        version: "test".into(),
        started_at: tollgate_core::now_ms() - 60_000,
        stats: serde_json::json!({}),
        upstream_health: Vec::new(),
        counter: Some("gw-d".into()),
        beat_every: std::time::Duration::from_secs(5),
    })
    .await
    .expect("heartbeat");
    let (holder, _) =
        p.db.claim_name("gw-d", "crashed-1", tollgate_core::now_ms())
            .await
            .expect("claim");
    assert_eq!(holder, "crashed-1");
    let start = Instant::now();
    prepare_beside(&p, "gw-d")
        .await
        .expect("a dead run's row does not block its name");
    // It waited for one more heartbeat (200 ms flush + 1 s), not forever,
    // and holds the name now.
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let (holder, _) = p.db.name_holder("gw-d").await.expect("read").expect("held");
    assert_ne!(holder, "crashed-1");
}

/// Prepare and run a second proxy of `name` on `p`'s database.
async fn run_beside(
    p: &TestProxy,
    name: &str,
) -> Result<(ShutdownHandle, std::thread::JoinHandle<()>), PrepareError> {
    let prepared = prepare_beside(p, name).await?;
    let shutdown = ShutdownHandle::new();
    let handle = shutdown.clone();
    let thread = std::thread::spawn(move || build(prepared).run_with(handle.run_args()));
    Ok((shutdown, thread))
}

/// Two proxies of one name starting at the same instant: the claim is one
/// atomic insert, the other waits for the holder's heartbeat and gives way
/// (black-box round 6, F1: both started and overwrote each other's counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_starting_at_once_exactly_one_keeps_the_name() {
    let p = TestProxy::start(&yaml("gw-host"), Store::Sqlite)
        .await
        .expect("sqlite");
    for round in 0..2 {
        let name = format!("gw-race-{round}");
        let (a, b) = tokio::join!(run_beside(&p, &name), run_beside(&p, &name));
        let refused = [&a, &b]
            .iter()
            .filter(|r| matches!(r, Err(PrepareError::Twin { .. })))
            .count();
        let running: Vec<_> = [a, b].into_iter().flatten().collect();
        assert_eq!((running.len(), refused), (1, 1), "round {round}");
        for (shutdown, thread) in running {
            shutdown.fast();
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
