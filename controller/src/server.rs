//! The controller's lifecycle: open resources in order (data directory → database → CA →
//! listeners), serve the agent gateway, the REST API and maintenance, and shut down in
//! reverse: end agent streams, drain HTTP, stop jobs, close the database.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use infrastructor_proto::v1::agent_gateway_server::AgentGatewayServer;
use infrastructor_proto::MAX_MESSAGE_BYTES;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ControllerConfig;
use crate::fleet::SessionRegistry;
use crate::gateway::{listener, Gateway};
use crate::pki::{Pki, PkiError};
use crate::services::tokens::CreatedApiToken;
use crate::services::Services;
use crate::store::{Store, StoreError};
use crate::telemetry::Telemetry;
use crate::{maintenance, rest};

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
}

/// Opens the database and the CA: everything the service layer needs, without listeners.
/// The CLI's token commands use this directly.
pub async fn open_services(
    config: &ControllerConfig,
    gateway_addr: SocketAddr,
) -> Result<Services, StartError> {
    infrastructor_agent::fsutil::create_private_dir(&config.data_dir).map_err(|source| {
        StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        }
    })?;
    let store = match &config.database_url {
        Some(url) => Store::open_postgres(url).await?,
        None => Store::open_sqlite(&config.data_dir.join("infrastructor.db")).await?,
    };
    let pki = Pki::load_or_create(&config.data_dir.join("pki"), &config.certificate_names())?;
    let store = Arc::new(store);
    let sessions = Arc::new(SessionRegistry::default());
    let (ssh_private_key, ssh_public_key) =
        crate::fleet::ssh_driver::load_or_create_identity(&config.data_dir.join("ssh"))
            .map_err(StartError::Ssh)?;
    let ssh = Arc::new(crate::fleet::SshDriver::new(&ssh_private_key, 4).map_err(StartError::Ssh)?);
    let agentless_changes = Arc::new(crate::fleet::ssh_changes::AgentlessChanges::new(
        ssh.clone(),
        config.agentless_changes.clone(),
        config.data_dir.join("changes"),
    ));
    Ok(Services {
        ssh,
        agentless_changes,
        ssh_public_key,
        agents: crate::fleet::AgentDriver::new(sessions.clone()),
        ingest: crate::services::ingest::IngestQueue::start(store.clone(), crate::services::now_ms),
        gateway_url: config.gateway_url(gateway_addr),
        config: Arc::new(config.clone()),
        store,
        pki: Arc::new(pki),
        sessions,
        telemetry: Arc::new(Telemetry::new()),
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// A running controller.
pub struct Controller {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub services: Services,
    /// Set on the very first start only: the token is shown once and stored hashed.
    pub bootstrap_admin_token: Option<CreatedApiToken>,
    shutdown: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Controller {
    pub async fn start(config: ControllerConfig) -> Result<Self, StartError> {
        tracing::info!(config = %config, "starting controller");
        let grpc_listener = bind(config.grpc_listen).await?;
        let http_listener = bind(config.http_listen).await?;
        let grpc_addr = grpc_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.grpc_listen,
                source,
            })?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.http_listen,
                source,
            })?;
        let services = open_services(&config, grpc_addr).await?;
        tracing::info!(backend = ?services.store.backend(), "database ready");
        let bootstrap_admin_token = services.bootstrap_admin_token().await?;
        let tls = services.pki.server_tls_config()?;
        tracing::info!(ca_fingerprint = %services.pki.ca_fingerprint(), "certificate authority ready");

        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();

        let gateway = AgentGatewayServer::new(Gateway::new(services.clone(), shutdown.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let incoming = listener::tls_incoming(grpc_listener, tls, shutdown.clone());
        let grpc_shutdown = shutdown.clone();
        tasks.push((
            "agent gateway",
            tokio::spawn(async move {
                let served = tonic::transport::Server::builder()
                    .http2_keepalive_interval(Some(Duration::from_secs(30)))
                    .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                    .add_service(gateway)
                    .serve_with_incoming_shutdown(incoming, grpc_shutdown.cancelled_owned())
                    .await;
                if let Err(error) = served {
                    tracing::error!(%error, "agent gateway stopped with an error");
                }
            }),
        ));
        tracing::info!(%grpc_addr, url = %services.gateway_url, "agent gateway listening (TLS 1.3, mTLS)");

        let app = rest::router(services.clone(), shutdown.clone());
        let http_shutdown = shutdown.clone();
        tasks.push((
            "REST API",
            tokio::spawn(async move {
                let served = axum::serve(http_listener, app)
                    .with_graceful_shutdown(http_shutdown.cancelled_owned())
                    .await;
                if let Err(error) = served {
                    tracing::error!(%error, "REST API stopped with an error");
                }
            }),
        ));
        tracing::info!(%http_addr, "REST API listening");

        let ssh = services.ssh.clone();
        let ssh_shutdown = shutdown.clone();
        tasks.push((
            "SSH pool monitor",
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                        _ = ssh_shutdown.cancelled() => return,
                    }
                    let stats = ssh.prune();
                    tracing::debug!(
                        hosts = stats.hosts,
                        idle = stats.idle_connections,
                        "SSH pool pruned"
                    );
                }
            }),
        ));
        let changes = services.clone();
        let changes_shutdown = shutdown.clone();
        tasks.push((
            "agentless change deadlines",
            tokio::spawn(async move {
                changes.recover_agentless_changes().await;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = changes_shutdown.cancelled() => return,
                    }
                    changes.expire_agentless_changes().await;
                }
            }),
        ));
        tasks.push((
            "maintenance",
            tokio::spawn(maintenance::run(
                services.store.clone(),
                config.retention,
                config.maintenance_interval,
                shutdown.clone(),
            )),
        ));

        Ok(Self {
            http_addr,
            grpc_addr,
            services,
            bootstrap_admin_token,
            shutdown,
            tasks,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.services.config.data_dir
    }

    /// Graceful stop: end agent streams (they resume elsewhere or later from their spools),
    /// drain in-flight HTTP requests, stop jobs, close the database.
    pub async fn shutdown(self) {
        tracing::info!("controller shutting down");
        self.services.sessions.cancel_all();
        self.shutdown.cancel();
        for (name, task) in self.tasks {
            match tokio::time::timeout(Duration::from_secs(15), task).await {
                Ok(_) => tracing::info!(task = name, "stopped"),
                Err(_) => tracing::warn!(task = name, "did not stop within 15s"),
            }
        }
        self.services.store.close().await;
        tracing::info!("controller stopped");
    }
}
