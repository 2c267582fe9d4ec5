//! Upstream faults, proved against the real `tollgate proxy`: a slow
//! upstream (504), a down target (502), a flapping one taken out of and back
//! into the pool by health checks.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::faults::*;
use crate::common::proxy::Proxy;
use crate::common::{closed_port, free_port};

/// An upstream slower than its `timeouts.read` gets 504 problem+json after
/// about that timeout (not the client's patience), counted as an upstream
/// error in /metrics; the same upstream still serves fast requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_gets_504_after_its_read_timeout() {
    let up = Upstream::start("slow", free_port()).await;
    let (dir, db) = sqlite().await;
    let yaml = format!(
        "upstreams:\n  u: {{ targets: [\"127.0.0.1:{}\"], timeouts: {{ connect: 500ms, read: 400ms }} }}\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: u\n    strip_prefix: /api\n    auth: none\n",
        up.port
    );
    let p = Proxy::start(dir, db.url(), "", &yaml).await;
    let client = reqwest::Client::new();
    assert_eq!(get(&client, &p.url("/api/fast"), None).await.status(), 200);

    let t = Instant::now();
    let r = get(&client, &p.url("/api/slow/3000"), None).await;
    let waited = t.elapsed();
    assert_eq!(r.status(), 504);
    assert!(problem_type(r).await.ends_with("/upstream-timeout"));
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_millis(1500),
        "504 after {waited:?}, read timeout 400ms"
    );
    assert_eq!(get(&client, &p.url("/api/fast"), None).await.status(), 200);
    let m = p.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "tollgate_requests_total",
            &["route=\"api\"", "outcome=\"upstream_error\""]
        ),
        1.0,
        "{m}"
    );
}

/// A target that is down (nothing listens: connection refused) gets 502
/// problem+json at once; one that does not answer SYNs (a full accept queue)
/// gets 502 after `timeouts.connect`, not after retries piling up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_target_gets_502_within_the_connect_timeout() {
    // Held for the whole test: nothing else can start listening on it.
    let (_held, refused) = closed_port();
    // A listener that never accepts, its queue filled: further SYNs are dropped.
    let (blackhole, _) = common::ports::socket();
    let blackhole = blackhole.listen(1).expect("listen");
    let hole = blackhole.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(hole),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let hole_blocks = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::net::TcpStream::connect(hole),
    )
    .await
    .is_err();

    let (dir, db) = sqlite().await;
    let yaml = format!(
        "upstreams:\n  refused: {{ targets: [\"127.0.0.1:{refused}\"], timeouts: {{ connect: 5s, read: 2s }} }}\n  hole: {{ targets: [\"{hole}\"], timeouts: {{ connect: 600ms, read: 2s }} }}\nroutes:\n  - name: refused\n    match: {{ path_prefix: /refused }}\n    upstream: refused\n    auth: none\n  - name: hole\n    match: {{ path_prefix: /hole }}\n    upstream: hole\n    auth: none\n"
    );
    let p = Proxy::start(dir, db.url(), "", &yaml).await;
    let client = reqwest::Client::new();

    let t = Instant::now();
    let r = get(&client, &p.url("/refused/x"), None).await;
    let waited = t.elapsed();
    assert_eq!(r.status(), 502);
    assert!(problem_type(r).await.ends_with("/upstream-error"));
    // A refused connection is answered at once, not at the 5 s connect timeout.
    assert!(
        waited < Duration::from_millis(2500),
        "refused: 502 after {waited:?}, connect timeout 5s"
    );

    if hole_blocks {
        let t = Instant::now();
        let r = get(&client, &p.url("/hole/x"), None).await;
        let waited = t.elapsed();
        assert_eq!(r.status(), 502);
        assert!(problem_type(r).await.ends_with("/upstream-error"));
        assert!(
            // At the timeout, not at the kernel's SYN retries (over two minutes).
            waited >= Duration::from_millis(550) && waited < Duration::from_millis(3000),
            "unanswered SYN: 502 after {waited:?}, connect timeout 600ms"
        );
    } else {
        eprintln!("notice: this kernel accepted beyond the backlog; connect-timeout case skipped");
    }
    let m = p.metrics().await;
    assert!(
        metric_value(
            &m,
            "tollgate_requests_total",
            &["outcome=\"upstream_error\""]
        ) >= 1.0
    );
    drop(fillers);
}

/// Two targets, one down: the health check takes it out and every request
/// goes to the other; back up and healthy, it gets traffic again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_takes_a_down_target_out_and_back_in() {
    let a = Upstream::start("a", free_port()).await;
    let mut b = Upstream::start("b", free_port()).await;
    let (dir, db) = sqlite().await;
    let yaml = format!(
        "upstreams:\n  u: {{ targets: [\"127.0.0.1:{}\", \"127.0.0.1:{}\"], health_check: {{ path: /health, interval: 200ms }}, timeouts: {{ connect: 300ms, read: 2s }} }}\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: u\n    strip_prefix: /api\n    auth: none\n",
        a.port, b.port
    );
    let p = Proxy::start(dir, db.url(), "", &yaml).await;
    let client = reqwest::Client::new();
    let url = p.url("/api/x");

    // Both healthy: round robin uses both.
    for _ in 0..10 {
        assert_eq!(get(&client, &url, None).await.status(), 200);
    }
    assert!(
        a.hits() > 0 && b.hits() > 0,
        "a {} b {}",
        a.hits(),
        b.hits()
    );

    b.stop().await;
    let down_at = Instant::now();
    // Until the check notices, requests routed to b fail; then none does.
    wait_for("b taken out", Duration::from_secs(5), || async {
        let mut ok = true;
        for _ in 0..4 {
            ok &= get(&client, &url, None).await.status() == 200;
        }
        ok
    })
    .await;
    println!("b out of rotation after {:?}", down_at.elapsed());
    let (a0, b0) = (a.hits(), b.hits());
    for _ in 0..20 {
        assert_eq!(get(&client, &url, None).await.status(), 200);
    }
    assert_eq!(a.hits() - a0, 20, "every request went to a");
    assert_eq!(b.hits(), b0);

    b.restart().await;
    let up_at = Instant::now();
    wait_for("b back in rotation", Duration::from_secs(5), || async {
        let before = b.hits();
        for _ in 0..4 {
            assert_eq!(get(&client, &url, None).await.status(), 200);
        }
        b.hits() > before
    })
    .await;
    println!("b back in rotation after {:?}", up_at.elapsed());
    let (a1, b1) = (a.hits(), b.hits());
    for _ in 0..20 {
        assert_eq!(get(&client, &url, None).await.status(), 200);
    }
    assert!(
        a.hits() - a1 >= 5 && b.hits() - b1 >= 5,
        "both serve again: a +{} b +{}",
        a.hits() - a1,
        b.hits() - b1
    );
}
