//! The settings a reload cannot apply to a running process: what it binds,
//! the runtime it built, the database it opened, the secret it signs with.
//! A reload applies everything else and names these in one warning, so an
//! operator is never told "config reloaded" about a change that did nothing
//! (black-box round 16: `storage.database_url` and `admin.jwt_secret_env`
//! changed silently).

use super::Config;

/// Which process reads the config: each names only what it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Proxy,
    Admin,
    /// `tollgate dev`: both in one process.
    Both,
}

impl Role {
    fn proxy(self) -> bool {
        matches!(self, Role::Proxy | Role::Both)
    }

    fn admin(self) -> bool {
        matches!(self, Role::Admin | Role::Both)
    }
}

/// The settings changed from `old` to `new` that take effect only after a
/// restart of `role`, by their YAML names (empty: the reload applies whole).
pub fn needs_restart(old: &Config, new: &Config, role: Role) -> Vec<&'static str> {
    let (p, q) = (&old.proxy, &new.proxy);
    let mut changed = Vec::new();
    let mut check = |applies: bool, differs: bool, name: &'static str| {
        if applies && differs {
            changed.push(name);
        }
    };
    check(role.proxy(), p.listen != q.listen, "proxy.listen");
    check(
        role.proxy(),
        p.metrics_listen != q.metrics_listen,
        "proxy.metrics_listen",
    );
    check(
        role.proxy(),
        p.tls.as_ref().map(|t| t.listen) != q.tls.as_ref().map(|t| t.listen),
        "proxy.tls.listen",
    );
    check(
        role.proxy(),
        old.verify.listen != new.verify.listen,
        "verify.listen",
    );
    check(role.proxy(), p.threads != q.threads, "proxy.threads");
    check(role.proxy(), p.h2c != q.h2c, "proxy.h2c");
    let (t, u) = (&p.tuning, &q.tuning);
    check(
        role.proxy(),
        t.work_stealing != u.work_stealing,
        "proxy.work_stealing",
    );
    check(
        role.proxy(),
        t.listener_tasks != u.listener_tasks,
        "proxy.listener_tasks",
    );
    check(
        role.proxy(),
        t.upstream_keepalive_pool != u.upstream_keepalive_pool,
        "proxy.upstream_keepalive_pool",
    );
    check(
        role.proxy(),
        t.downstream_keepalive_requests != u.downstream_keepalive_requests,
        "proxy.downstream_keepalive_requests",
    );
    check(
        role.admin(),
        old.admin.listen != new.admin.listen,
        "admin.listen",
    );
    check(
        role.admin(),
        old.admin.jwt_secret_env != new.admin.jwt_secret_env,
        "admin.jwt_secret_env",
    );
    check(
        true,
        old.storage.database_url != new.storage.database_url,
        "storage.database_url",
    );
    check(
        true,
        old.limiter.backend != new.limiter.backend,
        "limiter.backend",
    );
    check(
        true,
        !same_redis_store(old, new),
        "limiter.redis_url (another Redis)",
    );
    let (a, b) = (&old.telemetry, &new.telemetry);
    check(
        true,
        a.otlp_endpoint != b.otlp_endpoint,
        "telemetry.otlp_endpoint",
    );
    check(
        true,
        a.service_name != b.service_name,
        "telemetry.service_name",
    );
    changed
}

/// Whether `old` and `new` name the same Redis data (the same nodes, database
/// and cluster mode): credentials, TLS and timeouts may change on reload,
/// the data the limits and credit balances live in may not.
fn same_redis_store(old: &Config, new: &Config) -> bool {
    let store = |c: &Config| {
        c.limiter.redis_url.as_deref().map(|u| {
            crate::redis_url::parse(u)
                .map(|r| (r.nodes, r.db, r.cluster))
                .ok()
        })
    };
    store(old) == store(new)
}

/// Keep the running limiter backend and Redis data store in `new` when a
/// reload would switch them (round 17, black-box: a hot switch to an empty
/// Redis handed every spent credit out again, as only a restart on a new
/// Redis documents). Named by [`needs_restart`]; the rest of the reload
/// applies. Whether anything was kept.
pub fn keep_running_store(old: &Config, new: &mut Config) -> bool {
    if old.limiter.backend == new.limiter.backend && same_redis_store(old, new) {
        return false;
    }
    new.limiter.backend = old.limiter.backend;
    new.limiter.redis_url.clone_from(&old.limiter.redis_url);
    new.limiter
        .redis_ca_file
        .clone_from(&old.limiter.redis_ca_file);
    true
}

/// Why a reload from `old` to `new` must be refused though the setting
/// waits for a restart: a changed `admin.jwt_secret_env` naming a
/// variable whose value the admin refuses at start
/// ([`crate::secret_strength::weak_secret_reason`]). Checked by every
/// role, so that `dev`'s proxy and admin halves agree on every file.
pub fn restart_problem(old: &Config, new: &Config) -> Option<String> {
    let var = &new.admin.jwt_secret_env;
    if var.is_empty() || *var == old.admin.jwt_secret_env {
        return None;
    }
    let value = std::env::var(var).ok().filter(|v| !v.is_empty())?;
    crate::secret_strength::weak_secret_reason(&value)
        .map(|reason| format!("admin.jwt_secret_env: {var} {reason}"))
}

/// What every reload does with the restart-only settings, in one place for
/// both roles: refuse what a restart would refuse ([`restart_problem`]),
/// warn once about what waits for a restart ([`needs_restart`]) and keep
/// the running Redis store and backend ([`keep_running_store`]).
pub fn settle(old: &Config, new: &mut Config, role: Role) -> Result<(), String> {
    if let Some(problem) = restart_problem(old, new) {
        return Err(problem);
    }
    if let Some(msg) = restart_message(&needs_restart(old, new, role)) {
        tracing::warn!("{msg}");
    }
    keep_running_store(old, new);
    Ok(())
}

/// The warning for [`needs_restart`]'s answer (empty: `None`).
pub fn restart_message(changed: &[&str]) -> Option<String> {
    (!changed.is_empty()).then(|| {
        format!(
            "{} changed: the rest of the reload applies, these take effect after a restart",
            changed.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let yaml = format!(
            "{extra}\nupstreams: {{ up: {{ targets: [\"127.0.0.1:9\"] }} }}\n\
             routes: [ {{ name: r, match: {{ path_prefix: / }}, upstream: up }} ]\n"
        );
        super::super::parse_for_serving(&yaml, "t.yaml").expect("valid")
    }

    #[test]
    fn each_role_names_what_it_cannot_apply() {
        let old = config("");
        assert!(needs_restart(&old, &old, Role::Both).is_empty());
        let new = config(
            "proxy: { threads: 3, listen: \"127.0.0.1:18080\" }\n\
             admin: { jwt_secret_env: OTHER_VAR, session_ttl: 1m }\n\
             storage: { database_url: \"sqlite://other.db\" }",
        );
        assert_eq!(
            needs_restart(&old, &new, Role::Proxy),
            ["proxy.listen", "proxy.threads", "storage.database_url"]
        );
        assert_eq!(
            needs_restart(&old, &new, Role::Admin),
            ["admin.jwt_secret_env", "storage.database_url"]
        );
        assert_eq!(needs_restart(&old, &new, Role::Both).len(), 4);
        // session_ttl and the listener's options apply on reload.
        let hot = config(
            "admin: { session_ttl: 1m, allowed_hosts: [a.example], max_connections_per_ip: 2 }",
        );
        assert!(needs_restart(&old, &hot, Role::Both).is_empty());
        let msg = restart_message(&needs_restart(&old, &new, Role::Admin)).expect("some");
        assert!(
            msg.starts_with("admin.jwt_secret_env, storage.database_url changed"),
            "{msg}"
        );
        assert_eq!(restart_message(&[]), None);
    }

    #[test]
    fn another_redis_store_is_kept_until_a_restart() {
        let redis = |url: &str| {
            config(&format!(
                "limiter: {{ backend: redis, redis_url: \"{url}\" }}"
            ))
        };
        let old = redis("redis://a:6379/0");
        // Credentials and TLS change on reload; the store stays.
        let mut new = redis("rediss://user:pw@a:6379/0");
        assert!(needs_restart(&old, &new, Role::Proxy).is_empty());
        assert!(!keep_running_store(&old, &mut new));
        assert_eq!(
            new.limiter.redis_url.as_deref(),
            Some("rediss://user:pw@a:6379/0")
        );
        // Another node, database or cluster: kept as running, and named.
        for other in [
            "redis://b:6379/0",
            "redis://a:6379/1",
            "redis+cluster://a:6379",
        ] {
            let mut new = redis(other);
            assert_eq!(
                needs_restart(&old, &new, Role::Proxy),
                ["limiter.redis_url (another Redis)"],
                "{other}"
            );
            assert!(keep_running_store(&old, &mut new), "{other}");
            assert_eq!(new.limiter.redis_url, old.limiter.redis_url);
        }
        // Another backend too.
        let mut local = config("");
        assert_eq!(
            needs_restart(&old, &local, Role::Admin),
            ["limiter.backend", "limiter.redis_url (another Redis)"]
        );
        assert!(keep_running_store(&old, &mut local));
        assert_eq!(local.limiter.backend, old.limiter.backend);
        assert_eq!(local.limiter.redis_url, old.limiter.redis_url);
    }
}
