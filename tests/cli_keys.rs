//! `tollgate keys …` and `tollgate audit list` against the configured
//! database, through the real binary: bad input is refused with the admin
//! API's rules and messages.

use crate::common::cli::{keys, sqlite_config};
use crate::common::tollgate;

#[test]
fn keys_cli_manages_keys_in_the_configured_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sqlite_config(dir.path());
    let (ok, out, err) = keys(
        &config,
        &[
            "create",
            "--name",
            "cli-key",
            "--plan",
            "pro",
            "--expires-in",
            "30d",
        ],
    );
    assert!(ok, "{out}{err}");
    let key = out
        .split_whitespace()
        .find(|w| w.starts_with("tg_") && w.len() > 30)
        .expect("full key printed once");
    assert_eq!(tollgate_core::keys::validate(key), Ok(()));
    let (ok, list, _) = keys(&config, &["list"]);
    assert!(ok);
    assert!(list.contains("cli-key") && list.contains("pro"), "{list}");
    assert!(!list.contains(key), "listing shows only a prefix");
    let id = list
        .lines()
        .find(|l| l.contains("cli-key"))
        .and_then(|l| l.split_whitespace().next())
        .expect("id column")
        .to_string();
    assert!(keys(&config, &["disable", &id]).0);
    assert!(keys(&config, &["list"]).1.contains("disabled"));
    assert!(keys(&config, &["enable", &id]).0);
    let (ok, rotated, _) = keys(&config, &["rotate", &id]);
    assert!(ok && rotated.contains("tg_") && !rotated.contains(key));
    assert!(keys(&config, &["delete", &id]).0);
    let (ok, _, err) = keys(&config, &["delete", &id]);
    assert!(!ok && !err.is_empty(), "deleting twice is an error");
    // Each change enqueued its webhook event, once (enabling has none).
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let events = rt.block_on(async {
        let db = tollgate_core::db::Db::connect(&url).await.expect("db");
        let e = db.recent_webhook_events(10).await.expect("events");
        db.close().await;
        e
    });
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["key.disabled", "key.rotated", "key.deleted"]);
    assert_eq!(events[2].1, format!("key.deleted:{id}:"));
}

#[test]
fn keys_create_refuses_a_plan_that_exists_nowhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sqlite_config(dir.path());
    let (ok, out, err) = keys(&config, &["create", "--name", "k", "--plan", "gold"]);
    assert!(!ok, "{out}");
    assert!(err.contains("unknown plan \"gold\""), "{err}");
    assert!(
        err.contains("free") && err.contains("pro"),
        "names the known plans: {err}"
    );
    assert!(!out.contains("tg_"), "no key was created: {out}");
    let (ok, list, _) = keys(&config, &["list"]);
    assert!(ok && list.contains("no keys"), "{list}");
    let (ok, out, err) = keys(&config, &["create", "--name", "k", "--plan", "free"]);
    assert!(ok, "{out}{err}");
}

/// `keys create` and `keys rotate` refuse what the admin API refuses, with
/// its messages (both call `tollgate_core::rules::keys`), naming the flag.
#[test]
fn keys_cli_refuses_what_the_api_refuses() {
    use tollgate_core::rules::keys as rules;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sqlite_config(dir.path());
    let long = "x".repeat(201);
    let message = |r: Result<(), String>| r.expect_err("refused by the rule");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["create", "--name", "   "],
            format!("--name: {}", message(rules::check_text("   ", false))),
        ),
        (
            vec!["create", "--name", &long],
            format!("--name: {}", message(rules::check_text(&long, false))),
        ),
        (
            vec!["create", "--name", "a\u{1}b"],
            format!("--name: {}", message(rules::check_text("a\u{1}b", false))),
        ),
        (
            vec!["create", "--name", "k", "--owner", &long],
            format!("--owner: {}", message(rules::check_text(&long, true))),
        ),
        (
            vec!["rotate", "1", "--grace", "31d"],
            format!(
                "--grace: {}",
                message(rules::check_grace(std::time::Duration::from_secs(
                    31 * 86_400
                )))
            ),
        ),
    ];
    for (args, expected) in cases {
        let (ok, out, err) = keys(&config, &args);
        assert!(!ok, "{args:?} accepted: {out}");
        assert!(
            err.contains(&expected),
            "{args:?}: expected {expected:?} in {err}"
        );
        assert!(!out.contains("tg_"), "no key was created: {out}");
    }
    let (ok, list, _) = keys(&config, &["list"]);
    assert!(ok && list.contains("no keys"), "{list}");
    // Surrounding spaces are trimmed, as the API trims them.
    let (ok, out, err) = keys(&config, &["create", "--name", "  padded  "]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("name:    padded\n"), "{out}");
}

/// `tollgate audit list --limit 0` showed one event (the limit was clamped to
/// 1). The admin API refuses `per_page=0` (422 naming it), so the CLI
/// refuses `--limit 0` (and what is out of 1..=100000) with clap's error,
/// as any invalid flag value, instead of showing something else.
#[test]
fn audit_list_refuses_a_limit_the_api_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sqlite_config(dir.path());
    for name in ["a", "b", "c"] {
        let (ok, out, err) = keys(&config, &["create", "--name", name]);
        assert!(ok, "{out}{err}");
    }
    let audit = |limit: &str| {
        let out = tollgate()
            .args(["audit", "list", &format!("--limit={limit}"), "--config"])
            .arg(&config)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for bad in ["0", "-1", "100001", "x"] {
        let (code, out, err) = audit(bad);
        assert_eq!(code, Some(2), "--limit {bad} accepted: {out}{err}");
        assert!(out.is_empty(), "--limit {bad} showed events: {out}");
        assert!(
            err.contains(&format!("invalid value '{bad}' for '--limit <LIMIT>'")),
            "{err}"
        );
    }
    let (code, out, err) = audit("2");
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(err.contains("(2 of 3 shown; use --limit)"), "{err}");
    let (code, out, _) = audit("100000");
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 3, "{out}");
}

/// Issue #21: `keys create/update --routes --methods --allowed-ips`, stored
/// normalised, and refused with the admin API's messages.
#[test]
fn keys_cli_sets_scopes_and_networks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sqlite_config(dir.path());
    let (ok, out, err) = keys(
        &config,
        &[
            "create",
            "--name",
            "scoped",
            "--routes",
            "users,billing-*",
            "--methods",
            "get",
            "--methods",
            "head",
            "--allowed-ips",
            "10.1.2.3/8",
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("routes:  users,billing-*\n"), "{out}");
    assert!(out.contains("methods: GET,HEAD\n"), "{out}");
    assert!(out.contains("from:    10.0.0.0/8\n"), "{out}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("created key "))
        .expect("id")
        .trim()
        .to_string();
    let (ok, out, err) = keys(&config, &["update", &id, "--methods", "POST"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("routes:  users,billing-*\n") && out.contains("methods: POST\n"),
        "{out}"
    );
    let (ok, out, err) = keys(
        &config,
        &["update", &id, "--clear-scopes", "--clear-allowed-ips"],
    );
    assert!(ok, "{out}{err}");
    assert!(!out.contains("routes:") && !out.contains("from:"), "{out}");
    let (ok, json, _) = keys(&config, &["list", "--json"]);
    assert!(ok && json.contains("\"scopes\": null"), "{json}");

    for (args, expected) in [
        (
            vec!["create", "--name", "k", "--routes", "a**"],
            "--routes: ",
        ),
        (
            vec!["create", "--name", "k", "--methods", "GE T"],
            "--methods: invalid HTTP method",
        ),
        (
            vec!["create", "--name", "k", "--allowed-ips", "10.0.0.0/33"],
            "--allowed-ips: invalid network",
        ),
        (
            vec!["update", &id, "--allowed-ips", "nope"],
            "--allowed-ips: invalid network",
        ),
    ] {
        let (ok, out, err) = keys(&config, &args);
        assert!(!ok, "{args:?} accepted: {out}");
        assert!(
            err.contains(expected),
            "{args:?}: expected {expected:?} in {err}"
        );
    }
}
