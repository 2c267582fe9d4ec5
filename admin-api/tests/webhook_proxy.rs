//! Webhook deliveries never go through an `HTTP_PROXY` (round 6, F1): a
//! proxy resolves the endpoint's name itself, out of reach of the worker's
//! resolver that drops link-local answers. Its own test binary: the
//! variable is read by every HTTP client of the process.

#[path = "api/common.rs"]
#[allow(dead_code, unused_imports, unused_macros)]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_do_not_go_through_an_http_proxy() {
    // A forward proxy that would "deliver" anything: it answers 200 to
    // every request it is sent.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy_addr = proxy.local_addr().expect("addr");
    let used = Arc::new(AtomicUsize::new(0));
    let seen = used.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = proxy.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
    ] {
        std::env::set_var(var, format!("http://{proxy_addr}"));
    }
    // The test's own calls to the admin API go direct.
    std::env::set_var("NO_PROXY", "127.0.0.1,localhost");
    std::env::set_var("no_proxy", "127.0.0.1,localhost");
    let metadata: std::net::IpAddr = "169.254.169.254".parse().expect("ip");
    tollgate_core::net::test_hosts::set_host("only-metadata.proxy.test", &[metadata]);

    let app = TestApp::sqlite().await;
    let id = app
        .create_webhook(
            &json!({"url": "http://only-metadata.proxy.test:9/hook", "events": ["key.disabled"]}),
        )
        .await;
    app.press_test(id).await;
    let log = until(&app, id, |v| v["items"][0]["attempts"] == 1).await;
    let attempt = &log["items"][0]["log"][0];
    assert_eq!(attempt["succeeded"], false, "{log}");
    assert!(
        attempt["error"]
            .as_str()
            .unwrap_or_default()
            .contains("link-local"),
        "{log}"
    );
    assert_eq!(used.load(Ordering::SeqCst), 0, "the proxy was used: {log}");
}
