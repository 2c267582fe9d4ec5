//! `tollgate keys quota` and `tollgate identities quota` (issue #20, reset /
//! adjust a quota) through the real binary: recorded for the current
//! period and audited; bad input refused with the admin API's messages,
//! nothing written.

use crate::common::{tollgate, write_config, Ports};
use tollgate_core::quota::adjust::QuotaChange;

fn run(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = tollgate()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_cli_resets_and_adjusts_with_the_apis_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plans = "plans:\n  metered: { limits: [ { name: daily, quota: 5, period: day }, \
                 { name: monthly, quota: 50, period: month, scope: identity } ] }\n  free:";
    let config = write_config(dir.path(), &Ports::new(), &[("plans:\n  free:", plans)]);
    let ok = |args: &[&str]| {
        let (ok, out, err) = run(&config, args);
        assert!(ok, "{args:?}: {out}{err}");
        out
    };
    ok(&[
        "identities",
        "create",
        "--external-id",
        "cus_q",
        "--name",
        "Q",
        "--plan",
        "metered",
    ]);
    let out = ok(&["keys", "create", "--name", "m", "--plan", "metered"]);
    assert!(out.contains("created key 1"), "{out}");
    ok(&["keys", "create", "--name", "member", "--identity", "cus_q"]);

    let out = ok(&["keys", "quota", "1", "daily", "--reset"]);
    assert!(out.contains("quota daily reset"), "{out}");
    let out = ok(&["keys", "quota", "1", "daily", "--used-delta", "-2"]);
    assert!(out.contains("used -2"), "{out}");
    ok(&[
        "identities",
        "quota",
        "cus_q",
        "monthly",
        "--used-delta",
        "7",
    ]);

    for (args, message) in [
        (
            &["keys", "quota", "1", "daily"][..],
            "--reset: give reset: true or a used_delta",
        ),
        (
            &["keys", "quota", "1", "daily", "--used-delta", "0"][..],
            "--used-delta: must not be 0",
        ),
        (
            &[
                "keys",
                "quota",
                "1",
                "daily",
                "--used-delta",
                "1125899906842625",
            ][..],
            "--used-delta: must be between",
        ),
        (
            &[
                "keys",
                "quota",
                "1",
                "daily",
                "--reset",
                "--used-delta",
                "1",
            ][..],
            "give either reset or used_delta, not both",
        ),
        (
            &["keys", "quota", "1", "weekly", "--reset"][..],
            "no quota named \"weekly\"",
        ),
        (
            &["keys", "quota", "9", "daily", "--reset"][..],
            "no key with id 9",
        ),
        (
            &["keys", "quota", "1", "d\"x", "--reset"][..],
            "invalid limit name",
        ),
        (
            &["keys", "quota", "2", "monthly", "--reset"][..],
            "shared by the key's identity 1",
        ),
        (
            &["identities", "quota", "cus_q", "daily", "--reset"][..],
            "counts per key",
        ),
        (
            &["identities", "quota", "nobody", "monthly", "--reset"][..],
            "nobody",
        ),
    ] {
        let (ok, out, err) = run(&config, args);
        assert!(!ok, "{args:?} accepted: {out}");
        assert!(err.contains(message), "{args:?}: {err}");
    }

    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let db = tollgate_core::db::Db::connect(&url).await.expect("db");
    let rows = db.quota_adjustments_running(0).await.expect("rows");
    let changes: Vec<_> = rows.iter().map(|r| r.change).collect();
    assert_eq!(
        changes,
        [
            QuotaChange::Reset,
            QuotaChange::Delta(-2),
            QuotaChange::Delta(7)
        ]
    );
    assert!(rows[0].actor.starts_with("cli:"), "{}", rows[0].actor);
    let out = ok(&["audit", "list", "--action", "key.quota"]);
    assert_eq!(out.matches("key.quota").count(), 2, "{out}");
    db.close().await;
}
