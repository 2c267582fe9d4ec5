//! Config edits and refusals, proved against the real `tollgate proxy`:
//! unsafe edits (truncated, emptied, deleted, a named pipe) are never
//! applied, and missing or doubly defined plans fail closed.

use std::time::{Duration, Instant};

use crate::common::faults::*;
use crate::common::proxy::Proxy;
use crate::common::{free_port, tollgate};
use tollgate_core::db::NewApiKey;

/// Truncated, emptied, half-written and deleted config files never replace
/// the running config; each refusal is counted; a good edit still applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_config_edits_are_never_applied() {
    let up = Upstream::start("u", free_port()).await;
    let (dir, db) = sqlite().await;
    let yaml = format!(
        "upstreams:\n  u: {{ targets: [\"127.0.0.1:{}\"] }}\nroutes:\n  - name: a\n    match: {{ path_prefix: /a }}\n    upstream: u\n    auth: none\n  - name: b\n    match: {{ path_prefix: /b }}\n    upstream: u\n    auth: none\n",
        up.port
    );
    let p = Proxy::start(dir, db.url(), "", &yaml).await;
    let full = std::fs::read_to_string(&p.config).expect("config");
    let client = reqwest::Client::new();
    let both_served = || async {
        get(&client, &p.url("/a"), None).await.status() == 200
            && get(&client, &p.url("/b"), None).await.status() == 200
    };
    assert!(both_served().await);
    let count = |m: &str, r: &str| {
        metric_value(
            m,
            "tollgate_config_reloads_total",
            &[&format!("result=\"{r}\"")],
        )
    };

    // Emptied (a failed `cmd > tollgate.yaml`): refused, counted.
    let m0 = p.metrics().await;
    std::fs::write(&p.config, "").expect("truncate");
    wait_for("empty file refused", Duration::from_secs(15), || async {
        count(&p.metrics().await, "failed") > count(&m0, "failed")
    })
    .await;
    assert!(both_served().await);
    // Cut before the routes: also no routes, refused.
    let m1 = p.metrics().await;
    let cut = &full[..full.find("routes:").expect("routes")];
    std::fs::write(&p.config, cut).expect("cut");
    wait_for("cut file refused", Duration::from_secs(15), || async {
        count(&p.metrics().await, "failed") > count(&m1, "failed")
    })
    .await;
    assert!(both_served().await);

    // Deleted: logged and counted as unreadable, the config stays.
    std::fs::remove_file(&p.config).expect("rm");
    wait_for("deleted file counted", Duration::from_secs(15), || async {
        count(&p.metrics().await, "unreadable") >= 1.0
    })
    .await;
    assert!(both_served().await);

    // Half written (route b cut off), completed 300 ms later: the half
    // file never applies, so /b never stops being served.
    let ok_before = count(&p.metrics().await, "ok");
    let half = &full[..full.find("  - name: b").expect("route b")];
    std::fs::write(&p.config, half).expect("half");
    let written = Instant::now();
    let mut completed = false;
    while written.elapsed() < Duration::from_millis(2_500) {
        if !completed && written.elapsed() >= Duration::from_millis(300) {
            let edited = full.replace("path_prefix: /a", "path_prefix: /a2");
            std::fs::write(&p.config, edited).expect("complete");
            completed = true;
        }
        assert_eq!(get(&client, &p.url("/b"), None).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for("the completed edit", Duration::from_secs(15), || async {
        get(&client, &p.url("/a2"), None).await.status() == 200
    })
    .await;
    assert_eq!(get(&client, &p.url("/b"), None).await.status(), 200);
    assert_eq!(count(&p.metrics().await, "ok"), ok_before + 1.0);
}

/// A key whose plan exists nowhere is refused (403 unknown-plan) and
/// counted, never served with some other plan's limits; plan names defined
/// in the YAML and in the database at once stop the proxy from starting
/// and refuse a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_doubly_defined_plans_fail_closed() {
    let up = Upstream::start("u", free_port()).await;
    let (dir, db) = sqlite().await;
    let yaml = keyed_yaml(up.port);
    let p = Proxy::start(dir, db.url(), "", &yaml).await;
    let (_, orphan) = db
        .create_key(&NewApiKey {
            name: "orphan".into(),
            plan: Some("gold".into()),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    let client = reqwest::Client::new();
    wait_for("the new key is known", Duration::from_secs(10), || async {
        let r = get(&client, &p.url("/api/x"), Some(&orphan)).await;
        r.status() == 403 && problem_type(r).await.ends_with("/unknown-plan")
    })
    .await;
    for _ in 0..5 {
        let r = get(&client, &p.url("/api/x"), Some(&orphan)).await;
        assert_eq!(r.status(), 403);
        assert!(problem_type(r).await.ends_with("/unknown-plan"));
    }
    assert!(metric_value(&p.metrics().await, "tollgate_unknown_plan_total", &[]) >= 5.0);
    assert_eq!(up.hits(), 0, "nothing forwarded");

    // A database plan named like a YAML plan: a reload adding it is refused.
    let limit = tollgate_core::limits::Limit {
        name: "m".into(),
        rate: 1000,
        per: Duration::from_secs(60),
        burst: None,
        cost: None,
        quota: None,
        scope: Default::default(),
    };
    db.create_plan("gold", std::slice::from_ref(&limit), None)
        .await
        .expect("db plan");
    wait_for(
        "the plan serves the key",
        Duration::from_secs(10),
        || async { get(&client, &p.url("/api/x"), Some(&orphan)).await.status() == 200 },
    )
    .await;
    let m0 = p.metrics().await;
    let text = std::fs::read_to_string(&p.config).expect("config");
    let doubled = text.replace(
        "plans:\n",
        "plans:\n  gold: { limits: [ { name: m, rate: 1, per: 1m } ] }\n",
    );
    assert_ne!(doubled, text);
    std::fs::write(&p.config, &doubled).expect("write");
    wait_for("reload refused", Duration::from_secs(15), || async {
        metric_value(
            &p.metrics().await,
            "tollgate_config_reloads_total",
            &["result=\"failed\""],
        ) > metric_value(&m0, "tollgate_config_reloads_total", &["result=\"failed\""])
    })
    .await;
    assert_eq!(
        get(&client, &p.url("/api/x"), Some(&orphan)).await.status(),
        200
    );

    // Started on that file, the proxy refuses and names the plan.
    let out = tollgate()
        .arg("proxy")
        .arg("--config")
        .arg(&p.config)
        .output()
        .expect("run proxy");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"gold\"") && err.contains("both"), "{err}");
}

/// The config path briefly becomes a named pipe (or any non-regular file):
/// nothing waits for a writer. The reload counts it as unreadable, and the
/// other background work goes on meanwhile: a key disabled while the pipe is
/// there is refused within the key refresh, and once the file is back an edit
/// applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_pipe_in_place_of_the_config_stalls_nothing() {
    let up = Upstream::start("u", free_port()).await;
    let (dir, db) = sqlite().await;
    let (key, plain) = db.create_key(&named("fifo")).await.expect("key");
    let yaml = format!(
        "upstreams:\n  u: {{ targets: [\"127.0.0.1:{}\"] }}\nroutes:\n  - name: a\n    match: {{ path_prefix: /a }}\n    upstream: u\n",
        up.port
    );
    let p = Proxy::start(dir, db.url(), "", &yaml).await;
    let full = std::fs::read_to_string(&p.config).expect("config");
    let client = reqwest::Client::new();
    assert_eq!(
        get(&client, &p.url("/a"), Some(plain.as_str()))
            .await
            .status(),
        200
    );

    std::fs::remove_file(&p.config).expect("rm");
    let made = std::process::Command::new("mkfifo")
        .arg(&p.config)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    wait_for(
        "the pipe counted as unreadable",
        Duration::from_secs(15),
        || async {
            metric_value(
                &p.metrics().await,
                "tollgate_config_reloads_total",
                &["result=\"unreadable\""],
            ) >= 1.0
        },
    )
    .await;
    // Revocations still reach the proxy while the pipe is there.
    db.set_key_enabled(key.id, false).await.expect("disable");
    wait_for(
        "the disabled key refused",
        Duration::from_secs(15),
        || async {
            get(&client, &p.url("/a"), Some(plain.as_str()))
                .await
                .status()
                == 403
        },
    )
    .await;

    // The file back, with an edit: applied.
    std::fs::remove_file(&p.config).expect("rm pipe");
    std::fs::write(
        &p.config,
        full.replace("path_prefix: /a", "path_prefix: /a2"),
    )
    .expect("restore");
    db.set_key_enabled(key.id, true).await.expect("enable");
    wait_for(
        "the edit after the pipe",
        Duration::from_secs(15),
        || async {
            get(&client, &p.url("/a2"), Some(plain.as_str()))
                .await
                .status()
                == 200
        },
    )
    .await;
}
