//! `tollgate proxy` and `tollgate dev`.

use std::net::SocketAddr;

use anyhow::Context;
use tollgate_core::config::Config;
use tollgate_core::db::{Db, KeyFilter, NewApiKey};
use tollgate_proxy::server::{build, Prepared};

use crate::logging;

/// The production proxy role.
pub fn proxy(config: Config) -> anyhow::Result<()> {
    let _guard = logging::init(&config.log);
    let rt = tokio::runtime::Runtime::new()?;
    let prepared = rt
        .block_on(Prepared::load(config))
        .context("cannot load keys from the database")?;
    drop(rt);
    let built = build(prepared);
    built.run();
    Ok(())
}

/// Everything in one process, for a first look.
pub fn dev(config: Config) -> anyhow::Result<()> {
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
    let prepared = rt.block_on(Prepared::load(config.clone()))?;
    let built = build(prepared);

    println!("proxy: http://{}", config.proxy.listen);
    if let Some(m) = config.proxy.metrics_listen {
        println!("metrics: http://{m}/metrics");
    }
    if let Some(addr) = demo_addr {
        println!("demo upstream: http://{addr}");
    }
    println!("demo key: {demo_key}");
    println!(
        "try: curl -i -H 'x-api-key: {demo_key}' http://{}/api/users",
        config.proxy.listen
    );
    built.run();
    drop(rt);
    Ok(())
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
