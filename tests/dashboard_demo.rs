//! `tollgate dev --demo-traffic`: the generator's allowed requests, 429s,
//! 401s and 403s show up in the analytics on their own. With
//! `$TOLLGATE_SCREENSHOT_DIR` set it also takes the README's screenshots
//! there after a minute of demo traffic (`TOLLGATE_SCREENSHOT_DIR=docs/screenshots
//! cargo test --test integration dashboard_demo::`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::browser::{start_driver, target_cells, Ui, FAST_FLUSH, PASSWORD, SERIAL};
use crate::common::Dev;
use serde_json::Value;

/// `tollgate dev --demo-traffic` (here through its environment variable):
/// allowed requests, 429s, 401s and 403s show up in the analytics on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_traffic_feeds_the_dashboard() {
    let _serial = SERIAL.lock().await;
    let dev = Dev::start(
        &[FAST_FLUSH],
        &[
            ("TOLLGATE_ADMIN_PASSWORD", PASSWORD),
            ("TOLLGATE_DEMO_TRAFFIC", "1"),
        ],
    );
    let http = reqwest::Client::new();
    let token = dev.login(&http, PASSWORD).await;
    let start = Instant::now();
    let summary = loop {
        let s: Value = http
            .get(dev.admin_url("/api/analytics/summary"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("summary")
            .json()
            .await
            .expect("json");
        let n = |f: &str| s[f].as_i64().unwrap_or(0);
        if n("allowed") > 5 && n("limited") > 0 && n("unauthorized") > 0 && n("forbidden") > 0 {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "demo traffic did not produce allowed, 429, 401 and 403 within 60 s: {s}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        summary["active_keys"].as_i64().unwrap_or(0) >= 2,
        "{summary}"
    );

    // With TOLLGATE_SCREENSHOT_DIR: the README's screenshots, after some traffic.
    let Some(dir) = std::env::var_os("TOLLGATE_SCREENSHOT_DIR") else {
        return;
    };
    let Some(driver) = start_driver().await else {
        return;
    };
    let wait: u64 = std::env::var("TOLLGATE_SCREENSHOT_WAIT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    tokio::time::sleep(Duration::from_secs(
        wait.saturating_sub(start.elapsed().as_secs()),
    ))
    .await;
    let ui = Ui::open(&driver, &dev, PathBuf::from(dir)).await;
    ui.goto("/login").await;
    ui.shot("login").await;
    ui.login(PASSWORD).await;
    ui.wait_for("[data-metric=total]:not(.loading)").await;
    ui.click("[data-range='15m']").await;
    ui.wait("the 15 min figures", 10, "return document.querySelector('[data-range=\"15m\"]').getAttribute('aria-pressed') === 'true' && !document.querySelector('.metric.loading')").await;
    // Tall enough for the whole page.
    ui.c.set_window_size(1280, 1480).await.expect("resize");
    ui.shot("overview").await;
    ui.c.set_window_size(390, 844).await.expect("resize");
    ui.shot("overview-phone").await;
    ui.c.set_window_size(1280, 900).await.expect("resize");
    ui.click("nav a[href='/keys']").await;
    ui.wait_for("#keys-table tr[data-key-id]").await;
    ui.click("#new-key").await;
    ui.type_into("#f-name", "mobile app").await;
    ui.type_into("#f-owner", "team-ios").await;
    ui.shot("key-create").await;
    ui.click("#create-dialog [data-testid=create]").await;
    ui.wait_for("#secret-dialog[open]").await;
    ui.shot("key-created").await;
    ui.click("#secret-dialog [data-testid=done]").await;
    ui.wait("the new key's row", 10, "return [...document.querySelectorAll('#keys-table .key-name')].some(b => b.textContent === 'mobile app')").await;
    ui.shot("keys").await;
    ui.js("[...document.querySelectorAll('#keys-table .key-name')].find(b => b.textContent === 'demo').click()").await;
    ui.wait("the key's usage", 10, "const d = document.querySelector('#details-dialog .stats-grid'); return d && d.textContent.includes('Requests')").await;
    ui.shot("key-usage").await;
    ui.click("#details-dialog [aria-label=Close]").await;
    ui.click("nav a[href='/monitoring']").await;
    ui.wait_for("#instances-table tr[data-instance]").await;
    target_cells(&ui, dev.ports.upstream).await;
    ui.shot("monitoring").await;
    let errors = ui.console_errors().await;
    assert!(errors.is_empty(), "browser console errors: {errors:#?}");
    ui.c.close().await.expect("close the session");
}
