//! The dashboard tests' harness: chromedriver and headless Chromium, a page
//! under test (`Ui`), the served files' checks, and the one lock that keeps
//! the browser tests of `dashboard.rs`, `dashboard_viewer.rs` and
//! `dashboard_demo.rs` from running at the same time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, Dev};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

pub const PASSWORD: &str = "dashboard-e2e-password";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The test config: usage flushed every 200 ms, so the overview can follow.
pub const FAST_FLUSH: (&str, &str) = ("log:\n", "usage:\n  flush_interval: 200ms\nlog:\n");

/// The dashboard tests start a browser and a gateway each: one at a time
/// on a 2-core machine (every `dashboard*` file holds this one lock).
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------
// chromedriver + Chromium

pub struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start chromedriver on a free port, or `None` (with a notice) when it or
/// Chromium is not installed and services are not required.
pub async fn start_driver() -> Option<Driver> {
    let have_driver = Command::new("chromedriver")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_driver || !Path::new(CHROMIUM).exists() {
        if tollgate_core::db::testing::services_required() {
            panic!("chromedriver or {CHROMIUM} is missing: run scripts/services");
        }
        eprintln!("notice: chromedriver or {CHROMIUM} is missing; skipping the browser test (run scripts/services)");
        return None;
    }
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromedriver");
    let driver = Driver {
        child,
        port,
        _profile: tempfile::tempdir().expect("profile dir"),
    };
    let status = format!("http://127.0.0.1:{port}/status");
    let start = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(&status).await {
            if r.json::<Value>()
                .await
                .is_ok_and(|v| v["value"]["ready"] == true)
            {
                return Some(driver);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A page under test: the browser session and where the gateway is.
pub struct Ui {
    pub c: Client,
    driver_port: u16,
    session: String,
    admin: String,
    shots: PathBuf,
}

impl Ui {
    pub async fn open(driver: &Driver, dev: &Dev, shots: PathBuf) -> Self {
        let profile = driver._profile.path().display().to_string();
        let caps = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--hide-scrollbars", "--window-size=1280,900",
                    format!("--user-data-dir={profile}"),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            panic!("capabilities are an object")
        };
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("WebDriver session");
        let session = c
            .session_id()
            .await
            .expect("session id")
            .expect("a session");
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        Self {
            c,
            driver_port: driver.port,
            session,
            admin: dev.admin_url(""),
            shots,
        }
    }

    pub async fn goto(&self, path: &str) {
        self.c
            .goto(&format!("{}{path}", self.admin))
            .await
            .expect("goto");
    }

    pub async fn js(&self, script: &str) -> Value {
        self.c
            .execute(script, vec![])
            .await
            .expect("execute script")
    }

    /// Poll `script` (a function body returning a value) until it returns
    /// something truthy; panic with `what` and the last value after `secs`.
    pub async fn wait(&self, what: &str, secs: u64, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.js(script).await;
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if start.elapsed() > Duration::from_secs(secs) {
                let _ = self.shot("failure").await;
                panic!(
                    "timed out after {secs} s waiting for {what} (last value {v}); url {:?}",
                    self.c.current_url().await.map(|u| u.to_string())
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_for(&self, css: &str) {
        let script = format!("return !!document.querySelector({css:?})");
        self.wait(&format!("`{css}`"), 10, &script).await;
    }

    /// Click the element; if the live refresh re-rendered it between finding
    /// and clicking (a stale element), find it again, a few times.
    pub async fn click(&self, css: &str) {
        let mut attempt = 0;
        loop {
            self.wait_for(css).await;
            let el = self.c.find(Locator::Css(css)).await.expect("element");
            match el.click().await {
                Ok(_) => return,
                Err(e) if attempt < 5 && e.to_string().contains("stale element") => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        self.wait_for(css).await;
        let el = self.c.find(Locator::Css(css)).await.expect("element");
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("type");
    }

    pub async fn text(&self, css: &str) -> String {
        self.wait_for(css).await;
        self.c
            .find(Locator::Css(css))
            .await
            .expect("element")
            .text()
            .await
            .expect("text")
    }

    pub async fn path(&self) -> String {
        self.c.current_url().await.expect("url").path().to_string()
    }

    pub async fn shot(&self, name: &str) -> PathBuf {
        // Let charts and transitions settle.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let png = self.c.screenshot().await.expect("screenshot");
        let file = self.shots.join(format!("{name}.png"));
        std::fs::write(&file, png).expect("write screenshot");
        file
    }

    /// The browser's console and network log since the last call, SEVERE only.
    pub async fn console_errors(&self) -> Vec<String> {
        let url = format!(
            "http://127.0.0.1:{}/session/{}/se/log",
            self.driver_port, self.session
        );
        let v: Value = reqwest::Client::new()
            .post(url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .expect("log request")
            .json()
            .await
            .expect("log json");
        v["value"]
            .as_array()
            .expect("log entries")
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Log in through the form.
    pub async fn login(&self, password: &str) {
        self.login_as("admin", password).await;
    }

    pub async fn login_as(&self, username: &str, password: &str) {
        self.type_into("#username", username).await;
        self.type_into("#password", password).await;
        self.click("#login-submit").await;
    }
}

/// The Monitoring page's uptime, latency and check round-trip cells of the
/// upstream target on `port`, once all three hold a figure.
pub async fn target_cells(ui: &Ui, port: u16) -> Vec<Value> {
    let script = format!(
        "const r = document.querySelector('#upstreams-table tr[data-target$=\":{port}\"]'); \
         if (!r) return ''; \
         const t = ['.c-uptime', '.c-latency', '.c-check'].map(c => r.querySelector(c).textContent.trim()); \
         return t.every(x => /\\d/.test(x)) ? t : ''"
    );
    ui.wait(
        "the target's uptime, latency and check round trip",
        20,
        &script,
    )
    .await
    .as_array()
    .cloned()
    .unwrap_or_default()
}

/// The dashboard's session (token, role) as the browser keeps it.
pub async fn ui_session(ui: &Ui) -> Value {
    serde_json::from_str(
        ui.js("return sessionStorage.getItem('tollgate.session')")
            .await
            .as_str()
            .expect("a session"),
    )
    .expect("session json")
}

pub fn screenshot_dir(sub: &str) -> PathBuf {
    match std::env::var_os("TOLLGATE_SCREENSHOT_DIR") {
        Some(d) => PathBuf::from(d).join(sub),
        None => {
            std::env::temp_dir().join(format!("tollgate-dashboard-{}-{sub}", std::process::id()))
        }
    }
}

// ---------------------------------------------------------------------------

/// The served files: content types, caching, the security headers, SPA
/// fallback, and the API's own 404s left alone.
pub async fn check_serving(dev: &Dev) {
    let client = reqwest::Client::new();
    let r = client.get(dev.admin_url("/")).send().await.expect("GET /");
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().expect("csp");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-cache");
    let body = r.text().await.expect("body");
    assert!(
        !has_inline_script(&body),
        "inline script or event handler in {body}"
    );
    let etag = h["etag"].to_str().expect("etag").to_string();
    let r = client
        .get(dev.admin_url("/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("conditional GET");
    assert_eq!(r.status(), 304);

    let r = client
        .get(dev.admin_url("/js/app.js"))
        .send()
        .await
        .expect("js");
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let r = client
        .get(dev.admin_url("/vendor/uplot-1.6.32/uPlot.iife.min.js"))
        .send()
        .await
        .expect("vendor");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["cache-control"]
        .to_str()
        .expect("cc")
        .contains("immutable"));

    // Page paths answer the page; unknown files and API paths stay problems.
    let r = client
        .get(dev.admin_url("/keys"))
        .send()
        .await
        .expect("page");
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    for path in ["/nothing.js", "/api/nothing-here"] {
        let r = client
            .get(dev.admin_url(path))
            .header("accept", "text/html")
            .send()
            .await
            .expect("404");
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let r = client
        .get(dev.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("metrics text");
    assert!(text.contains("tollgate_admin_build_info"), "{text}");
}

/// A `<script>` without `src`, or an `on…=` attribute.
pub fn has_inline_script(html: &str) -> bool {
    let lower = html.to_ascii_lowercase();
    let script_without_src = lower
        .match_indices("<script")
        .any(|(i, _)| !lower[i..].split('>').next().unwrap_or("").contains("src="));
    let handler = lower.match_indices(" on").any(|(i, _)| {
        let rest = &lower[i + 3..];
        let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
        !name.is_empty() && rest[name.len()..].trim_start().starts_with('=')
    });
    script_without_src || handler
}
