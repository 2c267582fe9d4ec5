//! A viewer in the dashboard, in a real headless Chromium against the real
//! `tollgate dev`: the data is shown, no action that changes a key is
//! offered, and the API refuses what the page does not offer.

use crate::common::browser::{
    check_serving, screenshot_dir, start_driver, ui_session, Ui, FAST_FLUSH, PASSWORD, SERIAL,
};
use crate::common::Dev;
use serde_json::{json, Value};

/// A viewer in the dashboard: sees the overview, the keys and monitoring,
/// is offered no action that changes a key (and no Audit page), and the API
/// refuses what the page does not offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_data_but_cannot_change_keys() {
    const VIEWER_PASSWORD: &str = "plum tangent oyster 41";
    let _serial = SERIAL.lock().await;
    let Some(driver) = start_driver().await else {
        return;
    };
    let dev = Dev::start(&[FAST_FLUSH], &[("TOLLGATE_ADMIN_PASSWORD", PASSWORD)]);
    check_serving(&dev).await;
    let http = reqwest::Client::new();
    let owner = dev.login(&http, PASSWORD).await;
    let res = http
        .post(dev.admin_url("/api/admins"))
        .bearer_auth(&owner)
        .json(&json!({"username": "vera", "password": VIEWER_PASSWORD, "role": "viewer"}))
        .send()
        .await
        .expect("create viewer");
    assert_eq!(res.status(), 201);

    let shots = screenshot_dir("viewer");
    let ui = Ui::open(&driver, &dev, shots.clone()).await;
    ui.goto("/").await;
    ui.wait_for("#login-submit").await;
    ui.login_as("vera", VIEWER_PASSWORD).await;
    // The overview with its figures.
    ui.wait_for("[data-metric=total]:not(.loading)").await;
    let who = ui.text("#whoami").await;
    assert!(who.contains("vera") && who.contains("viewer"), "{who}");
    assert_eq!(
        ui.js("return document.querySelector('#nav-audit').hidden")
            .await,
        Value::Bool(true),
        "the Audit page is offered to a viewer"
    );
    // The keys, without a way to change them.
    ui.click("nav a[href='/keys']").await;
    ui.wait("the demo key row", 10, "return [...document.querySelectorAll('#keys-table .key-name')].some(b => b.textContent === 'demo')").await;
    let offered = ui
        .js("return [!!document.querySelector('#new-key'), document.querySelectorAll('#keys-table [data-action=disable], #keys-table [data-action=enable], #keys-table [data-action=rotate], #keys-table [data-action=delete], #keys-table [data-action=edit]').length]")
        .await;
    assert_eq!(offered, json!([false, 0]), "actions offered to a viewer");
    ui.shot("viewer-keys").await;
    // Monitoring shows the details (a viewer's token gets them). A row with
    // times no JavaScript Date holds (the proxies' database role writes that
    // table; round 18 re-check) leaves the page whole: the running proxy's
    // row and the odd one are both shown.
    let url = format!("sqlite://{}", dev.dir.path().join("t.db").display());
    let db = tollgate_core::db::Db::connect(&url)
        .await
        .expect("the dev database");
    sqlx::query(
        "INSERT INTO instances (id, address, version, started_at, last_seen, beat_every_ms, \
         upstream_health) VALUES ('far-times', 'x', '0', $1, $2, 1000, $3)",
    )
    .bind(i64::MIN)
    .bind(i64::MAX)
    .bind(r#"[{"upstream":"demo","target":"far:1","healthy":true,"up_since":9223372036854775807}]"#)
    .execute(db.pool())
    .await
    .expect("an instance row with far times");
    db.close().await;
    ui.click("nav a[href='/monitoring']").await;
    ui.wait_for("#instances-table").await;
    ui.wait(
        "the running proxy beside a row with far times",
        20,
        "const rows = [...document.querySelectorAll('#instances-table tbody tr[data-instance]')]; \
         return rows.some(r => r.dataset.instance === 'far-times') \
           && rows.some(r => r.dataset.instance !== 'far-times' && r.textContent.includes('Up'))",
    )
    .await;
    // What the page does not offer, the API refuses.
    let session = ui_session(&ui).await;
    let viewer = session["token"].as_str().expect("token").to_string();
    let res = http
        .post(dev.admin_url("/api/keys"))
        .bearer_auth(&viewer)
        .json(&json!({"name": "sneaky"}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 403);
    let keys: Value = http
        .get(dev.admin_url("/api/keys"))
        .bearer_auth(&viewer)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let demo = keys["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|k| k["name"] == "demo")
        .expect("demo key")["id"]
        .as_i64()
        .expect("id");
    let res = http
        .patch(dev.admin_url(&format!("/api/keys/{demo}")))
        .bearer_auth(&viewer)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 403);
    ui.click("#logout").await;
    ui.wait(
        "the login page",
        10,
        "return location.pathname === '/login'",
    )
    .await;
    let status = http
        .get(dev.admin_url("/api/keys"))
        .bearer_auth(&viewer)
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status, 401, "the logged-out token still works");
    let errors = ui.console_errors().await;
    assert!(errors.is_empty(), "browser console errors: {errors:#?}");
    ui.c.close().await.expect("close the session");
}
