//! The connection to Redis: one multiplexed connection (a
//! `ConnectionManager`, or a cluster connection) shared by every request,
//! built lazily on the limiter's own runtime, and kept alive by
//! [`spawn_keepalive`].
//!
//! A multiplexed connection whose server went away (killed, restarted) is
//! only replaced when a call through it fails. Without the keepalive that
//! call would be a request's, however long Redis has been back; with it, a
//! PING through the very connection requests use finds the dead connection
//! within [`KEEPALIVE_EVERY`] of the loss (while Redis is still away) and
//! has it replaced, so the first request after Redis is back gets a fresh
//! connection (or one refused connect, which the script call retries: it
//! never reached Redis).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClientBuilder, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::io::tcp::TcpSettings;
use ::redis::{IntoConnectionInfo, RedisError, ScriptInvocation, TlsCertificates};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tollgate_core::redis_url::RedisUrl;

use super::{RedisLimitError, RedisLimiterOptions};

#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    pub(super) async fn invoke(
        &mut self,
        inv: &ScriptInvocation<'static>,
    ) -> Result<Vec<i64>, RedisError> {
        match self {
            Conn::Single(c) => inv.invoke_async(c).await,
            Conn::Cluster(c) => inv.invoke_async(c).await,
        }
    }

    pub(super) async fn invoke_i64(
        &mut self,
        inv: &ScriptInvocation<'static>,
    ) -> Result<i64, RedisError> {
        match self {
            Conn::Single(c) => inv.invoke_async(c).await,
            Conn::Cluster(c) => inv.invoke_async(c).await,
        }
    }

    pub(super) async fn query_i64(&mut self, cmd: &::redis::Cmd) -> Result<i64, RedisError> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }

    pub(super) async fn ping(&mut self) -> Result<(), RedisError> {
        let cmd = ::redis::cmd("PING");
        match self {
            Conn::Single(c) => cmd.query_async::<()>(c).await,
            Conn::Cluster(c) => cmd.query_async::<()>(c).await,
        }
    }
}

/// How often the keepalive PINGs a connection that answers.
pub const KEEPALIVE_EVERY: Duration = Duration::from_millis(100);
/// How soon it PINGs again after a failure (each failed PING starts a
/// reconnect; the next one waits for it).
const KEEPALIVE_RETRY: Duration = Duration::from_millis(20);

/// What the keepalive shares with the limiter.
#[derive(Debug, Default)]
pub struct Keepalive {
    /// The last PING through the requests' connection was answered.
    reachable: AtomicBool,
    /// Wakes the keepalive early (after a failed call).
    wake: tokio::sync::Notify,
}

impl Keepalive {
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// A call failed: PING now, so a dead connection is replaced before the
    /// next request needs it.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// PING through `conn` (the connection every call uses) every
/// [`KEEPALIVE_EVERY`], at once when woken, and every [`KEEPALIVE_RETRY`]
/// while it fails: a failed PING makes the connection reconnect, so a
/// connection that died while Redis was away is replaced by the keepalive,
/// never discovered by a request. PING is idempotent: nothing is counted.
pub(super) fn spawn_keepalive(
    handle: &Handle,
    conn: Conn,
    state: std::sync::Arc<Keepalive>,
    limit: Duration,
    breaker: std::sync::Arc<crate::limiter::breaker::CircuitBreaker>,
    request_timeout: Duration,
) {
    drop(handle.spawn(async move {
        loop {
            let mut c = conn.clone();
            let started = tokio::time::Instant::now();
            let ok = matches!(tokio::time::timeout(limit, c.ping()).await, Ok(Ok(())));
            state.reachable.store(ok, Ordering::Relaxed);
            // Answered as fast as a request must be: Redis is back, the
            // breaker need not wait out its cool-down.
            if ok && started.elapsed() <= request_timeout {
                breaker.recovered();
            }
            let pause = if ok { KEEPALIVE_EVERY } else { KEEPALIVE_RETRY };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = state.wake.notified() => {}
            }
        }
    }));
}

/// Aborts the spawned Redis call if the caller stops waiting for it.
pub(super) struct AbortOnDrop<T>(pub(super) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn tcp_settings() -> TcpSettings {
    let keepalive = ::redis::io::tcp::socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5));
    let settings = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive);
    // A peer that vanished (no RST) fails the connection within seconds, so
    // it gets replaced, instead of every call timing out for minutes.
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout(Duration::from_secs(5));
    settings
}

/// Build the (lazy) connection; must run inside the limiter's runtime.
pub(super) fn connect(
    url: &RedisUrl,
    options: &RedisLimiterOptions,
) -> Result<Conn, RedisLimitError> {
    let config_err = |e: RedisError| RedisLimitError::Config(e.to_string());
    // Internal response timeout, longer than ours (which answers first): it
    // only bounds requests the caller gave up on.
    let response_timeout = options
        .timeout
        .saturating_mul(2)
        .max(Duration::from_millis(500));
    let certs = || TlsCertificates {
        client_tls: None,
        root_cert: options.ca_pem.clone(),
    };
    let nodes = url.node_urls();
    if url.cluster {
        let mut builder = ClusterClientBuilder::new(nodes)
            .tcp_settings(tcp_settings())
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(200);
        if url.tls && options.ca_pem.is_some() {
            builder = builder.certs(certs());
        }
        let client = builder.build().map_err(config_err)?;
        let config = ClusterConfig::new()
            .set_connection_timeout(options.connect_timeout)
            .set_response_timeout(response_timeout);
        Ok(Conn::Cluster(
            client.get_pending_async_connection_with_config(config),
        ))
    } else {
        let node = nodes
            .into_iter()
            .next()
            .ok_or_else(|| RedisLimitError::Config(format!("{}: no host", url.redacted())))?;
        let info = node
            .as_str()
            .into_connection_info()
            .map_err(config_err)?
            .set_tcp_settings(tcp_settings());
        let client = if url.tls && options.ca_pem.is_some() {
            ::redis::Client::build_with_tls(info, certs()).map_err(config_err)?
        } else {
            ::redis::Client::open(info).map_err(config_err)?
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(200));
        let manager =
            ConnectionManager::new_lazy_with_config(client, config).map_err(config_err)?;
        Ok(Conn::Single(manager))
    }
}
