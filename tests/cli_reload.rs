//! Config reloads of the admin side, through the real binary: `tollgate
//! admin` and `tollgate dev` follow their YAML as the proxy does, and a
//! reload refused for a database plan applies once that plan is gone.

use std::time::{Duration, Instant};

use crate::common::cli::{check_config, KillOnDrop};
use crate::common::{tollgate, write_config, Dev, Ports};

#[test]
fn the_admin_role_reloads_its_config_like_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = Ports::new();
    let config = write_config(dir.path(), &ports, &[]);
    let _admin = KillOnDrop(
        tollgate()
            .arg("admin")
            .arg("--config")
            .arg(&config)
            .env("TOLLGATE_ADMIN_PASSWORD", "admin-pass-123")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn admin"),
    );
    let base = format!("http://127.0.0.1:{}", ports.admin);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(the_admin_api_follows_its_yaml(
        &base,
        &config,
        "admin-pass-123",
    ));
}

/// Round 10 (black-box): `tollgate dev` (proxy and admin API in one
/// process) reloads the admin side's config as `tollgate admin` does: a plan
/// added to the YAML is listed, usable for keys, and not creatable in the
/// database (which would make the proxy refuse every later reload).
#[test]
fn dev_reloads_the_admin_apis_config_like_the_admin_role() {
    let dev = Dev::start(&[], &[("TOLLGATE_ADMIN_PASSWORD", "dev-pass-1234")]);
    let config = dev.dir.path().join("tollgate.yaml");
    let base = dev.admin_url("");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(the_admin_api_follows_its_yaml(
        &base,
        &config,
        "dev-pass-1234",
    ));
}

/// Log in at `base`, add a plan `gold` to `config` (written whole, then
/// renamed into place), and check the admin API follows: `gold` is listed,
/// a key may name it, `POST /api/plans` of that name is a 409; an emptied
/// file is refused and the plan stays.
async fn the_admin_api_follows_its_yaml(base: &str, config: &std::path::Path, password: &str) {
    let client = reqwest::Client::new();
    let start = Instant::now();
    let token = loop {
        let r = client
            .post(format!("{base}/api/auth/login"))
            .json(&serde_json::json!({"username": "admin", "password": password}))
            .send()
            .await;
        if let Ok(r) = r {
            if r.status() == 200 {
                let v: serde_json::Value = r.json().await.expect("json");
                break v["token"].as_str().expect("token").to_string();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "admin not up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let plans = || async {
        let v: serde_json::Value = client
            .get(format!("{base}/api/plans"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("plans")
            .json()
            .await
            .expect("json");
        let items = v.get("items").cloned().unwrap_or(v);
        items
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["name"].as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let post = |path: &'static str, body: serde_json::Value| {
        let req = client
            .post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body);
        async move {
            let r = req.send().await.expect("post");
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
    };
    assert!(!plans().await.contains(&"gold".to_string()));
    let (status, body) = post(
        "/api/keys",
        serde_json::json!({"name": "g", "plan": "gold"}),
    )
    .await;
    assert_eq!(status, 422, "a plan defined nowhere yet: {body}");

    let text = std::fs::read_to_string(config).expect("config");
    let edited = text.replacen(
        "plans:\n",
        "plans:\n  gold: { limits: [ { name: m, rate: 5, per: 1m } ] }\n",
        1,
    );
    assert_ne!(edited, text);
    let next = config.with_extension("yaml.next");
    std::fs::write(&next, &edited).expect("write");
    std::fs::rename(&next, config).expect("rename");
    let start = Instant::now();
    while !plans().await.contains(&"gold".to_string()) {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "gold never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = post(
        "/api/plans",
        serde_json::json!({"name": "gold", "limits": [{"name": "m", "rate": 1, "per": "1s"}]}),
    )
    .await;
    assert_eq!(status, 409, "the YAML defines gold: {body}");
    assert!(body.contains("YAML"), "{body}");
    let (status, body) = post(
        "/api/keys",
        serde_json::json!({"name": "g", "plan": "gold"}),
    )
    .await;
    assert_eq!(status, 201, "a key on the YAML plan: {body}");

    // An emptied file is refused: the plans stay.
    std::fs::write(config, "").expect("truncate");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(plans().await.contains(&"gold".to_string()));
}

/// Black-box round 11: a YAML edit refused because the database holds a
/// plan of the same name stayed refused after that plan was deleted, until
/// the file was edited again. Both sides of `dev` now check a refused file
/// again every few seconds: once the database plan is gone, the YAML plan
/// is served (admin API: listed as the config's; proxy: a reload counted).
#[test]
fn a_reload_refused_for_a_database_plan_applies_once_that_plan_is_deleted() {
    let dev = Dev::start(&[], &[("TOLLGATE_ADMIN_PASSWORD", "dev-pass-1234")]);
    let config = dev.dir.path().join("tollgate.yaml");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::new();
        let start = Instant::now();
        while client.get(dev.admin_url("/healthz")).send().await.is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "admin not up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let token = dev.login(&client, "dev-pass-1234").await;
        let source_of_plat = || async {
            let v: serde_json::Value = client
                .get(dev.admin_url("/api/plans"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("plans")
                .json()
                .await
                .expect("json");
            let items = v.get("items").cloned().unwrap_or(v);
            items.as_array().and_then(|a| {
                a.iter()
                    .find(|p| p["name"] == "plat")
                    .map(|p| p["source"].as_str().unwrap_or_default().to_string())
            })
        };
        let r = client
            .post(dev.admin_url("/api/plans"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": "plat", "limits": [{"name": "m", "rate": 1, "per": "1s"}]}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 201);
        let text = std::fs::read_to_string(&config).expect("config");
        let edited = text.replacen(
            "plans:\n",
            "plans:\n  plat: { limits: [ { name: m, rate: 5, per: 1m } ] }\n",
            1,
        );
        let next = config.with_extension("yaml.next");
        std::fs::write(&next, &edited).expect("write");
        std::fs::rename(&next, &config).expect("rename");
        let metrics = format!("http://127.0.0.1:{}/metrics", dev.ports.metrics);
        let reloads = |result: &'static str| {
            let (client, metrics) = (client.clone(), metrics.clone());
            async move {
                let text = client
                    .get(&metrics)
                    .send()
                    .await
                    .expect("metrics")
                    .text()
                    .await
                    .expect("text");
                let line = format!("tollgate_config_reloads_total{{result=\"{result}\"}} ");
                text.lines()
                    .find_map(|l| l.strip_prefix(&line))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            }
        };
        // Refused on both sides: the proxy counts it, the plan stays the API's.
        let start = Instant::now();
        while reloads("failed").await == 0 {
            assert!(start.elapsed() < Duration::from_secs(15), "never refused");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(source_of_plat().await.as_deref(), Some("api"));
        // Round 12: check-config refuses it too, with the reload's message.
        let (ok, out, err) = check_config(&config, &[]);
        assert!(!ok, "{out}");
        assert!(
            err.contains(&format!(
                "{}: plan \"plat\" is defined both in the YAML config and in the database",
                config.display()
            )),
            "{err}"
        );
        let ok_before = reloads("ok").await;
        let r = client
            .delete(dev.admin_url("/api/plans/plat"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("delete");
        assert!(r.status().is_success(), "{}", r.status());
        // No edit of the file: within two retry intervals both sides apply it.
        let start = Instant::now();
        while source_of_plat().await.as_deref() != Some("config")
            || reloads("ok").await == ok_before
        {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the refused file was never applied: {:?}, {} ok reloads",
                source_of_plat().await,
                reloads("ok").await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (ok, out, err) = check_config(&config, &[]);
        assert!(ok && out.contains("ok:"), "{out}{err}");
        assert!(!err.contains("database not checked"), "{err}");
    });
}
