//! `tollgate proxy` and `tollgate dev`.

use std::net::SocketAddr;

use anyhow::Context;
use tollgate_core::config::reload::{self, FileWatch, WatchEvent, RELOAD_POLL, RELOAD_SETTLE};
use tollgate_core::config::restart;
use tollgate_core::config::Config;
use tollgate_core::db::{Db, KeyFilter, NewApiKey};
use tollgate_proxy::server::{build, PrepareError, Prepared};

use crate::logging;

/// The production proxy role.
pub fn proxy(config: Config) -> anyhow::Result<()> {
    let _guard = logging::init(&config.log);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(refuse_plan_conflicts(&config))?;
    let prepared = rt.block_on(Prepared::load(config)).map_err(prepare_error)?;
    drop(rt);
    print_proxy_urls(&prepared.config);
    let built = build(prepared);
    built.run();
    Ok(())
}

/// The production admin role: API (and dashboard) until Ctrl-C / SIGTERM.
pub fn admin(config: Config) -> anyhow::Result<()> {
    let _guard = logging::init(&config.log);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let (state, password) = tollgate_admin_api::bootstrap(&config)
            .await
            .map_err(refuse_weak_secret)
            .context("cannot start the admin API")?;
        let listener = tokio::net::TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.admin.listen))?;
        println!("admin: http://{}", listener.local_addr()?);
        if let Some(pw) = password {
            println!("admin login: {} / {pw}", tollgate_admin_api::INITIAL_ADMIN);
        }
        follow_config_file(&tokio::runtime::Handle::current(), &state, &config);
        tollgate_admin_api::serve(listener, state, shutdown_signal()).await?;
        Ok(())
    })
}

/// Refuse to start when a plan name is defined both in the YAML and in the
/// database (which one applies would depend on who you ask).
async fn refuse_plan_conflicts(config: &Config) -> anyhow::Result<()> {
    let db = Db::connect(&config.storage.database_url)
        .await
        .context("cannot open the database")?;
    let plans = db.list_plans().await;
    db.close().await;
    let plans = plans.context("cannot read the plans")?;
    let both = reload::plan_conflicts(config, plans.iter().map(|p| p.name.as_str()));
    match reload::plan_conflict_message(&both) {
        Some(msg) => anyhow::bail!("{msg}"),
        None => Ok(()),
    }
}

/// Keep the admin API's config in step with its file (if it was read from
/// one), on `rt`: what `tollgate admin` and `tollgate dev` both do, so the
/// admin side of either sees the plans the proxy serves.
fn follow_config_file(
    rt: &tokio::runtime::Handle,
    state: &tollgate_admin_api::AppState,
    config: &Config,
) {
    if let Some(path) = config.source.clone() {
        rt.spawn(reload_admin_config(state.clone(), path));
    }
}

/// The admin role follows edits of its config file as the proxy does: a
/// change applies once the file has settled, is validated as the proxy
/// validates it (routes, plan names not also in the database), and an
/// invalid or unreadable file is logged while the running config stays.
async fn reload_admin_config(state: tollgate_admin_api::AppState, path: std::path::PathBuf) {
    let mut watch = FileWatch::for_running(path.clone(), RELOAD_SETTLE, &state.config());
    loop {
        tokio::time::sleep(RELOAD_POLL).await;
        match watch.poll(std::time::Instant::now()) {
            WatchEvent::Nothing => {}
            WatchEvent::Readable => {
                tracing::info!(file = %path.display(), "config file readable again");
            }
            WatchEvent::Unreadable(e) => {
                reloads("unreadable");
                tracing::error!(
                    file = %path.display(),
                    "config file unreadable, the running config stays: {e}"
                );
            }
            WatchEvent::Changed(text) => match admin_config(&state, &path, &text).await {
                Ok(new) => {
                    state.set_config(new);
                    reloads("ok");
                    tracing::info!(file = %path.display(), "config reloaded");
                }
                Err(e) => {
                    reloads("failed");
                    tracing::error!("config reload refused, the running config stays:\n{e}");
                    watch.refused(std::time::Instant::now());
                }
            },
            // Checked again quietly (a database plan of the same name may
            // be gone): logged only once it passes.
            WatchEvent::Retry(text) => match admin_config(&state, &path, &text).await {
                Ok(new) => {
                    state.set_config(new);
                    reloads("ok");
                    tracing::info!(file = %path.display(), "config reloaded (what refused it is gone)");
                }
                Err(e) => {
                    tracing::debug!("config still refused:\n{e}");
                    watch.refused(std::time::Instant::now());
                }
            },
        }
    }
}

fn reloads(result: &str) {
    tollgate_admin_api::metrics::config_reload(result);
}

async fn admin_config(
    state: &tollgate_admin_api::AppState,
    path: &std::path::Path,
    text: &str,
) -> Result<Config, String> {
    // CPU work on operator input: off the async workers (see the proxy's reload).
    let (src, name) = (text.to_string(), path.display().to_string());
    let mut new = tokio::task::spawn_blocking(move || reload::parse_for_serving(&src, &name))
        .await
        .map_err(|e| format!("parsing the config failed: {e}"))?
        .map_err(|e| e.to_string())?;
    new.source = Some(path.to_path_buf());
    let plans = state.db().list_plans().await.map_err(|e| e.to_string())?;
    let both = reload::plan_conflicts(&new, plans.iter().map(|p| p.name.as_str()));
    if let Some(msg) = reload::plan_conflict_message(&both) {
        return Err(format!("{}: {msg}", path.display()));
    }
    let old = state.config();
    // A secret the admin would refuse to start with is refused here too,
    // though it applies only after a restart (round 16, black-box).
    restart::settle(&old, &mut new, restart::Role::Admin)
        .map_err(|problem| format!("{}: {problem}", path.display()))?;
    Ok(new)
}

/// A refused JWT secret ends the process with exit code 2 and one line
/// naming the variable; other errors are returned.
fn refuse_weak_secret(e: tollgate_admin_api::BootstrapError) -> tollgate_admin_api::BootstrapError {
    if let tollgate_admin_api::BootstrapError::WeakSecret { var, reason } = &e {
        eprintln!("error: {var} {reason}");
        std::process::exit(2);
    }
    e
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Everything in one process, for a first look. In a database `dev` did not
/// create, the admin password and the demo key are left alone unless
/// `reset` (they may be someone's real credentials).
pub fn dev(config: Config, demo_traffic: bool, reset: bool) -> anyhow::Result<()> {
    let _guard = logging::init(&config.log);
    let demo_addr = demo_target(&config);
    // The demo upstream and set-up run on their own runtime; Pingora has its own.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    if let Some(addr) = demo_addr {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| format!("cannot start the demo upstream on {addr}"))?;
        rt.spawn(tollgate_proxy::demo::serve(listener));
    }
    let owned = rt.block_on(dev_owns_database(&config.storage.database_url))?;
    let may_reset = owned || reset;
    if !may_reset {
        eprintln!(
            "note: {} was not created by `tollgate dev`: the admin password and the demo key are left as they are (pass --reset to set new ones)",
            config.storage.database_url.split('?').next().unwrap_or_default()
        );
    }
    let demo_key = if may_reset {
        Some(rt.block_on(demo_key(&config.storage.database_url))?)
    } else {
        None
    };
    rt.block_on(refuse_plan_conflicts(&config))?;
    let (admin_url, admin_password) = rt.block_on(start_admin(&config, &rt, may_reset))?;
    let prepared = rt
        .block_on(Prepared::load(config.clone()))
        .map_err(prepare_error)?;
    let built = build(prepared);

    print_proxy_urls(&config);
    println!("admin: {admin_url}");
    if let Some(m) = config.proxy.metrics_listen {
        println!("metrics: http://{m}/metrics");
    }
    if let Some(addr) = demo_addr {
        println!("demo upstream: http://{addr}");
    }
    match &admin_password {
        Some(pw) => println!("admin login: {} / {pw}", tollgate_admin_api::INITIAL_ADMIN),
        None => println!(
            "admin login: {} / (unchanged; `tollgate dev --reset` sets a new password)",
            tollgate_admin_api::INITIAL_ADMIN
        ),
    }
    match &demo_key {
        Some(key) => {
            println!("demo key: {key}");
            println!(
                "try: curl -i -H 'x-api-key: {key}' http://{}/api/users",
                config.proxy.listen
            );
        }
        None => println!("demo key: (unchanged; `tollgate dev --reset` issues a new one)"),
    }
    if let (true, Some(key)) = (demo_traffic, &demo_key) {
        super::demo_traffic::start(&rt, &config, key)?;
    }
    built.run();
    drop(rt);
    Ok(())
}

/// What failed while preparing the proxy, named: the database (keys, plans),
/// a TLS file (the error names the setting and the file), or a live proxy
/// of the same quota-count name.
fn prepare_error(e: PrepareError) -> anyhow::Error {
    match e {
        PrepareError::Db(e) => anyhow::Error::new(e).context("cannot load keys from the database"),
        PrepareError::Tls(e) => anyhow::Error::new(e)
            .context("cannot load a TLS certificate, private key or CA file named by the config"),
        e @ PrepareError::Twin { .. } => anyhow::Error::new(e).context("refusing to start"),
    }
}

/// `proxy: http://…`, and `proxy (https): https://…` with `proxy.tls`.
fn print_proxy_urls(config: &Config) {
    println!("proxy: http://{}", config.proxy.listen);
    if let Some(tls) = &config.proxy.tls {
        println!("proxy (https): https://{}", tls.listen);
    }
    if let Some(addr) = config.verify.listen {
        println!("verify: http://{addr}/v1/verify");
    }
}

/// Start the admin API on `rt`; returns its URL and the admin password. In dev
/// mode the password is known only when just created, so otherwise it is
/// reset (or set from `TOLLGATE_ADMIN_PASSWORD`) at every start.
async fn start_admin(
    config: &Config,
    rt: &tokio::runtime::Runtime,
    may_reset: bool,
) -> anyhow::Result<(String, Option<String>)> {
    let (state, created) = tollgate_admin_api::bootstrap_dev(config)
        .await
        .map_err(refuse_weak_secret)
        .context("cannot start the admin API")?;
    let password = match (
        created,
        std::env::var(tollgate_admin_api::ADMIN_PASSWORD_ENV),
    ) {
        (Some(pw), _) => Some(pw),
        (None, Ok(pw)) => Some(pw),
        (None, Err(_)) if !may_reset => None,
        (None, Err(_)) => {
            let pw = tollgate_admin_api::auth::random_password(20)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let hash = tollgate_admin_api::auth::hash_password(&pw)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let admin = state
                .db()
                .get_admin_by_username(tollgate_admin_api::INITIAL_ADMIN)
                .await?;
            // A reset ends the admin's sessions (as a password change does)
            // and, like every CLI change, is audited.
            let event = match admin {
                Some((a, _)) => {
                    state.db().change_admin_password(a.id, &hash).await?;
                    super::audit::cli_event("admin.password_reset").target("admin", a.id)
                }
                None => {
                    let a = state
                        .db()
                        .create_admin(tollgate_admin_api::INITIAL_ADMIN, &hash)
                        .await?;
                    super::audit::cli_event("admin.create").target("admin", a.id)
                }
            };
            if let Err(e) = state.db().record_audit(event).await {
                eprintln!(
                    "warning: the password is set but could not be written to the audit log: {e}"
                );
            }
            Some(pw)
        }
    };
    let listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("cannot start the admin API on {}", config.admin.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    follow_config_file(rt.handle(), &state, config);
    rt.spawn(async move {
        if let Err(e) = tollgate_admin_api::serve(listener, state, std::future::pending()).await {
            tracing::error!("admin API stopped: {e}");
        }
    });
    Ok((url, password))
}

/// The demo upstream's address: the first target of an upstream named `demo`
/// on a loopback address, if the config has one.
fn demo_target(config: &Config) -> Option<SocketAddr> {
    let t = config.upstreams.get("demo")?.targets.first()?;
    let addr: SocketAddr = t.authority().parse().ok()?;
    addr.ip().is_loopback().then_some(addr)
}

/// The `settings` entry that marks a database `tollgate dev` created.
const DEV_MARK: &str = "created_by_tollgate_dev";

/// Whether `dev` may treat the database as its own: it holds `dev`'s mark,
/// or it is new (no admin, no key yet), and then it gets the mark.
async fn dev_owns_database(database_url: &str) -> anyhow::Result<bool> {
    let db = Db::connect(database_url)
        .await
        .context("cannot open the database")?;
    let owned = async {
        if db.get_setting(DEV_MARK).await?.is_some() {
            return Ok::<bool, tollgate_core::db::DbError>(true);
        }
        let (keys, _) = db
            .list_keys(&KeyFilter {
                limit: 1,
                ..KeyFilter::default()
            })
            .await?;
        if db.count_admins().await? == 0 && keys.is_empty() {
            db.put_setting(DEV_MARK, &tollgate_core::now_ms().to_string())
                .await?;
            return Ok(true);
        }
        Ok(false)
    }
    .await;
    db.close().await;
    Ok(owned?)
}

/// A key named `demo`, created on first start. Only its hash is stored, so
/// every start issues it a fresh secret (rotation, no grace) to print.
async fn demo_key(database_url: &str) -> anyhow::Result<String> {
    let db = Db::connect(database_url).await?;
    let filter = KeyFilter {
        name: Some("demo".into()),
        limit: 100,
        ..KeyFilter::default()
    };
    let (existing, _) = db.list_keys(&filter).await?;
    let key = match existing.iter().find(|k| k.name == "demo") {
        Some(before) => match db.rotate_key(before.id, std::time::Duration::ZERO).await? {
            Some((after, plain)) => {
                super::audit::record_key(&db, "key.rotate", after.id, Some(before), Some(&after))
                    .await;
                Some(plain)
            }
            None => None,
        },
        None => None,
    };
    let key = match key {
        Some(k) => k,
        None => {
            let new = NewApiKey {
                name: "demo".into(),
                owner: Some("tollgate dev".into()),
                ..NewApiKey::default()
            };
            let (created, plain) = db.create_key(&new).await?;
            super::audit::record_key(&db, "key.create", created.id, None, Some(&created)).await;
            plain
        }
    };
    db.close().await;
    Ok(key)
}
