//! The ceiling of the load harness: a Pingora HTTP pass-through with no
//! filter at all. It forwards every request to one upstream address, so the
//! difference between it and Tollgate on the same load is what Tollgate's
//! request path costs.
//!
//! ```text
//! bare-pingora --listen 127.0.0.1:21501 --upstream 127.0.0.1:21500
//!              [--threads 1] [--work-stealing true|false]
//!              [--listener-tasks 1] [--keepalive-pool 128]
//!              [--downstream-request-limit N] [--upstream-timeouts]
//!              [--floor KEY]
//! ```
//!
//! `--floor KEY` runs the least work any API-key gateway does instead of
//! the pass-through (`floor.rs`): KEY is the one key it admits.
//!
//! `--upstream-timeouts` gives the upstream peer the timeouts a Tollgate
//! upstream has by default (connect 2 s, read and write 30 s, idle 60 s).
//!
//! The server options are flags so the harness can measure each one
//! (benches/README.md, "Experiments").

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;

use crate::floor::Floor;

struct Pass {
    upstream: SocketAddr,
    timeouts: bool,
}

#[async_trait]
impl ProxyHttp for Pass {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        if self.timeouts {
            peer.options.connection_timeout = Some(Duration::from_secs(2));
            peer.options.read_timeout = Some(Duration::from_secs(30));
            peer.options.write_timeout = Some(Duration::from_secs(30));
            peer.options.idle_timeout = Some(Duration::from_secs(60));
        }
        Ok(Box::new(peer))
    }
}

struct Args {
    listen: SocketAddr,
    upstream: SocketAddr,
    threads: usize,
    work_stealing: bool,
    listener_tasks: usize,
    keepalive_pool: usize,
    downstream_request_limit: Option<u32>,
    upstream_timeouts: bool,
    floor_key: Option<String>,
}

fn parse_args() -> std::result::Result<Args, String> {
    let defaults = ServerConf::default();
    let mut listen = None;
    let mut upstream = None;
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream: SocketAddr::from(([127, 0, 0, 1], 0)),
        threads: 1,
        work_stealing: defaults.work_stealing,
        listener_tasks: defaults.listener_tasks_per_fd,
        keepalive_pool: defaults.upstream_keepalive_pool_size,
        downstream_request_limit: None,
        upstream_timeouts: false,
        floor_key: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--listen" => listen = Some(value()?.parse().map_err(|e| bad(&e))?),
            "--upstream" => upstream = Some(value()?.parse().map_err(|e| bad(&e))?),
            "--threads" => args.threads = value()?.parse().map_err(|e| bad(&e))?,
            "--work-stealing" => args.work_stealing = value()?.parse().map_err(|e| bad(&e))?,
            "--listener-tasks" => args.listener_tasks = value()?.parse().map_err(|e| bad(&e))?,
            "--keepalive-pool" => args.keepalive_pool = value()?.parse().map_err(|e| bad(&e))?,
            "--downstream-request-limit" => {
                args.downstream_request_limit = Some(value()?.parse().map_err(|e| bad(&e))?)
            }
            "--upstream-timeouts" => args.upstream_timeouts = true,
            "--floor" => args.floor_key = Some(value()?),
            "-h" | "--help" => {
                return Err(
                    "usage: bare-pingora --listen ADDR --upstream ADDR [--threads N] \
                     [--work-stealing BOOL] [--listener-tasks N] [--keepalive-pool N] \
                     [--downstream-request-limit N] [--upstream-timeouts] [--floor KEY]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    args.listen = listen.ok_or("--listen is required")?;
    args.upstream = upstream.ok_or("--upstream is required")?;
    Ok(args)
}

pub fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let conf = ServerConf {
        threads: args.threads.max(1),
        work_stealing: args.work_stealing,
        listener_tasks_per_fd: args.listener_tasks.max(1),
        upstream_keepalive_pool_size: args.keepalive_pool,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    match args.floor_key.clone() {
        Some(key) => {
            let floor = Floor::new(args.upstream, args.upstream_timeouts, &key);
            add_proxy(&mut server, floor, &args);
        }
        None => {
            let pass = Pass {
                upstream: args.upstream,
                timeouts: args.upstream_timeouts,
            };
            add_proxy(&mut server, pass, &args);
        }
    }
    eprintln!(
        "bare-pingora: {} -> {} (threads {}, work_stealing {}, listener_tasks {}, keepalive_pool {})",
        args.listen,
        args.upstream,
        args.threads.max(1),
        args.work_stealing,
        args.listener_tasks.max(1),
        args.keepalive_pool
    );
    server.run_forever()
}

/// The proxy service of `app` on `--listen`, with the downstream request limit.
fn add_proxy<SV>(server: &mut Server, app: SV, args: &Args)
where
    SV: ProxyHttp + Send + Sync + 'static,
    SV::CTX: Send + Sync,
{
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, app, "bare-pingora");
    if let Some(limit) = args.downstream_request_limit {
        if let Some(app) = proxy.app_logic_mut() {
            let mut opts = app.server_options.clone().unwrap_or_default();
            opts.keepalive_request_limit = Some(limit);
            app.server_options = Some(opts);
        }
    }
    proxy.add_tcp(&args.listen.to_string());
    server.add_service(proxy);
}
