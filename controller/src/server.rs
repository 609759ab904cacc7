//! The controller's lifecycle: one application context built in order — database → CA →
//! cache → SSH pool → agent registry → agent gateway (gRPC) → HTTP (REST and MCP) →
//! background tasks — and torn down in reverse, each step logged. A failure during startup
//! stops whatever had started.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use infrastructor_proto::v1::agent_gateway_server::AgentGatewayServer;
use infrastructor_proto::MAX_MESSAGE_BYTES;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::config::ControllerConfig;
use crate::fleet::SessionRegistry;
use crate::gateway::{listener, Gateway};
use crate::pki::{Pki, PkiError};
use crate::ratelimit::RateLimiter;
use crate::services::tokens::CreatedApiToken;
use crate::services::Services;
use crate::store::{Store, StoreError};
use crate::telemetry::Telemetry;
use crate::{rest, upkeep};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("certificate authority: {0}")]
    Pki(#[from] PkiError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Service(#[from] crate::error::Error),
    #[error("SSH identity: {0}")]
    Ssh(crate::fleet::ssh_driver::SshError),
    #[error("cache: {0}")]
    Cache(#[from] crate::cache::CacheError),
    #[error("{0}")]
    Notifications(String),
}

/// Opens the shared resources in order — data directory, database, CA, cache (and rate-limit
/// buckets), SSH pool, agent registry — each step logged; a failure closes what was opened.
/// The CLI's token commands use this directly, without listeners.
pub async fn open_services(config: &ControllerConfig) -> Result<Services, StartError> {
    let data_dir =
        infrastructor_hostops::fsutil::ensure_private_dir(&config.data_dir).map_err(|source| {
            StartError::DataDir {
                path: config.data_dir.display().to_string(),
                source,
            }
        })?;
    if let infrastructor_hostops::fsutil::PrivateDir::Tightened { was } = data_dir {
        let was = format!("{was:04o}");
        tracing::warn!(path = %config.data_dir.display(), was, "data directory was open to others; now 0700");
    }
    let store = match &config.database_url {
        Some(url) => Store::open_postgres(url).await?,
        None => Store::open_sqlite(&config.data_dir.join("infrastructor.db")).await?,
    };
    let store = Arc::new(store);
    tracing::info!(backend = ?store.backend(), "started: database");
    match open_after_database(config, store.clone()).await {
        Ok(services) => Ok(services),
        Err(error) => {
            tracing::warn!(%error, "startup failed; unwinding");
            store.close().await;
            tracing::info!("stopped: database");
            Err(error)
        }
    }
}

/// Everything after the database; nothing here holds more than memory and files until the
/// listeners start, so unwinding is closing the database.
async fn open_after_database(
    config: &ControllerConfig,
    store: Arc<Store>,
) -> Result<Services, StartError> {
    let pki = Pki::load_or_create(&config.data_dir.join("pki"), &config.certificate_names())?;
    tracing::info!(ca_fingerprint = %pki.ca_fingerprint(), "started: certificate authority");
    let (cache, limiter) = match &config.redis_url {
        Some(url) => {
            let connection = crate::cache::connect_redis(url).await?;
            let prefix = &config.redis_key_prefix;
            (
                Cache::redis(connection.clone(), prefix),
                RateLimiter::redis(config.rate_limit, connection, prefix),
            )
        }
        None => (
            Cache::in_process(),
            RateLimiter::in_process(config.rate_limit),
        ),
    };
    tracing::info!(
        backend = cache.backend_name(),
        "started: cache and rate limiter"
    );
    let mut telemetry = Telemetry::new();
    telemetry.register_cache(cache.metrics());
    let (ssh_private_key, ssh_public_key) =
        crate::fleet::ssh_driver::load_or_create_identity(&config.data_dir.join("ssh"))
            .map_err(StartError::Ssh)?;
    let ssh = Arc::new(crate::fleet::SshDriver::new(&ssh_private_key, 4).map_err(StartError::Ssh)?);
    tracing::info!("started: SSH pool");
    let sessions = Arc::new(SessionRegistry::default());
    // Who owns jobs' leases and agents' streams: a fresh ID per process, so a restarted
    // controller is a new replica like any other.
    let replica = uuid::Uuid::new_v4().simple().to_string();
    tracing::info!(replica = %replica, "started: agent registry");
    let routing = Arc::new(crate::fleet::routing::Routing::new(
        replica.clone(),
        store.clone(),
        store.backend() == crate::store::Backend::Postgres,
    ));
    let agentless_changes = Arc::new(crate::fleet::ssh_changes::AgentlessChanges::new(
        ssh.clone(),
        config.agentless_changes.clone(),
        store.clone(),
        routing.clone(),
    ));
    let channels = crate::notify::channels::Channels::new(&config.notifications)
        .map_err(StartError::Notifications)?;
    tracing::info!(
        channels = channels.views().len(),
        "started: notification channels"
    );
    Ok(Services {
        channels: Arc::new(channels),
        ssh,
        agentless_changes,
        ssh_public_key,
        agents: crate::fleet::AgentDriver::new(sessions.clone()),
        ingest: crate::services::ingest::IngestQueue::start(store.clone(), crate::services::now_ms),
        gateway_url: config.gateway_url(config.grpc_listen),
        config: Arc::new(config.clone()),
        store,
        pki: Arc::new(pki),
        sessions,
        telemetry: Arc::new(telemetry),
        cache: Arc::new(cache),
        limiter: Arc::new(limiter),
        auth_failures: Arc::new(crate::connections::AuthFailures::new(&config.connections)),
        timings: Arc::default(),
        confirmations: Arc::default(),
        jobs: Arc::new(crate::jobs::Jobs::new(config.jobs.clone(), replica.clone())),
        routing,
        clock: Arc::new(crate::clock::SystemClock),
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok(listener)
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        addr: configured,
        source,
    })
}

/// A running task and the token that stops it.
struct Running {
    name: &'static str,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    fn spawn(
        name: &'static str,
        work: impl FnOnce(CancellationToken) -> futures::future::BoxFuture<'static, ()>,
    ) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(work(stop.clone()));
        tracing::info!(task = name, "started");
        Self { name, stop, task }
    }

    async fn stop(self, grace: Duration) {
        self.stop.cancel();
        match tokio::time::timeout(grace, self.task).await {
            Ok(_) => tracing::info!(task = self.name, "stopped"),
            Err(_) => tracing::warn!(task = self.name, "did not stop within {grace:?}"),
        }
    }
}

/// A running controller.
pub struct Controller {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub services: Services,
    /// Set on the very first start only: the token is shown once and stored hashed.
    pub bootstrap_admin_token: Option<CreatedApiToken>,
    http: Option<Running>,
    gateway: Option<Running>,
    background: Vec<Running>,
}

/// How long in-flight HTTP requests may take to finish at shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

impl Controller {
    pub async fn start(config: ControllerConfig) -> Result<Self, StartError> {
        tracing::info!(config = %config, "starting controller");
        let mut services = open_services(&config).await?;
        let mut controller = Self {
            http_addr: config.http_listen,
            grpc_addr: config.grpc_listen,
            services: services.clone(),
            bootstrap_admin_token: None,
            http: None,
            gateway: None,
            background: Vec::new(),
        };
        match controller.start_serving(&config, &mut services).await {
            Ok(()) => Ok(controller),
            Err(error) => {
                tracing::warn!(%error, "startup failed; unwinding");
                controller.services = services;
                controller.shutdown().await;
                Err(error)
            }
        }
    }

    /// Gateway, HTTP, then background tasks; `self` records each as it starts, so a failure
    /// stops exactly what is running.
    async fn start_serving(
        &mut self,
        config: &ControllerConfig,
        services: &mut Services,
    ) -> Result<(), StartError> {
        let bootstrap_admin_token = services.bootstrap_admin_token().await?;
        if let Some(dir) = &config.dr_plans_dir {
            // A plan that does not check out is reported and skipped; the directory itself
            // must be readable.
            let known = |name: &str| crate::operations::dr::step_entry(name).is_some();
            let loaded = services.load_dr_plans(dir, &known).await?;
            tracing::info!(dir = %dir.display(), loaded, "DR plans read from their directory");
        }
        let tls = services.pki.server_tls_config()?;

        let grpc_listener = bind(config.grpc_listen).await?;
        self.grpc_addr = local_addr(&grpc_listener, config.grpc_listen)?;
        services.gateway_url = config.gateway_url(self.grpc_addr);
        self.services = services.clone();
        let gateway_services = services.clone();
        self.gateway = Some(Running::spawn("agent gateway", move |stop| {
            let gateway = AgentGatewayServer::new(Gateway::new(gateway_services, stop.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            let limits = config.connections;
            let incoming =
                listener::tls_incoming(grpc_listener, tls, limits.grpc_max, stop.clone());
            Box::pin(async move {
                let served = tonic::transport::Server::builder()
                    .http2_keepalive_interval(Some(Duration::from_secs(30)))
                    .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                    .max_concurrent_streams(Some(limits.grpc_streams_per_connection))
                    .concurrency_limit_per_connection(limits.grpc_streams_per_connection as usize)
                    .add_service(gateway)
                    .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                    .await;
                if let Err(error) = served {
                    tracing::error!(%error, "agent gateway stopped with an error");
                }
            })
        }));
        tracing::info!(addr = %self.grpc_addr, url = %services.gateway_url, "agent gateway listening (TLS 1.3, mTLS)");

        let http_listener = bind(config.http_listen).await?;
        self.http_addr = local_addr(&http_listener, config.http_listen)?;
        let http_services = services.clone();
        let limits = config.connections;
        self.http = Some(Running::spawn("HTTP (REST and MCP)", move |stop| {
            // MCP sessions end only once HTTP has drained, so in-flight tool calls finish.
            let mcp_stop = CancellationToken::new();
            let app = rest::router(http_services, mcp_stop.clone());
            Box::pin(async move {
                crate::connections::serve_http(http_listener, app, limits, stop).await;
                mcp_stop.cancel();
            })
        }));
        tracing::info!(addr = %self.http_addr, "HTTP listening: REST at /api/v1, MCP at /mcp");

        self.start_background(config, services);
        self.bootstrap_admin_token = bootstrap_admin_token;
        Ok(())
    }

    fn start_background(&mut self, config: &ControllerConfig, services: &Services) {
        let ssh = services.ssh.clone();
        self.background
            .push(Running::spawn("SSH pool monitor", move |stop| {
                Box::pin(every(Duration::from_secs(30), stop, move || {
                    let stats = ssh.prune();
                    tracing::debug!(
                        hosts = stats.hosts,
                        idle = stats.idle_connections,
                        "SSH pool pruned"
                    );
                    async {}
                }))
            }));
        let changes = services.clone();
        self.background
            .push(Running::spawn("agentless change deadlines", move |stop| {
                Box::pin(every(Duration::from_secs(1), stop, move || {
                    let changes = changes.clone();
                    async move { changes.watch_agentless_changes().await }
                }))
            }));
        let reconciler = services.clone();
        self.background
            .push(Running::spawn("change reconciliation", move |stop| {
                Box::pin(async move {
                    reconciler.reconcile_waiting_changes().await;
                    every(Duration::from_secs(30), stop, move || {
                        let reconciler = reconciler.clone();
                        async move { reconciler.reconcile_waiting_changes().await }
                    })
                    .await
                })
            }));
        let (routing, driver, sessions) = (
            services.routing.clone(),
            services.agents.clone(),
            services.sessions.clone(),
        );
        self.background
            .push(Running::spawn("routing between controllers", move |stop| {
                Box::pin(crate::fleet::routing::serve(
                    routing, driver, sessions, stop,
                ))
            }));
        let supervisor = services.clone();
        self.background
            .push(Running::spawn("alerts and notifications", {
                let services = services.clone();
                move |stop| Box::pin(crate::services::alerts::run(services, stop))
            }));
        self.background
            .push(Running::spawn("job leases and takeovers", move |stop| {
                Box::pin(crate::jobs::runner::supervise(supervisor, stop))
            }));
        let store = services.store.clone();
        let (retention, interval) = (config.retention, config.maintenance_interval);
        self.background
            .push(Running::spawn("rollups and retention", move |stop| {
                Box::pin(upkeep::run(store, retention, interval, stop))
            }));
        let limiter = services.limiter.clone();
        let auth_failures = services.auth_failures.clone();
        let cache = services.cache.clone();
        self.background.push(Running::spawn(
            "rate-limit pruning and cache statistics",
            move |stop| {
                Box::pin(every(Duration::from_secs(60), stop, move || {
                    limiter.prune();
                    auth_failures.prune();
                    let stats = cache.stats();
                    tracing::debug!(
                        hits = stats.hits,
                        misses = stats.misses,
                        errors = stats.errors,
                        "cache statistics"
                    );
                    async {}
                }))
            },
        ));
        let flusher = services.clone();
        self.background
            .push(Running::spawn("performance flush", move |stop| {
                Box::pin(async move {
                    let mut window_start = crate::services::now_ms();
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(PERFORMANCE_FLUSH) => {}
                            _ = stop.cancelled() => break,
                        }
                        window_start = flusher.flush_operation_metrics(window_start).await;
                    }
                    // The last window too: timings are not lost at shutdown.
                    flusher.flush_operation_metrics(window_start).await;
                })
            }));
    }

    pub fn data_dir(&self) -> &Path {
        &self.services.config.data_dir
    }

    /// Graceful stop, in the reverse order of start: HTTP stops accepting and drains in-flight
    /// requests (agent links stay up meanwhile, so requests waiting on agents complete); then
    /// the background tasks (a last performance flush); then the agent gateway ends the
    /// streams (agents resume later from their spools); the SSH pool closes; the database
    /// closes last.
    pub async fn shutdown(mut self) {
        tracing::info!("controller shutting down");
        if let Some(http) = self.http.take() {
            http.stop(DRAIN_GRACE).await;
        }
        for task in std::mem::take(&mut self.background).into_iter().rev() {
            task.stop(Duration::from_secs(15)).await;
        }
        if let Some(gateway) = self.gateway.take() {
            self.services.sessions.cancel_all();
            gateway.stop(Duration::from_secs(15)).await;
        }
        tracing::info!("stopped: agent registry");
        let closed = self.services.ssh.close_idle();
        tracing::info!(connections = closed, "stopped: SSH pool");
        tracing::info!(
            backend = self.services.cache.backend_name(),
            "stopped: cache and rate limiter"
        );
        self.services.store.close().await;
        tracing::info!("stopped: database");
        tracing::info!("controller stopped");
    }
}

/// How often operation timings are written to `operation_metrics`.
const PERFORMANCE_FLUSH: Duration = Duration::from_secs(60);

/// Runs `tick` every `period` until `stop`.
async fn every<F, Fut>(period: Duration, stop: CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
        tick().await;
    }
}
