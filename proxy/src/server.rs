//! Assembling a Pingora [`Server`] from a validated config: the proxy service,
//! the metrics endpoint and the background maintenance.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use tokio::sync::watch;
use tollgate_core::config::Config;
use tollgate_core::db::{Db, DbError};

use crate::background::{load_db_state, Maintenance};
use crate::conn::{ConnTable, EdgeApp, HandshakeWatch, PreTlsEdge};
use crate::limiter::backends::Limiters;
use crate::limiter::LocalLimiter;
use crate::metrics::{self, MetricsApp};
use crate::service::Gateway;
use crate::state::{ConfigState, DbState, State};
use crate::tls::{self, ListenerCert, TlsError};
use crate::usage::shutdown::{Signals, UsageService, UsageStop};
use crate::usage::{UsageFlusher, UsageRecorder};

/// Why a proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// A certificate, key or CA file named by the config cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A live proxy writes its local quota counts under this one's name.
    #[error(
        "another proxy (instance {other}, heartbeat {ago_ms} ms ago) is running with the \
         quota-count name {name:?}: two proxies under one name overwrite each other's counts; \
         give each replica its own proxy.instance_name (or host name)"
    )]
    Twin {
        name: String,
        other: String,
        ago_ms: i64,
    },
}

/// A config plus the key set loaded from its database and the TLS files it
/// names: ready to serve.
pub struct Prepared {
    pub config: Config,
    db_state: DbState,
    listener_cert: Option<Arc<ListenerCert>>,
    /// Every credit adjustment (top-ups and local spends), applied before
    /// the listeners open: no request of a credit holder goes uncounted
    /// while the first background read is pending.
    credits: Vec<tollgate_core::db::credits::CreditAdjustment>,
    /// When `credits` was read (Unix ms), if it was.
    credits_read_at: Option<i64>,
    /// Keys' and identities' own credit refills, for the same reason.
    refills: Vec<tollgate_core::db::refills::StoredRefill>,
    /// The local limiter's quota counts of running periods, as the last
    /// run left them: a restart does not hand a period's quota out again.
    quota_counts: Vec<tollgate_core::db::quota_counts::QuotaCount>,
    /// The name this proxy's quota counts are written under
    /// (`usage::quota_counts::counter_name`), read once.
    counter: String,
    /// This process's row in `instances` (claimed at start by a local proxy).
    instance: crate::usage::heartbeat::Instance,
}

impl Prepared {
    /// Read the TLS files, connect to the database (running migrations) and
    /// load the key set. Call from any tokio runtime; the connection is not kept.
    pub async fn load(config: Config) -> Result<Self, PrepareError> {
        tls::check_upstream_cas(&config)?;
        let listener_cert = config
            .proxy
            .tls
            .as_ref()
            .map(ListenerCert::load)
            .transpose()?;
        let db = Db::connect(&config.storage.database_url).await?;
        let db_state = load_db_state(&db).await?;
        let refills = db.credit_refills().await.unwrap_or_else(|e| {
            tracing::warn!("credit refills not read at start (read again in the background): {e}");
            Vec::new()
        });
        // Old spend rows folded first, so that the read below stays short.
        crate::background::credit_folds::fold_spends(
            &db,
            &crate::refills::refills_of(&db_state.keys, &config.plans, &refills),
            config.storage.key_refresh,
            crate::background::credit_folds::START_BUDGET,
        )
        .await;
        let read_at = tollgate_core::now_ms();
        let (credits, credits_read_at) = match db.credit_adjustments_since(0).await {
            Ok(rows) => (rows, Some(read_at)),
            Err(e) => {
                tracing::warn!(
                    "credit adjustments not read at start (read again in the background): {e}"
                );
                (Vec::new(), None)
            }
        };
        let counter = crate::usage::quota_counts::counter_name(&config.proxy);
        let instance = crate::usage::heartbeat::Instance::new();
        if config.limiter.backend == tollgate_core::config::LimiterBackend::Local {
            let me = instance.claim(
                &counter,
                &config.proxy.listen.to_string(),
                config.usage.flush_interval,
            );
            if let Err(e) = claim_name(&db, &counter, config.usage.flush_interval, &me).await {
                db.close().await;
                return Err(e);
            }
        }
        let now_us = crate::limiter::quota::wall_now_us();
        let quota_counts = db
            .quota_counts_running(&counter, now_us)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!("quota counts not read at start (counting from 0): {e}");
                Vec::new()
            });
        db.close().await;
        Ok(Self {
            config,
            db_state,
            listener_cert,
            credits,
            credits_read_at,
            refills,
            quota_counts,
            counter,
            instance,
        })
    }
}

/// Claim the name this local proxy writes its quota counts under before it
/// listens (black-box round 5, N1, and round 6, F1: two proxies under one
/// name overwrite each other's counts). The claim is one atomic insert, so
/// of two proxies starting at once exactly one gets the name. A name held
/// by another instance is taken over only if that holder is dead: its
/// heartbeat does not move for one flush interval (at most 30 s) and a
/// second (a crash leaves its row; a clean stop removes it), and then by
/// compare-and-swap, so two proxies taking over at once cannot both win.
async fn claim_name(
    db: &Db,
    name: &str,
    every: Duration,
    me: &tollgate_core::db::instances::Heartbeat,
) -> Result<(), PrepareError> {
    let twin = |other: String, at: i64| PrepareError::Twin {
        name: name.to_string(),
        other,
        ago_ms: tollgate_core::now_ms() - at,
    };
    let holder = db.claim_name(name, &me.id, tollgate_core::now_ms()).await?;
    if holder.0 != me.id {
        // The holder beats at its own period, which may be longer than
        // this proxy's (black-box round 17 re-check: a holder at 20 s was
        // taken over by a proxy at 100 ms); at most 30 s either way.
        let last = db.last_beat_of(&holder.0).await?;
        let theirs = last.map_or(every, |(_, ms)| {
            Duration::from_millis(u64::try_from(ms).unwrap_or(0))
        });
        let every = every.max(theirs).min(Duration::from_secs(30));
        tracing::warn!(
            "the quota-count name {name:?} is held by instance {} (heartbeat {} ms ago): \
             waiting up to {:?} for its next heartbeat before taking it over",
            holder.0,
            tollgate_core::now_ms() - holder.1,
            every + Duration::from_secs(1)
        );
        let until = tokio::time::Instant::now() + every + Duration::from_secs(1);
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(250)).await;
            match db.name_holder(name).await? {
                // Released (a clean stop): claim it as usual.
                None => return Box::pin(claim_name(db, name, every, me)).await,
                Some(now) if now != holder => return Err(twin(now.0, now.1)),
                Some(_) => {}
            }
        }
        // A holder whose period is longer than the wait could not be seen
        // beating: it is live while its row is, by the one age rule
        // (`instances::is_live`).
        if theirs > every {
            if let Some((seen, ms)) = db.last_beat_of(&holder.0).await? {
                if tollgate_core::db::instances::is_live(seen, ms, tollgate_core::now_ms()) {
                    return Err(twin(holder.0, seen));
                }
            }
        }
        let taken = db
            .take_over_name(name, &me.id, tollgate_core::now_ms(), (&holder.0, holder.1))
            .await?;
        if !taken {
            let now = db.name_holder(name).await?.unwrap_or(holder);
            return Err(twin(now.0, now.1));
        }
        tracing::warn!(
            "took over the quota-count name {name:?} from instance {}, which stopped beating",
            holder.0
        );
    }
    db.upsert_instance(me).await?;
    Ok(())
}

pub use crate::usage::shutdown::FAST_STOP_FLUSH;

/// The built server plus a handle on its shared state (for tests and `dev`).
pub struct Built {
    pub server: Server,
    pub state: Arc<State>,
    usage_stop: Arc<UsageStop>,
    /// Span export, flushed once the server stopped.
    spans: Option<tollgate_telemetry::Spans>,
    /// What is written once more after the server stopped.
    last_write: Arc<crate::usage::shutdown::LastWrite>,
    /// The proxy listener's open connections (shut down when a SIGINT cuts
    /// a graceful stop short).
    conns: Arc<ConnTable>,
}

impl Built {
    /// Run until SIGTERM (graceful), SIGINT (fast) or SIGQUIT (upgrade). A
    /// fast stop first lets the usage flusher write what it holds, for at
    /// most [`FAST_STOP_FLUSH`]; a SIGINT during a graceful stop makes it
    /// a fast one (the connections still open are shut down, so that their
    /// requests end and are recorded by the last write).
    pub fn run(self) {
        let (last, state, conns) = (
            self.last_write.clone(),
            self.state.clone(),
            self.conns.clone(),
        );
        let cut_then_write = move || {
            let cut = conns.shut_down_live();
            tracing::info!(
                connections = cut,
                "SIGINT during the graceful stop: open connections shut down"
            );
            last.run(&state);
        };
        let (last, state) = (self.last_write.clone(), self.state.clone());
        let last_write = move || last.run(&state);
        let args = RunArgs {
            shutdown_signal: Box::new(Signals {
                usage: self.usage_stop.clone(),
                cut_then_write: Arc::new(cut_then_write),
                last_write: Arc::new(last_write),
            }),
        };
        self.server.run(args);
        self.last_write.run(&self.state);
        tollgate_telemetry::stop(self.spans.as_ref());
    }

    /// Run until the [`ShutdownHandle`] that made `args` fires (Pingora's
    /// own semantics: a fast stop does not flush usage).
    pub fn run_with(self, args: RunArgs) {
        self.server.run(args);
        self.last_write.run(&self.state);
        tollgate_telemetry::stop(self.spans.as_ref());
    }
}

/// Build the Pingora server. Listeners bind when it runs.
pub fn build(prepared: Prepared) -> Built {
    metrics::init();
    crate::edge_metrics::init();
    crate::background::init_metrics();
    let Prepared {
        config,
        db_state,
        listener_cert,
        credits,
        credits_read_at,
        refills,
        quota_counts,
        counter,
        instance,
    } = prepared;
    let tuning = config.proxy.tuning;
    let conf = ServerConf {
        threads: config.proxy.threads,
        work_stealing: tuning.work_stealing,
        listener_tasks_per_fd: tuning.listener_tasks,
        upstream_keepalive_pool_size: tuning.upstream_keepalive_pool,
        // Pingora counts whole seconds: round up so that e.g. 1500ms is not cut to 1 s.
        grace_period_seconds: Some(whole_seconds_up(config.proxy.grace_period)),
        graceful_shutdown_timeout_seconds: Some(5),
        // Every timeout on tokio's timer wheel: Tollgate's upstream read,
        // write and pool-idle timeouts are nearly always cancelled (the
        // answer comes), which Pingora's shared fast timers do not clean up
        // (kept until their deadline) and register at a higher cost per
        // request (issue #19, ladder step 0).
        fast_timeout_to_tokio_threshold_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let listen = config.proxy.listen;
    let keepalive_timeout = config.proxy.keepalive_timeout;
    let h2c = config.proxy.h2c;
    let spans = tollgate_telemetry::from_config(&config.telemetry, "tollgate-proxy");
    let tls_listen = config.proxy.tls.as_ref().map(|t| t.listen);
    let metrics_listen = config.proxy.metrics_listen;
    let verify_listen = config.verify.listen;
    let database_url = config.storage.database_url.clone();
    let config_path = config.source.clone();

    let state = Arc::new(State::new(ConfigState::compile(config, None), db_state));
    let limiter = Arc::new(LocalLimiter::default());
    let limiters = Arc::new(Limiters::new(limiter.clone()));
    limiters.credits.set_refills(crate::refills::refills_of(
        &state.db.load().keys,
        &state.config.load().config.plans,
        &refills,
    ));
    limiters.credits.apply_local(&credits);
    if let Some(at) = credits_read_at {
        let upto = credits.iter().map(|a| a.id).max().unwrap_or(0);
        limiters.credits.set_read_at(at, upto);
    }
    limiter.seed_quotas(&quota_counts);
    let usage = UsageRecorder::new();
    let last_write = Arc::new(crate::usage::shutdown::LastWrite {
        limiters: limiters.clone(),
        recorder: usage.clone(),
        database_url: database_url.clone(),
        counter: counter.clone(),
        taken: Default::default(),
        finished: Default::default(),
    });
    // Connections per client address, and the HTTP/2 streams they carry.
    let conns = Arc::new(ConnTable::default());
    let gateway = Gateway::new(state.clone(), limiters.clone(), usage.clone())
        .with_spans(spans.clone())
        .with_conns(conns.clone());
    let edge_conns = conns.clone();

    let mut app = pingora::proxy::http_proxy(&server.configuration, gateway);
    let mut server_options = app.server_options.clone().unwrap_or_default();
    server_options.keepalive_request_limit = Some(tuning.downstream_keepalive_requests);
    // An HTTP/2 connection with no stream in flight (PINGs and SETTINGS do
    // not count) is closed after keepalive_timeout, as an idle HTTP/1 one
    // (the value at start; a reload applies to HTTP/1 only).
    server_options.h2_idle_timeout = Some(keepalive_timeout);
    // `proxy.h2c`: HTTP/2 without TLS on the plain listener (prior
    // knowledge; gRPC clients), beside HTTP/1.
    server_options.h2c = h2c;
    app.server_options = Some(server_options);
    let handshakes = Arc::new(HandshakeWatch::default());
    let app = EdgeApp {
        inner: Arc::new(app),
        state: state.clone(),
        conns,
        handshakes: handshakes.clone(),
        h2c,
        side: false,
    };
    let mut proxy = Service::new("tollgate-proxy".to_string(), app);
    proxy.endpoints().set_pre_tls_callback(Arc::new(PreTlsEdge {
        state: state.clone(),
        handshakes,
    }));
    proxy.add_tcp(&listen.to_string());
    if let (Some(addr), Some(cert)) = (tls_listen, &listener_cert) {
        match cert.settings() {
            Ok(settings) => proxy.add_tls_with_settings(&addr.to_string(), None, settings),
            Err(e) => tracing::error!("HTTPS listener not started: {e}"),
        }
    }
    server.add_service(proxy);

    if let Some(addr) = metrics_listen {
        // Behind the proxy's connection edge, with a small total cap.
        let cap = crate::conn::side_cap(
            crate::conn::METRICS_MAX_CONNECTIONS,
            crate::conn::nofile_limit(),
            16,
        );
        let app = crate::conn::side_app(MetricsApp, state.clone(), cap);
        let mut m = Service::new("tollgate-metrics".to_string(), app);
        m.add_tcp(&addr.to_string());
        m.threads = Some(1);
        server.add_service(m);
    }

    if let Some(addr) = verify_listen {
        let app = crate::verify::VerifyApp {
            state: state.clone(),
            limiters: limiters.clone(),
            usage: usage.clone(),
            tokens: Default::default(),
        };
        crate::verify::add_services(&mut server, addr, app, database_url.clone());
    }

    let flusher = UsageFlusher::new(
        usage,
        state.clone(),
        database_url.clone(),
        listen.to_string(),
    )
    .with_credits(limiters.credits.clone())
    .with_peers(limiters.peers())
    .with_quotas(limiter.clone(), counter)
    .with_instance(instance);
    let usage_stop = Arc::new(UsageStop::new(flusher.fast_stop_flag()));
    server.add_service(background_service(
        "tollgate-usage",
        UsageService {
            flusher,
            stop: usage_stop.clone(),
        },
    ));
    server.add_service(background_service(
        "tollgate-maintenance",
        Maintenance {
            state: state.clone(),
            limiter,
            limiters,
            database_url,
            config_path,
            listener_cert,
        },
    ));
    Built {
        server,
        state,
        usage_stop,
        spans,
        last_write,
        conns: edge_conns,
    }
}

/// `d` in whole seconds, rounded up.
fn whole_seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A shutdown trigger for servers run in-process (tests, `dev`).
#[derive(Clone)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<Option<bool>>>,
    rx: watch::Receiver<Option<bool>>,
}

struct ChannelSignal(watch::Receiver<Option<bool>>);

#[async_trait]
impl ShutdownSignalWatch for ChannelSignal {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        loop {
            if let Some(graceful) = *rx.borrow_and_update() {
                return if graceful {
                    ShutdownSignal::GracefulTerminate
                } else {
                    ShutdownSignal::FastShutdown
                };
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Default for ShutdownHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownHandle {
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(None);
        Self {
            tx: Arc::new(tx),
            rx,
        }
    }

    /// Arguments for [`Built::run_with`] that stop the server when this handle fires.
    pub fn run_args(&self) -> RunArgs {
        RunArgs {
            shutdown_signal: Box::new(ChannelSignal(self.rx.clone())),
        }
    }

    /// Stop at once (in-flight requests are cut).
    pub fn fast(&self) {
        let _ = self.tx.send(Some(false));
    }

    /// Stop accepting, let in-flight requests finish within the grace period.
    pub fn graceful(&self) {
        let _ = self.tx.send(Some(true));
    }
}

/// How long a graceful stop may take at most: the grace period (Pingora
/// always waits all of it) plus runtime shutdown.
pub fn max_shutdown(config: &Config) -> Duration {
    Duration::from_secs(whole_seconds_up(config.proxy.grace_period)) + Duration::from_secs(5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_rounds_up_to_whole_seconds() {
        assert_eq!(whole_seconds_up(Duration::ZERO), 0);
        assert_eq!(whole_seconds_up(Duration::from_millis(500)), 1);
        assert_eq!(whole_seconds_up(Duration::from_secs(10)), 10);
        assert_eq!(whole_seconds_up(Duration::from_millis(1500)), 2);
    }
}
