//! `tollgate proxy` and `tollgate dev`.

use std::net::SocketAddr;

use anyhow::Context;
use tollgate_core::config::Config;
use tollgate_core::db::{Db, KeyFilter, NewApiKey};
use tollgate_proxy::server::{build, PrepareError, Prepared};

use crate::logging;

/// The production proxy role.
pub fn proxy(config: Config) -> anyhow::Result<()> {
    let _guard = logging::init(&config.log);
    let rt = tokio::runtime::Runtime::new()?;
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
        tollgate_admin_api::serve(listener, state, shutdown_signal()).await?;
        Ok(())
    })
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

/// Everything in one process, for a first look.
pub fn dev(config: Config, demo_traffic: bool) -> anyhow::Result<()> {
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
    let demo_key = rt.block_on(demo_key(&config.storage.database_url))?;
    let (admin_url, admin_password) = rt.block_on(start_admin(&config, &rt))?;
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
    println!(
        "admin login: {} / {admin_password}",
        tollgate_admin_api::INITIAL_ADMIN
    );
    println!("demo key: {demo_key}");
    println!(
        "try: curl -i -H 'x-api-key: {demo_key}' http://{}/api/users",
        config.proxy.listen
    );
    if demo_traffic {
        super::demo_traffic::start(&rt, &config, &demo_key)?;
    }
    built.run();
    drop(rt);
    Ok(())
}

/// What failed while preparing the proxy, named: the database (keys, plans)
/// or a TLS file (the error names the setting and the file).
fn prepare_error(e: PrepareError) -> anyhow::Error {
    match e {
        PrepareError::Db(e) => anyhow::Error::new(e).context("cannot load keys from the database"),
        PrepareError::Tls(e) => anyhow::Error::new(e)
            .context("cannot load a TLS certificate, private key or CA file named by the config"),
    }
}

/// `proxy: http://…`, and `proxy (https): https://…` with `proxy.tls`.
fn print_proxy_urls(config: &Config) {
    println!("proxy: http://{}", config.proxy.listen);
    if let Some(tls) = &config.proxy.tls {
        println!("proxy (https): https://{}", tls.listen);
    }
}

/// Start the admin API on `rt`; returns its URL and the admin password. In dev
/// mode the password is known only when just created, so otherwise it is
/// reset (or set from `TOLLGATE_ADMIN_PASSWORD`) at every start.
async fn start_admin(
    config: &Config,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<(String, String)> {
    let (state, created) = tollgate_admin_api::bootstrap_dev(config)
        .await
        .map_err(refuse_weak_secret)
        .context("cannot start the admin API")?;
    let password = match (
        created,
        std::env::var(tollgate_admin_api::ADMIN_PASSWORD_ENV),
    ) {
        (Some(pw), _) => pw,
        (None, Ok(pw)) => pw,
        (None, Err(_)) => {
            let pw = tollgate_admin_api::auth::random_password(20)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let hash = tollgate_admin_api::auth::hash_password(&pw)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let admin = state
                .db()
                .get_admin_by_username(tollgate_admin_api::INITIAL_ADMIN)
                .await?;
            match admin {
                Some((a, _)) => {
                    state.db().set_admin_password(a.id, &hash).await?;
                }
                None => {
                    state
                        .db()
                        .create_admin(tollgate_admin_api::INITIAL_ADMIN, &hash)
                        .await?;
                }
            }
            pw
        }
    };
    let listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("cannot start the admin API on {}", config.admin.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
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
        Some(k) => db
            .rotate_key(k.id, std::time::Duration::ZERO)
            .await?
            .map(|(_, plain)| plain),
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
            db.create_key(&new).await?.1
        }
    };
    db.close().await;
    Ok(key)
}
