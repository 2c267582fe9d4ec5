//! `deploy/postgres/roles.sql` against a real PostgreSQL server of the
//! test's own (role creation needs a superuser): the admin role migrates and
//! manages everything; the proxy role does all a proxy does and cannot read
//! admins, settings (the generated JWT secret), revoked tokens or the audit
//! log.

use std::process::Command;

use tollgate_core::db::audit::{Actor, NewAuditEvent};
use tollgate_core::db::instances::Heartbeat;
use tollgate_core::db::own_postgres::OwnPostgres;
use tollgate_core::db::usage::{Counts, NewViolation, UsageRow};
use tollgate_core::db::usage_batch::UsageBatch;
use tollgate_core::db::violation_aggregates::{AggregateKey, ViolationAggregate};
use tollgate_core::db::{Db, NewApiKey};

fn psql(url: &str, args: &[&str]) {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-q"])
        .args(args)
        .output()
        .expect("psql runs (installed by scripts/services)");
    assert!(
        out.status.success(),
        "psql {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn roles_sql() -> String {
    format!(
        "{}/../deploy/postgres/roles.sql",
        env!("CARGO_MANIFEST_DIR")
    )
}

async fn denied(db: &Db, sql: &str) {
    match sqlx::query(sql).execute(db.pool()).await {
        Err(sqlx::Error::Database(e)) => {
            assert_eq!(e.code().as_deref(), Some("42501"), "{sql}: {e}");
        }
        other => panic!("{sql}: expected permission denied, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_role_cannot_read_admin_secrets() {
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    let root = pg.url();
    psql(&root, &["-c", "CREATE DATABASE tollgate"]);
    let port = root
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .expect("port")
        .to_string();
    let db_url = |user: &str| format!("postgres://{user}@127.0.0.1:{port}/tollgate");
    let super_url = db_url("postgres");
    // Before the first start: roles and schema rights.
    psql(&super_url, &["-f", &roles_sql()]);

    // The admin role creates the schema and the usual rows.
    let admin = Db::connect(&db_url("tollgate_admin"))
        .await
        .expect("admin role migrates");
    admin
        .create_admin("root", "$argon2id$hash")
        .await
        .expect("admin");
    admin
        .put_setting_if_absent(tollgate_core::db::settings::JWT_SECRET, "generated-secret")
        .await
        .expect("setting");
    let (key, _) = admin
        .create_key(&NewApiKey {
            name: "k".into(),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    admin
        .record_audit(NewAuditEvent::new(
            Actor::Cli {
                os_user: "root".into(),
            },
            "key.create",
        ))
        .await
        .expect("audit");

    let (_, service_token) = admin
        .create_service_token("svc", Some("root"))
        .await
        .expect("service token");

    // After it: table grants (the file is idempotent).
    psql(&super_url, &["-f", &roles_sql()]);
    psql(&super_url, &["-f", &roles_sql()]);

    // The proxy role connects (the schema is up to date) and does its job.
    let proxy = Db::connect(&db_url("tollgate_proxy"))
        .await
        .expect("proxy role connects");
    let keys = proxy.load_key_records().await.expect("keys");
    assert_eq!(keys.len(), 1);
    proxy.keys_fingerprint().await.expect("fingerprint");
    proxy.list_plans().await.expect("plans");
    proxy.plans_fingerprint().await.expect("plans fingerprint");
    proxy.load_identities().await.expect("identities");
    proxy
        .identities_fingerprint()
        .await
        .expect("identities fingerprint");
    let minute = tollgate_core::now_ms() / 60_000 * 60_000;
    // Usage, violations and refusal aggregates go in one batch, as the
    // proxy's flusher writes them.
    let batch = UsageBatch {
        id: "batch-1".into(),
        rows: vec![UsageRow {
            minute,
            key_id: key.id,
            route: "r".into(),
            counts: Counts {
                allowed: 1,
                ..Counts::default()
            },
        }],
        violations: vec![NewViolation {
            at: tollgate_core::now_ms(),
            key_id: Some(key.id),
            route: "r".into(),
            method: "GET".into(),
            path: "/x".into(),
            client_ip: "10.0.0.1".into(),
            limit_name: Some("minute".into()),
            status: 429,
        }],
        aggregates: vec![ViolationAggregate {
            key: AggregateKey {
                minute,
                route: "r".into(),
                status: 401,
                reason: "missing-api-key".into(),
                client_net: "10.0.0.0/24".into(),
            },
            count: 3,
        }],
    };
    assert!(proxy.apply_usage_batch(&batch).await.expect("usage batch"));
    assert!(!proxy
        .apply_usage_batch(&batch)
        .await
        .expect("usage batch retried"));
    proxy
        .set_keys_last_used(&[(key.id, tollgate_core::now_ms())])
        .await
        .expect("last used");
    proxy
        .upsert_instance(&Heartbeat {
            id: "p1".into(),
            address: "127.0.0.1:8080".into(),
            version: "test".into(),
            started_at: tollgate_core::now_ms(),
            stats: serde_json::json!({}),
            upstream_health: Vec::new(),
            counter: Some("p1@127.0.0.1:8080".into()),
            beat_every: std::time::Duration::from_secs(5),
        })
        .await
        .expect("heartbeat");
    proxy.purge(0, 0).await.expect("retention");
    // Credit adjustments: read, and a local limiter's spends written.
    proxy
        .record_spends(
            "proxy-1",
            &[tollgate_core::db::credits::NewSpend {
                subject_kind: tollgate_core::credits::SubjectKind::Key,
                subject_id: 1,
                delta: -2,
                spent_at: 1,
            }],
        )
        .await
        .expect("the proxy role writes its spends");
    assert!(proxy
        .credit_adjustments_since(0)
        .await
        .expect("the proxy role reads adjustments")
        .iter()
        .any(|a| a.spent_by.as_deref() == Some("proxy-1")));
    // Quota adjustments: read; a local limiter's quota counts: written and
    // read back at start.
    proxy
        .quota_adjustments_running(0)
        .await
        .expect("the proxy role reads quota adjustments");
    let count = tollgate_core::db::quota_counts::QuotaCount {
        holder: "k1".into(),
        owner_key: 0,
        bucket: "p:daily".into(),
        period: tollgate_core::quota::PeriodBounds {
            start_us: 0,
            end_us: i64::MAX,
        },
        used: 3,
        adjusted_through: 0,
    };
    proxy
        .save_quota_counts("p1", std::slice::from_ref(&count), 1)
        .await
        .expect("the proxy role writes quota counts");
    proxy
        .save_quota_counts("p1", std::slice::from_ref(&count), 1)
        .await
        .expect("and replaces them");
    assert_eq!(
        proxy
            .quota_counts_running("p1", 1)
            .await
            .expect("read back"),
        vec![count]
    );
    // The verify listener reads the service tokens' hashes, nothing more.
    assert_eq!(
        proxy.service_token_hashes().await.expect("token hashes"),
        vec![tollgate_core::service_tokens::hash(&service_token)]
    );
    // A quota or credit event, enqueued where it happens (once), with a
    // delivery to the endpoint the admin role created.
    admin
        .create_webhook(&tollgate_core::webhooks::endpoints::NewWebhook {
            url: "https://hooks.example.com/x".into(),
            description: None,
            events: vec!["*".into()],
            enabled: true,
        })
        .await
        .expect("endpoint");
    let event = |db: Db| async move {
        tollgate_core::webhooks::enqueue_event(
            &db,
            "quota.warning",
            "key:1:monthly",
            "2026-12",
            serde_json::json!({"used_percent": 80}),
        )
        .await
        .expect("the proxy role enqueues")
    };
    assert!(event(proxy.clone()).await.is_some());
    assert!(event(proxy.clone()).await.is_none());
    let (deliveries, _) = admin.list_webhook_deliveries(1, 10, 0).await.expect("log");
    assert_eq!(deliveries.len(), 1);

    // And nothing else.
    for sql in [
        "SELECT * FROM admins",
        "SELECT password_hash FROM admins",
        "SELECT value FROM settings",
        "SELECT * FROM audit_events",
        "SELECT * FROM revoked_tokens",
        "INSERT INTO audit_events (at, actor_kind, actor, action) VALUES (1, 'cli', 'x', 'y')",
        "UPDATE api_keys SET enabled = 0",
        "UPDATE api_keys SET key_hash = 'x'",
        "INSERT INTO api_keys (name, created_at, updated_at, key_prefix, key_hash) VALUES ('x', 1, 1, 'p', 'h')",
        "DELETE FROM api_keys",
        "INSERT INTO plans (name, limits, created_at, updated_at) VALUES ('x', '[]', 1, 1)",
        "SELECT name, created_by FROM service_tokens",
        "INSERT INTO service_tokens (name, token_prefix, token_hash, created_at) VALUES ('x', 'p', 'h', 1)",
        "DELETE FROM service_tokens",
        "CREATE TABLE evil (x int)",
        "SELECT secret FROM webhook_endpoints",
        "SELECT url FROM webhook_endpoints",
        "UPDATE webhook_deliveries SET status = 'succeeded'",
        "DELETE FROM webhook_events",
    ] {
        denied(&proxy, sql).await;
    }
    assert!(proxy
        .get_setting(tollgate_core::db::settings::JWT_SECRET)
        .await
        .is_err());
    // The admin role still reads everything it manages.
    assert_eq!(admin.list_admins().await.expect("admins").len(), 1);
    assert_eq!(
        admin
            .list_audit(&Default::default())
            .await
            .expect("audit")
            .1,
        1
    );
    proxy.close().await;
    admin.close().await;
}
