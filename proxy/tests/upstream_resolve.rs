//! `upstreams.NAME.resolve_interval` through the real proxy: a target given
//! as a host name changes its address while the proxy runs (as a DNS record
//! does), and the proxy's pool follows it within about one interval, with no
//! restart or reload; a lookup that fails keeps the last addresses.
//!
//! The name is answered by the proxy's test hosts table
//! (`upstreams::testing`), in front of DNS for this name only; everything
//! else (the background re-resolution, the pool rebuild, the balancer) is
//! the production path.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{free_port, metric_value, raw, Store, TestProxy};
use tollgate_proxy::upstreams::testing;

const HOST: &str = "moving-upstream.tollgate.test";

/// Removes the name from the hosts table, even when the test fails.
struct Forget;

impl Drop for Forget {
    fn drop(&mut self) {
        testing::remove_host(HOST);
    }
}

/// An upstream on `addr` answering every request with `name`.
async fn upstream(addr: SocketAddr, name: &'static str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    raw::serve_heads(listener, move |_| name.to_string());
    Ok(())
}

/// One port on which both 127.0.0.2 and 127.0.0.3 answer, as `a` and `b`.
async fn two_addresses() -> (IpAddr, IpAddr, u16) {
    let (a, b): (IpAddr, IpAddr) = (
        "127.0.0.2".parse().expect("ip"),
        "127.0.0.3".parse().expect("ip"),
    );
    for _ in 0..20 {
        let port = free_port();
        if upstream(SocketAddr::new(a, port), "a").await.is_ok()
            && upstream(SocketAddr::new(b, port), "b").await.is_ok()
        {
            return (a, b, port);
        }
    }
    panic!("no port free on both addresses");
}

async fn body(client: &reqwest::Client, p: &TestProxy) -> String {
    match client.get(p.url("/m")).send().await {
        Ok(r) if r.status() == 200 => r.text().await.unwrap_or_default(),
        Ok(r) => format!("status {}", r.status()),
        Err(e) => format!("error {e}"),
    }
}

/// Poll until the proxy answers `want`; generous deadline for a busy box.
async fn wait_body(client: &reqwest::Client, p: &TestProxy, want: &str) -> Duration {
    let start = Instant::now();
    loop {
        let got = body(client, p).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "still {got:?} instead of {want:?} after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_address_is_followed_without_a_restart() {
    let _forget = Forget;
    let (a, b, port) = two_addresses().await;
    testing::set_host(HOST, &[a]);
    let yaml = format!(
        r#"
upstreams:
  moving:
    targets: ["{HOST}:{port}"]
    resolve_interval: 1s
routes:
  - name: m
    match: {{ path_prefix: /m }}
    upstream: moving
    auth: none
"#
    );
    let p = TestProxy::start(&yaml, Store::Sqlite)
        .await
        .expect("sqlite");
    let client = reqwest::Client::new();
    wait_body(&client, &p, "a").await;

    // The record changes: the same running proxy goes to the new address.
    testing::set_host(HOST, &[b]);
    let took = wait_body(&client, &p, "b").await;
    println!("followed the new address after {took:?}");
    for _ in 0..20 {
        assert_eq!(body(&client, &p).await, "b", "only the new address");
    }

    // The name stops resolving: the pool keeps its last addresses, and the
    // failed lookups are counted.
    let errors = |text: &str| metric_value(text, "tollgate_upstream_resolve_errors_total", &[]);
    let before = errors(&p.metrics_text().await);
    testing::set_host(HOST, &[]);
    let start = Instant::now();
    while errors(&p.metrics_text().await) <= before {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no failed lookup counted"
        );
        assert_eq!(body(&client, &p).await, "b");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..20 {
        assert_eq!(
            body(&client, &p).await,
            "b",
            "a failed lookup keeps the pool"
        );
    }
}
